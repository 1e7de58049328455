//! The correctness suite in the browser: each case runs inside Chromium's WebGPU (wgpu's
//! `webgpu` backend, the browser's WGSL compiler) and is checked against the f64
//! reference with the numerics contract's tolerances, on both paths:
//!
//! - host: `Context::new` (the browser's adapter) and `Context::run`, awaited;
//! - resident: a device the test creates as an app would, wrapped by
//!   `Context::from_device`, recorded with `Context::encode` into the test's encoder,
//!   submitted by the test and read back by it with `map_async`, awaited.
//!
//! Run by `bash .ci/web` (wasm-bindgen-test-runner driving headless Chromium). Nothing
//! here blocks: a wait is a future the browser completes.
#![cfg(target_arch = "wasm32")]

use std::cell::RefCell;
use std::rc::Rc;

use half::{bf16, f16};
use wasm_bindgen_test::{console_log, wasm_bindgen_test, wasm_bindgen_test_configure};
use wgpu_softmax::internals::reference::{
    backward_f64, cross_entropy_f64, first_mismatch, sample_filter_f64, sample_replay_f64,
    softmax_f64_with, Tolerance, BACKWARD_F32,
};
use wgpu_softmax::internals::{RowKernel, Shader, Variant};
use wgpu_softmax::{
    wgpu, Context, ContextOptions, CrossEntropy, Dtype, Element, Error, HostInputs, LossOutputs,
    MaskView, MaskedRows, MatrixView, Op, Options, Reduction, Region, RowInputs, SampleOutputs,
    Sampling, Shape, StatsMode, StatsView,
};
use wgpu_softmax_web::{
    app_device, check, normal_matrix, now_ms, read_back, speed, storage_buffer, Rng,
};

wasm_bindgen_test_configure!(run_in_browser);

thread_local! {
    static HOST: RefCell<Option<Rc<Context>>> = const { RefCell::new(None) };
    static APPS: RefCell<[Option<Rc<App>>; 2]> = const { RefCell::new([None, None]) };
}

/// The host path's context, shared by the tests (made on first use).
async fn host() -> Rc<Context> {
    if let Some(c) = HOST.with(|h| h.borrow().clone()) {
        return c;
    }
    let ctx = Rc::new(
        Context::new(ContextOptions::default())
            .await
            .unwrap_or_else(|e| panic!("Context::new in the browser: {e}")),
    );
    let info = ctx.adapter_info();
    console_log!(
        "host context: adapter {:?} ({:?}, {:?}), subgroups {}, limits: storage binding {} B, \
         buffer {} B, {} storage buffers per stage",
        info.name,
        info.backend,
        info.device_type,
        ctx.caps().subgroups,
        ctx.device().limits().max_storage_buffer_binding_size,
        ctx.device().limits().max_buffer_size,
        ctx.device().limits().max_storage_buffers_per_shader_stage
    );
    assert_eq!(info.backend, wgpu::Backend::BrowserWebGpu);
    HOST.with(|h| *h.borrow_mut() = Some(ctx.clone()));
    ctx
}

/// An app's own device and queue, and a context wrapping them.
struct App {
    device: wgpu::Device,
    queue: wgpu::Queue,
    ctx: Context,
}

/// The app of the resident tests: with every limit the adapter offers (`full`), or with
/// WebGPU's default limits.
async fn app(full: bool) -> Rc<App> {
    let i = usize::from(full);
    if let Some(a) = APPS.with(|a| a.borrow()[i].clone()) {
        return a;
    }
    let limits = (!full).then(wgpu::Limits::default);
    let (device, queue) = app_device(limits).await.expect("the app's device");
    let ctx = Context::from_device(&device, &queue, ContextOptions::default())
        .expect("Context::from_device");
    let a = Rc::new(App { device, queue, ctx });
    APPS.with(|s| s.borrow_mut()[i] = Some(a.clone()));
    a
}

/// The host path, from `T` to `U`.
async fn run_host<T: Element, U: Element>(
    ctx: &Context,
    x: &[T],
    shape: Shape,
    options: &Options,
    inputs: HostInputs<'_>,
) -> Vec<U> {
    let mut y = vec![U::from_f32(0.0); x.len()];
    ctx.run(x, &mut y, shape, options, inputs)
        .await
        .unwrap_or_else(|e| panic!("run {shape:?} {options:?}: {e}"));
    y
}

/// The resident path on the app's device: the app uploads `x` (stored as `dtype`),
/// records the op into its own encoder with `inputs`, submits, and reads back its output
/// buffer (pre-filled with NaN bits, so every element must be written).
async fn run_resident(
    app: &App,
    x: &[u8],
    dtype: Dtype,
    shape: Shape,
    options: &Options,
    inputs: &RowInputs<'_>,
) -> Vec<u8> {
    let input = storage_buffer(&app.device, &app.queue, x);
    let output = storage_buffer(&app.device, &app.queue, &vec![0xffu8; x.len()]);
    let mut encoder = app.device.create_command_encoder(&Default::default());
    app.ctx
        .encode(
            &mut encoder,
            MatrixView::new(&input).with_dtype(dtype),
            MatrixView::new(&output).with_dtype(dtype),
            shape,
            options,
            inputs,
        )
        .unwrap_or_else(|e| panic!("encode {shape:?} {options:?}: {e}"));
    app.queue.submit([encoder.finish()]);
    let mut bytes = wgpu_softmax_web::read_bytes(&app.device, &app.queue, &output)
        .await
        .expect("readback");
    bytes.truncate(x.len());
    bytes
}

/// The resident path on f32 data.
async fn resident_f32(app: &App, x: &[f32], shape: Shape, options: &Options) -> Vec<f32> {
    let bytes = run_resident(
        app,
        bytemuck::cast_slice(x),
        Dtype::F32,
        shape,
        options,
        &RowInputs::NONE,
    )
    .await;
    bytemuck::pod_collect_to_vec(&bytes)
}

fn ok(r: Result<(), String>) {
    if let Err(e) = r {
        panic!("{e}");
    }
}

const SEED_ROW: [f32; 3] = [0.95174, 0.04739, 0.00087];

fn check_seed_row(y: &[f32]) {
    for (got, want) in y.iter().zip(SEED_ROW) {
        assert!(
            (got - want).abs() < 1e-5,
            "seed row: {y:?}, want {SEED_ROW:?}"
        );
    }
    let x = [7.0f32, 4.0, 0.0];
    let none = HostInputs::default();
    ok(check::output(
        y,
        &x,
        Shape::new(1, 3),
        &Options::softmax(),
        &none,
        "seed row",
    ));
}

#[wasm_bindgen_test]
async fn host_seed_row() {
    let ctx = host().await;
    let y: Vec<f32> = run_host(
        &ctx,
        &[7.0f32, 4.0, 0.0],
        Shape::new(1, 3),
        &Options::softmax(),
        HostInputs::default(),
    )
    .await;
    check_seed_row(&y);
}

#[wasm_bindgen_test]
async fn resident_seed_row() {
    let app = app(false).await;
    let y = resident_f32(
        &app,
        &[7.0, 4.0, 0.0],
        Shape::new(1, 3),
        &Options::softmax(),
    )
    .await;
    check_seed_row(&y);
}

/// Rows for a case of `cols` columns: about 200 000 elements (SwiftShader runs on the
/// CPU), 2 to 64 rows.
fn rows_for(cols: usize) -> usize {
    (200_000 / cols).clamp(2, 64)
}

/// Softmax and log-softmax of normal values at `cols` columns, host path.
async fn host_cols(cols: usize) {
    let ctx = host().await;
    let shape = Shape::new(rows_for(cols), cols);
    let x = normal_matrix(cols as u64, shape.rows * cols, 3.0);
    for options in [Options::softmax(), Options::log_softmax()] {
        let y: Vec<f32> = run_host(&ctx, &x, shape, &options, HostInputs::default()).await;
        let none = HostInputs::default();
        ok(check::output(&y, &x, shape, &options, &none, "host"));
    }
}

/// Softmax and log-softmax of normal values at `cols` columns, resident path.
async fn resident_cols(cols: usize) {
    let app = app(false).await;
    let shape = Shape::new(rows_for(cols), cols);
    let x = normal_matrix(cols as u64 + 1, shape.rows * cols, 3.0);
    for options in [Options::softmax(), Options::log_softmax()] {
        let y = resident_f32(&app, &x, shape, &options).await;
        let none = HostInputs::default();
        ok(check::output(&y, &x, shape, &options, &none, "resident"));
    }
}

macro_rules! cols_cases {
    ($($host:ident, $resident:ident, $cols:expr;)*) => {$(
        #[wasm_bindgen_test]
        async fn $host() {
            host_cols($cols).await;
        }

        #[wasm_bindgen_test]
        async fn $resident() {
            resident_cols($cols).await;
        }
    )*};
}

cols_cases! {
    host_cols_1, resident_cols_1, 1;
    host_cols_3, resident_cols_3, 3;
    host_cols_4, resident_cols_4, 4;
    host_cols_5, resident_cols_5, 5;
    host_cols_31, resident_cols_31, 31;
    host_cols_33, resident_cols_33, 33;
    host_cols_1023, resident_cols_1023, 1023;
    host_cols_1025, resident_cols_1025, 1025;
    host_cols_4097, resident_cols_4097, 4097;
    host_cols_32000, resident_cols_32000, 32000;
    host_cols_200001, resident_cols_200001, 200_001;
}

/// Rows of every kind of non-finite input and extreme value, `cols` wide: a `-inf`
/// entry, only `-inf`, a `+inf`, a NaN, `±f32::MAX`, a large common offset, plain.
fn non_finite_matrix(cols: usize) -> (Vec<f32>, Shape) {
    let rows = 7;
    let mut x = normal_matrix(cols as u64 + 2, rows * cols, 3.0);
    let row = |r: usize| r * cols..(r + 1) * cols;
    x[0] = f32::NEG_INFINITY;
    x[row(1)].fill(f32::NEG_INFINITY);
    x[2 * cols + cols / 2] = f32::INFINITY;
    x[3 * cols + cols / 3] = f32::NAN;
    for (i, v) in x[row(4)].iter_mut().enumerate() {
        *v = match i % 3 {
            0 => f32::MAX,
            1 => -f32::MAX,
            _ => f32::MAX * 0.999,
        };
    }
    for (i, v) in x[row(5)].iter_mut().enumerate() {
        *v = 1e7 + (i % 17) as f32;
    }
    (x, Shape::new(rows, cols))
}

fn non_finite_options() -> [Options; 4] {
    [
        Options::softmax(),
        Options::log_softmax(),
        Options::softmax().with_masked_rows(MaskedRows::Zero),
        Options::log_softmax().with_masked_rows(MaskedRows::Zero),
    ]
}

#[wasm_bindgen_test]
async fn host_non_finite_rows() {
    let ctx = host().await;
    for cols in [37, 1500, 40_000] {
        let (x, shape) = non_finite_matrix(cols);
        for options in non_finite_options() {
            let y: Vec<f32> = run_host(&ctx, &x, shape, &options, HostInputs::default()).await;
            let none = HostInputs::default();
            ok(check::output(
                &y,
                &x,
                shape,
                &options,
                &none,
                "host non-finite",
            ));
        }
    }
}

#[wasm_bindgen_test]
async fn resident_non_finite_rows() {
    let app = app(false).await;
    for cols in [37, 1500, 40_000] {
        let (x, shape) = non_finite_matrix(cols);
        for options in non_finite_options() {
            let y = resident_f32(&app, &x, shape, &options).await;
            let none = HostInputs::default();
            ok(check::output(
                &y,
                &x,
                shape,
                &options,
                &none,
                "resident non-finite",
            ));
        }
    }
}

#[wasm_bindgen_test]
async fn host_temperature() {
    let ctx = host().await;
    let shape = Shape::new(9, 777);
    let x = normal_matrix(11, shape.rows * shape.cols, 3.0);
    for t in [0.25f32, 3.0] {
        for base in [Options::softmax(), Options::log_softmax()] {
            let options = base.with_temperature(t);
            let y: Vec<f32> = run_host(&ctx, &x, shape, &options, HostInputs::default()).await;
            let none = HostInputs::default();
            ok(check::output(
                &y,
                &x,
                shape,
                &options,
                &none,
                "host temperature",
            ));
        }
    }
    // Per-row temperatures multiply the scalar one.
    let temps: Vec<f32> = (0..shape.rows).map(|r| 0.5 + r as f32 * 0.25).collect();
    let options = Options::softmax().with_temperature(2.0);
    let inputs = || HostInputs::default().with_temperatures(&temps);
    let y: Vec<f32> = run_host(&ctx, &x, shape, &options, inputs()).await;
    ok(check::output(
        &y,
        &x,
        shape,
        &options,
        &inputs(),
        "host per-row temperatures",
    ));
}

#[wasm_bindgen_test]
async fn resident_temperature() {
    let app = app(false).await;
    let shape = Shape::new(9, 777);
    let x = normal_matrix(12, shape.rows * shape.cols, 3.0);
    for t in [0.25f32, 3.0] {
        for base in [Options::softmax(), Options::log_softmax()] {
            let options = base.with_temperature(t);
            let y = resident_f32(&app, &x, shape, &options).await;
            let none = HostInputs::default();
            ok(check::output(
                &y,
                &x,
                shape,
                &options,
                &none,
                "resident temperature",
            ));
        }
    }
}

/// A mask of `rows` rows with some `-inf` entries, lengths (one row of length 0) and
/// per-row temperatures for a `shape` matrix.
fn row_inputs(shape: Shape, mask_rows: usize) -> (Vec<f32>, Vec<u32>, Vec<f32>) {
    let mut mask = normal_matrix(21, mask_rows * shape.cols, 1.0);
    for (i, m) in mask.iter_mut().enumerate() {
        if i % 7 == 3 {
            *m = f32::NEG_INFINITY;
        }
    }
    let lengths: Vec<u32> = (0..shape.rows)
        .map(|r| ((r * 37) % (shape.cols + 5)) as u32)
        .collect();
    let temps: Vec<f32> = (0..shape.rows).map(|r| 0.5 + (r % 4) as f32).collect();
    (mask, lengths, temps)
}

fn masked_options() -> [Options; 3] {
    [
        Options::softmax(),
        Options::log_softmax().with_causal(3),
        Options::softmax()
            .with_causal(0)
            .with_masked_rows(MaskedRows::Zero),
    ]
}

#[wasm_bindgen_test]
async fn host_mask_lengths_causal() {
    let ctx = host().await;
    for cols in [29, 1100] {
        let shape = Shape::new(12, cols);
        let x = normal_matrix(cols as u64 + 3, shape.rows * cols, 3.0);
        let (mask, lengths, temps) = row_inputs(shape, 3);
        let mask16: Vec<f16> = mask.iter().map(|&v| f16::from_f32(v)).collect();
        for options in masked_options() {
            // An f32 mask with lengths and temperatures; an f16 mask alone.
            let inputs = || {
                HostInputs::default()
                    .with_mask(&mask, 3)
                    .with_lengths(&lengths)
                    .with_temperatures(&temps)
            };
            let y: Vec<f32> = run_host(&ctx, &x, shape, &options, inputs()).await;
            ok(check::output(
                &y,
                &x,
                shape,
                &options,
                &inputs(),
                "host mask",
            ));
            let inputs16 = || HostInputs::default().with_mask(&mask16, 3);
            let y: Vec<f32> = run_host(&ctx, &x, shape, &options, inputs16()).await;
            ok(check::output(
                &y,
                &x,
                shape,
                &options,
                &inputs16(),
                "host f16 mask",
            ));
        }
    }
}

#[wasm_bindgen_test]
async fn resident_mask_lengths_causal() {
    let app = app(true).await;
    for cols in [29, 1100] {
        let shape = Shape::new(12, cols);
        let x = normal_matrix(cols as u64 + 4, shape.rows * cols, 3.0);
        let (mask, lengths, temps) = row_inputs(shape, 3);
        let mask_buf = storage_buffer(&app.device, &app.queue, bytemuck::cast_slice(&mask));
        let len_buf = storage_buffer(&app.device, &app.queue, bytemuck::cast_slice(&lengths));
        let temp_buf = storage_buffer(&app.device, &app.queue, bytemuck::cast_slice(&temps));
        let inputs = RowInputs::NONE
            .with_mask(MaskView::new(&mask_buf, 3))
            .with_lengths(Region::new(&len_buf))
            .with_temperatures(Region::new(&temp_buf));
        for options in masked_options() {
            let bytes = run_resident(
                &app,
                bytemuck::cast_slice(&x),
                Dtype::F32,
                shape,
                &options,
                &inputs,
            )
            .await;
            let y: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes);
            let host_inputs = HostInputs::default()
                .with_mask(&mask, 3)
                .with_lengths(&lengths)
                .with_temperatures(&temps);
            ok(check::output(
                &y,
                &x,
                shape,
                &options,
                &host_inputs,
                "resident mask",
            ));
        }
    }
}

/// WebGPU's default limits have 8 storage buffers per stage; the row inputs need 9: the
/// resident call says so with `Error::Unsupported` rather than failing in the browser.
#[wasm_bindgen_test]
async fn resident_row_inputs_with_default_limits_are_refused() {
    let app = app(false).await;
    let shape = Shape::new(2, 8);
    let lengths = storage_buffer(&app.device, &app.queue, bytemuck::cast_slice(&[3u32, 4]));
    let matrix = storage_buffer(&app.device, &app.queue, &[0u8; 64]);
    let mut encoder = app.device.create_command_encoder(&Default::default());
    let result = app.ctx.encode(
        &mut encoder,
        MatrixView::new(&matrix),
        MatrixView::new(&matrix),
        shape,
        &Options::softmax(),
        &RowInputs::NONE.with_lengths(Region::new(&lengths)),
    );
    assert!(
        matches!(result, Err(Error::Unsupported(_))),
        "row inputs on a device with WebGPU's default limits: {result:?}"
    );
}

/// `x` rounded to `T`, and the values it then holds.
fn quantize<T: Element>(x: &[f32]) -> (Vec<T>, Vec<f32>) {
    let q: Vec<T> = x.iter().map(|&v| T::from_f32(v)).collect();
    let held = q.iter().map(|v| v.to_f32()).collect();
    (q, held)
}

async fn host_typed<T: Element, U: Element>(ctx: &Context, x: &[f32], shape: Shape) {
    let (q, held) = quantize::<T>(x);
    for options in [Options::softmax(), Options::log_softmax()] {
        let y: Vec<U> = run_host(ctx, &q, shape, &options, HostInputs::default()).await;
        let what = format!("host {:?} -> {:?}", T::DTYPE, U::DTYPE);
        let none = HostInputs::default();
        ok(check::output(&y, &held, shape, &options, &none, &what));
    }
}

#[wasm_bindgen_test]
async fn host_f16_and_bf16_storage() {
    let ctx = host().await;
    for cols in [33, 1025, 5000] {
        let shape = Shape::new(rows_for(cols).min(16), cols);
        let x = normal_matrix(cols as u64 + 5, shape.rows * cols, 3.0);
        host_typed::<f16, f16>(&ctx, &x, shape).await;
        host_typed::<bf16, bf16>(&ctx, &x, shape).await;
        host_typed::<f32, f16>(&ctx, &x, shape).await;
        host_typed::<bf16, f32>(&ctx, &x, shape).await;
    }
}

async fn resident_typed<T: Element>(app: &App, x: &[f32], shape: Shape) {
    let (q, held) = quantize::<T>(x);
    for options in [Options::softmax(), Options::log_softmax()] {
        let bytes = run_resident(
            app,
            bytemuck::cast_slice(&q),
            T::DTYPE,
            shape,
            &options,
            &RowInputs::NONE,
        )
        .await;
        let y: Vec<T> = bytemuck::pod_collect_to_vec(&bytes);
        let what = format!("resident {:?}", T::DTYPE);
        let none = HostInputs::default();
        ok(check::output(&y, &held, shape, &options, &none, &what));
    }
}

#[wasm_bindgen_test]
async fn resident_f16_and_bf16_storage() {
    let app = app(false).await;
    // Odd column counts: 16-bit rows that start and end mid-word.
    for cols in [33, 1025, 5001] {
        let shape = Shape::new(rows_for(cols).min(16), cols);
        let x = normal_matrix(cols as u64 + 6, shape.rows * cols, 3.0);
        resident_typed::<f16>(&app, &x, shape).await;
        resident_typed::<bf16>(&app, &x, shape).await;
    }
}

/// Normal rows at temperature 2, one row of only `-inf` and one with a NaN.
fn stats_matrix(cols: usize) -> (Vec<f32>, Shape) {
    let shape = Shape::new(10, cols);
    let mut x = normal_matrix(cols as u64 + 7, shape.rows * cols, 3.0);
    x[2 * cols..3 * cols].fill(f32::NEG_INFINITY);
    x[5 * cols + 1] = f32::NAN;
    (x, shape)
}

#[wasm_bindgen_test]
async fn host_row_statistics() {
    let ctx = host().await;
    for cols in [17, 3000, 70_000] {
        let (x, shape) = stats_matrix(cols);
        let options = Options::softmax().with_temperature(2.0);
        let mut stats = vec![[0.0f32; 2]; shape.rows];
        let y: Vec<f32> = run_host(
            &ctx,
            &x,
            shape,
            &options,
            HostInputs::default().with_stats_out(&mut stats),
        )
        .await;
        let none = HostInputs::default();
        ok(check::output(
            &y,
            &x,
            shape,
            &options,
            &none,
            "host with stats",
        ));
        ok(check::stats(&stats, &x, cols, 2.0, "host stats written"));
        // Given back, they reproduce the softmax.
        let again: Vec<f32> = run_host(
            &ctx,
            &x,
            shape,
            &options,
            HostInputs::default().with_stats_given(&stats),
        )
        .await;
        ok(check::output(
            &again,
            &x,
            shape,
            &options,
            &none,
            "host stats given",
        ));
    }
}

#[wasm_bindgen_test]
async fn resident_row_statistics() {
    let app = app(false).await;
    for cols in [17, 3000, 70_000] {
        let (x, shape) = stats_matrix(cols);
        let options = Options::log_softmax().with_temperature(2.0);
        let stats = storage_buffer(&app.device, &app.queue, &vec![0u8; shape.rows * 8]);
        let inputs = RowInputs::NONE.with_stats(StatsView {
            buffer: &stats,
            offset: 0,
            mode: StatsMode::Write,
        });
        let bytes = run_resident(
            &app,
            bytemuck::cast_slice(&x),
            Dtype::F32,
            shape,
            &options,
            &inputs,
        )
        .await;
        let y: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes);
        let none = HostInputs::default();
        ok(check::output(
            &y,
            &x,
            shape,
            &options,
            &none,
            "resident with stats",
        ));
        let got: Vec<[f32; 2]> = read_back(&app.device, &app.queue, &stats)
            .await
            .expect("stats readback");
        ok(check::stats(&got, &x, cols, 2.0, "resident stats written"));
    }
}

fn check_backward(got: &[f32], want: &[f64], what: &str) {
    if let Some((i, y, r)) = first_mismatch(got, want, BACKWARD_F32) {
        panic!("{what}: element {i} is {y:e}, reference {r:e}");
    }
}

#[wasm_bindgen_test]
async fn host_backward() {
    let ctx = host().await;
    for (rows, cols) in [(5, 3), (4, 256), (3, 1025), (2, 30_001)] {
        let shape = Shape::new(rows, cols);
        let x = normal_matrix(cols as u64, rows * cols, 2.0);
        let dy = normal_matrix(7 + cols as u64, rows * cols, 1.0);
        for base in [Options::softmax(), Options::log_softmax()] {
            let o = base.with_temperature(2.0);
            let y: Vec<f32> = run_host(&ctx, &x, shape, &o, HostInputs::default()).await;
            let mut dx = vec![0.0f32; x.len()];
            ctx.run_backward(&y, &dy, &mut dx, shape, &o)
                .await
                .unwrap_or_else(|e| panic!("run_backward {shape:?}: {e}"));
            check_backward(&dx, &backward_f64(&y, &dy, cols, &o), "host backward");
        }
    }
}

#[wasm_bindgen_test]
async fn resident_backward() {
    let app = app(false).await;
    for (rows, cols) in [(5, 3), (3, 1025), (2, 30_001)] {
        let shape = Shape::new(rows, cols);
        let x = normal_matrix(cols as u64 + 8, rows * cols, 2.0);
        let dy = normal_matrix(9 + cols as u64, rows * cols, 1.0);
        for options in [Options::softmax(), Options::log_softmax()] {
            let y = resident_f32(&app, &x, shape, &options).await;
            let y_buf = storage_buffer(&app.device, &app.queue, bytemuck::cast_slice(&y));
            let grad = storage_buffer(&app.device, &app.queue, bytemuck::cast_slice(&dy));
            let mut encoder = app.device.create_command_encoder(&Default::default());
            app.ctx
                .encode_backward(
                    &mut encoder,
                    MatrixView::new(&y_buf),
                    MatrixView::new(&grad),
                    shape,
                    &options,
                )
                .expect("encode_backward");
            app.queue.submit([encoder.finish()]);
            let dx: Vec<f32> = read_back(&app.device, &app.queue, &grad)
                .await
                .expect("readback");
            check_backward(
                &dx,
                &backward_f64(&y, &dy, cols, &options),
                "resident backward",
            );
        }
    }
}

/// A host context whose chunks hold a few rows: the matrix streams through the GPU in
/// many chunks, two in flight.
#[wasm_bindgen_test]
async fn host_streams_through_a_small_chunk_budget() {
    let ctx = Context::new(ContextOptions::default().with_host_chunk_bytes(16 << 10))
        .await
        .expect("context");
    let shape = Shape::new(101, 1000);
    let x = normal_matrix(31, shape.rows * shape.cols, 3.0);
    let mut stats = vec![[0.0f32; 2]; shape.rows];
    for options in [Options::softmax(), Options::log_softmax()] {
        let y: Vec<f32> = run_host(
            &ctx,
            &x,
            shape,
            &options,
            HostInputs::default().with_stats_out(&mut stats),
        )
        .await;
        let none = HostInputs::default();
        ok(check::output(
            &y,
            &x,
            shape,
            &options,
            &none,
            "host streamed",
        ));
        ok(check::stats(
            &stats,
            &x,
            shape.cols,
            1.0,
            "host streamed stats",
        ));
    }
    // 16-bit matrices stream too (odd rows end mid-word).
    let shape = Shape::new(77, 333);
    let x = normal_matrix(32, shape.rows * shape.cols, 3.0);
    host_typed::<f16, f16>(&ctx, &x, shape).await;
    assert!(
        ctx.staging_bytes() <= 4 * (16 << 10),
        "{}",
        ctx.staging_bytes()
    );
}

/// A matrix larger than one storage binding of a device with WebGPU's default limits
/// (128 MiB): the op binds it in several chunks.
#[wasm_bindgen_test]
async fn resident_matrix_larger_than_one_binding() {
    let app = app(false).await;
    let binding = app.device.limits().max_storage_buffer_binding_size;
    let cols = 4096;
    let rows = (binding / (cols as u64 * 4)) as usize + 3;
    let shape = Shape::new(rows, cols);
    let x = normal_matrix(33, rows * cols, 3.0);
    let bytes: &[u8] = bytemuck::cast_slice(&x);
    assert!(bytes.len() as u64 > binding);
    let input = storage_buffer(&app.device, &app.queue, bytes);
    let output = storage_buffer(&app.device, &app.queue, &vec![0xffu8; bytes.len()]);
    let options = Options::softmax();
    let start = now_ms();
    let mut encoder = app.device.create_command_encoder(&Default::default());
    app.ctx
        .encode(
            &mut encoder,
            MatrixView::new(&input),
            MatrixView::new(&output),
            shape,
            &options,
            &RowInputs::NONE,
        )
        .expect("encode");
    app.queue.submit([encoder.finish()]);
    drop(input);
    let y: Vec<f32> = read_back(&app.device, &app.queue, &output)
        .await
        .expect("readback");
    console_log!(
        "{rows} x {cols} ({} MiB, binding limit {} MiB): {:.0} ms",
        bytes.len() >> 20,
        binding >> 20,
        now_ms() - start
    );
    let none = HostInputs::default();
    ok(check::output(
        &y,
        &x,
        shape,
        &options,
        &none,
        "over one binding",
    ));
}

/// WebGPU refuses two writable bindings of one dispatch over the same bytes, so an
/// in-place resident op is refused in the browser with `Error::Unsupported` (the host
/// path gives its output a region of its own there).
#[wasm_bindgen_test]
async fn resident_in_place_is_refused_in_the_browser() {
    let app = app(false).await;
    let shape = Shape::new(4, 64);
    let x = normal_matrix(34, shape.rows * shape.cols, 3.0);
    let buffer = storage_buffer(&app.device, &app.queue, bytemuck::cast_slice(&x));
    let mut encoder = app.device.create_command_encoder(&Default::default());
    let result = app.ctx.encode(
        &mut encoder,
        MatrixView::new(&buffer),
        MatrixView::new(&buffer),
        shape,
        &Options::softmax(),
        &RowInputs::NONE,
    );
    assert!(
        matches!(result, Err(Error::Unsupported(_))),
        "in place in the browser: {result:?}"
    );
}

/// The browser's speed figure: the resident softmax against the vec4 copy kernel over
/// the same bytes (printed; a figure, not a target).
#[wasm_bindgen_test]
async fn speed_against_the_copy_kernel() {
    let ctx = host().await;
    let s = speed::measure(&ctx, 64, 32000, 4, 3)
        .await
        .unwrap_or_else(|e| panic!("speed: {e}"));
    console_log!(
        "speed {} x {}: softmax {:.2} ms ({:.2} GB/s), copy kernel {:.2} ms ({:.2} GB/s), \
         softmax / copy kernel {:.3} (rounds {:.3}-{:.3})",
        s.rows,
        s.cols,
        s.softmax_ms,
        s.softmax_gbs(),
        s.copy_ms,
        s.copy_gbs(),
        s.ratio,
        s.ratio_min,
        s.ratio_max
    );
    assert!(s.ratio.is_finite() && s.ratio > 0.0, "{s:?}");
}

// --- Sampling, fused cross-entropy, gather and soft-capping (the checks of the native
// tests/sample.rs, tests/cross_entropy.rs and tests/softcap.rs, small: SwiftShader runs
// on the CPU). ---

/// The host path's draw: ids and log-probabilities.
async fn draw(
    ctx: &Context,
    x: &[f32],
    shape: Shape,
    options: &Options,
    sampling: &Sampling,
) -> (Vec<u32>, Vec<f32>) {
    let mut ids = vec![0u32; shape.rows];
    let mut lp = vec![0f32; shape.rows];
    ctx.sample(
        x,
        &mut ids,
        Some(&mut lp),
        shape,
        options,
        sampling,
        HostInputs::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("sample {shape:?} {sampling:?}: {e}"));
    (ids, lp)
}

/// The log-probabilities of the drawn columns against the f64 log-softmax of `x`.
fn check_logprobs(ids: &[u32], lp: &[f32], x: &[f32], cols: usize, options: &Options) {
    let mut log_options = *options;
    log_options.op = Op::LogSoftmax;
    let log = softmax_f64_with(x, cols, &log_options, &HostInputs::default());
    let tol = Tolerance::for_op(Op::LogSoftmax);
    for (r, (&id, &l)) in ids.iter().zip(lp).enumerate() {
        let want = log[r * cols + id as usize];
        assert!(
            tol.accepts(l, want),
            "row {r}: log-prob {l}, reference {want}"
        );
    }
}

/// 50 logits of N(0, 1.5), as the native sampling tests' row.
fn fifty_logits() -> Vec<f32> {
    let mut rng = Rng::new(50);
    (0..50).map(|_| rng.normal(0.0, 1.5)).collect()
}

#[wasm_bindgen_test]
async fn host_sample_greedy_is_the_reference_argmax() {
    let ctx = host().await;
    let mut rng = Rng::new(40);
    let (rows, cols) = (12, 333);
    let mut x: Vec<f32> = (0..rows * cols).map(|_| rng.normal(0.0, 3.0)).collect();
    // Ties for the max in some rows: the lowest index wins.
    for r in (0..rows).step_by(4) {
        let (a, b) = (rng.below(cols), rng.below(cols));
        x[r * cols + a] = 50.0;
        x[r * cols + b] = 50.0;
    }
    let shape = Shape::new(rows, cols);
    for s in [Sampling::greedy(), Sampling::new(7).with_top_k(1)] {
        let (ids, lp) = draw(&ctx, &x, shape, &Options::softmax(), &s).await;
        for (r, row) in x.chunks(cols).enumerate() {
            let max = row.iter().copied().fold(f32::MIN, f32::max);
            let want = row.iter().position(|&v| v == max).unwrap();
            assert_eq!(ids[r] as usize, want, "{s:?} row {r}");
        }
        check_logprobs(&ids, &lp, &x, cols, &Options::softmax());
    }
}

#[wasm_bindgen_test]
async fn host_sample_top_k_top_p_draws_only_survivors_and_a_seed_repeats() {
    let ctx = host().await;
    let row = fifty_logits();
    let (copies, cols) = (2000, row.len());
    let x: Vec<f32> = row.iter().copied().cycle().take(copies * cols).collect();
    let shape = Shape::new(copies, cols);
    let options = Options::softmax().with_temperature(0.8);
    let s = Sampling::new(16).with_top_k(20).with_top_p(0.8);
    let kept = sample_filter_f64(&row, cols, &options, &HostInputs::default(), &s)[0]
        .clone()
        .expect("a row to draw from");
    let survivors = kept.iter().filter(|&&p| p > 0.0).count();
    let (ids, lp) = draw(&ctx, &x, shape, &options, &s).await;
    let mut counts = vec![0u32; cols];
    for (r, &id) in ids.iter().enumerate() {
        assert!((id as usize) < cols, "row {r}: id {id}");
        assert!(
            kept[id as usize] > 0.0,
            "row {r} drew {id}, which {s:?} filters out"
        );
        counts[id as usize] += 1;
    }
    check_logprobs(&ids, &lp, &x, cols, &options);
    // Identical rows draw independently: most survivors come up.
    let drawn = counts.iter().filter(|&&c| c > 0).count();
    console_log!("top-k 20 + top-p 0.8: {drawn} of {survivors} survivors drawn over {copies} rows");
    assert!(
        drawn > survivors / 2,
        "{drawn} of {survivors} survivors drawn"
    );
    let (again, _) = draw(&ctx, &x, shape, &options, &s).await;
    assert_eq!(ids, again, "the same seed drew other ids");
    let (other, _) = draw(
        &ctx,
        &x,
        shape,
        &options,
        &Sampling::new(17).with_top_k(20).with_top_p(0.8),
    )
    .await;
    let differ = ids.iter().zip(&other).filter(|(a, b)| a != b).count();
    assert!(
        differ > copies / 4,
        "another seed changed {differ} of {copies} ids"
    );
}

#[wasm_bindgen_test]
async fn host_sample_splits_few_long_rows_and_draws_what_one_workgroup_draws() {
    let ctx = host().await;
    let (rows, cols) = (2, 40_000);
    let shape = Shape::new(rows, cols);
    let options = Options::softmax();
    let plan = ctx
        .sample_plan(shape, Dtype::F32, &options)
        .expect("a plan");
    let parts = plan.split.map_or(1, |s| s.parts);
    assert!(parts > 1, "{plan:?}");
    let mut rng = Rng::new(41);
    let x: Vec<f32> = (0..rows * cols).map(|_| rng.normal(0.0, 3.0)).collect();
    let one_workgroup = options.with_kernel(RowKernel::WorkgroupShared);
    for s in [
        Sampling::greedy(),
        Sampling::new(42).with_top_k(50).with_min_p(0.01),
        Sampling::new(43).with_top_k(50).with_top_p(0.9),
    ] {
        let (ids, lp) = draw(&ctx, &x, shape, &options, &s).await;
        let (one, _) = draw(&ctx, &x, shape, &one_workgroup, &s).await;
        let kept = sample_filter_f64(&x, cols, &options, &HostInputs::default(), &s);
        for r in 0..rows {
            assert!(
                kept[r].as_ref().unwrap()[ids[r] as usize] > 0.0,
                "{s:?} row {r}: drew {}",
                ids[r]
            );
        }
        assert_eq!(
            ids, one,
            "{s:?}: {parts} parts drew other ids than one workgroup"
        );
        check_logprobs(&ids, &lp, &x, cols, &options);
    }
    console_log!("{rows} x {cols}: {parts} parts per row");
}

#[wasm_bindgen_test]
async fn host_sample_is_the_generator_replayed_on_the_cpu() {
    let ctx = host().await;
    let (rows, cols) = (200, 200);
    let mut rng = Rng::new(60);
    let x: Vec<f32> = (0..rows * cols).map(|_| rng.normal(0.0, 2.0)).collect();
    let options = Options::softmax().with_temperature(0.8);
    for s in [
        Sampling::new(0xdead_beef_0123).with_step(9),
        Sampling::new(77)
            .with_top_k(30)
            .with_top_p(0.8)
            .with_min_p(0.01)
            .with_column_offset(1000),
    ] {
        let (ids, _) = draw(&ctx, &x, Shape::new(rows, cols), &options, &s).await;
        let kept = sample_filter_f64(&x, cols, &options, &HostInputs::default(), &s);
        let same = (0..rows)
            .filter(|&r| {
                let row = &x[r * cols..(r + 1) * cols];
                let kept = kept[r].as_ref().unwrap();
                sample_replay_f64(row, r, &options, &HostInputs::default(), &s, kept)
                    == Some(ids[r] as usize)
            })
            .count();
        console_log!("{s:?}: {same} of {rows} rows drew the CPU replay's column");
        // The GPU adds f32 z and g, the replay f64: only near-ties may differ.
        assert!(
            same * 100 >= rows * 99,
            "{same} of {rows} rows match the replay"
        );
    }
}

#[wasm_bindgen_test]
async fn resident_sample_writes_ids_and_log_probs_into_app_buffers() {
    let app = app(false).await;
    let (rows, cols) = (37, 1025);
    let x = normal_matrix(90, rows * cols, 2.0);
    let shape = Shape::new(rows, cols);
    let logits = storage_buffer(&app.device, &app.queue, bytemuck::cast_slice(&x));
    // Ids at byte 256 and log-probabilities at byte 512 of one buffer.
    let out = storage_buffer(&app.device, &app.queue, &vec![0xffu8; 512 + rows * 4]);
    let options = Options::softmax();
    let s = Sampling::new(91).with_top_k(20).with_min_p(0.01);
    let mut encoder = app.device.create_command_encoder(&Default::default());
    let outputs = SampleOutputs::new(Region::new(&out).with_offset(256))
        .with_logprobs(Region::new(&out).with_offset(512));
    app.ctx
        .encode_sample(
            &mut encoder,
            MatrixView::new(&logits),
            outputs,
            shape,
            &options,
            &s,
            &RowInputs::NONE,
        )
        .expect("encode_sample");
    app.queue.submit([encoder.finish()]);
    let bytes = wgpu_softmax_web::read_bytes(&app.device, &app.queue, &out)
        .await
        .expect("readback");
    let ids: Vec<u32> = bytemuck::pod_collect_to_vec(&bytes[256..256 + rows * 4]);
    let lp: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes[512..512 + rows * 4]);
    let kept = sample_filter_f64(&x, cols, &options, &HostInputs::default(), &s);
    for (r, &id) in ids.iter().enumerate() {
        let kept = kept[r].as_ref().unwrap();
        assert!(
            (id as usize) < cols && kept[id as usize] > 0.0,
            "row {r} drew {id}"
        );
    }
    check_logprobs(&ids, &lp, &x, cols, &options);
    // The host path draws the very same ids.
    let (host_ids, _) = draw(&*host().await, &x, shape, &options, &s).await;
    assert_eq!(ids, host_ids, "resident and host paths drew differently");
    // Overlapping outputs are refused.
    let mut encoder = app.device.create_command_encoder(&Default::default());
    let clash = SampleOutputs::new(Region::new(&out).with_offset(256))
        .with_logprobs(Region::new(&out).with_offset(256 + 4 * 10));
    let got = app.ctx.encode_sample(
        &mut encoder,
        MatrixView::new(&logits),
        clash,
        shape,
        &options,
        &s,
        &RowInputs::NONE,
    );
    assert!(matches!(got, Err(Error::RegionOverlap { .. })), "{got:?}");
}

const LOSS_TOL: (f64, f64) = (1e-5, 1e-5);
const GRAD_TOL: (f64, f64) = (1e-6, 1e-4);

fn close(got: f32, want: f64, (abs, rel): (f64, f64)) -> bool {
    if want.is_nan() {
        return got.is_nan();
    }
    if want.is_infinite() {
        return f64::from(got) == want;
    }
    (f64::from(got) - want).abs() <= abs + rel * want.abs()
}

/// Normal logits and targets at the first and last column, ignored (-100) and random.
fn ce_data(rows: usize, cols: usize, seed: u64) -> (Vec<f32>, Vec<i64>) {
    let mut rng = Rng::new(seed);
    let x: Vec<f32> = (0..rows * cols).map(|_| rng.normal(0.0, 3.0)).collect();
    let targets = (0..rows)
        .map(|r| match r % 5 {
            0 => 0,
            1 => cols as i64 - 1,
            2 => -100,
            _ => rng.below(cols) as i64,
        })
        .collect();
    (x, targets)
}

/// Losses and gradient (scaled by `grad_scale`, the reduction's included) against
/// `cross_entropy_f64`.
#[allow(clippy::too_many_arguments)]
fn check_ce(
    x: &[f32],
    targets: &[i64],
    cols: usize,
    options: &Options,
    ce: &CrossEntropy,
    grad_scale: f64,
    losses: &[f32],
    grad: &[f32],
    what: &str,
) -> Vec<f64> {
    let (want_l, want_g) = cross_entropy_f64(
        x,
        cols,
        targets,
        options,
        &HostInputs::default(),
        ce,
        grad_scale,
    );
    for (r, (&g, &w)) in losses.iter().zip(&want_l).enumerate() {
        assert!(
            close(g, w, LOSS_TOL),
            "{what} {ce:?} row {r}: loss {g} vs {w}"
        );
    }
    for (i, (&g, &w)) in grad.iter().zip(&want_g).enumerate() {
        assert!(
            close(g, w, GRAD_TOL),
            "{what} {ce:?} element {i} (row {}): grad {g:e} vs {w:e}",
            i / cols
        );
    }
    want_l
}

#[wasm_bindgen_test]
async fn host_cross_entropy_with_gradient_smoothing_and_reductions() {
    let ctx = host().await;
    for cols in [5usize, 1000] {
        let rows = 12;
        let (x, targets) = ce_data(rows, cols, cols as u64);
        let shape = Shape::new(rows, cols);
        let valid = targets.iter().filter(|&&t| t != -100).count() as f64;
        for (reduction, smoothing) in [
            (Reduction::None, 0.0),
            (Reduction::Sum, 0.1),
            (Reduction::Mean, 0.3),
        ] {
            let ce = CrossEntropy::default()
                .with_reduction(reduction)
                .with_label_smoothing(smoothing)
                .with_grad_scale(0.5);
            let mut losses = vec![0f32; rows];
            let mut grad = vec![0f32; rows * cols];
            let reduced = ctx
                .cross_entropy(
                    &x,
                    &targets,
                    &mut losses,
                    Some(&mut grad[..]),
                    shape,
                    &Options::softmax(),
                    &ce,
                    HostInputs::default(),
                )
                .await
                .unwrap_or_else(|e| panic!("cross_entropy {shape:?} {ce:?}: {e}"));
            let scale = match reduction {
                Reduction::Mean => 0.5 / valid,
                _ => 0.5,
            };
            let want_l = check_ce(
                &x,
                &targets,
                cols,
                &Options::softmax(),
                &ce,
                scale,
                &losses,
                &grad,
                "host",
            );
            let sum: f64 = want_l.iter().sum();
            let want = match reduction {
                Reduction::Mean => sum / valid,
                _ => sum,
            };
            assert!(
                (reduced - want).abs() <= 1e-5 * (1.0 + want.abs()),
                "{ce:?}: reduced {reduced} vs {want}"
            );
        }
    }
    // A soft-cap on huge logits, a temperature and a z-loss, the gradient through them.
    let (rows, cols) = (8, 300);
    let (mut x, targets) = ce_data(rows, cols, 4);
    for (i, v) in x.iter_mut().enumerate() {
        match i % 13 {
            0 => *v = 1e4,
            6 => *v = -1e4,
            _ => {}
        }
    }
    let options = Options::softmax().with_softcap(30.0).with_temperature(0.8);
    let ce = CrossEntropy::default()
        .with_reduction(Reduction::Sum)
        .with_label_smoothing(0.05)
        .with_z_loss(1e-3);
    let mut losses = vec![0f32; rows];
    let mut grad = vec![0f32; rows * cols];
    ctx.cross_entropy(
        &x,
        &targets,
        &mut losses,
        Some(&mut grad[..]),
        Shape::new(rows, cols),
        &options,
        &ce,
        HostInputs::default(),
    )
    .await
    .expect("capped cross_entropy");
    check_ce(
        &x,
        &targets,
        cols,
        &options,
        &ce,
        1.0,
        &losses,
        &grad,
        "host capped",
    );
}

#[wasm_bindgen_test]
async fn resident_cross_entropy_writes_the_gradient_into_its_own_buffer() {
    let app = app(false).await;
    let (rows, cols) = (9, 1024);
    let (x, targets) = ce_data(rows, cols, 8);
    let shape = Shape::new(rows, cols);
    let logits = storage_buffer(&app.device, &app.queue, bytemuck::cast_slice(&x));
    let t32: Vec<i32> = targets.iter().map(|&t| t as i32).collect();
    let tbuf = storage_buffer(&app.device, &app.queue, bytemuck::cast_slice(&t32));
    let lbuf = storage_buffer(&app.device, &app.queue, &vec![0xffu8; rows * 4]);
    let gbuf = storage_buffer(&app.device, &app.queue, &vec![0xffu8; rows * cols * 4]);
    let ce = CrossEntropy::default()
        .with_reduction(Reduction::Sum)
        .with_label_smoothing(0.1)
        .with_grad_scale(0.25);
    let mut encoder = app.device.create_command_encoder(&Default::default());
    let outputs = LossOutputs::new(Region::new(&lbuf)).with_grad(MatrixView::new(&gbuf));
    app.ctx
        .encode_cross_entropy(
            &mut encoder,
            MatrixView::new(&logits),
            Region::new(&tbuf),
            outputs,
            shape,
            &Options::softmax(),
            &ce,
            &RowInputs::NONE,
        )
        .expect("encode_cross_entropy");
    app.queue.submit([encoder.finish()]);
    let losses: Vec<f32> = read_back(&app.device, &app.queue, &lbuf)
        .await
        .expect("losses");
    let grad: Vec<f32> = read_back(&app.device, &app.queue, &gbuf)
        .await
        .expect("gradient");
    check_ce(
        &x,
        &targets,
        cols,
        &Options::softmax(),
        &ce,
        0.25,
        &losses,
        &grad,
        "resident",
    );
    // The logits are left as they were.
    let kept: Vec<f32> = read_back(&app.device, &app.queue, &logits)
        .await
        .expect("logits");
    assert_eq!(kept, x, "the logits changed");
    // In place (the gradient over the logits) is refused in the browser.
    let mut encoder = app.device.create_command_encoder(&Default::default());
    let got = app.ctx.encode_cross_entropy(
        &mut encoder,
        MatrixView::new(&logits),
        Region::new(&tbuf),
        LossOutputs::new(Region::new(&lbuf)).with_grad(MatrixView::new(&logits)),
        shape,
        &Options::softmax(),
        &ce,
        &RowInputs::NONE,
    );
    assert!(
        matches!(got, Err(Error::Unsupported(_))),
        "in place: {got:?}"
    );
    // A mean needs the rows not ignored, which only the GPU sees: refused.
    let got = app.ctx.encode_cross_entropy(
        &mut encoder,
        MatrixView::new(&logits),
        Region::new(&tbuf),
        LossOutputs::new(Region::new(&lbuf)),
        shape,
        &Options::softmax(),
        &CrossEntropy::default(),
        &RowInputs::NONE,
    );
    assert!(matches!(got, Err(Error::Unsupported(_))), "mean: {got:?}");
}

#[wasm_bindgen_test]
async fn host_and_resident_gather_log_probs() {
    let ctx = host().await;
    let (rows, cols, k) = (9, 4099, 5);
    let (mut x, _) = ce_data(rows, cols, 9);
    x[0] = 1e4;
    let mut rng = Rng::new(10);
    let indices: Vec<i64> = (0..rows * k)
        .map(|i| match i % k {
            0 => 0,
            1 => cols as i64 - 1,
            _ => rng.below(cols) as i64,
        })
        .collect();
    let shape = Shape::new(rows, cols);
    let options = Options::softmax().with_softcap(50.0).with_temperature(1.7);
    let mut out = vec![0f32; rows * k];
    ctx.gather_log_probs(
        &x,
        &indices,
        k,
        &mut out,
        shape,
        &options,
        HostInputs::default(),
    )
    .await
    .expect("gather_log_probs");
    let log_options = Options::log_softmax()
        .with_softcap(50.0)
        .with_temperature(1.7);
    let log = softmax_f64_with(&x, cols, &log_options, &HostInputs::default());
    for (i, &t) in indices.iter().enumerate() {
        let want = log[(i / k) * cols + t as usize];
        assert!(
            close(out[i], want, LOSS_TOL),
            "index {i}: {} vs {want}",
            out[i]
        );
    }
    // The resident path gathers the same from the app's buffers.
    let app = app(false).await;
    let logits = storage_buffer(&app.device, &app.queue, bytemuck::cast_slice(&x));
    let i32s: Vec<i32> = indices.iter().map(|&t| t as i32).collect();
    let ibuf = storage_buffer(&app.device, &app.queue, bytemuck::cast_slice(&i32s));
    let obuf = storage_buffer(&app.device, &app.queue, &vec![0xffu8; rows * k * 4]);
    let mut encoder = app.device.create_command_encoder(&Default::default());
    app.ctx
        .encode_gather_log_probs(
            &mut encoder,
            MatrixView::new(&logits),
            Region::new(&ibuf),
            k as u32,
            Region::new(&obuf),
            shape,
            &options,
            &RowInputs::NONE,
        )
        .expect("encode_gather_log_probs");
    app.queue.submit([encoder.finish()]);
    let got: Vec<f32> = read_back(&app.device, &app.queue, &obuf)
        .await
        .expect("readback");
    for (i, (&g, &h)) in got.iter().zip(&out).enumerate() {
        let want = log[(i / k) * cols + indices[i] as usize];
        assert!(
            close(g, want, LOSS_TOL),
            "resident index {i}: {g} (host {h}) vs {want}"
        );
    }
    // An index outside the row is refused by the host path.
    let bad = vec![cols as i64; rows * k];
    let got = ctx
        .gather_log_probs(
            &x,
            &bad,
            k,
            &mut out,
            shape,
            &options,
            HostInputs::default(),
        )
        .await;
    assert!(matches!(got, Err(Error::InvalidTarget { .. })), "{got:?}");
}

/// Logits far past the cap: +-1e4 and ordinary ones.
fn capped_logits(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..rows * cols)
        .map(|i| match i % 11 {
            0 => 1e4,
            3 => -1e4,
            _ => rng.normal(0.0, 40.0),
        })
        .collect()
}

#[wasm_bindgen_test]
async fn host_and_resident_softcap_on_huge_logits() {
    let ctx = host().await;
    let app = app(false).await;
    for cols in [33usize, 1000, 5000] {
        let shape = Shape::new(5, cols);
        let x = capped_logits(shape.rows, cols, cols as u64);
        for base in [Options::softmax(), Options::log_softmax()] {
            let options = base.with_softcap(30.0).with_temperature(0.7);
            let none = HostInputs::default();
            let y: Vec<f32> = run_host(&ctx, &x, shape, &options, HostInputs::default()).await;
            ok(check::output(
                &y,
                &x,
                shape,
                &options,
                &none,
                "host softcap",
            ));
            let y = resident_f32(&app, &x, shape, &options).await;
            ok(check::output(
                &y,
                &x,
                shape,
                &options,
                &none,
                "resident softcap",
            ));
        }
    }
}
/// Every variant of the sampler's kernels (one workgroup per row, and a split row's part
/// sweep and fold) and the cross-entropy kernel (input and output widths, row inputs
/// and mask readers) compiled by the browser's WGSL compiler (Tint), as
/// modules and as pipelines with the override constants all off and all on: Tint's
/// messages (with the source line) and the pipelines' validation errors are reported.
#[wasm_bindgen_test]
async fn sample_and_cross_entropy_variants_compile_in_the_browser() {
    let app = app(true).await;
    let device = &app.device;
    let mut failures = Vec::new();
    let mut pipelines = 0;
    let start = now_ms();
    let variants = Variant::all()
        .into_iter()
        .filter(|v| v.shader.samples() || v.shader == Shader::CrossEntropy);
    for v in variants {
        let source = v
            .source()
            .unwrap_or_else(|e| panic!("composing {v:?}: {e}"));
        let entry = v.shader.entry_point();
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(entry),
            source: wgpu::ShaderSource::Wgsl(source.as_str().into()),
        });
        let info = module.get_compilation_info().await;
        for m in &info.messages {
            if m.message_type == wgpu::CompilationMessageType::Error {
                let line = m.location.map_or(0, |l| l.line_number as usize);
                let text = source.lines().nth(line.saturating_sub(1)).unwrap_or("");
                failures.push(format!(
                    "{v:?}: line {line}: {}\n    {}",
                    m.message,
                    text.trim()
                ));
            }
        }
        if let Some(e) = scope.pop().await {
            failures.push(format!("{v:?}: module: {e}"));
            continue;
        }
        for on in [false, true] {
            let b = |x: bool| if x { 1.0 } else { 0.0 };
            let mut constants = vec![
                ("LOG_SOFTMAX", b(on)),
                ("MASKED_ROWS_ZERO", b(on)),
                ("VEC4", b(on)),
                ("WORKGROUP_SIZE", if on { 64.0 } else { 256.0 }),
                ("STATS_WRITE", b(on)),
                ("STATS_GIVEN", b(on)),
                ("CAUSAL", b(on)),
                ("SOFTCAP", b(on)),
            ];
            if v.row_inputs.is_some() {
                constants.extend([
                    ("HAS_MASK", b(on)),
                    ("HAS_LENGTHS", b(on)),
                    ("HAS_TEMPERATURES", b(on)),
                    ("MASK_DTYPE", if on { 2.0 } else { 0.0 }),
                ]);
            }
            if v.src_half {
                constants.push(("SRC_BF16", b(on)));
            }
            if v.dst_half {
                constants.push(("DST_BF16", b(on)));
            }
            let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
            let _pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
            if let Some(e) = scope.pop().await {
                failures.push(format!(
                    "{v:?}, overrides {}: pipeline: {e}",
                    if on { "on" } else { "off" }
                ));
            }
            pipelines += 1;
        }
    }
    console_log!(
        "{pipelines} sampler and cross-entropy pipelines compiled in {:.0} ms",
        now_ms() - start
    );
    assert!(
        failures.is_empty(),
        "Tint refused:\n{}",
        failures.join("\n")
    );
}
