//! The host path: upload, compute, readback, with staging buffers reused across calls,
//! matrices streamed through the GPU in chunks, and every wait awaited, never blocked on.

use crate::dtype::{Dtype, Element};
use crate::encode::{
    LossOutputs, MaskView, MatrixView, Region, RowInputs, SampleOutputs, StatsView,
};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::loss::{CrossEntropy, Reduction};
use crate::op::{MaskedRows, Options, Shape};
use crate::plan::{self, Placement};
use crate::sample::{Sampling, NO_TOKEN};
use crate::staging::{Lease, StagingPool, StagingSlot};
use crate::stats::StatsMode;
use crate::wait::{map_read, scoped, scoped_async, yield_now, MapWait, Poller};

/// An additive mask in host memory: `rows * cols` values of any storage type (f32,
/// [`half::f16`] or [`half::bf16`]); row `r` of the matrix adds mask row `r % rows`.
/// 16-bit masks upload half the bytes.
#[derive(Clone, Copy, Debug)]
pub struct HostMask<'a> {
    bytes: &'a [u8],
    dtype: Dtype,
    rows: usize,
}

impl<'a> HostMask<'a> {
    /// A mask of `rows` rows holding `values`.
    pub fn new<T: Element>(values: &'a [T], rows: usize) -> Self {
        HostMask {
            bytes: bytemuck::cast_slice(values),
            dtype: T::DTYPE,
            rows,
        }
    }

    /// How the values are stored.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// Rows of the mask.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.bytes.len() / self.dtype.size() as usize
    }

    /// Whether it holds no value.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Value `i` as an f32 (exact).
    pub fn get(&self, i: usize) -> f32 {
        let at = i * self.dtype.size() as usize;
        match self.dtype {
            // The bytes are the caller's values cast, in the host's byte order.
            Dtype::F32 => bytemuck::pod_read_unaligned::<f32>(&self.bytes[at..at + 4]),
            Dtype::F16 => {
                bytemuck::pod_read_unaligned::<half::f16>(&self.bytes[at..at + 2]).to_f32()
            }
            Dtype::Bf16 => {
                bytemuck::pod_read_unaligned::<half::bf16>(&self.bytes[at..at + 2]).to_f32()
            }
        }
    }
}

/// Row statistics `(max, log-sum-exp)` of `x / T`, one pair per row: written by the op
/// into the caller's slice, or given to it (e.g. combined over the column shards of a
/// vocabulary split across devices with [`combine_stats`](crate::combine_stats)), so
/// that rows are normalised with them instead of their own.
#[derive(Debug)]
pub enum HostStats<'a> {
    /// Written by the op. A row with NaN or `+inf` gets `(NaN, NaN)`, a fully masked row
    /// (or a row of no columns) `(-inf, -inf)`.
    Write(&'a mut [[f32; 2]]),
    /// Read by the op.
    Given(&'a [[f32; 2]]),
}

/// Data fused into a host-path op (see [`Context::run`](crate::Context::run)). All are
/// optional; none costs an extra pass over the matrix. [`RowInputs`] is the resident
/// path's twin, with the same meaning for each field.
#[derive(Debug, Default)]
pub struct HostInputs<'a> {
    /// An additive mask.
    pub mask: Option<HostMask<'a>>,
    /// One valid length per row: columns at or past it are masked out.
    pub lengths: Option<&'a [u32]>,
    /// One temperature per row, multiplying [`Options::temperature`].
    pub temperatures: Option<&'a [f32]>,
    /// Row statistics, written or given.
    pub stats: Option<HostStats<'a>>,
}

impl<'a> HostInputs<'a> {
    /// These inputs with an additive mask of `rows` rows.
    pub fn with_mask<T: Element>(mut self, values: &'a [T], rows: usize) -> Self {
        self.mask = Some(HostMask::new(values, rows));
        self
    }

    /// These inputs with per-row valid lengths.
    pub fn with_lengths(mut self, lengths: &'a [u32]) -> Self {
        self.lengths = Some(lengths);
        self
    }

    /// These inputs with per-row temperatures.
    pub fn with_temperatures(mut self, temperatures: &'a [f32]) -> Self {
        self.temperatures = Some(temperatures);
        self
    }

    /// These inputs, with each row's statistics written to `stats`.
    pub fn with_stats_out(mut self, stats: &'a mut [[f32; 2]]) -> Self {
        self.stats = Some(HostStats::Write(stats));
        self
    }

    /// These inputs, with rows normalised by the given statistics.
    pub fn with_stats_given(mut self, stats: &'a [[f32; 2]]) -> Self {
        self.stats = Some(HostStats::Given(stats));
        self
    }
}

fn check_len(which: &'static str, expected: usize, actual: usize) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(Error::InputLength {
            which,
            expected,
            actual,
        })
    }
}

/// The checks of a call's row inputs against its shape.
fn check_host_inputs(inputs: &HostInputs<'_>, shape: Shape) -> Result<()> {
    if let Some(mask) = &inputs.mask {
        let expected = mask
            .rows
            .checked_mul(shape.cols)
            .ok_or(Error::ShapeOverflow {
                rows: mask.rows,
                cols: shape.cols,
            })?;
        check_len("mask", expected, mask.len())?;
        if mask.rows == 0 {
            return Err(Error::Unsupported("a mask needs at least one row".into()));
        }
    }
    if let Some(lengths) = inputs.lengths {
        check_len("lengths", shape.rows, lengths.len())?;
    }
    if let Some(temperatures) = inputs.temperatures {
        check_len("temperatures", shape.rows, temperatures.len())?;
    }
    match &inputs.stats {
        Some(HostStats::Write(s)) => check_len("stats", shape.rows, s.len())?,
        Some(HostStats::Given(s)) => check_len("stats", shape.rows, s.len())?,
        None => {}
    }
    Ok(())
}

/// Device copies of a [`HostInputs`].
#[derive(Default)]
struct InputBuffers {
    mask: Option<(wgpu::Buffer, usize, Dtype)>,
    lengths: Option<wgpu::Buffer>,
    temperatures: Option<wgpu::Buffer>,
    stats: Option<(wgpu::Buffer, StatsMode)>,
}

impl InputBuffers {
    /// The inputs of the matrix's rows, for every chunk (each passes its first row).
    fn row_inputs(&self) -> RowInputs<'_> {
        RowInputs {
            mask: self
                .mask
                .as_ref()
                .map(|(b, rows, dtype)| MaskView::new(b, *rows).with_dtype(*dtype)),
            lengths: self.lengths.as_ref().map(Region::new),
            temperatures: self.temperatures.as_ref().map(Region::new),
            stats: self.stats.as_ref().map(|(buffer, mode)| StatsView {
                buffer,
                offset: 0,
                mode: *mode,
            }),
        }
    }
}

/// A chunk submitted and waiting to be read back.
struct InFlight {
    slot: usize,
    elements: std::ops::Range<usize>,
    mapped: MapWait,
}

/// What the host path works with: the device, the staging pool and the poller of one
/// context, and its chunk size.
pub(crate) struct Host<'a> {
    pub gpu: &'a Gpu,
    pub staging: &'a StagingPool,
    pub poller: &'a Poller,
    pub chunk_bytes: u64,
}

impl Host<'_> {
    /// The host op (see [`Context::run`](crate::Context::run)).
    pub async fn run<T: Element, U: Element>(
        &self,
        input: &[T],
        output: &mut [U],
        shape: Shape,
        options: &Options,
        inputs: HostInputs<'_>,
    ) -> Result<()> {
        options.validate()?;
        let expected = shape.len()?;
        for actual in [input.len(), output.len()] {
            if actual != expected {
                return Err(Error::ShapeMismatch {
                    rows: shape.rows,
                    cols: shape.cols,
                    expected,
                    actual,
                });
            }
        }
        check_host_inputs(&inputs, shape)?;
        let HostInputs {
            mask,
            lengths,
            temperatures,
            stats,
        } = inputs;
        if shape.is_empty() {
            // Rows with no columns have nothing to add when shards are combined.
            if let Some(HostStats::Write(s)) = stats {
                s.fill([f32::NEG_INFINITY; 2]);
            }
            return Ok(());
        }
        let layout = ChunkLayout::new::<T, U>(self.gpu, shape.cols);
        let chunk_rows = self.chunk_rows(shape, layout.row_bytes(), layout.gap())?;
        // Plan once for a full chunk: this checks the row fits a binding before any
        // buffer is made.
        let (src, dst) = layout.placements(chunk_rows);
        plan::plan(
            chunk_rows,
            shape.cols,
            src,
            dst,
            options.tuning(),
            &self.gpu.caps,
        )?;
        let chunks = shape.rows.div_ceil(chunk_rows);
        let mut lease = Lease::new(self.staging);
        for _ in 0..chunks.min(2) {
            let slot = self.take_slot(layout.slot_bytes(chunk_rows))?;
            lease.slots.push(slot);
        }
        let mut buffers = self
            .input_buffers(mask, lengths, temperatures)
            .await
            .map_err(|e| self.failure(e))?;
        let stats_out = self.bind_stats(stats, &mut buffers).await?;
        let result = async {
            self.stream(
                input,
                output,
                shape,
                options,
                (chunk_rows, &layout),
                &lease.slots,
                &buffers,
            )
            .await?;
            if let (Some(values), Some((buffer, _))) = (stats_out, &buffers.stats) {
                self.read_stats(buffer, values).await?;
            }
            Ok(())
        }
        .await
        .map_err(|e| self.failure(e));
        // On error the slots are dropped (their buffers freed): one may still be mapped
        // or in use by work that failed. Likewise when this future is dropped early.
        lease.finish(result.is_ok());
        result
    }

    /// The host backward op (see [`Context::run_backward`](crate::Context::run_backward)).
    /// Chunks of rows go through the GPU one after another.
    /// With `logits` (a soft-cap's backward pass), they go through a third staging slot.
    pub async fn run_backward<T: Element, U: Element>(
        &self,
        (logits, y): (Option<&[f32]>, &[T]),
        dy: &[U],
        dx: &mut [U],
        shape: Shape,
        options: &Options,
    ) -> Result<()> {
        options.validate()?;
        let expected = shape.len()?;
        if let Some(x) = logits {
            check_len("logits", expected, x.len())?;
        }
        check_len("y", expected, y.len())?;
        check_len("dy", expected, dy.len())?;
        check_len("dx", expected, dx.len())?;
        if shape.is_empty() {
            return Ok(());
        }
        let (y_elem, g_elem) = (T::DTYPE.size(), U::DTYPE.size());
        let row_bytes = shape.cols as u64 * y_elem.max(g_elem).max(4);
        let chunk_rows = self.chunk_rows(shape, row_bytes, 4)?;
        let slot_bytes =
            |elem: u64| (chunk_rows as u64 * shape.cols as u64 * elem).next_multiple_of(4);
        let mut lease = Lease::new(self.staging);
        lease.slots.push(self.take_slot(slot_bytes(y_elem))?);
        lease.slots.push(self.take_slot(slot_bytes(g_elem))?);
        if logits.is_some() {
            lease.slots.push(self.take_slot(slot_bytes(4))?);
        }
        let result = async {
            for first_row in (0..shape.rows).step_by(chunk_rows) {
                let rows = chunk_rows.min(shape.rows - first_row);
                let elements = first_row * shape.cols..(first_row + rows) * shape.cols;
                let bytes = (elements.len() as u64 * g_elem).next_multiple_of(4);
                let (y_slot, grad_slot) = (&lease.slots[0], &lease.slots[1]);
                let mapped = self
                    .submit_chunk(grad_slot, 0, bytes, |encoder| {
                        write_words(
                            &self.gpu.queue,
                            &y_slot.data,
                            bytemuck::cast_slice(&y[elements.clone()]),
                        );
                        write_words(
                            &self.gpu.queue,
                            &grad_slot.data,
                            bytemuck::cast_slice(&dy[elements.clone()]),
                        );
                        let x_view = match logits {
                            Some(x) => {
                                let x_slot = &lease.slots[2];
                                write_words(
                                    &self.gpu.queue,
                                    &x_slot.data,
                                    bytemuck::cast_slice(&x[elements.clone()]),
                                );
                                Some(MatrixView::new(&x_slot.data))
                            }
                            None => None,
                        };
                        self.gpu.encode_backward(
                            encoder,
                            (x_view, MatrixView::new(&y_slot.data).with_dtype(T::DTYPE)),
                            MatrixView::new(&grad_slot.data).with_dtype(U::DTYPE),
                            Shape::new(rows, shape.cols),
                            options,
                        )
                    })
                    .await?;
                yield_now().await;
                let done = InFlight {
                    slot: 1,
                    elements,
                    mapped,
                };
                self.finish(done, &lease.slots, dx).await?;
            }
            Ok(())
        }
        .await
        .map_err(|e| self.failure(e));
        lease.finish(result.is_ok());
        result
    }

    /// The host sampling op (see [`Context::sample`](crate::Context::sample)). Chunks of
    /// rows go through the GPU one after another; each reads back 4 bytes per row (8
    /// with the log-probabilities), never the row.
    #[allow(clippy::too_many_arguments)]
    pub async fn sample<T: Element>(
        &self,
        input: &[T],
        ids: &mut [u32],
        mut logprobs: Option<&mut [f32]>,
        shape: Shape,
        options: &Options,
        sampling: &Sampling,
        inputs: HostInputs<'_>,
    ) -> Result<()> {
        options.validate()?;
        sampling.validate()?;
        check_len("input", shape.len()?, input.len())?;
        check_len("ids", shape.rows, ids.len())?;
        if let Some(lp) = &logprobs {
            check_len("logprobs", shape.rows, lp.len())?;
        }
        check_host_inputs(&inputs, shape)?;
        if inputs.stats.is_some() {
            return Err(Error::Unsupported(
                "sampling takes no row statistics (it computes its own)".into(),
            ));
        }
        if shape.rows == 0 {
            return Ok(());
        }
        if shape.cols == 0 {
            // Rows of no columns have nothing to draw from.
            ids.fill(NO_TOKEN);
            if let Some(lp) = logprobs {
                let fill = match options.masked_rows {
                    MaskedRows::Zero => f32::NEG_INFINITY,
                    _ => f32::NAN,
                };
                lp.fill(fill);
            }
            return Ok(());
        }
        let elem = T::DTYPE.size();
        let align = u64::from(self.gpu.caps.storage_offset_alignment.max(16));
        // Per chunk: the input rows, then (aligned) the ids, then the log-probabilities.
        let chunk_rows = self.chunk_rows(shape, shape.cols as u64 * elem + 8, 2 * align)?;
        let ids_at = |rows: usize| (rows as u64 * shape.cols as u64 * elem).next_multiple_of(align);
        let lp_at = |rows: usize| (ids_at(rows) + rows as u64 * 4).next_multiple_of(align);
        let slot_bytes = lp_at(chunk_rows) + chunk_rows as u64 * 4;
        let HostInputs {
            mask,
            lengths,
            temperatures,
            ..
        } = inputs;
        let mut lease = Lease::new(self.staging);
        lease.slots.push(self.take_slot(slot_bytes)?);
        let result = async {
            let buffers = self.input_buffers(mask, lengths, temperatures).await?;
            let row_inputs = buffers.row_inputs();
            let slot = &lease.slots[0];
            for first_row in (0..shape.rows).step_by(chunk_rows) {
                let rows = chunk_rows.min(shape.rows - first_row);
                let elements = first_row * shape.cols..(first_row + rows) * shape.cols;
                let with_lp = logprobs.is_some();
                let bytes = if with_lp {
                    lp_at(rows) + rows as u64 * 4 - ids_at(rows)
                } else {
                    rows as u64 * 4
                };
                let mapped = self
                    .submit_chunk(slot, ids_at(rows), bytes, |encoder| {
                        write_words(
                            &self.gpu.queue,
                            &slot.data,
                            bytemuck::cast_slice(&input[elements.clone()]),
                        );
                        let ids_region = Region::new(&slot.data).with_offset(ids_at(rows));
                        let mut outputs = SampleOutputs::new(ids_region);
                        if with_lp {
                            outputs = outputs
                                .with_logprobs(Region::new(&slot.data).with_offset(lp_at(rows)));
                        }
                        self.gpu.encode_sample(
                            encoder,
                            MatrixView::new(&slot.data).with_dtype(T::DTYPE),
                            outputs,
                            Shape::new(rows, shape.cols),
                            options,
                            sampling,
                            &row_inputs,
                            first_row,
                        )
                    })
                    .await?;
                yield_now().await;
                self.check_mapped(mapped.await?)?;
                {
                    let view = slot
                        .readback
                        .get_mapped_range(0..bytes)
                        .map_err(|e| Error::Map(e.to_string()))?;
                    let rows_range = first_row..first_row + rows;
                    bytemuck::cast_slice_mut::<u32, u8>(&mut ids[rows_range.clone()])
                        .copy_from_slice(&view[..rows * 4]);
                    if let Some(lp) = logprobs.as_deref_mut() {
                        let at = (lp_at(rows) - ids_at(rows)) as usize;
                        bytemuck::cast_slice_mut::<f32, u8>(&mut lp[rows_range])
                            .copy_from_slice(&view[at..at + rows * 4]);
                    }
                }
                scoped_async(&self.gpu.device, || slot.readback.unmap()).await?;
            }
            Ok(())
        }
        .await
        .map_err(|e| self.failure(e));
        lease.finish(result.is_ok());
        result
    }

    /// The host cross-entropy (see [`Context::cross_entropy`](crate::Context::cross_entropy)).
    /// Chunks of rows go through the GPU one after another; each reads back the losses
    /// and, when asked, the gradient.
    #[allow(clippy::too_many_arguments)]
    pub async fn cross_entropy<T: Element, U: Element>(
        &self,
        logits: &[T],
        targets: &[i64],
        losses: &mut [f32],
        grad: Option<&mut [U]>,
        shape: Shape,
        options: &Options,
        ce: &CrossEntropy,
        inputs: HostInputs<'_>,
    ) -> Result<f64> {
        options.validate()?;
        ce.validate()?;
        let len = shape.len()?;
        check_len("logits", len, logits.len())?;
        check_len("targets", shape.rows, targets.len())?;
        check_len("losses", shape.rows, losses.len())?;
        if let Some(g) = &grad {
            check_len("grad", len, g.len())?;
        }
        check_host_inputs(&inputs, shape)?;
        let given = matches!(inputs.stats, Some(HostStats::Given(_)));
        // An unsplit row's target must lie in it; a shard's may lie in another shard.
        let mut valid = 0usize;
        for (row, &t) in targets.iter().enumerate() {
            if t == ce.ignore_index {
                continue;
            }
            valid += 1;
            let local = t - i64::from(ce.column_offset);
            if !given && !(0..shape.cols as i64).contains(&local) {
                return Err(Error::InvalidTarget {
                    row,
                    target: t,
                    cols: shape.cols,
                });
            }
            if i32::try_from(t).is_err() {
                return Err(Error::InvalidTarget {
                    row,
                    target: t,
                    cols: shape.cols,
                });
            }
        }
        let scale = match ce.reduction {
            Reduction::Mean if valid == 0 => 0.0,
            Reduction::Mean => ce.grad_scale / valid as f32,
            _ => ce.grad_scale,
        };
        let reduce = |losses: &[f32]| -> f64 {
            let sum: f64 = losses.iter().map(|&l| f64::from(l)).sum();
            match ce.reduction {
                Reduction::Mean => sum / valid as f64,
                _ => sum,
            }
        };
        if shape.rows == 0 {
            return Ok(reduce(losses));
        }
        if shape.cols == 0 {
            return Err(Error::Unsupported(
                "cross-entropy needs at least one column".into(),
            ));
        }
        self.loss_rows(
            (logits, targets),
            losses,
            grad,
            shape,
            options,
            (ce, scale, 0),
            inputs,
        )
        .await?;
        Ok(reduce(losses))
    }

    /// The host gather of log-probabilities (see
    /// [`Context::gather_log_probs`](crate::Context::gather_log_probs)).
    #[allow(clippy::too_many_arguments)]
    pub async fn gather_log_probs<T: Element>(
        &self,
        logits: &[T],
        indices: &[i64],
        per_row: usize,
        out: &mut [f32],
        shape: Shape,
        options: &Options,
        inputs: HostInputs<'_>,
    ) -> Result<()> {
        options.validate()?;
        let len = shape.len()?;
        check_len("logits", len, logits.len())?;
        let count = shape
            .rows
            .checked_mul(per_row)
            .ok_or(Error::ShapeOverflow {
                rows: shape.rows,
                cols: per_row,
            })?;
        check_len("indices", count, indices.len())?;
        check_len("log-probabilities", count, out.len())?;
        check_host_inputs(&inputs, shape)?;
        if inputs.stats.is_some() {
            return Err(Error::Unsupported(
                "the gather takes no row statistics".into(),
            ));
        }
        for (i, &t) in indices.iter().enumerate() {
            if !(0..shape.cols as i64).contains(&t) {
                return Err(Error::InvalidTarget {
                    row: i / per_row.max(1),
                    target: t,
                    cols: shape.cols,
                });
            }
        }
        if count == 0 {
            return Ok(());
        }
        let k = u32::try_from(per_row)
            .map_err(|_| Error::Unsupported(format!("{per_row} indices per row exceed u32")))?;
        self.loss_rows::<T, f32>(
            (logits, indices),
            out,
            None,
            shape,
            options,
            (&CrossEntropy::default(), 1.0, k),
            inputs,
        )
        .await
    }

    /// The chunked round trips of the cross-entropy kernel: the loss (`gather_k` 0, one
    /// target per row) or a gather of `gather_k` log-probabilities per row.
    #[allow(clippy::too_many_arguments)]
    async fn loss_rows<T: Element, U: Element>(
        &self,
        (logits, targets): (&[T], &[i64]),
        losses: &mut [f32],
        mut grad: Option<&mut [U]>,
        shape: Shape,
        options: &Options,
        (ce, scale, gather_k): (&CrossEntropy, f32, u32),
        inputs: HostInputs<'_>,
    ) -> Result<()> {
        let per_row = (gather_k as usize).max(1);
        let (in_elem, g_elem) = (T::DTYPE.size(), U::DTYPE.size());
        let with_grad = grad.is_some();
        let align = u64::from(self.gpu.caps.storage_offset_alignment.max(16));
        let row_bytes =
            shape.cols as u64 * (in_elem + if with_grad { g_elem } else { 0 }) + 8 * per_row as u64;
        let chunk_rows = self.chunk_rows(shape, row_bytes, 3 * align)?;
        // Per chunk: the logits, then (aligned) the gradient, the losses, the targets.
        let cols = shape.cols as u64;
        let grad_at = |rows: usize| (rows as u64 * cols * in_elem).next_multiple_of(align);
        let grad_end = |rows: usize| {
            grad_at(rows)
                + if with_grad {
                    rows as u64 * cols * g_elem
                } else {
                    0
                }
        };
        let losses_at = |rows: usize| grad_end(rows).next_multiple_of(align);
        let out_bytes = |rows: usize| (rows * per_row) as u64 * 4;
        let targets_at = |rows: usize| (losses_at(rows) + out_bytes(rows)).next_multiple_of(align);
        let slot_bytes = targets_at(chunk_rows) + out_bytes(chunk_rows);
        let HostInputs {
            mask,
            lengths,
            temperatures,
            stats,
        } = inputs;
        let mut lease = Lease::new(self.staging);
        lease.slots.push(self.take_slot(slot_bytes)?);
        let result = async {
            let mut buffers = self.input_buffers(mask, lengths, temperatures).await?;
            let stats_out = self.bind_stats(stats, &mut buffers).await?;
            let row_inputs = buffers.row_inputs();
            let slot = &lease.slots[0];
            for first_row in (0..shape.rows).step_by(chunk_rows) {
                let rows = chunk_rows.min(shape.rows - first_row);
                let elements = first_row * shape.cols..(first_row + rows) * shape.cols;
                let start = if with_grad {
                    grad_at(rows)
                } else {
                    losses_at(rows)
                };
                let bytes = losses_at(rows) + out_bytes(rows) - start;
                let outs = first_row * per_row..(first_row + rows) * per_row;
                let chunk_targets: Vec<i32> =
                    targets[outs.clone()].iter().map(|&t| t as i32).collect();
                let mapped = self
                    .submit_chunk(slot, start, bytes, |encoder| {
                        write_words(
                            &self.gpu.queue,
                            &slot.data,
                            bytemuck::cast_slice(&logits[elements.clone()]),
                        );
                        self.gpu.queue.write_buffer(
                            &slot.data,
                            targets_at(rows),
                            bytemuck::cast_slice(&chunk_targets),
                        );
                        let mut outputs =
                            LossOutputs::new(Region::new(&slot.data).with_offset(losses_at(rows)));
                        if with_grad {
                            outputs = outputs.with_grad(
                                MatrixView::new(&slot.data)
                                    .with_offset(grad_at(rows))
                                    .with_dtype(U::DTYPE),
                            );
                        }
                        self.gpu.encode_cross_entropy(
                            encoder,
                            (
                                MatrixView::new(&slot.data).with_dtype(T::DTYPE),
                                Region::new(&slot.data).with_offset(targets_at(rows)),
                            ),
                            outputs,
                            Shape::new(rows, shape.cols),
                            options,
                            (ce, scale, gather_k),
                            &row_inputs,
                            first_row,
                        )
                    })
                    .await?;
                yield_now().await;
                self.check_mapped(mapped.await?)?;
                {
                    let view = slot
                        .readback
                        .get_mapped_range(0..bytes)
                        .map_err(|e| Error::Map(e.to_string()))?;
                    let at = (losses_at(rows) - start) as usize;
                    bytemuck::cast_slice_mut::<f32, u8>(&mut losses[outs.clone()])
                        .copy_from_slice(&view[at..at + outs.len() * 4]);
                    if let Some(g) = grad.as_deref_mut() {
                        let n = elements.len() * g_elem as usize;
                        bytemuck::cast_slice_mut::<U, u8>(&mut g[elements.clone()])
                            .copy_from_slice(&view[..n]);
                    }
                }
                scoped_async(&self.gpu.device, || slot.readback.unmap()).await?;
            }
            if let (Some(values), Some((buffer, _))) = (stats_out, &buffers.stats) {
                self.read_stats(buffer, values).await?;
            }
            Ok(())
        }
        .await
        .map_err(|e| self.failure(e));
        lease.finish(result.is_ok());
        result
    }

    /// Device copies of the row inputs, made once per call.
    async fn input_buffers(
        &self,
        mask: Option<HostMask<'_>>,
        lengths: Option<&[u32]>,
        temperatures: Option<&[f32]>,
    ) -> Result<InputBuffers> {
        let upload = |label: &'static str, bytes: &[u8]| {
            let buffer = self.gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: (bytes.len() as u64).max(16).next_multiple_of(4),
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            write_words(&self.gpu.queue, &buffer, bytes);
            buffer
        };
        scoped_async(&self.gpu.device, || InputBuffers {
            mask: mask.map(|m| (upload("wgpu-softmax mask", m.bytes), m.rows, m.dtype)),
            lengths: lengths.map(|l| upload("wgpu-softmax lengths", bytemuck::cast_slice(l))),
            temperatures: temperatures
                .map(|t| upload("wgpu-softmax temperatures", bytemuck::cast_slice(t))),
            stats: None,
        })
        .await
    }

    /// The device buffer of a call's statistics, in `buffers`: given ones uploaded, or
    /// one to write, whose host slice is returned for [`Host::read_stats`] at the end.
    async fn bind_stats<'s>(
        &self,
        stats: Option<HostStats<'s>>,
        buffers: &mut InputBuffers,
    ) -> Result<Option<&'s mut [[f32; 2]]>> {
        Ok(match stats {
            Some(HostStats::Write(values)) => {
                let buffer = self.stats_buffer(values.len(), None).await?;
                buffers.stats = Some((buffer, StatsMode::Write));
                Some(values)
            }
            Some(HostStats::Given(values)) => {
                let buffer = self.stats_buffer(values.len(), Some(values)).await?;
                buffers.stats = Some((buffer, StatsMode::Given));
                None
            }
            None => None,
        })
    }

    /// A device buffer for `rows` rows' statistics, holding `given` when there are some.
    async fn stats_buffer(&self, rows: usize, given: Option<&[[f32; 2]]>) -> Result<wgpu::Buffer> {
        scoped_async(&self.gpu.device, || {
            let buffer = self.gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgpu-softmax host stats"),
                size: (rows as u64 * 8).max(16),
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_DST
                    | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            if let Some(values) = given {
                self.gpu
                    .queue
                    .write_buffer(&buffer, 0, bytemuck::cast_slice(values));
            }
            buffer
        })
        .await
    }

    /// Reads the statistics written to `buffer` into `values`.
    async fn read_stats(&self, buffer: &wgpu::Buffer, values: &mut [[f32; 2]]) -> Result<()> {
        let bytes = values.len() as u64 * 8;
        let (readback, submission) = scoped_async(&self.gpu.device, || {
            let readback = self.gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgpu-softmax stats readback"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let mut encoder =
                self.gpu
                    .device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("wgpu-softmax stats readback"),
                    });
            encoder.copy_buffer_to_buffer(buffer, 0, &readback, 0, bytes);
            let submission = self.gpu.queue.submit([encoder.finish()]);
            (readback, submission)
        })
        .await?;
        let mapped = map_read(&self.gpu.device, self.poller, &readback, .., submission)?;
        self.check_mapped(mapped.await?)?;
        let view = readback
            .get_mapped_range(..)
            .map_err(|e| Error::Map(e.to_string()))?;
        bytemuck::cast_slice_mut::<[f32; 2], u8>(values).copy_from_slice(&view);
        Ok(())
    }

    /// The error of a failed host call, as the caller should see it: the host path binds
    /// only buffers of its own, which nothing but a destroyed device destroys.
    fn failure(&self, e: Error) -> Error {
        match e {
            Error::BufferDestroyed { .. } => Error::DeviceLost(
                self.gpu
                    .lost_reason()
                    .unwrap_or_else(|| "the device was destroyed during the call".into()),
            ),
            e => self.gpu.explain(e),
        }
    }

    /// Turns a map callback's outcome into a result.
    fn check_mapped(&self, outcome: std::result::Result<(), wgpu::BufferAsyncError>) -> Result<()> {
        outcome.map_err(|e| match self.gpu.lost_reason() {
            Some(reason) => Error::DeviceLost(reason),
            None => Error::Map(e.to_string()),
        })
    }

    /// A staging slot of at least `bytes`, from the pool or new.
    fn take_slot(&self, bytes: u64) -> Result<StagingSlot> {
        if let Some(s) = self.staging.take(bytes) {
            return Ok(s);
        }
        // Round up so slightly larger later calls reuse the slot, but not past the chunk
        // size (the GPU memory budget) unless one row is larger still.
        let capacity = bytes
            .next_power_of_two()
            .min(self.chunk_bytes)
            .min(self.gpu.caps.max_buffer_size)
            .max(bytes);
        let device = &self.gpu.device;
        scoped(device, || StagingSlot::new(device, capacity))
    }

    #[allow(clippy::too_many_arguments)]
    async fn stream<T: Element, U: Element>(
        &self,
        input: &[T],
        output: &mut [U],
        shape: Shape,
        options: &Options,
        (chunk_rows, layout): (usize, &ChunkLayout),
        slots: &[StagingSlot],
        buffers: &InputBuffers,
    ) -> Result<()> {
        let row_inputs = buffers.row_inputs();
        let mut in_flight: Vec<InFlight> = Vec::new();
        let mut first_row = 0;
        let mut chunk_index = 0;
        while first_row < shape.rows {
            let rows = chunk_rows.min(shape.rows - first_row);
            let slot = chunk_index % slots.len();
            // The slot's previous chunk must be read back before it is reused.
            if let Some(i) = in_flight.iter().position(|f| f.slot == slot) {
                let done = in_flight.remove(i);
                self.finish(done, slots, output).await?;
            }
            let elements = first_row * shape.cols..(first_row + rows) * shape.cols;
            let bytes = (elements.len() as u64 * layout.out_elem).next_multiple_of(4);
            let staging = &slots[slot];
            let chunk_shape = Shape::new(rows, shape.cols);
            let mapped = self
                .submit_chunk(staging, layout.gap_at(rows), bytes, |encoder| {
                    write_words(
                        &self.gpu.queue,
                        &staging.data,
                        bytemuck::cast_slice(&input[elements.clone()]),
                    );
                    let src = MatrixView::new(&staging.data).with_dtype(T::DTYPE);
                    let dst = MatrixView::new(&staging.data)
                        .with_offset(layout.gap_at(rows))
                        .with_dtype(U::DTYPE);
                    self.gpu.encode(
                        encoder,
                        src,
                        dst,
                        chunk_shape,
                        options,
                        &row_inputs,
                        first_row,
                    )
                })
                .await?;
            in_flight.push(InFlight {
                slot,
                elements,
                mapped,
            });
            first_row += rows;
            chunk_index += 1;
            yield_now().await;
        }
        for done in in_flight {
            self.finish(done, slots, output).await?;
        }
        Ok(())
    }

    /// One chunk's round trip, up to the wait: `record` uploads the chunk and records its
    /// op on a new encoder; then `bytes` of the result, from `result_offset` of the slot's
    /// device buffer, are copied to its readback buffer, the encoder is submitted (all in
    /// error scopes), and the readback's map is started.
    async fn submit_chunk(
        &self,
        slot: &StagingSlot,
        result_offset: u64,
        bytes: u64,
        record: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<()>,
    ) -> Result<MapWait> {
        let submission = scoped_async(&self.gpu.device, || -> Result<_> {
            let mut encoder =
                self.gpu
                    .device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("wgpu-softmax host"),
                    });
            record(&mut encoder)?;
            encoder.copy_buffer_to_buffer(&slot.data, result_offset, &slot.readback, 0, bytes);
            Ok(self.gpu.queue.submit([encoder.finish()]))
        })
        .await??;
        map_read(
            &self.gpu.device,
            self.poller,
            &slot.readback,
            0..bytes,
            submission,
        )
    }

    /// Awaits a chunk's readback (bounded by the context's time-out) and copies it out.
    async fn finish<U: Element>(
        &self,
        done: InFlight,
        slots: &[StagingSlot],
        output: &mut [U],
    ) -> Result<()> {
        let readback = &slots[done.slot].readback;
        let bytes = (done.elements.len() * std::mem::size_of::<U>()) as u64;
        let mapped_bytes = bytes.next_multiple_of(4);
        self.check_mapped(done.mapped.await?)?;
        {
            let view = readback
                .get_mapped_range(0..mapped_bytes)
                .map_err(|e| Error::Map(e.to_string()))?;
            bytemuck::cast_slice_mut::<U, u8>(&mut output[done.elements])
                .copy_from_slice(&view[..bytes as usize]);
        }
        // In an error scope, as every wgpu call that may fail: a device destroyed
        // meanwhile has destroyed this buffer too.
        scoped_async(&self.gpu.device, || readback.unmap()).await?;
        Ok(())
    }

    /// Rows per host chunk of rows of `row_bytes` (a non-empty shape): about the
    /// context's chunk size, at least one row, and no chunk (plus `gap` bytes) larger
    /// than the device's largest buffer.
    fn chunk_rows(&self, shape: Shape, row_bytes: u64, gap: u64) -> Result<usize> {
        let max_rows_by_buffer =
            (self.gpu.caps.max_buffer_size.saturating_sub(gap) / row_bytes) as usize;
        let chunk_rows = ((self.chunk_bytes / row_bytes) as usize)
            .clamp(1, shape.rows)
            .min(max_rows_by_buffer);
        if chunk_rows == 0 {
            return Err(Error::RowTooLong {
                cols: shape.cols,
                bytes: row_bytes,
                limit: self.gpu.caps.max_buffer_size,
            });
        }
        Ok(chunk_rows)
    }
}

/// Where a host chunk lies in its staging buffer: the input from byte 0; the output in
/// the same place when input and output have one storage type (computed in place), else
/// after the input, from the next storage-aligned byte.
struct ChunkLayout {
    cols: usize,
    in_elem: u64,
    out_elem: u64,
    align: u64,
    /// Whether the output has its own region.
    separate: bool,
}

impl ChunkLayout {
    fn new<T: Element, U: Element>(gpu: &Gpu, cols: usize) -> Self {
        let align = u64::from(gpu.caps.storage_offset_alignment.max(16));
        // In place where one storage type serves both, except where bindings may not
        // alias (WebGPU): there the output has its own region.
        let separate = T::DTYPE != U::DTYPE || !gpu.caps.aliased_views;
        ChunkLayout {
            cols,
            in_elem: T::DTYPE.size(),
            out_elem: U::DTYPE.size(),
            align,
            separate,
        }
    }

    /// The most bytes the output's alignment adds to a chunk.
    fn gap(&self) -> u64 {
        if self.separate {
            self.align
        } else {
            0
        }
    }

    /// Staging bytes per row of a chunk.
    fn row_bytes(&self) -> u64 {
        let cols = self.cols as u64;
        if self.separate {
            cols * (self.in_elem + self.out_elem)
        } else {
            cols * self.in_elem
        }
    }

    /// Byte offset of the output of a chunk of `rows` rows.
    fn gap_at(&self, rows: usize) -> u64 {
        if self.separate {
            (rows as u64 * self.cols as u64 * self.in_elem).next_multiple_of(self.align)
        } else {
            0
        }
    }

    /// Staging bytes for a chunk of `rows` rows (whole words, for copies).
    fn slot_bytes(&self, rows: usize) -> u64 {
        (self.gap_at(rows) + rows as u64 * self.cols as u64 * self.out_elem)
            .next_multiple_of(4)
            .max(4)
    }

    /// The input's and the output's placement for a chunk of `rows` rows.
    fn placements(&self, rows: usize) -> (Placement, Placement) {
        let place = |offset, elem_bytes| Placement {
            offset,
            row_stride: self.cols,
            elem_bytes,
        };
        (
            place(0, self.in_elem),
            place(self.gap_at(rows), self.out_elem),
        )
    }
}

/// Writes `bytes` at the start of `buffer` (which holds them rounded up to a word);
/// queue writes are whole words, so an odd 16-bit tail goes in one padded word.
fn write_words(queue: &wgpu::Queue, buffer: &wgpu::Buffer, bytes: &[u8]) {
    let whole = bytes.len() / 4 * 4;
    if whole > 0 {
        queue.write_buffer(buffer, 0, &bytes[..whole]);
    }
    if whole < bytes.len() {
        let mut last = [0u8; 4];
        last[..bytes.len() - whole].copy_from_slice(&bytes[whole..]);
        queue.write_buffer(buffer, whole as u64, &last);
    }
}
