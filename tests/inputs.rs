//! Inputs fused into the op: additive mask, causal mask, per-row valid lengths and
//! per-row temperatures, alone and stacked, in the host and GPU-resident APIs, against
//! the f64 reference.

mod common;

use common::{ctx, normal_matrix, Rng};
use wgpu_softmax::reference::{first_mismatch, row_stats_f64_with, softmax_f64_with, Tolerance};
use wgpu_softmax::wgpu;
use wgpu_softmax::{
    Context, Error, HostInputs, MaskedRows, MatrixView, Options, Region, RowInputs, RowKernel,
    Shape,
};

fn kernels(ctx: &Context) -> Vec<RowKernel> {
    RowKernel::ALL
        .into_iter()
        .filter(|k| !k.needs_subgroups() || ctx.caps().subgroups)
        .collect()
}

fn check(got: &[f32], x: &[f32], shape: Shape, options: &Options, inputs: &HostInputs) {
    let want = softmax_f64_with(x, shape.cols, options, inputs);
    if let Some((i, y, r)) = first_mismatch(got, &want, Tolerance::for_op(options.op)) {
        panic!(
            "{shape:?} {options:?}: element {i} (row {}, col {}) is {y:e}, reference {r:e}",
            i / shape.cols,
            i % shape.cols
        );
    }
}

fn run(ctx: &Context, x: &[f32], shape: Shape, options: &Options, inputs: &HostInputs) {
    let y = ctx
        .run_with_blocking(x, shape, options, inputs)
        .unwrap_or_else(|e| panic!("{shape:?} {options:?}: {e}"));
    check(&y, x, shape, options, inputs);
}

/// A mask of `rows` rows: mostly small values, some -inf.
fn mask(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..rows * cols)
        .map(|_| match rng.below(5) {
            0 => f32::NEG_INFINITY,
            1 => 0.0,
            _ => rng.normal(0.0, 1.0),
        })
        .collect()
}

const SHAPES: [(usize, usize); 5] = [(7, 3), (5, 33), (4, 257), (3, 1030), (2, 40_000)];

#[test]
fn an_additive_mask_broadcast_one_row_per_row_and_per_group() {
    let Some(ctx) = ctx() else { return };
    for kernel in kernels(ctx) {
        for (rows, cols) in SHAPES {
            let x = normal_matrix(rows as u64, rows * cols, 2.0);
            for mask_rows in [1, rows, 2] {
                let m = mask(mask_rows, cols, cols as u64 + mask_rows as u64);
                let inputs = HostInputs {
                    mask: Some((&m, mask_rows)),
                    ..HostInputs::default()
                };
                for o in [Options::softmax(), Options::log_softmax()] {
                    run(
                        ctx,
                        &x,
                        Shape::new(rows, cols),
                        &o.with_kernel(kernel),
                        &inputs,
                    );
                }
            }
        }
    }
}

#[test]
fn a_causal_mask_with_kv_cache_offsets() {
    let Some(ctx) = ctx() else { return };
    for kernel in kernels(ctx) {
        for (rows, cols) in [(6, 6), (5, 9), (4, 300), (40, 40)] {
            let x = normal_matrix(3, rows * cols, 2.0);
            for offset in [0, 1, 3, 1000] {
                for o in [Options::softmax(), Options::log_softmax()] {
                    let o = o.with_kernel(kernel).with_causal(offset);
                    run(ctx, &x, Shape::new(rows, cols), &o, &HostInputs::default());
                }
            }
        }
    }
}

#[test]
fn per_row_lengths_with_both_masked_row_policies() {
    let Some(ctx) = ctx() else { return };
    for kernel in kernels(ctx) {
        for (rows, cols) in SHAPES {
            let mut x = normal_matrix(4, rows * cols, 2.0);
            // NaN past a row's length is ignored: it is masked out.
            x[cols - 1] = f32::NAN;
            let lengths: Vec<u32> = (0..rows)
                .map(|r| match r % 4 {
                    0 => 0,
                    1 => cols as u32 + 5,
                    2 => (cols as u32).div_ceil(3),
                    _ => 1,
                })
                .collect();
            let lengths = {
                let mut l = lengths;
                l[0] = cols as u32 - 1; // row 0 drops only its last (NaN) column
                if rows > 4 {
                    l[4] = 0; // a fully masked row
                }
                l
            };
            let inputs = HostInputs {
                lengths: Some(&lengths),
                ..HostInputs::default()
            };
            for masked in [MaskedRows::Nan, MaskedRows::Zero] {
                for o in [Options::softmax(), Options::log_softmax()] {
                    let o = o.with_kernel(kernel).with_masked_rows(masked);
                    run(ctx, &x, Shape::new(rows, cols), &o, &inputs);
                }
            }
        }
    }
}

#[test]
fn per_row_temperatures_beside_the_scalar_one() {
    let Some(ctx) = ctx() else { return };
    for kernel in kernels(ctx) {
        for (rows, cols) in SHAPES {
            let x = normal_matrix(5, rows * cols, 3.0);
            let temps: Vec<f32> = (0..rows).map(|r| [0.5, 1.0, 3.0, 0.25][r % 4]).collect();
            let inputs = HostInputs {
                temperatures: Some(&temps),
                ..HostInputs::default()
            };
            for t in [1.0, 2.0] {
                let o = Options::softmax().with_kernel(kernel).with_temperature(t);
                run(ctx, &x, Shape::new(rows, cols), &o, &inputs);
            }
        }
    }
}

#[test]
fn an_invalid_per_row_temperature_makes_only_its_row_nan() {
    let Some(ctx) = ctx() else { return };
    let (rows, cols) = (8, 40);
    let x = normal_matrix(6, rows * cols, 1.0);
    // Valid: 1, and 1e-38 (with the scalar 0.5, 1 / T stays finite). Invalid: 0, -1,
    // NaN, +inf, a subnormal whose reciprocal overflows, and 1e-38 again under a scalar
    // temperature of 0.01, whose product of reciprocals (1e2 * 1e38) overflows.
    let temps = [1.0, 1e-38, 0.0, -1.0, f32::NAN, f32::INFINITY, 1e-40, 1e-38];
    for kernel in kernels(ctx) {
        for (scalar, bad_from) in [(0.5, 2), (0.01, 1)] {
            let temps = if scalar == 0.5 {
                &temps[..7]
            } else {
                &temps[..]
            };
            let rows = temps.len();
            let x = &x[..rows * cols];
            let inputs = HostInputs {
                temperatures: Some(temps),
                ..HostInputs::default()
            };
            let options = Options::softmax()
                .with_temperature(scalar)
                .with_kernel(kernel);
            let y = ctx
                .run_with_blocking(x, Shape::new(rows, cols), &options, &inputs)
                .unwrap();
            check(&y, x, Shape::new(rows, cols), &options, &inputs);
            assert!(
                y[..bad_from * cols].iter().all(|v| v.is_finite()),
                "{kernel:?}"
            );
            assert!(
                y[bad_from * cols..].iter().all(|v| v.is_nan()),
                "{kernel:?} {scalar}"
            );
        }
    }
}

#[test]
fn everything_stacked_with_statistics() {
    let Some(ctx) = ctx() else { return };
    for kernel in kernels(ctx) {
        for (rows, cols) in SHAPES {
            let x = normal_matrix(8, rows * cols, 2.0);
            let m = mask(2, cols, 9);
            let lengths: Vec<u32> = (0..rows as u32).map(|r| cols as u32 - r).collect();
            let temps: Vec<f32> = (0..rows).map(|r| 0.5 + r as f32).collect();
            let inputs = HostInputs {
                mask: Some((&m, 2)),
                lengths: Some(&lengths),
                temperatures: Some(&temps),
                ..HostInputs::default()
            };
            let o = Options::log_softmax()
                .with_kernel(kernel)
                .with_temperature(1.5)
                .with_causal(2)
                .with_masked_rows(MaskedRows::Zero);
            let shape = Shape::new(rows, cols);
            let (y, stats) = ctx.run_with_stats_blocking(&x, shape, &o, &inputs).unwrap();
            check(&y, &x, shape, &o, &inputs);
            let want = row_stats_f64_with(&x, cols, &o, &inputs);
            for (g, w) in stats.iter().zip(&want) {
                for k in 0..2 {
                    let ok = if w[k].is_finite() {
                        (f64::from(g[k]) - w[k]).abs() <= 1e-5 + 1e-6 * w[k].abs()
                    } else {
                        f64::from(g[k]) == w[k] || (g[k].is_nan() && w[k].is_nan())
                    };
                    assert!(ok, "{kernel:?} {shape:?}: stats {g:?} vs {w:?}");
                }
            }
            let again = ctx
                .run_with_given_stats_blocking(&x, &stats, shape, &o, &inputs)
                .unwrap();
            check(&again, &x, shape, &o, &inputs);
        }
    }
}

#[test]
fn row_inputs_follow_their_rows_across_host_chunks() {
    // Tiny chunks: every chunk starts at another row, and mask rows, lengths and
    // temperatures must still be those of the whole matrix's rows.
    if ctx().is_none() {
        return;
    }
    let mut options = wgpu_softmax::ContextOptions::default();
    options.host_chunk_bytes = 4096;
    let small = Context::with_options_blocking(options).unwrap();
    let (rows, cols) = (37, 300);
    let x = normal_matrix(10, rows * cols, 2.0);
    let m = mask(3, cols, 11);
    let lengths: Vec<u32> = (0..rows as u32)
        .map(|r| (r * 7) % cols as u32 + 1)
        .collect();
    let temps: Vec<f32> = (0..rows).map(|r| 1.0 + (r % 3) as f32).collect();
    let inputs = HostInputs {
        mask: Some((&m, 3)),
        lengths: Some(&lengths),
        temperatures: Some(&temps),
        ..HostInputs::default()
    };
    let o = Options::softmax().with_causal(5);
    run(&small, &x, Shape::new(rows, cols), &o, &inputs);
}

#[test]
fn the_resident_api_with_row_inputs_at_offsets() {
    let Some(ctx) = ctx() else { return };
    let (rows, cols) = (6, 100);
    let shape = Shape::new(rows, cols);
    let x = normal_matrix(12, rows * cols, 2.0);
    let m = mask(2, cols, 13);
    let lengths: Vec<u32> = vec![100, 50, 0, 7, 100, 99];
    let temps: Vec<f32> = vec![1.0, 2.0, 0.5, 1.0, 3.0, 1.0];
    let usage =
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC;
    let upload = |bytes: &[u8], lead: usize| {
        let b = ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: (lead + bytes.len()) as u64,
            usage,
            mapped_at_creation: false,
        });
        ctx.queue().write_buffer(&b, lead as u64, bytes);
        b
    };
    let input = upload(bytemuck::cast_slice(&x), 0);
    let output = upload(&vec![0u8; x.len() * 4], 0);
    let mask_buffer = upload(bytemuck::cast_slice(&m), 12);
    let lengths_buffer = upload(bytemuck::cast_slice(&lengths), 4);
    let temps_buffer = upload(bytemuck::cast_slice(&temps), 260);
    let resident = RowInputs {
        mask: Some((Region::new(&mask_buffer).with_offset(12), 2)),
        lengths: Some(Region::new(&lengths_buffer).with_offset(4)),
        temperatures: Some(Region::new(&temps_buffer).with_offset(260)),
        stats: None,
        ..RowInputs::default()
    };
    let o = Options::softmax().with_causal(40);
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    ctx.encode_with(
        &mut encoder,
        MatrixView::new(&input),
        MatrixView::new(&output),
        shape,
        &o,
        &resident,
    )
    .unwrap();
    let staging = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: output.size(),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    encoder.copy_buffer_to_buffer(&output, 0, &staging, 0, output.size());
    ctx.queue().submit([encoder.finish()]);
    staging.map_async(wgpu::MapMode::Read, .., |r| r.expect("map"));
    ctx.device()
        .poll(wgpu::PollType::wait_indefinitely())
        .unwrap();
    let y: Vec<f32> = bytemuck::cast_slice(&staging.get_mapped_range(..).unwrap()).to_vec();
    let host = HostInputs {
        mask: Some((&m, 2)),
        lengths: Some(&lengths),
        temperatures: Some(&temps),
        ..HostInputs::default()
    };
    check(&y, &x, shape, &o, &host);
}

#[test]
fn inputs_of_the_wrong_length_are_refused() {
    let Some(ctx) = ctx() else { return };
    let x = vec![0.0f32; 12];
    let shape = Shape::new(3, 4);
    let o = Options::softmax();
    let short = [1.0f32; 2];
    let e = ctx
        .run_with_blocking(
            &x,
            shape,
            &o,
            &HostInputs {
                temperatures: Some(&short),
                ..HostInputs::default()
            },
        )
        .unwrap_err();
    assert_eq!(
        e,
        Error::InputLength {
            which: "temperatures",
            expected: 3,
            actual: 2
        }
    );
    let e = ctx
        .run_with_blocking(
            &x,
            shape,
            &o,
            &HostInputs {
                lengths: Some(&[1, 2]),
                ..HostInputs::default()
            },
        )
        .unwrap_err();
    assert_eq!(
        e,
        Error::InputLength {
            which: "lengths",
            expected: 3,
            actual: 2
        }
    );
    let m = [0.0f32; 5];
    let e = ctx
        .run_with_blocking(
            &x,
            shape,
            &o,
            &HostInputs {
                mask: Some((&m, 1)),
                ..HostInputs::default()
            },
        )
        .unwrap_err();
    assert_eq!(
        e,
        Error::InputLength {
            which: "mask",
            expected: 4,
            actual: 5
        }
    );
}

#[test]
fn a_device_with_default_limits_refuses_row_inputs_but_runs_plain_softmax() {
    if ctx().is_none() {
        return;
    }
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default())).unwrap();
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_limits: wgpu::Limits::default(),
        ..Default::default()
    }))
    .unwrap();
    let ctx = Context::from_device(&device, &queue).unwrap();
    let x = normal_matrix(14, 3 * 50, 1.0);
    let shape = Shape::new(3, 50);
    run(&ctx, &x, shape, &Options::softmax(), &HostInputs::default());
    run(
        &ctx,
        &x,
        shape,
        &Options::softmax().with_causal(1),
        &HostInputs::default(),
    );
    let lengths = [1u32, 2, 3];
    let e = ctx
        .run_with_blocking(
            &x,
            shape,
            &Options::softmax(),
            &HostInputs {
                lengths: Some(&lengths),
                ..HostInputs::default()
            },
        )
        .unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e}");
}
