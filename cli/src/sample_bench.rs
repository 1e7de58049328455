//! `wgpu-softmax report --sampling`: what drawing a token per row costs, per call, at
//! batch 1 and 64 over LLM vocabularies, three ways on one adapter in one run:
//!
//! - softmax alone (the resident op into a `[batch, vocab]` output), for scale;
//! - the sampler (top-k 50, top-p 0.9 on the GPU, the ids read back: 4 bytes a row),
//!   as planned (few long rows split over several workgroups) and, where the plan
//!   splits, with one workgroup per row as well;
//! - the usual alternative: the logits read back, then softmax, top-k (a selection),
//!   a sort of the survivors, top-p and a draw on the CPU, one thread.
//!
//! Each time is the median of `--repeats` calls after one warm-up call, wall time from
//! recording to the result on the host (ids in memory; softmax: its submission done).

use std::time::Instant;

use wgpu_softmax::internals::RowKernel;
use wgpu_softmax::wgpu;
use wgpu_softmax::{
    Context, Dtype, MatrixView, Options, Region, RowInputs, SampleOutputs, Sampling, Shape,
};

use crate::report::{buffer, logits, median, wait};

/// Vocabularies measured: Llama 2's, Llama 3's and Gemma's.
pub const VOCABS: [usize; 3] = [32000, 128256, 262144];
/// Batches measured: one decoding stream, and a serving batch.
pub const BATCHES: [usize; 2] = [1, 64];

/// One shape's per-call times, in milliseconds.
pub struct Latency {
    pub batch: usize,
    pub vocab: usize,
    pub softmax_ms: f64,
    pub sample_ms: f64,
    /// The sampler with one workgroup per row, where the plan splits rows.
    pub one_workgroup_ms: Option<f64>,
    /// How the sampler's plan runs a row: "1 workgroup of N" or "P parts x N".
    pub plan: String,
    pub cpu_ms: f64,
}

/// The filters measured, as an LLM server's defaults often are.
fn sampling() -> Sampling {
    Sampling::new(1).with_top_k(50).with_top_p(0.9)
}

/// Reads `bytes` of `buffer` (with `COPY_SRC`) back to the host, through `readback`.
fn read_back(
    ctx: &Context,
    encoder: wgpu::CommandEncoder,
    (buffer, readback): (&wgpu::Buffer, &wgpu::Buffer),
    bytes: u64,
) -> Result<Vec<u8>, String> {
    let mut encoder = encoder;
    encoder.copy_buffer_to_buffer(buffer, 0, readback, 0, bytes);
    let index = ctx.queue().submit([encoder.finish()]);
    readback
        .slice(0..bytes)
        .map_async(wgpu::MapMode::Read, |_| {});
    wait(ctx, index)?;
    let data = readback
        .slice(0..bytes)
        .get_mapped_range()
        .map_err(|e| e.to_string())?
        .to_vec();
    readback.unmap();
    Ok(data)
}

/// Top-k then top-p sampling of one row on the CPU, as a host-side sampler does it:
/// softmax, a selection of the k largest, a sort of those, the cumulative cut, a draw.
fn cpu_sample(row: &[f32], k: usize, p: f32, u: f32) -> usize {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut idx: Vec<usize> = (0..row.len()).collect();
    let k = k.min(row.len());
    idx.select_nth_unstable_by(k - 1, |&a, &b| row[b].total_cmp(&row[a]));
    idx.truncate(k);
    idx.sort_unstable_by(|&a, &b| row[b].total_cmp(&row[a]));
    let e: Vec<f32> = idx.iter().map(|&j| (row[j] - m).exp()).collect();
    let total: f32 = e.iter().sum();
    let (mut head, mut kept) = (0.0, 0);
    for &ej in &e {
        if head >= p * total {
            break;
        }
        head += ej;
        kept += 1;
    }
    let mut target = u * head;
    for (n, &ej) in e[..kept].iter().enumerate() {
        if target < ej {
            return idx[n];
        }
        target -= ej;
    }
    idx[kept - 1]
}

/// The three per-call times of one shape.
fn measure(ctx: &Context, batch: usize, vocab: usize, repeats: usize) -> Result<Latency, String> {
    let len = batch * vocab;
    let bytes = (len * 4) as u64;
    let storage =
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC;
    let input = buffer(ctx, bytes, storage);
    let output = buffer(ctx, bytes, storage);
    let ids = buffer(ctx, (batch * 4).max(16) as u64, storage);
    let readback = buffer(
        ctx,
        bytes,
        wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
    );
    ctx.queue()
        .write_buffer(&input, 0, bytemuck::cast_slice(&logits(len, 11)));
    let shape = Shape::new(batch, vocab);
    let softmax = Options::softmax();
    let new_encoder = || ctx.device().create_command_encoder(&Default::default());
    let time = |f: &mut dyn FnMut() -> Result<(), String>| -> Result<f64, String> {
        f()?;
        let mut times = Vec::new();
        for _ in 0..repeats {
            let t = Instant::now();
            f()?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        Ok(median(times))
    };
    let softmax_ms = time(&mut || {
        let mut enc = new_encoder();
        ctx.encode(
            &mut enc,
            MatrixView::new(&input),
            MatrixView::new(&output),
            shape,
            &softmax,
            &RowInputs::NONE,
        )
        .map_err(|e| e.to_string())?;
        wait(ctx, ctx.queue().submit([enc.finish()]))
    })?;
    let s = sampling();
    let sample = |options: &Options| {
        time(&mut || {
            let mut enc = new_encoder();
            ctx.encode_sample(
                &mut enc,
                MatrixView::new(&input),
                SampleOutputs::new(Region::new(&ids)),
                shape,
                options,
                &s,
                &RowInputs::NONE,
            )
            .map_err(|e| e.to_string())?;
            let got = read_back(ctx, enc, (&ids, &readback), (batch * 4) as u64)?;
            std::hint::black_box(got);
            Ok(())
        })
    };
    let planned = ctx
        .sample_plan(shape, Dtype::F32, &softmax)
        .map_err(|e| e.to_string())?;
    let sample_ms = sample(&softmax)?;
    let (plan, one_workgroup_ms) = match planned.split {
        Some(split) => (
            format!("{} parts x {}", split.parts, planned.workgroup_size),
            Some(sample(&softmax.with_kernel(RowKernel::WorkgroupShared))?),
        ),
        None => (format!("1 workgroup of {}", planned.workgroup_size), None),
    };
    let mut draw = 0u64;
    let cpu_ms = time(&mut || {
        let data = read_back(ctx, new_encoder(), (&input, &readback), bytes)?;
        let values: &[f32] = bytemuck::cast_slice(&data);
        let mut chosen = Vec::with_capacity(batch);
        for row in values.chunks(vocab) {
            draw += 1;
            let u = ((draw.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) as f32) / (1u64 << 24) as f32;
            chosen.push(cpu_sample(row, 50, 0.9, u));
        }
        std::hint::black_box(chosen);
        Ok(())
    })?;
    Ok(Latency {
        batch,
        vocab,
        softmax_ms,
        sample_ms,
        one_workgroup_ms,
        plan,
        cpu_ms,
    })
}

/// Every shape's times, and the markdown table of them.
pub fn table(ctx: &Context, repeats: usize) -> Result<(Vec<Latency>, String), String> {
    let mut rows = Vec::new();
    for batch in BATCHES {
        for vocab in VOCABS {
            eprintln!("sampling {batch} x {vocab} ...");
            rows.push(measure(ctx, batch, vocab, repeats)?);
        }
    }
    let info = ctx.adapter_info();
    let mut s = format!(
        "Adapter: {} ({:?}). Per call, ms, median of {repeats} after a warm-up; top-k 50, \
         top-p 0.9.\n\n",
        info.name, info.backend
    );
    s += "| batch x vocab | softmax alone | GPU sampler (ids read back) | its plan per row | GPU sampler, one workgroup per row | logits read back + CPU sampler | CPU / GPU sampler |\n";
    s += "| --- | --- | --- | --- | --- | --- | --- |\n";
    for r in &rows {
        s += &format!(
            "| {} x {} | {:.2} | {:.2} | {} | {} | {:.2} | {:.2} |\n",
            r.batch,
            r.vocab,
            r.softmax_ms,
            r.sample_ms,
            r.plan,
            r.one_workgroup_ms
                .map_or("(same)".to_string(), |t| format!("{t:.2}")),
            r.cpu_ms,
            r.cpu_ms / r.sample_ms
        );
    }
    Ok((rows, s))
}

#[cfg(test)]
mod tests {
    use super::cpu_sample;

    #[test]
    fn the_cpu_baseline_keeps_to_its_filters() {
        let row = [0.0f32, 5.0, 4.0, 1.0, 4.5];
        // k = 1: the max, whatever u.
        for u in [0.0, 0.5, 0.999] {
            assert_eq!(cpu_sample(&row, 1, 1.0, u), 1);
        }
        // k = 3 keeps 1, 4, 2; p = 0.5 keeps the head reaching half the mass: 1 only
        // (its share is 0.51 of the three).
        for u in [0.0, 0.5, 0.999] {
            assert_eq!(cpu_sample(&row, 3, 0.5, u), 1);
            assert!([1, 4, 2].contains(&cpu_sample(&row, 3, 1.0, u)));
        }
    }
}
