//! Inputs fused into the op: additive mask, causal mask, per-row valid lengths and
//! per-row temperatures, alone and stacked, in the host and GPU-resident APIs, against
//! the f64 reference.

mod common;

use common::{
    app_device, ctx, kernels, normal_matrix, read_back, run, storage_buffer, upload, Rng,
};
use wgpu_softmax::internals::reference::{
    first_mismatch, row_stats_f64_with, softmax_f64_with, Tolerance,
};
use wgpu_softmax::wgpu;
use wgpu_softmax::{
    block_on, Context, ContextOptions, Error, HostInputs, MaskView, MaskedRows, MatrixView,
    Options, Region, RowInputs, Shape,
};

fn check(got: &[f32], x: &[f32], shape: Shape, options: &Options, inputs: &HostInputs) {
    compare(
        got,
        &softmax_f64_with(x, shape.cols, options, inputs),
        shape,
        options,
    );
}

fn compare(got: &[f32], want: &[f64], shape: Shape, options: &Options) {
    if let Some((i, y, r)) = first_mismatch(got, want, Tolerance::for_op(options.op)) {
        panic!(
            "{shape:?} {options:?}: element {i} (row {}, col {}) is {y:e}, reference {r:e}",
            i / shape.cols,
            i % shape.cols
        );
    }
}

/// Runs the host path with `inputs` and checks the result against the reference.
fn run_checked(ctx: &Context, x: &[f32], shape: Shape, options: &Options, inputs: HostInputs) {
    let want = softmax_f64_with(x, shape.cols, options, &inputs);
    let y = run(ctx, x, shape, options, inputs)
        .unwrap_or_else(|e| panic!("{shape:?} {options:?}: {e}"));
    compare(&y, &want, shape, options);
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
    let ctx = ctx();
    for kernel in kernels(ctx) {
        for (rows, cols) in SHAPES {
            let x = normal_matrix(rows as u64, rows * cols, 2.0);
            for mask_rows in [1, rows, 2] {
                let m = mask(mask_rows, cols, cols as u64 + mask_rows as u64);
                for o in [Options::softmax(), Options::log_softmax()] {
                    run_checked(
                        ctx,
                        &x,
                        Shape::new(rows, cols),
                        &o.with_kernel(kernel),
                        HostInputs::default().with_mask(&m, mask_rows),
                    );
                }
            }
        }
    }
}

#[test]
fn a_causal_mask_with_kv_cache_offsets() {
    let ctx = ctx();
    for kernel in kernels(ctx) {
        for (rows, cols) in [(6, 6), (5, 9), (4, 300), (40, 40)] {
            let x = normal_matrix(3, rows * cols, 2.0);
            for offset in [0, 1, 3, 1000] {
                for o in [Options::softmax(), Options::log_softmax()] {
                    let o = o.with_kernel(kernel).with_causal(offset);
                    run_checked(ctx, &x, Shape::new(rows, cols), &o, HostInputs::default());
                }
            }
        }
    }
}

#[test]
fn per_row_lengths_with_both_masked_row_policies() {
    let ctx = ctx();
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
            for masked in [MaskedRows::Nan, MaskedRows::Zero] {
                for o in [Options::softmax(), Options::log_softmax()] {
                    let o = o.with_kernel(kernel).with_masked_rows(masked);
                    let inputs = HostInputs::default().with_lengths(&lengths);
                    run_checked(ctx, &x, Shape::new(rows, cols), &o, inputs);
                }
            }
        }
    }
}

#[test]
fn per_row_temperatures_beside_the_scalar_one() {
    let ctx = ctx();
    for kernel in kernels(ctx) {
        for (rows, cols) in SHAPES {
            let x = normal_matrix(5, rows * cols, 3.0);
            let temps: Vec<f32> = (0..rows).map(|r| [0.5, 1.0, 3.0, 0.25][r % 4]).collect();
            for t in [1.0, 2.0] {
                let o = Options::softmax().with_kernel(kernel).with_temperature(t);
                let inputs = HostInputs::default().with_temperatures(&temps);
                run_checked(ctx, &x, Shape::new(rows, cols), &o, inputs);
            }
        }
    }
}

#[test]
fn an_invalid_per_row_temperature_makes_only_its_row_nan() {
    let ctx = ctx();
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
            let inputs = || HostInputs::default().with_temperatures(temps);
            let options = Options::softmax()
                .with_temperature(scalar)
                .with_kernel(kernel);
            let y = run(ctx, x, Shape::new(rows, cols), &options, inputs()).unwrap();
            check(&y, x, Shape::new(rows, cols), &options, &inputs());
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
    let ctx = ctx();
    for kernel in kernels(ctx) {
        for (rows, cols) in SHAPES {
            let x = normal_matrix(8, rows * cols, 2.0);
            let m = mask(2, cols, 9);
            let lengths: Vec<u32> = (0..rows as u32).map(|r| cols as u32 - r).collect();
            let temps: Vec<f32> = (0..rows).map(|r| 0.5 + r as f32).collect();
            let inputs = || {
                HostInputs::default()
                    .with_mask(&m, 2)
                    .with_lengths(&lengths)
                    .with_temperatures(&temps)
            };
            let o = Options::log_softmax()
                .with_kernel(kernel)
                .with_temperature(1.5)
                .with_causal(2)
                .with_masked_rows(MaskedRows::Zero);
            let shape = Shape::new(rows, cols);
            // NaN until written: a row the op does not write fails the comparison.
            let mut y = vec![f32::NAN; x.len()];
            let mut stats = vec![[f32::NAN; 2]; rows];
            block_on(ctx.run(&x, &mut y, shape, &o, inputs().with_stats_out(&mut stats))).unwrap();
            check(&y, &x, shape, &o, &inputs());
            let want = row_stats_f64_with(&x, cols, &o, &inputs());
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
            let again = run(ctx, &x, shape, &o, inputs().with_stats_given(&stats)).unwrap();
            check(&again, &x, shape, &o, &inputs());
        }
    }
}

#[test]
fn row_inputs_follow_their_rows_across_host_chunks() {
    // Tiny chunks: every chunk starts at another row, and mask rows, lengths and
    // temperatures must still be those of the whole matrix's rows.
    let options = ContextOptions::default().with_host_chunk_bytes(4096);
    let small = block_on(Context::new(options)).unwrap();
    let (rows, cols) = (37, 300);
    let x = normal_matrix(10, rows * cols, 2.0);
    let m = mask(3, cols, 11);
    let lengths: Vec<u32> = (0..rows as u32)
        .map(|r| (r * 7) % cols as u32 + 1)
        .collect();
    let temps: Vec<f32> = (0..rows).map(|r| 1.0 + (r % 3) as f32).collect();
    let inputs = HostInputs::default()
        .with_mask(&m, 3)
        .with_lengths(&lengths)
        .with_temperatures(&temps);
    let o = Options::softmax().with_causal(5);
    run_checked(&small, &x, Shape::new(rows, cols), &o, inputs);
}

#[test]
fn the_resident_api_with_row_inputs_at_offsets() {
    let ctx = ctx();
    let (rows, cols) = (6, 100);
    let shape = Shape::new(rows, cols);
    let x = normal_matrix(12, rows * cols, 2.0);
    let m = mask(2, cols, 13);
    let lengths: Vec<u32> = vec![100, 50, 0, 7, 100, 99];
    let temps: Vec<f32> = vec![1.0, 2.0, 0.5, 1.0, 3.0, 1.0];
    // Each row input `lead` bytes into a buffer of its own.
    let at = |bytes: &[u8], lead: usize| {
        let mut padded = vec![0u8; lead];
        padded.extend_from_slice(bytes);
        storage_buffer(ctx.device(), ctx.queue(), &padded)
    };
    let input = upload(ctx, &x);
    let output = upload(ctx, &vec![0.0f32; x.len()]);
    let mask_buffer = at(bytemuck::cast_slice(&m), 12);
    let lengths_buffer = at(bytemuck::cast_slice(&lengths), 4);
    let temps_buffer = at(bytemuck::cast_slice(&temps), 260);
    let resident = RowInputs::default()
        .with_mask(MaskView::new(&mask_buffer, 2).with_offset(12))
        .with_lengths(Region::new(&lengths_buffer).with_offset(4))
        .with_temperatures(Region::new(&temps_buffer).with_offset(260));
    let o = Options::softmax().with_causal(40);
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    ctx.encode(
        &mut encoder,
        MatrixView::new(&input),
        MatrixView::new(&output),
        shape,
        &o,
        &resident,
    )
    .unwrap();
    ctx.queue().submit([encoder.finish()]);
    let y: Vec<f32> = read_back(ctx, &output);
    let host = HostInputs::default()
        .with_mask(&m, 2)
        .with_lengths(&lengths)
        .with_temperatures(&temps);
    check(&y, &x, shape, &o, &host);
}

#[test]
fn inputs_of_the_wrong_length_are_refused() {
    let ctx = ctx();
    let x = vec![0.0f32; 12];
    let shape = Shape::new(3, 4);
    let o = Options::softmax();
    let short = [1.0f32; 2];
    let e = run(
        ctx,
        &x,
        shape,
        &o,
        HostInputs::default().with_temperatures(&short),
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
    let e = run(
        ctx,
        &x,
        shape,
        &o,
        HostInputs::default().with_lengths(&[1, 2]),
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
    let e = run(ctx, &x, shape, &o, HostInputs::default().with_mask(&m, 1)).unwrap_err();
    assert_eq!(
        e,
        Error::InputLength {
            which: "mask",
            expected: 4,
            actual: 5
        }
    );
    // The same for a 16-bit mask: counted in values, not bytes.
    let mh = [wgpu_softmax::half::bf16::ZERO; 7];
    let e = run(ctx, &x, shape, &o, HostInputs::default().with_mask(&mh, 2)).unwrap_err();
    assert_eq!(
        e,
        Error::InputLength {
            which: "mask",
            expected: 8,
            actual: 7
        }
    );
    // Statistics, written or given, hold one pair per row.
    let mut out = [[0.0f32; 2]; 4];
    let e = run(
        ctx,
        &x,
        shape,
        &o,
        HostInputs::default().with_stats_out(&mut out),
    )
    .unwrap_err();
    assert_eq!(
        e,
        Error::InputLength {
            which: "stats",
            expected: 3,
            actual: 4
        }
    );
    let given = [[0.0f32; 2]; 2];
    let e = run(
        ctx,
        &x,
        shape,
        &o,
        HostInputs::default().with_stats_given(&given),
    )
    .unwrap_err();
    assert_eq!(
        e,
        Error::InputLength {
            which: "stats",
            expected: 3,
            actual: 2
        }
    );
}

#[test]
fn a_device_with_default_limits_refuses_row_inputs_but_runs_plain_softmax() {
    let (device, queue) = app_device(wgpu::Limits::default());
    let ctx = Context::from_device(&device, &queue, ContextOptions::default()).unwrap();
    let x = normal_matrix(14, 3 * 50, 1.0);
    let shape = Shape::new(3, 50);
    run_checked(&ctx, &x, shape, &Options::softmax(), HostInputs::default());
    run_checked(
        &ctx,
        &x,
        shape,
        &Options::softmax().with_causal(1),
        HostInputs::default(),
    );
    let lengths = [1u32, 2, 3];
    let e = run(
        &ctx,
        &x,
        shape,
        &Options::softmax(),
        HostInputs::default().with_lengths(&lengths),
    )
    .unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e}");
}
