//! Row statistics: each row's (max, log-sum-exp) written beside the softmax, and rows
//! normalised with given statistics, so that a vocabulary split by columns across
//! devices is softmaxed exactly.

mod common;

use common::{check_output, ctx, kernels, normal_matrix, read_bytes, run, storage_buffer, upload};
use wgpu_softmax::internals::reference::row_stats_f64;
use wgpu_softmax::wgpu;
use wgpu_softmax::{
    block_on, combine_stats, Context, ContextOptions, Error, HostInputs, MaskView, MaskedRows,
    MatrixView, Options, Region, Result, RowInputs, Shape, StatsView,
};

/// The host path with each row's statistics written: the output and the statistics.
fn run_with_stats(
    ctx: &Context,
    x: &[f32],
    shape: Shape,
    options: &Options,
) -> Result<(Vec<f32>, Vec<[f32; 2]>)> {
    let mut stats = vec![[0.0f32; 2]; shape.rows];
    let y = run(
        ctx,
        x,
        shape,
        options,
        HostInputs::default().with_stats_out(&mut stats),
    )?;
    Ok((y, stats))
}

/// The host path with rows normalised by the given statistics.
fn run_with_given_stats(
    ctx: &Context,
    x: &[f32],
    stats: &[[f32; 2]],
    shape: Shape,
    options: &Options,
) -> Result<Vec<f32>> {
    run(
        ctx,
        x,
        shape,
        options,
        HostInputs::default().with_stats_given(stats),
    )
}

/// Statistics within f32 rounding of the f64 ones; NaN and -inf exactly.
fn check_stats(got: &[[f32; 2]], input: &[f32], cols: usize, temperature: f32) {
    let want = row_stats_f64(input, cols, temperature);
    for (r, (g, w)) in got.iter().zip(&want).enumerate() {
        for k in 0..2 {
            let (g, w) = (g[k], w[k]);
            let ok = if w.is_nan() {
                g.is_nan()
            } else if w.is_infinite() {
                f64::from(g) == w
            } else {
                (f64::from(g) - w).abs() <= 1e-5 + 1e-6 * w.abs()
            };
            assert!(ok, "row {r} stat {k}: {g} vs {w}");
        }
    }
}

/// Rows of normal values, one row of only -inf and one with a NaN.
fn awkward_matrix(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut x = normal_matrix(seed, rows * cols, 3.0);
    if rows >= 3 {
        x[cols..2 * cols].fill(f32::NEG_INFINITY);
        x[2 * cols + cols / 2] = f32::NAN;
    }
    x
}

#[test]
fn written_statistics_match_the_reference_with_every_kernel() {
    let ctx = ctx();
    for kernel in kernels(ctx) {
        for cols in [3, 64, 1025, 40_000] {
            let x = awkward_matrix(5, cols, cols as u64);
            for t in [1.0, 2.5] {
                let o = Options::softmax().with_kernel(kernel).with_temperature(t);
                let shape = Shape::new(5, cols);
                let (y, stats) = run_with_stats(ctx, &x, shape, &o).unwrap();
                check_output(&y, &x, shape, &o);
                check_stats(&stats, &x, cols, t);
            }
        }
    }
}

#[test]
fn given_statistics_reproduce_the_softmax_with_every_kernel() {
    let ctx = ctx();
    for kernel in kernels(ctx) {
        for cols in [3, 64, 1025, 40_000] {
            let x = awkward_matrix(5, cols, 7 + cols as u64);
            let shape = Shape::new(5, cols);
            for base in [Options::softmax(), Options::log_softmax()] {
                for masked in [MaskedRows::Nan, MaskedRows::Zero] {
                    let o = base
                        .with_kernel(kernel)
                        .with_temperature(0.7)
                        .with_masked_rows(masked);
                    let (_, stats) = run_with_stats(ctx, &x, shape, &o).unwrap();
                    let y = run_with_given_stats(ctx, &x, &stats, shape, &o).unwrap();
                    check_output(&y, &x, shape, &o);
                }
            }
        }
    }
}

/// Splits each row's columns at `at`: the two shards of a vocabulary.
fn split_columns(x: &[f32], cols: usize, at: usize) -> (Vec<f32>, Vec<f32>) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for row in x.chunks(cols) {
        a.extend_from_slice(&row[..at]);
        b.extend_from_slice(&row[at..]);
    }
    (a, b)
}

#[test]
fn a_vocabulary_sharded_across_two_contexts_matches_the_unsplit_softmax() {
    let first = ctx();
    // A second context: its own device, as a second GPU would be.
    let second = block_on(Context::new(ContextOptions::default())).unwrap();
    let (rows, cols, at) = (6, 5000, 1999);
    let mut x = awkward_matrix(rows, cols, 99);
    // A row masked in one shard only, and a row whose max lies in the second shard.
    x[3 * cols..3 * cols + at].fill(f32::NEG_INFINITY);
    x[4 * cols + at + 17] = 40.0;
    let (xa, xb) = split_columns(&x, cols, at);
    for options in [
        Options::softmax(),
        Options::log_softmax().with_temperature(2.0),
    ] {
        let (shape_a, shape_b) = (Shape::new(rows, at), Shape::new(rows, cols - at));
        let (_, sa) = run_with_stats(first, &xa, shape_a, &options).unwrap();
        let (_, sb) = run_with_stats(&second, &xb, shape_b, &options).unwrap();
        let combined: Vec<[f32; 2]> = sa
            .iter()
            .zip(&sb)
            .map(|(a, b)| combine_stats(*a, *b))
            .collect();
        check_stats(&combined, &x, cols, options.temperature);
        let ya = run_with_given_stats(first, &xa, &combined, shape_a, &options).unwrap();
        let yb = run_with_given_stats(&second, &xb, &combined, shape_b, &options).unwrap();
        let mut y = Vec::with_capacity(x.len());
        for (ra, rb) in ya.chunks(at).zip(yb.chunks(cols - at)) {
            y.extend_from_slice(ra);
            y.extend_from_slice(rb);
        }
        check_output(&y, &x, Shape::new(rows, cols), &options);
    }
}

#[test]
fn combining_statistics_is_a_max_and_a_log_add() {
    let c = combine_stats([1.0, 2.0], [3.0, 2.5]);
    assert_eq!(c[0], 3.0);
    let want = (2.0f64.exp() + 2.5f64.exp()).ln();
    assert!((f64::from(c[1]) - want).abs() < 1e-6);
    let masked = [f32::NEG_INFINITY; 2];
    assert_eq!(combine_stats(masked, [1.0, 4.0]), [1.0, 4.0]);
    assert_eq!(combine_stats([1.0, 4.0], masked), [1.0, 4.0]);
    assert_eq!(combine_stats(masked, masked)[1], f32::NEG_INFINITY);
    assert!(combine_stats([f32::NAN; 2], [1.0, 4.0])[1].is_nan());
    // Far apart: the smaller adds nothing representable.
    assert_eq!(combine_stats([1e30, 1e30], [0.0, 0.0]), [1e30, 1e30]);
}

#[test]
fn resident_statistics_at_an_offset() {
    let ctx = ctx();
    let (rows, cols) = (3, 100);
    let shape = Shape::new(rows, cols);
    let x = normal_matrix(5, rows * cols, 2.0);
    let input = upload(ctx, &x);
    let output = upload(ctx, &vec![0.0f32; x.len()]);
    let mut before = vec![0u8; 40 + rows * 8 + 8];
    before[..40].fill(0xAB);
    let stats = storage_buffer(ctx.device(), ctx.queue(), &before);
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    let view = StatsView::write(&stats).with_offset(40);
    ctx.encode(
        &mut encoder,
        MatrixView::new(&input),
        MatrixView::new(&output),
        shape,
        &Options::softmax(),
        &RowInputs::default().with_stats(view),
    )
    .unwrap();
    ctx.queue().submit([encoder.finish()]);
    let bytes = read_bytes(ctx.device(), ctx.queue(), &stats);
    assert!(
        bytes[..40].iter().all(|b| *b == 0xAB),
        "bytes before the offset were written"
    );
    let got: Vec<[f32; 2]> =
        bytemuck::cast_slice::<u8, [f32; 2]>(&bytes[40..40 + rows * 8]).to_vec();
    check_stats(&got, &x, cols, 1.0);
}

#[test]
fn bad_statistics_buffers_are_refused() {
    let ctx = ctx();
    let make = |size, usage| {
        ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage,
            mapped_at_creation: false,
        })
    };
    let storage = wgpu::BufferUsages::STORAGE;
    let m = make(4096, storage);
    let shape = Shape::new(4, 8);
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    let mut try_stats = |view: StatsView| {
        ctx.encode(
            &mut encoder,
            MatrixView::new(&m),
            MatrixView::new(&m),
            shape,
            &Options::softmax(),
            &RowInputs::default().with_stats(view),
        )
    };
    let small = make(24, storage);
    assert!(matches!(
        try_stats(StatsView::write(&small)),
        Err(Error::BufferTooSmall { which: "stats", .. })
    ));
    let big = make(256, storage);
    assert!(matches!(
        try_stats(StatsView::write(&big).with_offset(4)),
        Err(Error::Misaligned { required: 8, .. })
    ));
    let plain = make(256, wgpu::BufferUsages::COPY_DST);
    assert!(matches!(
        try_stats(StatsView::write(&plain)),
        Err(Error::MissingUsage { which: "stats", .. })
    ));
    let e = run_with_given_stats(
        ctx,
        &[0.0; 6],
        &[[0.0, 0.0]],
        Shape::new(2, 3),
        &Options::softmax(),
    )
    .unwrap_err();
    assert_eq!(
        e,
        Error::InputLength {
            which: "stats",
            expected: 2,
            actual: 1
        }
    );
}

#[test]
fn regions_the_op_writes_must_not_share_bytes_with_the_others() {
    let ctx = ctx();
    let buffer = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 4096,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    // A 4 x 8 f32 matrix: input at bytes 0..128, output at 1024..1152.
    let shape = Shape::new(4, 8);
    let (input, output) = (
        MatrixView::new(&buffer),
        MatrixView::new(&buffer).with_offset(1024),
    );
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    let mut encode = |inputs: RowInputs| {
        ctx.encode(
            &mut encoder,
            input,
            output,
            shape,
            &Options::softmax(),
            &inputs,
        )
    };
    let at = |offset| Region::new(&buffer).with_offset(offset);
    let write = |offset| StatsView::write(&buffer).with_offset(offset);
    let given = |offset| StatsView::given(&buffer).with_offset(offset);
    let overlap = |written, other| Err(Error::RegionOverlap { written, other });
    // Written statistics inside the output, the input, or a row input.
    let cases = [
        (write(1088), overlap("output", "stats")),
        (write(64), overlap("stats", "input")),
        (write(2048), Ok(())),
        (given(1088), overlap("output", "stats")),
        // Given statistics are only read: inside the input is fine.
        (given(64), Ok(())),
    ];
    for (view, want) in cases {
        let inputs = RowInputs {
            stats: Some(view),
            ..RowInputs::default()
        };
        assert_eq!(encode(inputs), want, "stats at {}", view.offset);
    }
    // Row inputs are read while the output is written; beside the input is fine.
    let with_mask = |offset| RowInputs {
        mask: Some(MaskView::new(&buffer, 1).with_offset(offset)),
        ..RowInputs::default()
    };
    assert_eq!(encode(with_mask(1100)), overlap("output", "mask"));
    assert_eq!(encode(with_mask(96)), Ok(()));
    let with_lengths = RowInputs {
        lengths: Some(at(1148)),
        ..RowInputs::default()
    };
    assert_eq!(encode(with_lengths), overlap("output", "lengths"));
    let stats_on_temperatures = RowInputs {
        temperatures: Some(at(3000)),
        stats: Some(write(3008)),
        ..RowInputs::default()
    };
    assert_eq!(
        encode(stats_on_temperatures),
        overlap("stats", "temperatures")
    );
}
