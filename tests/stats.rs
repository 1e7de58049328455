//! Row statistics: each row's (max, log-sum-exp) written beside the softmax, and rows
//! normalised with given statistics, so that a vocabulary split by columns across
//! devices is softmaxed exactly.

mod common;

use common::{check_output, ctx, normal_matrix};
use wgpu_softmax::reference::row_stats_f64;
use wgpu_softmax::wgpu;
use wgpu_softmax::{
    combine_stats, Context, Error, HostInputs, MaskedRows, MatrixView, Options, Region, RowInputs,
    RowKernel, Shape, StatsView,
};

fn none() -> HostInputs<'static> {
    HostInputs::default()
}

fn kernels(ctx: &Context) -> Vec<RowKernel> {
    RowKernel::ALL
        .into_iter()
        .filter(|k| !k.needs_subgroups() || ctx.caps().subgroups)
        .collect()
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
    let Some(ctx) = ctx() else { return };
    for kernel in kernels(ctx) {
        for cols in [3, 64, 1025, 40_000] {
            let x = awkward_matrix(5, cols, cols as u64);
            for t in [1.0, 2.5] {
                let o = Options::softmax().with_kernel(kernel).with_temperature(t);
                let shape = Shape::new(5, cols);
                let (y, stats) = ctx.run_with_stats_blocking(&x, shape, &o, &none()).unwrap();
                check_output(&y, &x, shape, &o);
                check_stats(&stats, &x, cols, t);
            }
        }
    }
}

#[test]
fn given_statistics_reproduce_the_softmax_with_every_kernel() {
    let Some(ctx) = ctx() else { return };
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
                    let (_, stats) = ctx.run_with_stats_blocking(&x, shape, &o, &none()).unwrap();
                    let y = ctx
                        .run_with_given_stats_blocking(&x, &stats, shape, &o, &none())
                        .unwrap();
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
    let Some(first) = ctx() else { return };
    // A second context: its own device, as a second GPU would be.
    let second = Context::new_blocking().unwrap();
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
        let (_, sa) = first
            .run_with_stats_blocking(&xa, shape_a, &options, &none())
            .unwrap();
        let (_, sb) = second
            .run_with_stats_blocking(&xb, shape_b, &options, &none())
            .unwrap();
        let combined: Vec<[f32; 2]> = sa
            .iter()
            .zip(&sb)
            .map(|(a, b)| combine_stats(*a, *b))
            .collect();
        check_stats(&combined, &x, cols, options.temperature);
        let ya = first
            .run_with_given_stats_blocking(&xa, &combined, shape_a, &options, &none())
            .unwrap();
        let yb = second
            .run_with_given_stats_blocking(&xb, &combined, shape_b, &options, &none())
            .unwrap();
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
    let Some(ctx) = ctx() else { return };
    let (rows, cols) = (3, 100);
    let shape = Shape::new(rows, cols);
    let x = normal_matrix(5, rows * cols, 2.0);
    let usage =
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC;
    let make = |size| {
        ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage,
            mapped_at_creation: false,
        })
    };
    let input = make((x.len() * 4) as u64);
    let output = make((x.len() * 4) as u64);
    let stats = make(40 + rows as u64 * 8 + 8);
    ctx.queue()
        .write_buffer(&input, 0, bytemuck::cast_slice(&x));
    ctx.queue().write_buffer(&stats, 0, &[0xAB; 40]);
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    let view = StatsView::write(&stats).with_offset(40);
    ctx.encode_with_stats(
        &mut encoder,
        MatrixView::new(&input),
        MatrixView::new(&output),
        shape,
        &Options::softmax(),
        view,
    )
    .unwrap();
    let staging = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: stats.size(),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    encoder.copy_buffer_to_buffer(&stats, 0, &staging, 0, stats.size());
    ctx.queue().submit([encoder.finish()]);
    staging.map_async(wgpu::MapMode::Read, .., |r| r.expect("map"));
    ctx.device()
        .poll(wgpu::PollType::wait_indefinitely())
        .unwrap();
    let bytes = staging.get_mapped_range(..).unwrap().to_vec();
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
    let Some(ctx) = ctx() else { return };
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
        ctx.encode_with_stats(
            &mut encoder,
            MatrixView::new(&m),
            MatrixView::new(&m),
            shape,
            &Options::softmax(),
            view,
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
    let e = ctx
        .run_with_given_stats_blocking(
            &[0.0; 6],
            &[[0.0, 0.0]],
            Shape::new(2, 3),
            &Options::softmax(),
            &none(),
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
    let Some(ctx) = ctx() else { return };
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
        ctx.encode_with(
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
        mask: Some((at(offset), 1)),
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
