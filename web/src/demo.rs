//! What the demo page (`demo/index.html`) calls: the seed row, a large softmax checked
//! against the f64 reference, the adapter, and the speed figure. Each is an async
//! function the page awaits (a JS promise); one context serves them all.

use std::cell::RefCell;
use std::rc::Rc;

use wasm_bindgen::prelude::*;
use wgpu_softmax::{Context, ContextOptions, HostInputs, Options, Shape};

use crate::{check, now_ms, speed, Rng};

thread_local! {
    static CONTEXT: RefCell<Option<Rc<Context>>> = const { RefCell::new(None) };
}

fn js_error(e: impl std::fmt::Display) -> JsValue {
    JsValue::from_str(&e.to_string())
}

/// The page's context, made on first use (`Context::new`: the browser's adapter).
async fn context() -> Result<Rc<Context>, JsValue> {
    if let Some(ctx) = CONTEXT.with(|c| c.borrow().clone()) {
        return Ok(ctx);
    }
    let ctx = Rc::new(
        Context::new(ContextOptions::default())
            .await
            .map_err(js_error)?,
    );
    CONTEXT.with(|c| *c.borrow_mut() = Some(ctx.clone()));
    Ok(ctx)
}

/// JSON string literal of `s`.
fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The adapter as JSON: name (GPUAdapterInfo's description), backend, whether subgroups
/// are on, and the storage limits.
#[wasm_bindgen]
pub async fn adapter() -> Result<String, JsValue> {
    let ctx = context().await?;
    let info = ctx.adapter_info();
    let limits = ctx.device().limits();
    Ok(format!(
        "{{\"name\":{},\"backend\":{},\"device_type\":{},\"subgroups\":{},\
         \"max_storage_binding_size\":{},\"max_buffer_size\":{},\
         \"max_storage_buffers_per_shader_stage\":{}}}",
        quoted(&info.name),
        quoted(&format!("{:?}", info.backend)),
        quoted(&format!("{:?}", info.device_type)),
        ctx.caps().subgroups,
        limits.max_storage_buffer_binding_size,
        limits.max_buffer_size,
        limits.max_storage_buffers_per_shader_stage
    ))
}

/// Softmax of the seed row `[7, 4, 0]` by the host path.
#[wasm_bindgen]
pub async fn seed_row() -> Result<Vec<f32>, JsValue> {
    let ctx = context().await?;
    let x = [7.0f32, 4.0, 0.0];
    let mut y = [0.0f32; 3];
    let softmax = Options::softmax();
    ctx.run(
        &x,
        &mut y,
        Shape::new(1, 3),
        &softmax,
        HostInputs::default(),
    )
    .await
    .map_err(js_error)?;
    Ok(y.to_vec())
}

/// A `rows x cols` softmax of seeded values in [-8, 8) by the host path (upload,
/// compute, readback, streamed in chunks), timed, and checked element by element against
/// the f64 reference. JSON: milliseconds, elements per second, GB/s of input plus
/// output, the largest absolute error and how many elements are outside the contract.
#[wasm_bindgen]
pub async fn large_softmax(rows: usize, cols: usize) -> Result<String, JsValue> {
    let ctx = context().await?;
    let shape = Shape::new(rows, cols);
    let len = shape.len().map_err(js_error)?;
    let mut rng = Rng::new(7);
    let x: Vec<f32> = (0..len)
        .map(|_| (rng.next_u64() >> 40) as f32 / (1u32 << 24) as f32 * 16.0 - 8.0)
        .collect();
    let mut y = vec![0.0f32; len];
    let options = Options::softmax();
    // One untimed call first: the pipelines compile then.
    let small = Shape::new(1, cols);
    let mut warm = vec![0.0f32; cols];
    ctx.run(
        &x[..cols],
        &mut warm,
        small,
        &options,
        HostInputs::default(),
    )
    .await
    .map_err(js_error)?;
    let start = now_ms();
    ctx.run(&x, &mut y, shape, &options, HostInputs::default())
        .await
        .map_err(js_error)?;
    let ms = now_ms() - start;
    let (max_err, outside) = check::max_abs_error(&y, &x, cols, &options);
    let elements = len as f64;
    Ok(format!(
        "{{\"rows\":{rows},\"cols\":{cols},\"ms\":{ms},\"gelem_s\":{},\"gbs\":{},\
         \"max_abs_error\":{max_err},\"outside_tolerance\":{outside},\"y0\":[{},{},{}]}}",
        elements / (ms * 1e-3) / 1e9,
        elements * 8.0 / (ms * 1e-3) / 1e9,
        y[0],
        y[1],
        y[2]
    ))
}

/// The speed figure (see [`speed::measure`]) on the page's context, as JSON.
#[wasm_bindgen]
pub async fn speed(rows: usize, cols: usize, iters: u32, rounds: usize) -> Result<String, JsValue> {
    let ctx = context().await?;
    let s = speed::measure(&ctx, rows, cols, iters, rounds)
        .await
        .map_err(js_error)?;
    Ok(s.to_json())
}
