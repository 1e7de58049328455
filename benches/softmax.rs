//! Criterion benchmarks, grouped by shape: the GPU-resident op alone (recorded and
//! submitted, waited for), and the host path (upload, compute, readback). Throughput is
//! in bytes read plus written. For the side-by-side report against the copy kernel, see
//! `wgpu-softmax report` (`cli/src/report.rs`).
//!
//! `cargo bench` (set `WGPU_BACKEND` to pick a backend).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wgpu_softmax::wgpu;
use wgpu_softmax::{
    block_on, Context, ContextOptions, HostInputs, MatrixView, Options, RowInputs, Shape,
};

/// Shapes of about 4 MiB, small enough for a software adapter.
const SHAPES: [(usize, usize); 5] = [
    (32768, 32),
    (2048, 512),
    (256, 4096),
    (32, 32000),
    (4, 262144),
];

fn data(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919) % 1000) as f32 / 100.0 - 5.0)
        .collect()
}

fn benches(c: &mut Criterion) {
    let ctx = match block_on(Context::new(ContextOptions::default())) {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("no adapter, nothing to benchmark: {e}");
            return;
        }
    };
    let options = Options::softmax();
    let mut group = c.benchmark_group("softmax");
    group.sample_size(10);
    for (rows, cols) in SHAPES {
        let shape = Shape::new(rows, cols);
        let x = data(rows * cols);
        let bytes = (x.len() * 4) as u64;
        group.throughput(Throughput::Bytes(2 * bytes));
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
        let make = || {
            ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: bytes,
                usage,
                mapped_at_creation: false,
            })
        };
        let (input, output) = (make(), make());
        ctx.queue()
            .write_buffer(&input, 0, bytemuck::cast_slice(&x));
        let id = format!("{rows}x{cols}");
        group.bench_function(BenchmarkId::new("resident", &id), |b| {
            b.iter(|| {
                let mut enc = ctx.device().create_command_encoder(&Default::default());
                ctx.encode(
                    &mut enc,
                    MatrixView::new(&input),
                    MatrixView::new(&output),
                    shape,
                    &options,
                    &RowInputs::NONE,
                )
                .expect("encode");
                let index = ctx.queue().submit([enc.finish()]);
                ctx.device()
                    .poll(wgpu::PollType::Wait {
                        submission_index: Some(index),
                        timeout: None,
                    })
                    .expect("poll");
            })
        });
        let mut out = vec![0.0f32; x.len()];
        group.bench_function(BenchmarkId::new("host", &id), |b| {
            b.iter(|| {
                block_on(ctx.run(&x, &mut out, shape, &options, HostInputs::default()))
                    .expect("run")
            })
        });
    }
    group.finish();
}

criterion_group!(softmax, benches);
criterion_main!(softmax);
