//! `wgpu-softmax report`: the benchmark report. In one run on one adapter, per shape,
//! the GPU-resident softmax against a plain vec4 WGSL copy kernel moving the same bytes
//! (the limit) and against the copy engine (`copy_buffer_to_buffer`); the host path
//! against upload plus readback alone; batch-1 latency against an empty submission's
//! round trip. Prints a markdown table and writes `report.md`, `report.csv` and
//! `report.png` (softmax as a fraction of the copy kernel, against cols) to `--out`
//! (default `target/report`). A last table, also in `scaling.csv`, times 4096-column
//! matrices from 1 MiB doubling up to four times the default size, to show whether time
//! grows linearly with size.
//!
//! `--kernel` and `--wg` force the kernel and workgroup size (for tuning the planner).
//! `--versus planner,workgroup-subgroup:16,...` instead measures, per `--cols` shape, the
//! planner's choice and each forced kernel (with an optional workgroup size after the
//! colon) against the copy kernel in the same interleaved rounds, and prints only that
//! table: the A/B comparison behind each planner threshold.
//!
//! GPU time covers `--iters` dispatches recorded in one submission, the median of
//! `--repeats` runs: from two timestamps written on the encoder around them where the
//! device has `TIMESTAMP_QUERY` and `TIMESTAMP_QUERY_INSIDE_ENCODERS`, else wall time
//! from submission to completion (map and poll outside the timed region either way). The
//! default matrix is 16 MiB per shape on a software adapter and 256 MiB on a hardware one.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use wgpu_softmax::internals::bandwidth::{BoundCopy, CopyKernel};
use wgpu_softmax::internals::RowKernel;
use wgpu_softmax::{block_on, half, wgpu};
use wgpu_softmax::{
    Context, ContextOptions, Dtype, HostInputs, MaskView, MatrixView, Options, Region, RowInputs,
    Shape, StatsView,
};

use crate::{runtime, Outcome};

const LATENCY_COLS: [usize; 2] = [32000, 262144];
/// Row length of the scaling table (matrices from 1 MiB to four times `--size-mib`).
const SCALING_COLS: usize = 4096;

/// The report's flags, as given.
#[derive(clap::Args, Debug)]
pub struct Flags {
    /// Bytes of each shape's matrix, in MiB [default: 16 on a software adapter, 256 on
    /// a hardware one]
    #[arg(long, value_name = "N", value_parser = positive)]
    size_mib: Option<u64>,
    /// Dispatches recorded in each timed submission
    #[arg(long, value_name = "N", default_value = "10", value_parser = positive)]
    iters: u64,
    /// Timed rounds per measurement (the median is reported)
    #[arg(long, value_name = "N", default_value = "5", value_parser = positive)]
    repeats: u64,
    /// Row lengths measured, comma-separated
    #[arg(
        long,
        value_name = "N,N,...",
        value_delimiter = ',',
        value_parser = positive,
        default_value = "32,128,512,1024,4096,16384,32000,131072,262144"
    )]
    cols: Vec<u64>,
    /// Folder of report.md, report.csv, report.png and scaling.csv
    #[arg(long, value_name = "DIR", default_value = "target/report")]
    out: PathBuf,
    /// Log-softmax instead of softmax
    #[arg(long)]
    log: bool,
    /// Force a kernel instead of the planner's choice: thread-row, subgroup-row,
    /// workgroup-subgroup, workgroup-shared or split-row
    #[arg(long, value_name = "KERNEL", value_parser = parse_kernel)]
    kernel: Option<RowKernel>,
    /// Force a workgroup size
    #[arg(long, value_name = "N", value_parser = positive)]
    wg: Option<u64>,
    /// Instead of the report, per --cols shape: the planner's choice ("planner") and
    /// each forced kernel (with an optional workgroup size after a colon), against the
    /// copy kernel in the same rounds
    #[arg(long, value_name = "CONFIG,...", value_delimiter = ',', value_parser = parse_config)]
    versus: Vec<(String, Forced)>,
    /// Instead of the report: the sampler's per-call time at batch 1 and 64 over
    /// vocabularies of 32000, 128256 and 262144, against softmax alone and against
    /// reading the logits back and sampling on the CPU (writes sampling.md)
    #[arg(long, conflicts_with = "versus")]
    sampling: bool,
    /// Instead of the report: the fused cross-entropy (loss and gradient in place)
    /// against log-softmax plus its backward pass, time and GPU memory (writes loss.md)
    #[arg(long, conflicts_with_all = ["versus", "sampling"])]
    loss: bool,
}

impl Flags {
    /// The report's settings (every combination of flags is valid).
    pub fn check(self) -> Outcome<Args> {
        let planned = if self.log {
            Options::log_softmax()
        } else {
            Options::softmax()
        };
        let forced = Forced {
            kernel: self.kernel,
            workgroup_size: self.wg.map(saturating_u32),
        };
        Ok(Args {
            size_mib: self.size_mib,
            iters: saturating_u32(self.iters),
            repeats: usize::try_from(self.repeats).unwrap_or(usize::MAX),
            cols: self
                .cols
                .into_iter()
                .map(|c| usize::try_from(c).unwrap_or(usize::MAX))
                .collect(),
            out: self.out,
            planned,
            options: forced.apply(planned),
            versus: self.versus,
            sampling: self.sampling,
            loss: self.loss,
        })
    }
}

fn saturating_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A positive integer.
fn positive(text: &str) -> Result<u64, String> {
    text.parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or(format!("expected a positive integer, got {text:?}"))
}

/// A `--versus` configuration: `planner` or a kernel, and an optional `:workgroup`.
/// Only the kernel and workgroup size are kept: the op comes from the other flags,
/// whatever their order.
fn parse_config(config: &str) -> Result<(String, Forced), String> {
    let (kernel, wg) = match config.split_once(':') {
        Some((k, w)) => (k, Some(saturating_u32(positive(w)?))),
        None => (config, None),
    };
    let kernel = match kernel {
        "planner" => None,
        _ => Some(parse_kernel(kernel)?),
    };
    let forced = Forced {
        kernel,
        workgroup_size: wg,
    };
    Ok((config.to_string(), forced))
}

/// The report's settings.
pub struct Args {
    size_mib: Option<u64>,
    iters: u32,
    repeats: usize,
    cols: Vec<usize>,
    out: PathBuf,
    /// The op (`--log`), as the planner runs it.
    planned: Options,
    /// `planned` with the kernel and workgroup size of `--kernel` and `--wg`, if given.
    options: Options,
    /// Configurations for `--versus`: a name and what it forces.
    versus: Vec<(String, Forced)>,
    /// `--sampling`: the sampler's table instead of the report.
    sampling: bool,
    /// `--loss`: the cross-entropy's table instead of the report.
    loss: bool,
}

/// A kernel and workgroup size forced instead of the planner's choice.
#[derive(Clone, Copy, Debug, Default)]
struct Forced {
    kernel: Option<RowKernel>,
    workgroup_size: Option<u32>,
}

impl Forced {
    /// `options` with these forced.
    fn apply(self, mut options: Options) -> Options {
        if let Some(kernel) = self.kernel {
            options = options.with_kernel(kernel);
        }
        if let Some(size) = self.workgroup_size {
            options = options.with_workgroup_size(size);
        }
        options
    }
}

fn parse_kernel(name: &str) -> Result<RowKernel, String> {
    Ok(match name {
        "thread-row" => RowKernel::ThreadPerRow,
        "subgroup-row" => RowKernel::SubgroupPerRow,
        "workgroup-subgroup" => RowKernel::WorkgroupSubgroup,
        "workgroup-shared" => RowKernel::WorkgroupShared,
        "split-row" => RowKernel::SplitRow,
        other => return Err(format!("unknown kernel {other:?}")),
    })
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

type Recorder<'a> = &'a dyn Fn(&mut wgpu::CommandEncoder) -> wgpu_softmax::Result<()>;

/// GPU time from two timestamps written on the encoder around the recorded work, where
/// the device has `TIMESTAMP_QUERY` and `TIMESTAMP_QUERY_INSIDE_ENCODERS`.
struct GpuTimer {
    set: wgpu::QuerySet,
    resolved: wgpu::Buffer,
    readback: wgpu::Buffer,
    /// Nanoseconds per timestamp tick.
    period_ns: f64,
}

impl GpuTimer {
    const FEATURES: wgpu::Features =
        wgpu::Features::TIMESTAMP_QUERY.union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS);

    fn new(ctx: &Context) -> Option<Self> {
        if !timestamps(ctx) {
            return None;
        }
        Some(GpuTimer {
            set: ctx.device().create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("report timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            }),
            resolved: buffer(
                ctx,
                16,
                wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            ),
            readback: buffer(
                ctx,
                16,
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            ),
            period_ns: f64::from(ctx.queue().get_timestamp_period()),
        })
    }

    /// Records the start timestamp.
    fn start(&self, encoder: &mut wgpu::CommandEncoder) {
        encoder.write_timestamp(&self.set, 0);
    }

    /// Records the end timestamp and the copy of both to the readback buffer.
    fn stop(&self, encoder: &mut wgpu::CommandEncoder) {
        encoder.write_timestamp(&self.set, 1);
        encoder.resolve_query_set(&self.set, 0..2, &self.resolved, 0);
        encoder.copy_buffer_to_buffer(&self.resolved, 0, &self.readback, 0, 16);
    }

    /// Seconds between the two timestamps of the finished submission, or None where the
    /// driver gave no usable pair.
    fn seconds(&self, ctx: &Context) -> Result<Option<f64>, String> {
        let slice = self.readback.slice(..);
        slice.map_async(wgpu::MapMode::Read, |_| {});
        wait_idle(ctx)?;
        let ticks: [u64; 2] = {
            let view = slice.get_mapped_range().map_err(|e| e.to_string())?;
            bytemuck::pod_read_unaligned(&view[..16])
        };
        self.readback.unmap();
        let elapsed = ticks[1].wrapping_sub(ticks[0]) as f64 * self.period_ns * 1e-9;
        Ok((ticks[1] > ticks[0] && elapsed > 0.0).then_some(elapsed))
    }
}

/// Seconds per iteration of each recorder, per round: `iters` recordings in one
/// submission, the recorders taking turns within each round (so that a slow spell of a
/// shared machine hits all of them alike), after one warm-up submission each. GPU time
/// from timestamps where `timer` is given (wall time where a pair is unusable), else
/// wall time from submission to completion.
fn time_rounds(
    ctx: &Context,
    iters: u32,
    repeats: usize,
    recorders: &[Recorder],
) -> Result<Vec<Vec<f64>>, String> {
    let timer = GpuTimer::new(ctx);
    let mut times = vec![Vec::new(); recorders.len()];
    for round in 0..=repeats {
        let n = if round == 0 { 1 } else { iters };
        for (record, out) in recorders.iter().zip(&mut times) {
            let mut encoder = ctx.device().create_command_encoder(&Default::default());
            if let Some(t) = &timer {
                t.start(&mut encoder);
            }
            for _ in 0..n {
                record(&mut encoder).map_err(|e| e.to_string())?;
            }
            if let Some(t) = &timer {
                t.stop(&mut encoder);
            }
            let start = Instant::now();
            let index = ctx.queue().submit([encoder.finish()]);
            wait(ctx, index)?;
            let wall = start.elapsed().as_secs_f64();
            let gpu = match &timer {
                Some(t) => t.seconds(ctx)?,
                None => None,
            };
            if round > 0 {
                out.push(gpu.unwrap_or(wall) / f64::from(n));
            }
        }
    }
    Ok(times)
}

/// How the report's kernel times are taken, in words.
fn clock(ctx: &Context) -> &'static str {
    if timestamps(ctx) {
        "GPU timestamps written on the encoder"
    } else {
        "wall time from submission to completion"
    }
}

/// Whether the report's kernel times come from GPU timestamps.
fn timestamps(ctx: &Context) -> bool {
    ctx.device().features().contains(GpuTimer::FEATURES)
}

/// The median over rounds of `a[i] / b[i]`.
fn median_ratio(a: &[f64], b: &[f64]) -> f64 {
    median(a.iter().zip(b).map(|(x, y)| x / y).collect())
}

/// Waits for everything submitted (and the map callbacks it makes ready).
fn wait_idle(ctx: &Context) -> Result<(), String> {
    ctx.device()
        .poll(wgpu::PollType::Wait {
            submission_index: None,
            timeout: Some(Duration::from_secs(600)),
        })
        .map(|_| ())
        .map_err(|e| e.to_string())
}

pub(crate) fn wait(ctx: &Context, index: wgpu::SubmissionIndex) -> Result<(), String> {
    ctx.device()
        .poll(wgpu::PollType::Wait {
            submission_index: Some(index),
            timeout: Some(Duration::from_secs(600)),
        })
        .map(|_| ())
        .map_err(|e| e.to_string())
}

pub(crate) fn buffer(ctx: &Context, bytes: u64, usage: wgpu::BufferUsages) -> wgpu::Buffer {
    ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("report"),
        size: bytes,
        usage,
        mapped_at_creation: false,
    })
}

pub(crate) fn logits(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            // SplitMix64, mapped to roughly N(0, 3) by summing uniforms.
            let mut acc = 0.0f32;
            for _ in 0..4 {
                state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                acc += ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32;
            }
            (acc - 2.0) * 5.2
        })
        .collect()
}

struct Row {
    rows: usize,
    cols: usize,
    /// The planner's traffic for the shape: bytes moved over one read and one write of
    /// every element, and reads per element.
    traffic: (f64, u32),
    softmax_s: f64,
    copy_kernel_s: f64,
    /// Median over rounds of copy-kernel time / softmax time, measured back to back.
    softmax_over_copy: f64,
    /// Median over repeats of upload-and-readback time / host-path time.
    host_over_transfer: f64,
    copy_engine_s: f64,
    host_s: f64,
    transfer_s: f64,
}

impl Row {
    fn elements(&self) -> f64 {
        (self.rows * self.cols) as f64
    }
    /// G elements/s for a time.
    fn gelem(&self, s: f64) -> f64 {
        self.elements() / s / 1e9
    }
    /// GB/s of read plus write.
    fn gbs(&self, s: f64) -> f64 {
        self.elements() * 8.0 / s / 1e9
    }
}

fn measure_shape(
    ctx: &Context,
    copy: &CopyKernel,
    args: &Args,
    rows: usize,
    cols: usize,
) -> Result<Row, String> {
    let shape = Shape::new(rows, cols);
    let bytes = (rows * cols * 4) as u64;
    let data = logits(rows * cols, cols as u64);
    let (input, output) = matrix_buffers(ctx, &data);
    let bound = copy
        .bind(&input, &output, bytes.next_multiple_of(16))
        .map_err(|e| e.to_string())?;
    let plain = RowInputs::default();
    let softmax = fused(ctx, (&input, &output), shape, &args.options, &plain);
    let copy_kernel = copy_recorder(&bound);
    let copy_engine: Recorder = &|enc| {
        enc.copy_buffer_to_buffer(&input, 0, &output, 0, bytes.next_multiple_of(4));
        Ok(())
    };
    let t = time_rounds(
        ctx,
        args.iters,
        args.repeats,
        &[&softmax, &copy_kernel, copy_engine],
    )?;

    // Host path, and the same bytes uploaded and read back with no compute.
    let mut out = vec![0.0f32; data.len()];
    let mut host = Vec::new();
    let mut transfer = Vec::new();
    // Made once, as the host path keeps its own: the floor is the transfers alone, not
    // the first touch of new buffers.
    let slots = transfer_slots(ctx, data.len());
    for _ in 0..args.repeats {
        let t = Instant::now();
        block_on(ctx.run(&data, &mut out, shape, &args.options, HostInputs::default()))
            .map_err(|e| e.to_string())?;
        host.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        upload_and_read_back(ctx, &slots, &data, &mut out)?;
        transfer.push(t.elapsed().as_secs_f64());
    }
    Ok(Row {
        rows,
        cols,
        traffic: traffic(ctx, &args.options, rows, cols)?,
        softmax_s: median(t[0].clone()),
        copy_kernel_s: median(t[1].clone()),
        copy_engine_s: median(t[2].clone()),
        softmax_over_copy: median_ratio(&t[1], &t[0]),
        host_s: median(host.clone()),
        transfer_s: median(transfer.clone()),
        host_over_transfer: median_ratio(&transfer, &host),
    })
}

/// What the planner's plan for a packed f32 matrix moves, by construction: bytes over
/// the least (one read and one write of each element), and reads per element.
fn traffic(
    ctx: &Context,
    options: &Options,
    rows: usize,
    cols: usize,
) -> Result<(f64, u32), String> {
    use wgpu_softmax::internals::plan;
    let place = plan::Placement {
        offset: 0,
        row_stride: cols,
        elem_bytes: 4,
    };
    let tuning = plan::Tuning {
        kernel: options.kernel(),
        workgroup_size: options.workgroup_size(),
        split_parts: None,
    };
    let p = plan::plan(rows, cols, place, place, tuning, ctx.caps()).map_err(|e| e.to_string())?;
    Ok((p.traffic.ratio(), p.traffic.reads_per_element))
}

/// Elements per host chunk for a matrix of `len` elements.
fn transfer_chunk(ctx: &Context, len: usize) -> usize {
    ((ctx.options().host_chunk_bytes / 4) as usize)
        .min(len)
        .max(1)
}

/// Two chunk slots of [`upload_and_read_back`]: a GPU buffer and a mappable one each.
fn transfer_slots(ctx: &Context, len: usize) -> Vec<(wgpu::Buffer, wgpu::Buffer)> {
    let bytes = (transfer_chunk(ctx, len) * 4) as u64;
    (0..2)
        .map(|_| {
            (
                buffer(
                    ctx,
                    bytes,
                    wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
                ),
                buffer(
                    ctx,
                    bytes,
                    wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                ),
            )
        })
        .collect()
}

/// The transfer floor of the host path: the same chunks written to the GPU, copied to
/// a mappable buffer and read back, with no compute, two chunks in flight.
fn upload_and_read_back(
    ctx: &Context,
    slots: &[(wgpu::Buffer, wgpu::Buffer)],
    data: &[f32],
    out: &mut [f32],
) -> Result<(), String> {
    let chunk = transfer_chunk(ctx, data.len());
    let mut pending: Vec<Option<(usize, wgpu::SubmissionIndex)>> = vec![None, None];
    let finish = |slot: &(wgpu::Buffer, wgpu::Buffer),
                  start: usize,
                  index,
                  out: &mut [f32]|
     -> Result<(), String> {
        let len = chunk.min(data.len() - start);
        slot.1
            .map_async(wgpu::MapMode::Read, 0..(len * 4) as u64, |_| {});
        wait(ctx, index)?;
        let view = slot
            .1
            .get_mapped_range(0..(len * 4) as u64)
            .map_err(|e| e.to_string())?;
        bytemuck::cast_slice_mut::<f32, u8>(&mut out[start..start + len]).copy_from_slice(&view);
        drop(view);
        slot.1.unmap();
        Ok(())
    };
    for (i, start) in (0..data.len()).step_by(chunk).enumerate() {
        let s = i % 2;
        if let Some((prev, index)) = pending[s].take() {
            finish(&slots[s], prev, index, out)?;
        }
        let len = chunk.min(data.len() - start);
        ctx.queue().write_buffer(
            &slots[s].0,
            0,
            bytemuck::cast_slice(&data[start..start + len]),
        );
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(&slots[s].0, 0, &slots[s].1, 0, (len * 4) as u64);
        pending[s] = Some((start, ctx.queue().submit([enc.finish()])));
    }
    for s in 0..2 {
        if let Some((prev, index)) = pending[s].take() {
            finish(&slots[s], prev, index, out)?;
        }
    }
    Ok(())
}

/// Microseconds per batch-1 call (record, submit, wait) and per empty submission.
fn latency(ctx: &Context, cols: usize, options: &Options) -> Result<(f64, f64), String> {
    let storage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
    let input = buffer(ctx, (cols * 4) as u64, storage);
    let output = buffer(ctx, (cols * 4) as u64, storage);
    ctx.queue()
        .write_buffer(&input, 0, bytemuck::cast_slice(&logits(cols, 7)));
    let calls = 20;
    let call = |work: bool| -> Result<f64, String> {
        let mut times = Vec::new();
        for i in 0..=calls {
            let t = Instant::now();
            let mut enc = ctx.device().create_command_encoder(&Default::default());
            if work {
                ctx.encode(
                    &mut enc,
                    MatrixView::new(&input),
                    MatrixView::new(&output),
                    Shape::new(1, cols),
                    options,
                    &RowInputs::NONE,
                )
                .map_err(|e| e.to_string())?;
            }
            wait(ctx, ctx.queue().submit([enc.finish()]))?;
            if i > 0 {
                times.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        Ok(median(times))
    };
    Ok((call(true)?, call(false)?))
}

fn markdown(ctx: &Context, args: &Args, rows: &[Row], lat: &[(usize, f64, f64)]) -> String {
    let info = ctx.adapter_info();
    let mut s = format!(
        "Adapter: {} ({:?}, {:?}, driver {} {}), subgroups: {}\n\n",
        info.name,
        info.backend,
        info.device_type,
        info.driver,
        info.driver_info,
        ctx.caps().subgroups
    );
    s += &format!(
        "Op: {:?}; {} dispatches per submission, timed by {}; times are medians of {} \
         rounds, ratios the medians of per-round ratios (softmax and copies measured back to \
         back).\n\n",
        args.options.op,
        args.iters,
        clock(ctx),
        args.repeats
    );
    s += "Traffic: bytes the planner's plan moves over one read and one write of each element \
          (reads per element), by construction.\n\n";
    s += "| rows x cols | traffic | softmax G el/s | softmax GB/s | copy kernel GB/s | copy engine GB/s | softmax / copy kernel | host GB/s | upload+readback GB/s | host / transfer |\n";
    s += "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
    for r in rows {
        s += &format!(
            "| {} x {} | {:.2} ({} read{}) | {:.3} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            r.rows,
            r.cols,
            r.traffic.0,
            r.traffic.1,
            if r.traffic.1 == 1 { "" } else { "s" },
            r.gelem(r.softmax_s),
            r.gbs(r.softmax_s),
            r.gbs(r.copy_kernel_s),
            r.gbs(r.copy_engine_s),
            r.softmax_over_copy,
            r.gbs(r.host_s),
            r.gbs(r.transfer_s),
            r.host_over_transfer,
        );
    }
    s += "\n| batch-1 cols | softmax call (us) | empty submission round trip (us) |\n| --- | --- | --- |\n";
    for (cols, call, empty) in lat {
        s += &format!("| {cols} | {call:.0} | {empty:.0} |\n");
    }
    s
}

/// The cost of each fused input over plain softmax: the resident op on one matrix,
/// plain and with each input, in interleaved rounds; the median per-round ratio of
/// plain time to time with the input (1.0: free).
fn feature_costs(
    ctx: &Context,
    args: &Args,
    rows: usize,
    cols: usize,
) -> Result<Vec<(&'static str, f64)>, String> {
    let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
    let upload = |bytes: &[u8]| {
        let b = buffer(
            ctx,
            (bytes.len() as u64).max(16).next_multiple_of(16),
            usage,
        );
        ctx.queue().write_buffer(&b, 0, bytes);
        b
    };
    let shape = Shape::new(rows, cols);
    let input = upload(bytemuck::cast_slice(&logits(rows * cols, 3)));
    let output = buffer(ctx, (rows * cols * 4) as u64, usage);
    let lengths: Vec<u32> = (0..rows as u32)
        .map(|r| cols as u32 - r % cols as u32)
        .collect();
    let temps: Vec<f32> = (0..rows).map(|r| 0.5 + (r % 4) as f32).collect();
    let mask_one: Vec<f32> = (0..cols)
        .map(|c| if c % 7 == 0 { f32::NEG_INFINITY } else { 0.0 })
        .collect();
    let (lengths, temps, mask_one) = (
        upload(bytemuck::cast_slice(&lengths)),
        upload(bytemuck::cast_slice(&temps)),
        upload(bytemuck::cast_slice(&mask_one)),
    );
    let stats = buffer(ctx, rows as u64 * 8, usage);
    let plain = RowInputs::default();
    let variants: Vec<(&'static str, Options, RowInputs)> = vec![
        (
            "causal mask",
            args.options.with_causal(cols as u64 / 2),
            plain,
        ),
        (
            "per-row lengths",
            args.options,
            plain.with_lengths(Region::new(&lengths)),
        ),
        (
            "per-row temperatures",
            args.options,
            plain.with_temperatures(Region::new(&temps)),
        ),
        (
            "additive mask (one row for all)",
            args.options,
            plain.with_mask(MaskView::new(&mask_one, 1)),
        ),
        (
            "row statistics written",
            args.options,
            plain.with_stats(StatsView::write(&stats)),
        ),
        (
            "all of the above",
            args.options.with_causal(cols as u64 / 2),
            plain
                .with_lengths(Region::new(&lengths))
                .with_temperatures(Region::new(&temps))
                .with_mask(MaskView::new(&mask_one, 1))
                .with_stats(StatsView::write(&stats)),
        ),
    ];
    let mut costs = Vec::new();
    // Plain softmax, measured in turn with each variant.
    let plain_softmax = fused(ctx, (&input, &output), shape, &args.options, &plain);
    let cost = |base: Recorder, with: Recorder| -> Result<f64, String> {
        let t = time_rounds(ctx, args.iters, args.repeats, &[base, with])?;
        Ok(median_ratio(&t[0], &t[1]))
    };
    for (name, options, inputs) in &variants {
        let with = fused(ctx, (&input, &output), shape, options, inputs);
        costs.push((*name, cost(&plain_softmax, &with)?));
    }
    // 16-bit storage: the same matrix (rounded) in f16 or bf16 buffers, and an f16
    // mask. These move fewer bytes, so a ratio above 1 is possible.
    let x16: Vec<half::f16> = logits(rows * cols, 3)
        .iter()
        .map(|&v| half::f16::from_f32(v))
        .collect();
    let input16 = upload(bytemuck::cast_slice(&x16));
    let output16 = buffer(ctx, ((rows * cols * 2) as u64).next_multiple_of(16), usage);
    let mask16: Vec<half::f16> = (0..cols)
        .map(|c| half::f16::from_f32(if c % 7 == 0 { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    let mask16 = upload(bytemuck::cast_slice(&mask16));
    let storage: [(&'static str, Dtype, Dtype); 4] = [
        ("f16 in, f16 out", Dtype::F16, Dtype::F16),
        ("bf16 in, bf16 out", Dtype::Bf16, Dtype::Bf16),
        ("f16 in, f32 out", Dtype::F16, Dtype::F32),
        ("f32 in, f16 out", Dtype::F32, Dtype::F16),
    ];
    for (name, src, dst) in storage {
        let view = |dtype: Dtype, wide, narrow| {
            MatrixView::new(if dtype.is_half() { narrow } else { wide }).with_dtype(dtype)
        };
        let with: Recorder = &|enc| {
            ctx.encode(
                enc,
                view(src, &input, &input16),
                view(dst, &output, &output16),
                shape,
                &args.options,
                &RowInputs::NONE,
            )
        };
        costs.push((name, cost(&plain_softmax, with)?));
    }
    let mask_of = |buffer, dtype| plain.with_mask(MaskView::new(buffer, 1).with_dtype(dtype));
    let (f32_mask, f16_mask) = (mask_of(&mask_one, Dtype::F32), mask_of(&mask16, Dtype::F16));
    let f32_mask = fused(ctx, (&input, &output), shape, &args.options, &f32_mask);
    let with = fused(ctx, (&input, &output), shape, &args.options, &f16_mask);
    costs.push(("f16 mask (against the f32 mask)", cost(&f32_mask, &with)?));
    Ok(costs)
}

/// Records the resident op on `input` into `output` with `options` and `inputs`.
fn fused<'a>(
    ctx: &'a Context,
    (input, output): (&'a wgpu::Buffer, &'a wgpu::Buffer),
    shape: Shape,
    options: &'a Options,
    inputs: &'a RowInputs<'a>,
) -> impl Fn(&mut wgpu::CommandEncoder) -> wgpu_softmax::Result<()> + 'a {
    move |enc| {
        ctx.encode(
            enc,
            MatrixView::new(input),
            MatrixView::new(output),
            shape,
            options,
            inputs,
        )
    }
}

/// A matrix (`data`, f32) on the GPU and an output buffer of the same size, both usable
/// by softmax, the copy kernel and the copy engine.
fn matrix_buffers(ctx: &Context, data: &[f32]) -> (wgpu::Buffer, wgpu::Buffer) {
    let bytes = (std::mem::size_of_val(data) as u64).next_multiple_of(16);
    let usage =
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
    let (input, output) = (buffer(ctx, bytes, usage), buffer(ctx, bytes, usage));
    ctx.queue()
        .write_buffer(&input, 0, bytemuck::cast_slice(data));
    (input, output)
}

/// Records the copy kernel bound to a matrix's buffers.
fn copy_recorder(
    bound: &BoundCopy,
) -> impl Fn(&mut wgpu::CommandEncoder) -> wgpu_softmax::Result<()> + '_ {
    move |enc| {
        bound.record(enc);
        Ok(())
    }
}

fn csv(rows: &[Row]) -> String {
    let mut s = String::from("rows,cols,softmax_s,copy_kernel_s,copy_engine_s,host_s,transfer_s,softmax_over_copy,host_over_transfer\n");
    for r in rows {
        s += &format!(
            "{},{},{:e},{:e},{:e},{:e},{:e},{:.4},{:.4}\n",
            r.rows,
            r.cols,
            r.softmax_s,
            r.copy_kernel_s,
            r.copy_engine_s,
            r.host_s,
            r.transfer_s,
            r.softmax_over_copy,
            r.host_over_transfer
        );
    }
    s
}

/// Draws softmax / copy kernel against cols (log scale). Needs a TrueType font: DejaVu
/// Sans from the system's fonts.
fn chart(path: &std::path::Path, title: &str, rows: &[Row]) -> Result<(), String> {
    use plotters::prelude::*;
    let font = std::fs::read("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
        .map_err(|e| format!("no font for the chart (install fonts-dejavu-core): {e}"))?;
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| "font not usable".to_string())?;
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::new(path, (900, 540)).into_drawing_area();
        root.fill(&WHITE)?;
        let max_cols = rows.iter().map(|r| r.cols).max().unwrap_or(2) as f64 * 1.5;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d((16f64..max_cols).log_scale(), 0f64..1.2f64)?;
        chart
            .configure_mesh()
            .x_desc("cols (log scale)")
            .y_desc("softmax / vec4 copy kernel")
            .draw()?;
        let points: Vec<(f64, f64)> = rows
            .iter()
            .map(|r| (r.cols as f64, r.softmax_over_copy))
            .collect();
        chart.draw_series(LineSeries::new(points.clone(), &BLUE))?;
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 4, BLUE.filled())))?;
        chart.draw_series(LineSeries::new(
            vec![(16.0, 1.0), (max_cols, 1.0)],
            &BLACK.mix(0.4),
        ))?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| e.to_string())
}

/// One size of the scaling table: seconds per dispatch of softmax and the copy kernel.
struct Scale {
    bytes: u64,
    rows: usize,
    softmax_s: f64,
    copy_s: f64,
    softmax_over_copy: f64,
}

/// Time against size: softmax and the copy kernel on rows of [`SCALING_COLS`], from
/// 1 MiB doubling up to `max` bytes. Every submission moves about the same bytes (more
/// dispatches of a smaller matrix), so a fixed cost per dispatch, or a device left
/// partly idle by few rows, shows as a lower rate at the small sizes.
fn scaling(ctx: &Context, copy: &CopyKernel, args: &Args, max: u64) -> Result<Vec<Scale>, String> {
    let max_rows = ((max / 4) as usize / SCALING_COLS).max(1);
    let max = (max_rows * SCALING_COLS * 4) as u64;
    let (input, output) = matrix_buffers(ctx, &logits(max_rows * SCALING_COLS, 11));
    let plain = RowInputs::default();
    let mut out = Vec::new();
    let mut rows = ((1 << 20) / 4 / SCALING_COLS).min(max_rows);
    loop {
        let bytes = (rows * SCALING_COLS * 4) as u64;
        eprintln!("measuring {rows} x {SCALING_COLS} for the scaling table ...");
        let bound = copy
            .bind(&input, &output, bytes)
            .map_err(|e| e.to_string())?;
        let copy_kernel = copy_recorder(&bound);
        let shape = Shape::new(rows, SCALING_COLS);
        let softmax = fused(ctx, (&input, &output), shape, &args.options, &plain);
        let iters = args
            .iters
            .saturating_mul(u32::try_from(max / bytes).unwrap_or(u32::MAX).max(1));
        let t = time_rounds(ctx, iters, args.repeats, &[&copy_kernel, &softmax])?;
        out.push(Scale {
            bytes,
            rows,
            softmax_s: median(t[1].clone()),
            copy_s: median(t[0].clone()),
            softmax_over_copy: median_ratio(&t[0], &t[1]),
        });
        if rows == max_rows {
            return Ok(out);
        }
        rows = (rows * 2).min(max_rows);
    }
}

fn scaling_markdown(scales: &[Scale]) -> String {
    let gbs = |s: &Scale, t: f64| s.bytes as f64 * 2.0 / t / 1e9;
    let mut md = String::from(
        "\n| matrix MiB | rows x cols | softmax GB/s | copy kernel GB/s | softmax / copy kernel |\n| --- | --- | --- | --- | --- |\n",
    );
    for s in scales {
        md += &format!(
            "| {:.0} | {} x {SCALING_COLS} | {:.2} | {:.2} | {:.2} |\n",
            s.bytes as f64 / (1 << 20) as f64,
            s.rows,
            gbs(s, s.softmax_s),
            gbs(s, s.copy_s),
            s.softmax_over_copy
        );
    }
    let rates: Vec<f64> = scales.iter().map(|s| gbs(s, s.softmax_s)).collect();
    let ratios: Vec<f64> = scales.iter().map(|s| s.softmax_over_copy).collect();
    let range = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        (lo, v.iter().copied().fold(lo, f64::max))
    };
    let ((rate_lo, rate_hi), (ratio_lo, ratio_hi)) = (range(&rates), range(&ratios));
    md += &format!(
        "\nAcross these sizes: softmax {rate_lo:.2}-{rate_hi:.2} GB/s, {ratio_lo:.2}-{ratio_hi:.2} of the copy kernel (time linear in size would give a flat rate).\n"
    );
    md
}

/// `--versus`: per shape, each configuration against the copy kernel in the same
/// interleaved rounds. Prints the median of per-round ratios and, less touched by a
/// shared machine's slow spells, the ratio of the fastest rounds.
fn versus(ctx: &Context, copy: &CopyKernel, args: &Args, size: u64) -> Result<(), String> {
    let mut table = format!(
        "Adapter: {}; {} dispatches per submission, timed by {}, {} rounds\n\n| rows x cols | kernel | softmax / copy kernel (median) | at the fastest rounds |\n| --- | --- | --- | --- |\n",
        ctx.adapter_info().name,
        args.iters,
        clock(ctx),
        args.repeats
    );
    for &cols in &args.cols {
        let rows = ((size / 4) as usize / cols).max(1);
        eprintln!("measuring {rows} x {cols} ...");
        let bytes = ((rows * cols * 4) as u64).next_multiple_of(16);
        let (input, output) = matrix_buffers(ctx, &logits(rows * cols, cols as u64));
        let bound = copy
            .bind(&input, &output, bytes)
            .map_err(|e| e.to_string())?;
        let copy_kernel = copy_recorder(&bound);
        let plain = RowInputs::default();
        let shape = Shape::new(rows, cols);
        // Each configuration with the op of the other flags; one the planner refuses
        // for this shape (a forced kernel that cannot take its rows) gets a row saying
        // so and is left out of the rounds.
        let mut kept = Vec::new();
        for (name, forced) in &args.versus {
            let options = forced.apply(args.planned);
            let mut probe = ctx.device().create_command_encoder(&Default::default());
            let refused = ctx.encode(
                &mut probe,
                MatrixView::new(&input),
                MatrixView::new(&output),
                shape,
                &options,
                &RowInputs::NONE,
            );
            match refused {
                Ok(()) => kept.push((name, options)),
                Err(e) => table += &format!("| {rows} x {cols} | {name} | refused: {e} | |\n"),
            }
        }
        let configs: Vec<_> = kept
            .iter()
            .map(|(_, options)| fused(ctx, (&input, &output), shape, options, &plain))
            .collect();
        let mut recorders: Vec<Recorder> = vec![&copy_kernel];
        recorders.extend(configs.iter().map(|r| r as Recorder));
        let t = time_rounds(ctx, args.iters, args.repeats, &recorders)?;
        let fastest = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        for ((name, _), times) in kept.iter().zip(&t[1..]) {
            table += &format!(
                "| {rows} x {cols} | {name} | {:.2} | {:.2} |\n",
                median_ratio(&t[0], times),
                fastest(&t[0]) / fastest(times)
            );
        }
    }
    println!("{table}");
    Ok(())
}

/// Runs the report (or the `--versus` table).
pub fn run(args: Args) -> Outcome<()> {
    report(args).map_err(runtime)
}

fn report(args: Args) -> Result<(), String> {
    // Kernel times come from GPU timestamps where the adapter has them (GpuTimer).
    let options = ContextOptions::default().with_extra_features(GpuTimer::FEATURES);
    let ctx = block_on(Context::new(options)).map_err(|e| e.to_string())?;
    let copy = CopyKernel::new(ctx.device(), ctx.queue()).map_err(|e| e.to_string())?;
    let software = ctx.adapter_info().device_type == wgpu::DeviceType::Cpu;
    let size = args.size_mib.unwrap_or(if software { 16 } else { 256 }) << 20;
    // One binding holds the whole matrix of the copy kernel; stay inside it.
    let size = size.min(ctx.caps().max_storage_binding_size / 16 * 16);
    if !args.versus.is_empty() {
        return versus(&ctx, &copy, &args, size);
    }
    if args.loss {
        let table = crate::loss_bench::table(&ctx, args.repeats)?;
        println!("{table}");
        std::fs::create_dir_all(&args.out).map_err(|e| e.to_string())?;
        std::fs::write(args.out.join("loss.md"), &table).map_err(|e| e.to_string())?;
        return Ok(());
    }
    if args.sampling {
        let (_, table) = crate::sample_bench::table(&ctx, args.repeats)?;
        println!("{table}");
        std::fs::create_dir_all(&args.out).map_err(|e| e.to_string())?;
        std::fs::write(args.out.join("sampling.md"), &table).map_err(|e| e.to_string())?;
        return Ok(());
    }
    let mut rows = Vec::new();
    for &cols in &args.cols {
        let r = ((size / 4) as usize / cols).max(1);
        eprintln!("measuring {r} x {cols} ...");
        rows.push(measure_shape(&ctx, &copy, &args, r, cols)?);
    }
    let mut lat = Vec::new();
    for cols in LATENCY_COLS {
        // The planner's choice: a kernel forced for the table may not take such rows.
        let (call, empty) = latency(&ctx, cols, &args.planned)?;
        lat.push((cols, call, empty));
    }
    let max_scaled = (4 * size)
        .min(ctx.caps().max_storage_binding_size / 16 * 16)
        .min(ctx.caps().max_buffer_size / 16 * 16);
    let scales = scaling(&ctx, &copy, &args, max_scaled)?;
    let (feature_rows, feature_cols) = (((size / 4) as usize / 4096).max(1), 4096);
    eprintln!("measuring fused inputs on {feature_rows} x {feature_cols} ...");
    let costs = feature_costs(&ctx, &args, feature_rows, feature_cols)?;
    let mut table = markdown(&ctx, &args, &rows, &lat);
    table += &format!(
        "\n| fused input ({feature_rows} x {feature_cols}) | plain softmax time / time with it |\n| --- | --- |\n"
    );
    for (name, ratio) in &costs {
        table += &format!("| {name} | {ratio:.2} |\n");
    }
    table += &scaling_markdown(&scales);
    println!("{table}");
    std::fs::create_dir_all(&args.out).map_err(|e| e.to_string())?;
    std::fs::write(args.out.join("report.md"), &table).map_err(|e| e.to_string())?;
    std::fs::write(args.out.join("report.csv"), csv(&rows)).map_err(|e| e.to_string())?;
    let mut scaling_csv =
        String::from("bytes,rows,cols,softmax_s,copy_kernel_s,softmax_over_copy\n");
    for s in &scales {
        scaling_csv += &format!(
            "{},{},{SCALING_COLS},{:e},{:e},{:.4}\n",
            s.bytes, s.rows, s.softmax_s, s.copy_s, s.softmax_over_copy
        );
    }
    std::fs::write(args.out.join("scaling.csv"), scaling_csv).map_err(|e| e.to_string())?;
    let info = ctx.adapter_info();
    let title = format!("softmax / copy kernel: {} ({:?})", info.name, info.backend);
    match chart(&args.out.join("report.png"), &title, &rows) {
        Ok(()) => eprintln!(
            "wrote {} and scaling.csv",
            args.out.join("report.{md,csv,png}").display()
        ),
        Err(e) => eprintln!("chart skipped: {e}"),
    }
    Ok(())
}
