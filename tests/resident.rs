//! The GPU-resident API: recording into the caller's encoder, with the caller's buffers,
//! offsets, strides, in-place use, and the caller's own device.

mod common;

use common::{
    app_device, check_output, ctx, kernels, normal_matrix, read_back, read_bytes, softmax,
    storage_buffer, upload,
};
use wgpu_softmax::wgpu;
use wgpu_softmax::{Context, ContextOptions, MatrixView, Options, RowInputs, Shape};

/// Runs `encode` on a fresh encoder and submits it.
fn submit(ctx: &Context, input: MatrixView, output: MatrixView, shape: Shape, options: &Options) {
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    ctx.encode(
        &mut encoder,
        input,
        output,
        shape,
        options,
        &RowInputs::NONE,
    )
    .expect("encode");
    ctx.queue().submit([encoder.finish()]);
}

/// Packs the `[rows, cols]` matrix at element `start` with stride `stride` out of `buf`.
fn unpack(buf: &[f32], start: usize, stride: usize, shape: Shape) -> Vec<f32> {
    (0..shape.rows)
        .flat_map(|r| buf[start + r * stride..start + r * stride + shape.cols].to_vec())
        .collect()
}

const GUARD: f32 = 12345.0;

/// Output pre-filled with NaN inside the matrix and GUARD around it and in row padding:
/// every element of the result must be written, and nothing else.
fn guard_case(
    shape: Shape,
    in_start: usize,
    in_stride: usize,
    out_start: usize,
    out_stride: usize,
    options: &Options,
) {
    let ctx = ctx();
    let x = normal_matrix(
        shape.rows as u64 * 7 + shape.cols as u64,
        shape.rows * shape.cols,
        3.0,
    );
    let in_len = in_start + (shape.rows - 1) * in_stride + shape.cols + 37;
    let mut in_words = vec![-777.0f32; in_len];
    for r in 0..shape.rows {
        in_words[in_start + r * in_stride..][..shape.cols]
            .copy_from_slice(&x[r * shape.cols..][..shape.cols]);
    }
    let out_len = out_start + (shape.rows - 1) * out_stride + shape.cols + 41;
    let mut out_words = vec![GUARD; out_len];
    for r in 0..shape.rows {
        out_words[out_start + r * out_stride..][..shape.cols].fill(f32::NAN);
    }
    let input = upload(ctx, &in_words);
    let output = upload(ctx, &out_words);
    submit(
        ctx,
        MatrixView::new(&input)
            .with_offset(in_start as u64 * 4)
            .with_row_stride(in_stride),
        MatrixView::new(&output)
            .with_offset(out_start as u64 * 4)
            .with_row_stride(out_stride),
        shape,
        options,
    );
    let got = read_back::<f32>(ctx, &output);
    let y = unpack(&got, out_start, out_stride, shape);
    check_output(&y, &x, shape, options);
    for (i, v) in got.iter().enumerate() {
        let inside = i >= out_start
            && (i - out_start) % out_stride < shape.cols
            && (i - out_start) / out_stride < shape.rows;
        if !inside {
            assert_eq!(
                v.to_bits(),
                GUARD.to_bits(),
                "{shape:?}: word {i} outside the result was written"
            );
        }
    }
    let input_after = read_back::<f32>(ctx, &input);
    assert_eq!(input_after, in_words, "the input was modified");
}

#[test]
fn every_result_element_is_written_and_nothing_else() {
    for cols in [1, 3, 4, 5, 31, 33, 64, 257, 1025] {
        for rows in [1, 2, 7] {
            guard_case(
                Shape::new(rows, cols),
                0,
                cols,
                0,
                cols,
                &Options::softmax(),
            );
        }
    }
}

#[test]
fn offsets_and_strides_with_every_kernel() {
    let ctx = ctx();
    for kernel in kernels(ctx) {
        for (cols, in_start, in_stride, out_start, out_stride) in [
            (5, 3, 9, 1, 6),        // scalar path, odd offsets
            (8, 4, 12, 8, 8),       // vec4 path at 16-byte offsets
            (100, 68, 104, 4, 100), // vec4 with binding rounded down to 256 bytes
            (101, 7, 101, 70, 103),
            (300, 1, 300, 0, 301),
        ] {
            for options in [Options::softmax(), Options::log_softmax()] {
                guard_case(
                    Shape::new(6, cols),
                    in_start,
                    in_stride,
                    out_start,
                    out_stride,
                    &options.with_kernel(kernel),
                );
            }
        }
    }
}

#[test]
fn in_place_with_an_offset() {
    let ctx = ctx();
    for cols in [3, 64, 1000] {
        let shape = Shape::new(5, cols);
        let x = normal_matrix(cols as u64, shape.rows * cols, 2.0);
        let start = 20;
        let mut words = vec![GUARD; start + x.len() + 20];
        words[start..start + x.len()].copy_from_slice(&x);
        let buffer = upload(ctx, &words);
        let view = MatrixView::new(&buffer).with_offset(start as u64 * 4);
        submit(ctx, view, view, shape, &Options::softmax());
        let got = read_back::<f32>(ctx, &buffer);
        check_output(&got[start..start + x.len()], &x, shape, &Options::softmax());
        assert!(got[..start]
            .iter()
            .chain(&got[start + x.len()..])
            .all(|v| *v == GUARD));
    }
}

#[test]
fn two_ops_recorded_in_one_encoder_both_apply() {
    let ctx = ctx();
    let shape = Shape::new(3, 50);
    let x = normal_matrix(1, 150, 2.0);
    let a = upload(ctx, &x);
    let b = upload(ctx, &vec![0.0f32; 150]);
    let c = upload(ctx, &vec![0.0f32; 150]);
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    ctx.encode(
        &mut encoder,
        MatrixView::new(&a),
        MatrixView::new(&b),
        shape,
        &Options::softmax(),
        &RowInputs::NONE,
    )
    .unwrap();
    ctx.encode(
        &mut encoder,
        MatrixView::new(&a),
        MatrixView::new(&c),
        shape,
        &Options::log_softmax().with_temperature(2.0),
        &RowInputs::NONE,
    )
    .unwrap();
    ctx.queue().submit([encoder.finish()]);
    check_output(&read_back::<f32>(ctx, &b), &x, shape, &Options::softmax());
    check_output(
        &read_back::<f32>(ctx, &c),
        &x,
        shape,
        &Options::log_softmax().with_temperature(2.0),
    );
}

#[test]
fn a_caller_owned_device_keeps_its_own_error_handler() {
    let (device, queue) = app_device(wgpu::Limits::default());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = seen.clone();
    device.on_uncaptured_error(std::sync::Arc::new(move |e: wgpu::Error| {
        sink.lock().unwrap().push(e.to_string());
    }));
    let ctx = Context::from_device(&device, &queue, ContextOptions::default()).expect("context");
    // The library's own checks and scopes catch its errors...
    let tiny = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 16,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let mut encoder = device.create_command_encoder(&Default::default());
    assert!(ctx
        .encode(
            &mut encoder,
            MatrixView::new(&tiny),
            MatrixView::new(&tiny),
            Shape::new(2, 4),
            &Options::softmax(),
            &RowInputs::NONE,
        )
        .is_err());
    // ... and it computes correctly on the app's device...
    let x = normal_matrix(3, 4 * 70, 2.0);
    let input = storage_buffer(&device, &queue, bytemuck::cast_slice(&x));
    let output = storage_buffer(&device, &queue, &vec![0u8; x.len() * 4]);
    ctx.encode(
        &mut encoder,
        MatrixView::new(&input),
        MatrixView::new(&output),
        Shape::new(4, 70),
        &Options::softmax(),
        &RowInputs::NONE,
    )
    .unwrap();
    queue.submit([encoder.finish()]);
    check_output(
        &bytemuck::pod_collect_to_vec::<u8, f32>(&read_bytes(&device, &queue, &output)),
        &x,
        Shape::new(4, 70),
        &Options::softmax(),
    );
    // ... while the app's own handler still receives the app's errors.
    assert!(seen.lock().unwrap().is_empty());
    let _bad = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("invalid on purpose"),
        size: 4,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::MAP_WRITE,
        mapped_at_creation: false,
    });
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "the app's handler was replaced"
    );
    // The host API works on the app's device too.
    let y = softmax(&ctx, &x, Shape::new(4, 70), &Options::softmax()).unwrap();
    check_output(&y, &x, Shape::new(4, 70), &Options::softmax());
}

#[test]
fn repeated_calls_on_the_same_buffers_stay_correct_as_data_and_options_change() {
    // The context reuses the bindings of repeated calls; the data and the options of
    // each call must still be its own.
    let ctx = ctx();
    let shape = Shape::new(4, 300);
    let input = upload(ctx, &vec![0.0f32; 1200]);
    let output = upload(ctx, &vec![0.0f32; 1200]);
    let options = [
        Options::softmax(),
        Options::log_softmax(),
        Options::softmax().with_temperature(2.0),
    ];
    for round in 0..6u64 {
        let x = normal_matrix(round, 1200, 2.0);
        ctx.queue()
            .write_buffer(&input, 0, bytemuck::cast_slice(&x));
        let o = options[(round % 3) as usize];
        submit(
            ctx,
            MatrixView::new(&input),
            MatrixView::new(&output),
            shape,
            &o,
        );
        check_output(&read_back::<f32>(ctx, &output), &x, shape, &o);
        if round == 3 {
            ctx.clear_cached_bindings();
        }
    }
}
