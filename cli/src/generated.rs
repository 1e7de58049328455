//! No `--input`: the self-check and benchmark. A seeded random logit matrix goes
//! through the host path (timed), is checked against the f64 reference a block of rows
//! at a time, and a slice of it is timed on the GPU against a plain copy kernel moving
//! the same bytes.

use std::io::Write;
use std::time::{Duration, Instant};

use wgpu_softmax::internals::bandwidth::CopyKernel;
use wgpu_softmax::internals::reference::{self, Tolerance};
use wgpu_softmax::{block_on, wgpu};
use wgpu_softmax::{Context, HostInputs, MatrixView, Options, RowInputs, Shape};

use crate::args::Args;
use crate::progress::Progress;
use crate::{adapter_line, describe, runtime, say, zeroed, Outcome};

/// Standard deviation of the random logits: wide enough that rows have a clear maximum
/// and tiny probabilities, as real logits do.
const LOGIT_SIGMA: f64 = 3.0;
/// Elements per block of the reference check, bounding its f64 buffer to 8 MiB.
const CHECK_BLOCK_ELEMENTS: usize = 1 << 20;
/// Bytes of the GPU-resident benchmark: large enough to dwarf launch overheads, small
/// enough to fit every device's storage binding.
const RESIDENT_BYTES: u64 = 64 << 20;
/// Kernel runs per submission in the resident benchmark.
const RESIDENT_ITERATIONS: u32 = 5;
/// Rounds of the resident benchmark, softmax and copy taking turns.
const RESIDENT_ROUNDS: usize = 5;
/// How long to wait for the benchmark submissions; software adapters are slow.
const GPU_TIMEOUT: Duration = Duration::from_secs(600);
/// Random logits made between two progress updates.
const GENERATE_BLOCK: usize = 1 << 20;

/// No `--input`: the benchmark and self-check.
pub fn run(args: &Args) -> Outcome<()> {
    let shape = Shape::new(args.rows, args.cols);
    let len = shape.len().map_err(runtime)?;
    let input = random_logits(len, args.seed, args.progress)?;
    let starting = Progress::spinner(args.progress, "starting the GPU");
    let mut output = zeroed(len)?;
    let options = &args.options;
    let ctx = block_on(Context::new(args.context.clone())).map_err(runtime)?;
    drop(starting);
    say!("{}", adapter_line(&ctx))?;
    say!(
        "shape: {} x {} ({})",
        shape.rows,
        shape.cols,
        describe(options)
    )?;
    let spinner = Progress::spinner(args.progress, "softmax on the GPU (host path)");
    // The first call builds the pipeline, which depends on the row length only: one
    // row keeps shader compilation out of the timing.
    let first_row = Shape::new(1, shape.cols);
    block_on(ctx.run(
        &input[..shape.cols],
        &mut output[..shape.cols],
        first_row,
        options,
        HostInputs::default(),
    ))
    .map_err(runtime)?;
    let start = Instant::now();
    block_on(ctx.run(&input, &mut output, shape, options, HostInputs::default()))
        .map_err(runtime)?;
    let seconds = start.elapsed().as_secs_f64();
    drop(spinner);
    say!(
        "time: {:.1} ms (host path: upload, compute, readback)",
        seconds * 1e3
    )?;
    say!(
        "throughput: {:.1} M elements/s, {:.2} GB/s (read + write of f32)",
        len as f64 / seconds / 1e6,
        len as f64 * 8.0 / seconds / 1e9
    )?;
    check(&input, &output, shape.cols, options, args.progress)?;
    let spinner = Progress::spinner(
        args.progress,
        "resident benchmark: softmax against a copy kernel",
    );
    let rates = bench_resident(&ctx, &input, shape, options)?;
    drop(spinner);
    rates.print()
}

fn check(
    input: &[f32],
    output: &[f32],
    cols: usize,
    options: &Options,
    progress: bool,
) -> Outcome<()> {
    let tolerance = Tolerance::for_op(options.op);
    let block = cols * (CHECK_BLOCK_ELEMENTS / cols).max(1);
    let mut max_error = 0.0f64;
    let mut first_bad = None;
    let bar = Progress::bar(
        progress,
        input.len() as u64,
        "elements",
        "checking against the f64 reference",
    );
    for (i, (x, y)) in input.chunks(block).zip(output.chunks(block)).enumerate() {
        let block_options = causal_from_row(options, i * block / cols);
        let expected = reference::softmax_f64_with(x, cols, &block_options, &HostInputs::default());
        max_error = max_error.max(reference::max_abs_error(y, &expected));
        if first_bad.is_none() {
            first_bad = reference::first_mismatch(y, &expected, tolerance)
                .map(|(at, got, want)| (i * block + at, got, want));
        }
        bar.inc(x.len() as u64);
    }
    drop(bar);
    let verdict = if first_bad.is_none() { "ok" } else { "FAILED" };
    say!(
        "max abs error vs f64 reference: {max_error:.1e} (tolerance {:e} + {:e}*|r|): {verdict}",
        tolerance.abs,
        tolerance.rel
    )?;
    match first_bad {
        None => Ok(()),
        Some((at, got, want)) => Err(runtime(format!(
            "element [{}, {}] is {got}, the f64 reference {want}: outside the tolerance",
            at / cols,
            at % cols
        ))),
    }
}

/// `options` for a block of rows starting at `first_row`: the reference counts causal
/// rows from the first row it is given, so the offset moves by the rows before it.
fn causal_from_row(options: &Options, first_row: usize) -> Options {
    match options.causal {
        Some(offset) => options.with_causal(offset.saturating_add(first_row as u64)),
        None => *options,
    }
}

// ---------------------------------------------------------------------------------------
// Random logits

/// SplitMix64 (Steele, Lea and Flood, 2014): a few lines, seedable, and plenty random
/// for test data.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1]: never 0, so the logarithm in Box-Muller stays finite.
    fn next_unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }
}

/// `len` normal(0, LOGIT_SIGMA) values by Box-Muller, two per pair of uniforms.
fn random_logits(len: usize, seed: u64, progress: bool) -> Outcome<Vec<f32>> {
    let bar = Progress::bar(progress, len as u64, "elements", "making random logits");
    let mut rng = SplitMix64(seed);
    let mut data = zeroed(len)?;
    for (i, pair) in data.chunks_mut(2).enumerate() {
        if i % GENERATE_BLOCK == 0 {
            bar.inc((2 * GENERATE_BLOCK).min(len - 2 * i) as u64);
        }
        let radius = LOGIT_SIGMA * (-2.0 * rng.next_unit().ln()).sqrt();
        let (sin, cos) = (std::f64::consts::TAU * rng.next_unit()).sin_cos();
        for (slot, v) in pair.iter_mut().zip([cos, sin]) {
            *slot = (radius * v) as f32;
        }
    }
    Ok(data)
}

// ---------------------------------------------------------------------------------------
// GPU-resident benchmark

/// Runs `f` inside wgpu error scopes: a validation, out-of-memory or internal error
/// comes back as an `error:` line instead of reaching wgpu's default handler, which
/// panics.
fn scoped<T>(device: &wgpu::Device, f: impl FnOnce() -> T) -> Outcome<T> {
    let scopes = [
        wgpu::ErrorFilter::OutOfMemory,
        wgpu::ErrorFilter::Validation,
        wgpu::ErrorFilter::Internal,
    ]
    .map(|filter| device.push_error_scope(filter));
    let value = f();
    // Scopes nest, so all are popped, innermost first, before any result is looked at.
    let popped: Vec<_> = scopes.into_iter().rev().map(|s| s.pop()).collect();
    for error in popped {
        if let Some(e) = block_on(error) {
            return Err(runtime(format!("wgpu: {e}")));
        }
    }
    Ok(value)
}

/// Times softmax against a plain copy of the same bytes, both on data already on the
/// GPU: the host path's time includes PCIe transfers, which say nothing of the kernel.
fn bench_resident(ctx: &Context, input: &[f32], shape: Shape, options: &Options) -> Outcome<Rates> {
    let caps = ctx.caps();
    // A multiple of 16, so rounding the buffers up to whole vec4s stays in the budget.
    let budget = RESIDENT_BYTES
        .min(caps.max_storage_binding_size)
        .min(caps.max_buffer_size)
        & !15;
    let row_bytes = shape.cols as u64 * 4;
    let rows = usize::try_from(budget / row_bytes)
        .unwrap_or(usize::MAX)
        .clamp(1, shape.rows);
    let resident = Shape::new(rows, shape.cols);
    let elements = rows * shape.cols;
    let bytes = (elements as u64 * 4).next_multiple_of(16);

    let device = ctx.device();
    let (src, dst) = scoped(device, || {
        let buffer = |label| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        };
        let (src, dst) = (
            buffer("softmax cli resident in"),
            buffer("softmax cli resident out"),
        );
        ctx.queue()
            .write_buffer(&src, 0, bytemuck::cast_slice(&input[..elements]));
        (src, dst)
    })?;
    let copy_kernel = CopyKernel::new(device, ctx.queue())
        .and_then(|k| k.bind(&src, &dst, bytes))
        .map_err(runtime)?;

    let softmax = |encoder: &mut wgpu::CommandEncoder| {
        ctx.encode(
            encoder,
            MatrixView::new(&src),
            MatrixView::new(&dst),
            resident,
            options,
            &RowInputs::NONE,
        )
        .map_err(runtime)
    };
    let copy = |encoder: &mut wgpu::CommandEncoder| {
        copy_kernel.record(encoder);
        Ok(())
    };
    let (softmax, copy, ratio) = compare_rates(ctx, elements, softmax, copy)?;
    Ok(Rates {
        resident,
        softmax,
        copy,
        ratio,
    })
}

/// What the resident benchmark measured.
struct Rates {
    /// The part of the matrix held on the GPU.
    resident: Shape,
    /// Median elements/s of softmax and of the copy kernel.
    softmax: f64,
    copy: f64,
    /// Median of the per-round softmax / copy ratios.
    ratio: f64,
}

impl Rates {
    fn print(&self) -> Outcome<()> {
        say!(
            "resident softmax: {:.1} M elements/s ({} x {} on the GPU, {} runs per submission, \
             median of {} rounds)",
            self.softmax / 1e6,
            self.resident.rows,
            self.resident.cols,
            RESIDENT_ITERATIONS,
            RESIDENT_ROUNDS
        )?;
        say!("copy kernel: {:.1} M elements/s", self.copy / 1e6)?;
        say!(
            "softmax / copy: {:.2} (median of the per-round ratios)",
            self.ratio
        )
    }
}

/// One warm-up run of each (pipeline creation, first touch of the buffers), then
/// `RESIDENT_ROUNDS` rounds in which each records `RESIDENT_ITERATIONS` runs into one
/// submission, timed from submit until the GPU is done. The two take turns within a
/// round, so a slow spell of a shared machine hits both: their ratio is taken per round.
/// Returns both median rates (elements/s) and the median ratio.
fn compare_rates(
    ctx: &Context,
    elements: usize,
    mut softmax: impl FnMut(&mut wgpu::CommandEncoder) -> Outcome<()>,
    mut copy: impl FnMut(&mut wgpu::CommandEncoder) -> Outcome<()>,
) -> Outcome<(f64, f64, f64)> {
    submit_and_wait(ctx, 1, &mut softmax)?;
    submit_and_wait(ctx, 1, &mut copy)?;
    let rate = |seconds: f64| elements as f64 * f64::from(RESIDENT_ITERATIONS) / seconds;
    let (mut s, mut c, mut r) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RESIDENT_ROUNDS {
        let a = rate(submit_and_wait(ctx, RESIDENT_ITERATIONS, &mut softmax)?);
        let b = rate(submit_and_wait(ctx, RESIDENT_ITERATIONS, &mut copy)?);
        s.push(a);
        c.push(b);
        r.push(a / b);
    }
    Ok((median(s), median(c), median(r)))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn submit_and_wait(
    ctx: &Context,
    iterations: u32,
    record: &mut impl FnMut(&mut wgpu::CommandEncoder) -> Outcome<()>,
) -> Outcome<f64> {
    let device = ctx.device();
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
        label: Some("softmax cli benchmark"),
    });
    for _ in 0..iterations {
        record(&mut encoder)?;
    }
    let start = Instant::now();
    let submission = scoped(device, || ctx.queue().submit([encoder.finish()]))?;
    device
        .poll(wgpu::PollType::Wait {
            submission_index: Some(submission),
            timeout: Some(GPU_TIMEOUT),
        })
        .map_err(|e| runtime(format!("waiting for the GPU: {e}")))?;
    Ok(start.elapsed().as_secs_f64())
}
