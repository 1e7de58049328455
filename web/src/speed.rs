//! The browser's speed figure: the resident softmax against the plain vec4 copy kernel
//! moving the same bytes (the ratio the native `wgpu-softmax report` prints as
//! "softmax / copy kernel"), timed by wall clock in the page.
//!
//! Each measurement records `iters` dispatches in one submission and awaits
//! `queue.onSubmittedWorkDone`; the two take turns within each round (after one warm-up
//! submission each), and the ratio is the median over rounds of copy time / softmax
//! time. SwiftShader runs on the CPU, so this is a figure, not a target.

use wgpu_softmax::internals::bandwidth::CopyKernel;
use wgpu_softmax::{wgpu, Context, MatrixView, Options, RowInputs, Shape};

use crate::{normal_matrix, now_ms, storage_buffer, work_done};

/// What one speed measurement found.
#[derive(Clone, Debug)]
pub struct Speed {
    pub rows: usize,
    pub cols: usize,
    pub iters: u32,
    pub rounds: usize,
    /// Median milliseconds per softmax dispatch.
    pub softmax_ms: f64,
    /// Median milliseconds per copy-kernel dispatch.
    pub copy_ms: f64,
    /// Median over rounds of copy time / softmax time, and the extremes.
    pub ratio: f64,
    pub ratio_min: f64,
    pub ratio_max: f64,
}

impl Speed {
    /// GB/s of read plus write of the softmax.
    pub fn softmax_gbs(&self) -> f64 {
        (self.rows * self.cols * 8) as f64 / (self.softmax_ms * 1e-3) / 1e9
    }

    /// GB/s of read plus write of the copy kernel.
    pub fn copy_gbs(&self) -> f64 {
        (self.rows * self.cols * 8) as f64 / (self.copy_ms * 1e-3) / 1e9
    }

    /// The figure as JSON, for the page.
    pub fn to_json(&self) -> String {
        format!(
            "{{\"rows\":{},\"cols\":{},\"iters\":{},\"rounds\":{},\"softmax_ms\":{},\
             \"copy_ms\":{},\"softmax_gbs\":{},\"copy_gbs\":{},\"ratio\":{},\
             \"ratio_min\":{},\"ratio_max\":{}}}",
            self.rows,
            self.cols,
            self.iters,
            self.rounds,
            self.softmax_ms,
            self.copy_ms,
            self.softmax_gbs(),
            self.copy_gbs(),
            self.ratio,
            self.ratio_min,
            self.ratio_max
        )
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Times the resident softmax of a `rows x cols` f32 matrix against the copy kernel over
/// the same bytes, on `ctx`'s device.
pub async fn measure(
    ctx: &Context,
    rows: usize,
    cols: usize,
    iters: u32,
    rounds: usize,
) -> Result<Speed, String> {
    let (device, queue) = (ctx.device(), ctx.queue());
    let shape = Shape::new(rows, cols);
    let x = normal_matrix(cols as u64, rows * cols, 3.0);
    let mut padded: Vec<u8> = bytemuck::cast_slice(&x).to_vec();
    padded.resize(padded.len().next_multiple_of(16), 0);
    let input = storage_buffer(device, queue, &padded);
    let output = storage_buffer(device, queue, &vec![0u8; padded.len()]);
    let copy = CopyKernel::new(device, queue).map_err(|e| e.to_string())?;
    let bound = copy
        .bind(&input, &output, padded.len() as u64)
        .map_err(|e| e.to_string())?;
    let options = Options::softmax();
    let softmax = |encoder: &mut wgpu::CommandEncoder| {
        ctx.encode(
            encoder,
            MatrixView::new(&input),
            MatrixView::new(&output),
            shape,
            &options,
            &RowInputs::NONE,
        )
        .map_err(|e| e.to_string())
    };
    let copy_kernel = |encoder: &mut wgpu::CommandEncoder| {
        bound.record(encoder);
        Ok::<(), String>(())
    };
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..=rounds {
        let n = if round == 0 { 1 } else { iters };
        for (which, out) in times.iter_mut().enumerate() {
            let mut encoder = device.create_command_encoder(&Default::default());
            for _ in 0..n {
                if which == 0 {
                    softmax(&mut encoder)?;
                } else {
                    copy_kernel(&mut encoder)?;
                }
            }
            let start = now_ms();
            queue.submit([encoder.finish()]);
            work_done(queue).await;
            let elapsed = now_ms() - start;
            if round > 0 {
                out.push(elapsed / f64::from(n));
            }
        }
    }
    // The softmax timed must be right: once more (the copy kernel wrote the output
    // last), checked against the reference.
    let mut encoder = device.create_command_encoder(&Default::default());
    softmax(&mut encoder)?;
    queue.submit([encoder.finish()]);
    let y: Vec<f32> = crate::read_back(device, queue, &output).await?;
    let (max_err, outside) = crate::check::max_abs_error(&y[..x.len()], &x, cols, &options);
    if outside > 0 {
        return Err(format!(
            "the timed softmax has {outside} elements outside the tolerance (largest error \
             {max_err:e})"
        ));
    }
    let ratios: Vec<f64> = times[1].iter().zip(&times[0]).map(|(c, s)| c / s).collect();
    Ok(Speed {
        rows,
        cols,
        iters,
        rounds,
        softmax_ms: median(times[0].clone()),
        copy_ms: median(times[1].clone()),
        ratio: median(ratios.clone()),
        ratio_min: ratios.iter().copied().fold(f64::INFINITY, f64::min),
        ratio_max: ratios.iter().copied().fold(0.0, f64::max),
    })
}
