//! `wgpu-softmax report --loss`: the fused cross-entropy (loss and gradient, the gradient
//! written over the logits) against composing it from the crate's own ops, per call on
//! one adapter in one run, with the GPU memory each needs beyond the logits:
//!
//! - fused: `encode_cross_entropy` with the gradient in place: one `[rows]` losses
//!   buffer, nothing of the matrix's size (the logits must be kept otherwise: add one
//!   matrix when they are);
//! - composed: log-softmax of the logits into `y` (a `[rows, cols]` temporary), then the
//!   backward pass of log-softmax with `dy` the one-hot of the targets scaled by
//!   `-1 / rows` (a second `[rows, cols]` buffer, built beforehand and not timed here)
//!   into `dx`, which is `dy`'s buffer: two matrices beyond the logits. The loss itself
//!   would take a gather of `y` more, not counted.
//!
//! Each time is the median of `--repeats` calls after a warm-up, from recording to the
//! submission's completion.

use std::time::Instant;

use wgpu_softmax::wgpu;
use wgpu_softmax::{
    Context, CrossEntropy, LossOutputs, MatrixView, Options, Reduction, Region, RowInputs, Shape,
};

use crate::report::{buffer, logits, median, wait};

/// The shapes measured on a hardware adapter (the issue's), and on a software one (a
/// quarter of the rows: the same per-row work, a size these adapters time in seconds).
pub fn shapes(software: bool) -> [(usize, usize); 2] {
    if software {
        [(1024, 32000), (256, 128256)]
    } else {
        [(4096, 32000), (1024, 128256)]
    }
}

/// One shape's figures.
pub struct Row {
    pub rows: usize,
    pub cols: usize,
    pub fused_ms: f64,
    pub composed_ms: f64,
    pub fused_extra: u64,
    pub composed_extra: u64,
}

fn measure(ctx: &Context, rows: usize, cols: usize, repeats: usize) -> Result<Row, String> {
    let len = rows * cols;
    let bytes = (len * 4) as u64;
    let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
    let x = buffer(ctx, bytes, usage);
    let data = logits(len, 5);
    let targets: Vec<i32> = (0..rows).map(|r| ((r * 7919) % cols) as i32).collect();
    let t = buffer(ctx, (rows * 4) as u64, usage);
    let losses = buffer(ctx, (rows * 4) as u64, usage);
    ctx.queue()
        .write_buffer(&t, 0, bytemuck::cast_slice(&targets));
    let y = buffer(ctx, bytes, usage);
    let dy = buffer(ctx, bytes, usage);
    let mut onehot = vec![0f32; len];
    for (r, &c) in targets.iter().enumerate() {
        onehot[r * cols + c as usize] = -1.0 / rows as f32;
    }
    let shape = Shape::new(rows, cols);
    let ce = CrossEntropy::default()
        .with_reduction(Reduction::Sum)
        .with_grad_scale(1.0 / rows as f32);
    let log = Options::log_softmax();
    let time = |setup: &dyn Fn(),
                record: &dyn Fn(&mut wgpu::CommandEncoder) -> Result<(), String>| {
        let mut times = Vec::new();
        for i in 0..=repeats {
            setup();
            wait(ctx, ctx.queue().submit([]))?;
            let t0 = Instant::now();
            let mut enc = ctx.device().create_command_encoder(&Default::default());
            record(&mut enc)?;
            wait(ctx, ctx.queue().submit([enc.finish()]))?;
            if i > 0 {
                times.push(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
        Ok::<f64, String>(median(times))
    };
    // The gradient overwrites the logits: each round starts from them again.
    let fused_ms = time(
        &|| ctx.queue().write_buffer(&x, 0, bytemuck::cast_slice(&data)),
        &|enc| {
            let out = LossOutputs::new(Region::new(&losses)).with_grad(MatrixView::new(&x));
            ctx.encode_cross_entropy(
                enc,
                MatrixView::new(&x),
                Region::new(&t),
                out,
                shape,
                &Options::softmax(),
                &ce,
                &RowInputs::NONE,
            )
            .map_err(|e| e.to_string())
        },
    )?;
    let composed_ms = time(
        &|| {
            ctx.queue().write_buffer(&x, 0, bytemuck::cast_slice(&data));
            ctx.queue()
                .write_buffer(&dy, 0, bytemuck::cast_slice(&onehot));
        },
        &|enc| {
            ctx.encode(
                enc,
                MatrixView::new(&x),
                MatrixView::new(&y),
                shape,
                &log,
                &RowInputs::NONE,
            )
            .map_err(|e| e.to_string())?;
            ctx.encode_backward(enc, MatrixView::new(&y), MatrixView::new(&dy), shape, &log)
                .map_err(|e| e.to_string())
        },
    )?;
    Ok(Row {
        rows,
        cols,
        fused_ms,
        composed_ms,
        fused_extra: (rows * 4) as u64,
        composed_extra: 2 * bytes,
    })
}

/// Every shape's figures and their markdown table.
pub fn table(ctx: &Context, repeats: usize) -> Result<String, String> {
    let software = ctx.adapter_info().device_type == wgpu::DeviceType::Cpu;
    let info = ctx.adapter_info();
    let mut s = format!(
        "Adapter: {} ({:?}). Cross-entropy loss and gradient, per call, ms, median of \
         {repeats} after a warm-up; GPU memory beyond the logits and targets.\n\n",
        info.name, info.backend
    );
    s += "| rows x cols | fused (gradient in place) | composed (log-softmax + backward) | composed / fused time | fused extra memory | composed extra memory |\n";
    s += "| --- | --- | --- | --- | --- | --- |\n";
    for (rows, cols) in shapes(software) {
        eprintln!("cross-entropy {rows} x {cols} ...");
        let r = measure(ctx, rows, cols, repeats)?;
        s += &format!(
            "| {} x {} | {:.1} | {:.1} | {:.2} | {} KiB | {} MiB |\n",
            r.rows,
            r.cols,
            r.fused_ms,
            r.composed_ms,
            r.composed_ms / r.fused_ms,
            r.fused_extra >> 10,
            r.composed_extra >> 20
        );
    }
    Ok(s)
}
