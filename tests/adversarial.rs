//! Faults an adversarial pass found (issue 13), one test each: a buffer of another
//! context, a `-inf` mask over `+inf` or NaN, a cached binding naming a destroyed
//! buffer, interleaved views, and the exact least temperature.

mod common;

use std::sync::{Arc, Mutex};

use common::{app_device, ctx, kernels, normal_matrix, read_back, storage_buffer, upload};
use half::{bf16, f16};
use wgpu_softmax::internals::reference::{
    backward_f64, first_mismatch, row_stats_f64_with, softmax_f64_with, Tolerance, BACKWARD_F32,
};
use wgpu_softmax::{
    block_on, half, wgpu, Context, ContextOptions, Element, Error, HostInputs, MaskView,
    MatrixView, Options, Region, RowInputs, Shape, StatsView, MIN_TEMPERATURE,
};

const SENTINEL: f32 = 12345.0;

/// One way of recording a call into an encoder.
type EncodeCall<'a> = dyn Fn(&mut wgpu::CommandEncoder) -> wgpu_softmax::Result<()> + 'a;

/// A context of its own (a device of its own), as two `Context::new` calls give.
fn own_context() -> Context {
    block_on(Context::new(ContextOptions::default())).expect("context")
}

#[test]
fn a_buffer_of_another_context_is_refused_and_nothing_crosses() {
    let (a, b) = (own_context(), own_context());
    let shape = Shape::new(4, 64);
    let n = shape.rows * shape.cols;
    let x = normal_matrix(1, n, 2.0);
    // Each side: its own matrix, and a sentinel buffer the kernels must never touch.
    let a_matrix = upload(&a, &x);
    let a_sentinel = upload(&a, &vec![SENTINEL; n]);
    let b_matrix = upload(&b, &x);
    let b_sentinel = upload(&b, &vec![SENTINEL; n]);
    let b_small = upload(&b, &vec![1.0f32; shape.rows * 2]);
    let b_lengths = upload(&b, &vec![3u32; shape.rows]);
    let options = Options::softmax();
    let calls: Vec<(&str, Box<EncodeCall>)> = vec![
        (
            "output",
            Box::new(|e| {
                a.encode(
                    e,
                    MatrixView::new(&a_matrix),
                    MatrixView::new(&b_sentinel),
                    shape,
                    &options,
                    &RowInputs::NONE,
                )
            }),
        ),
        (
            "input",
            Box::new(|e| {
                a.encode(
                    e,
                    MatrixView::new(&b_matrix),
                    MatrixView::new(&a_sentinel),
                    shape,
                    &options,
                    &RowInputs::NONE,
                )
            }),
        ),
        (
            "mask",
            Box::new(|e| {
                let inputs = RowInputs::NONE.with_mask(MaskView::new(&b_matrix, shape.rows));
                a.encode(
                    e,
                    MatrixView::new(&a_matrix),
                    MatrixView::new(&a_sentinel),
                    shape,
                    &options,
                    &inputs,
                )
            }),
        ),
        (
            "lengths",
            Box::new(|e| {
                let inputs = RowInputs::NONE.with_lengths(Region::new(&b_lengths));
                a.encode(
                    e,
                    MatrixView::new(&a_matrix),
                    MatrixView::new(&a_sentinel),
                    shape,
                    &options,
                    &inputs,
                )
            }),
        ),
        (
            "temperatures",
            Box::new(|e| {
                let inputs = RowInputs::NONE.with_temperatures(Region::new(&b_small));
                a.encode(
                    e,
                    MatrixView::new(&a_matrix),
                    MatrixView::new(&a_sentinel),
                    shape,
                    &options,
                    &inputs,
                )
            }),
        ),
        (
            "stats",
            Box::new(|e| {
                let inputs = RowInputs::NONE.with_stats(StatsView::write(&b_small));
                a.encode(
                    e,
                    MatrixView::new(&a_matrix),
                    MatrixView::new(&a_sentinel),
                    shape,
                    &options,
                    &inputs,
                )
            }),
        ),
        (
            "backward grad",
            Box::new(|e| {
                a.encode_backward(
                    e,
                    MatrixView::new(&a_matrix),
                    MatrixView::new(&b_sentinel),
                    shape,
                    &options,
                )
            }),
        ),
    ];
    for (which, call) in calls {
        let mut encoder = a.device().create_command_encoder(&Default::default());
        match call(&mut encoder) {
            Err(Error::Validation(message)) => eprintln!("{which}: refused: {message}"),
            other => panic!("a foreign {which} buffer: expected Err(Validation), got {other:?}"),
        }
        a.queue().submit([encoder.finish()]);
        a.device()
            .poll(wgpu::PollType::wait_indefinitely())
            .expect("poll");
    }
    for (side, ctx, sentinel, matrix) in [
        ("a", &a, &a_sentinel, &a_matrix),
        ("b", &b, &b_sentinel, &b_matrix),
    ] {
        let s: Vec<f32> = read_back(ctx, sentinel);
        assert!(
            s.iter().all(|&v| v == SENTINEL),
            "{side}'s sentinel was written"
        );
        let m: Vec<f32> = read_back(ctx, matrix);
        assert_eq!(m, x, "{side}'s matrix was written");
    }
}

/// The values a mask test puts under the mask: `-inf` mask entries over NaN, `+inf`
/// and ordinary values, finite mask entries over ordinary values.
fn masked_poison(shape: Shape) -> (Vec<f32>, Vec<f32>) {
    let mut x = normal_matrix(9, shape.rows * shape.cols, 2.0);
    let mut mask = vec![0.25f32; shape.rows * shape.cols];
    for r in 0..shape.rows {
        for c in 0..shape.cols {
            let i = r * shape.cols + c;
            match (r + c) % 5 {
                0 => {
                    x[i] = f32::NAN;
                    mask[i] = f32::NEG_INFINITY;
                }
                1 => {
                    x[i] = f32::INFINITY;
                    mask[i] = f32::NEG_INFINITY;
                }
                2 => mask[i] = f32::NEG_INFINITY,
                _ => {}
            }
        }
    }
    (x, mask)
}

fn mask_as<T: Element>(mask: &[f32]) -> Vec<T> {
    mask.iter().map(|&v| T::from_f32(v)).collect()
}

fn check_masked<T: Element>(ctx: &Context, shape: Shape, options: &Options) {
    let (x, mask) = masked_poison(shape);
    let mask_t: Vec<T> = mask_as(&mask);
    // Host path, with the statistics.
    let mut y = vec![0.0f32; x.len()];
    let mut stats = vec![[0.0f32; 2]; shape.rows];
    let inputs = HostInputs::default()
        .with_mask(&mask_t, shape.rows)
        .with_stats_out(&mut stats);
    block_on(ctx.run(&x, &mut y, shape, options, inputs)).expect("host run");
    let reference_inputs = HostInputs::default().with_mask(&mask_t, shape.rows);
    let want = softmax_f64_with(&x, shape.cols, options, &reference_inputs);
    assert!(
        y.iter().all(|v| !v.is_nan()),
        "{shape:?} {:?}: NaN in the output",
        T::DTYPE
    );
    if let Some((i, got, r)) = first_mismatch(&y, &want, Tolerance::for_op(options.op)) {
        panic!(
            "{shape:?} {:?} host: element {i} is {got:e}, reference {r:e}",
            T::DTYPE
        );
    }
    let want_stats = row_stats_f64_with(&x, shape.cols, options, &reference_inputs);
    for (r, (got, want)) in stats.iter().zip(&want_stats).enumerate() {
        assert!(
            got[0].is_finite() && got[1].is_finite(),
            "row {r} stats {got:?}"
        );
        assert!(
            (f64::from(got[1]) - want[1]).abs() <= 1e-5 * (1.0 + want[1].abs()),
            "row {r}"
        );
    }
    // Resident path, the mask in a buffer of the same storage type.
    let input = upload(ctx, &x);
    let output = upload(ctx, &vec![0.0f32; x.len()]);
    let mask_buffer = storage_buffer(ctx.device(), ctx.queue(), bytemuck::cast_slice(&mask_t));
    let inputs =
        RowInputs::NONE.with_mask(MaskView::new(&mask_buffer, shape.rows).with_dtype(T::DTYPE));
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    ctx.encode(
        &mut encoder,
        MatrixView::new(&input),
        MatrixView::new(&output),
        shape,
        options,
        &inputs,
    )
    .expect("encode");
    ctx.queue().submit([encoder.finish()]);
    let resident: Vec<f32> = read_back(ctx, &output);
    if let Some((i, got, r)) = first_mismatch(&resident, &want, Tolerance::for_op(options.op)) {
        panic!(
            "{shape:?} {:?} resident: element {i} is {got:e}, reference {r:e}",
            T::DTYPE
        );
    }
}

#[test]
fn a_minus_inf_mask_excludes_its_column_whatever_the_input_holds() {
    let ctx = ctx();
    for kernel in kernels(ctx) {
        for (rows, cols) in [(5, 7), (3, 130), (2, 2051), (2, 40_000)] {
            let shape = Shape::new(rows, cols);
            for op in [
                Options::softmax(),
                Options::log_softmax().with_temperature(0.5),
            ] {
                let options = op.with_kernel(kernel);
                check_masked::<f32>(ctx, shape, &options);
                check_masked::<f16>(ctx, shape, &options);
                check_masked::<bf16>(ctx, shape, &options);
            }
        }
    }
}

#[test]
fn a_finite_mask_over_nan_or_plus_inf_still_poisons_the_row() {
    let ctx = ctx();
    let shape = Shape::new(2, 9);
    let mut x = normal_matrix(3, 18, 1.0);
    x[4] = f32::NAN;
    x[9 + 2] = f32::INFINITY;
    let mask = vec![0.5f32; 18];
    let mut y = vec![0.0f32; 18];
    let inputs = HostInputs::default().with_mask(&mask, 2);
    block_on(ctx.run(&x, &mut y, shape, &Options::softmax(), inputs)).expect("run");
    assert!(y.iter().all(|v| v.is_nan()), "{y:?}");
}

#[test]
fn the_backward_pass_of_a_masked_row_over_nan_is_finite() {
    let ctx = ctx();
    let shape = Shape::new(3, 40);
    let (x, mask) = masked_poison(shape);
    let options = Options::softmax();
    let mut y = vec![0.0f32; x.len()];
    let inputs = HostInputs::default().with_mask(&mask, shape.rows);
    block_on(ctx.run(&x, &mut y, shape, &options, inputs)).expect("forward");
    let dy = normal_matrix(4, x.len(), 1.0);
    let mut dx = vec![0.0f32; x.len()];
    block_on(ctx.run_backward(&y, &dy, &mut dx, shape, &options)).expect("backward");
    assert!(dx.iter().all(|v| v.is_finite()));
    let want = backward_f64(&y, &dy, shape.cols, &options);
    assert_eq!(first_mismatch(&dx, &want, BACKWARD_F32), None);
    for (i, m) in mask.iter().enumerate() {
        if *m == f32::NEG_INFINITY {
            assert_eq!(dx[i], 0.0, "masked element {i}");
        }
    }
}

#[test]
fn a_repeated_call_on_a_destroyed_buffer_is_refused_not_left_to_submit() {
    let (device, queue) = app_device(wgpu::Limits::default());
    let uncaptured = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = uncaptured.clone();
    device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
        sink.lock().unwrap().push(e.to_string());
    }));
    let ctx = Context::from_device(&device, &queue, ContextOptions::default()).expect("context");
    let shape = Shape::new(3, 100);
    let x = normal_matrix(5, 300, 1.0);
    let a = storage_buffer(&device, &queue, bytemuck::cast_slice(&x));
    let b = storage_buffer(&device, &queue, &[0u8; 1200]);
    let encode = |encoder: &mut wgpu::CommandEncoder| {
        ctx.encode(
            encoder,
            MatrixView::new(&a),
            MatrixView::new(&b),
            shape,
            &Options::softmax(),
            &RowInputs::NONE,
        )
    };
    let mut encoder = device.create_command_encoder(&Default::default());
    encode(&mut encoder).expect("first call");
    queue.submit([encoder.finish()]);
    b.destroy();
    let mut encoder = device.create_command_encoder(&Default::default());
    match encode(&mut encoder) {
        Err(Error::BufferDestroyed { which: "output" }) => {}
        other => panic!("a repeated call on a destroyed output: {other:?}"),
    }
    // Nothing was recorded: the encoder submits cleanly.
    queue.submit([encoder.finish()]);
    device
        .poll(wgpu::PollType::wait_indefinitely())
        .expect("poll");
    // A first call (no cached binding) on a destroyed input is refused the same way.
    a.destroy();
    let c = storage_buffer(&device, &queue, &[0u8; 1200]);
    let mut encoder = device.create_command_encoder(&Default::default());
    match ctx.encode(
        &mut encoder,
        MatrixView::new(&a),
        MatrixView::new(&c),
        shape,
        &Options::softmax(),
        &RowInputs::NONE,
    ) {
        Err(Error::BufferDestroyed { which: "input" }) => {}
        other => panic!("a first call on a destroyed input: {other:?}"),
    }
    queue.submit([encoder.finish()]);
    device
        .poll(wgpu::PollType::wait_indefinitely())
        .expect("poll");
    assert_eq!(*uncaptured.lock().unwrap(), Vec::<String>::new());
}

#[test]
fn interleaved_views_that_share_no_byte_are_accepted_and_real_overlap_refused() {
    let ctx = ctx();
    let shape = Shape::new(6, 40);
    // Rows of the input at even row slots, rows of the output at odd ones.
    let x = normal_matrix(6, shape.rows * shape.cols, 2.0);
    let mut buf = vec![SENTINEL; 2 * shape.rows * shape.cols];
    for r in 0..shape.rows {
        buf[2 * r * shape.cols..(2 * r + 1) * shape.cols]
            .copy_from_slice(&x[r * shape.cols..(r + 1) * shape.cols]);
    }
    let buffer = upload(ctx, &buf);
    let stride = 2 * shape.cols;
    let input = MatrixView::new(&buffer).with_row_stride(stride);
    let output = MatrixView::new(&buffer)
        .with_row_stride(stride)
        .with_offset(shape.cols as u64 * 4);
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    ctx.encode(
        &mut encoder,
        input,
        output,
        shape,
        &Options::softmax(),
        &RowInputs::NONE,
    )
    .expect("interleaved rows share no byte");
    ctx.queue().submit([encoder.finish()]);
    let got: Vec<f32> = read_back(ctx, &buffer);
    let y: Vec<f32> = (0..shape.rows)
        .flat_map(|r| got[(2 * r + 1) * shape.cols..(2 * r + 2) * shape.cols].to_vec())
        .collect();
    common::check_output(&y, &x, shape, &Options::softmax());
    // Shifted by one element, the output's rows overlap the input's.
    let shifted = MatrixView::new(&buffer)
        .with_row_stride(stride)
        .with_offset(4);
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    assert_eq!(
        ctx.encode(
            &mut encoder,
            input,
            shifted,
            shape,
            &Options::softmax(),
            &RowInputs::NONE
        ),
        Err(Error::PartialOverlap)
    );
}

#[test]
fn the_least_temperature_is_exact_and_documented() {
    let ctx = ctx();
    let below = f32::from_bits(MIN_TEMPERATURE.to_bits() - 1);
    assert!((1.0 / MIN_TEMPERATURE).is_finite() && (1.0 / below).is_infinite());
    let x = [1e-38f32, 0.0, -1e-38];
    let shape = Shape::new(1, 3);
    common::check_host(
        ctx,
        &x,
        shape,
        &Options::softmax().with_temperature(MIN_TEMPERATURE),
    );
    for t in [below, 2.9e-39] {
        let options = Options::softmax().with_temperature(t);
        match common::softmax(ctx, &x, shape, &options) {
            Err(e @ Error::InvalidTemperature(_)) => {
                assert!(e.to_string().contains("2.93874e-39"), "{e}")
            }
            other => panic!("temperature {t:e}: {other:?}"),
        }
    }
}
