//! Recording a plan into a `CommandEncoder`: the GPU-resident API.

use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::{uniform_buffer, BindingKey, Bindings, Bound, Params, PipelineKey, Shader};
use crate::loss::CrossEntropy;
use crate::op::{MaskedRows, Op, Options, Shape};
use crate::plan::{self, Placement, Plan};
use crate::sample::Sampling;
use crate::stats::StatsMode;
use crate::wait::scoped;

/// Row statistics in a caller's buffer: `[rows, 2]` f32, `(max, log-sum-exp)` of `x / T`
/// per row, starting `offset` bytes in, and whether they are written or given.
#[derive(Clone, Copy, Debug)]
pub struct StatsView<'a> {
    /// The buffer; it needs `BufferUsages::STORAGE`.
    pub buffer: &'a wgpu::Buffer,
    /// Byte offset of row 0's statistics; a multiple of 8.
    pub offset: u64,
    /// Written by the op, or given to it.
    pub mode: StatsMode,
}

/// A checked binding of a caller's buffer region: the binding's range and the element
/// index of the region's first element in it.
#[derive(Clone)]
pub(crate) struct RegionBinding<'a> {
    buffer: &'a wgpu::Buffer,
    offset: u64,
    size: u64,
    first: u32,
    /// The region's own bytes (the binding may start below and end above them).
    bytes: std::ops::Range<u64>,
}

impl<'a> RegionBinding<'a> {
    /// Checks `count` elements of `elem` bytes at `offset` of `buffer`, and binds them
    /// from the storage offset alignment below.
    fn new(
        which: &'static str,
        buffer: &'a wgpu::Buffer,
        offset: u64,
        elem: u64,
        count: u64,
        caps: &plan::DeviceCaps,
    ) -> Result<Self> {
        if !offset.is_multiple_of(elem) {
            return Err(Error::Misaligned {
                offset,
                required: elem,
            });
        }
        if !buffer.usage().contains(wgpu::BufferUsages::STORAGE) {
            return Err(Error::MissingUsage {
                which,
                missing: "STORAGE",
            });
        }
        // Bindings are whole words: 16-bit values are bound to the end of the last one's
        // word, which the buffer must hold.
        let end = count
            .checked_mul(elem)
            .and_then(|b| b.checked_add(offset))
            .and_then(|b| b.checked_next_multiple_of(4))
            .ok_or_else(|| Error::Unsupported(format!("the {which} region overflows")))?;
        if end > buffer.size() {
            return Err(Error::BufferTooSmall {
                which,
                needed: end,
                size: buffer.size(),
            });
        }
        let align = u64::from(caps.storage_offset_alignment.max(elem as u32));
        let start = offset - offset % align;
        if end - start > caps.max_storage_binding_size {
            return Err(Error::Unsupported(format!(
                "the {which} region ({} bytes) exceeds one storage binding",
                end - start
            )));
        }
        Ok(RegionBinding {
            buffer,
            offset: start,
            size: (end - start).max(4),
            first: ((offset - start) / elem) as u32,
            // `end` is rounded up to a word; the region itself ends at its last element.
            bytes: offset..offset + count * elem,
        })
    }
}

/// A region of a caller's buffer: elements from `offset` bytes on.
#[derive(Clone, Copy, Debug)]
pub struct Region<'a> {
    /// The buffer; it needs `BufferUsages::STORAGE`.
    pub buffer: &'a wgpu::Buffer,
    /// Byte offset of the first element; a multiple of the element size (4; 2 for a
    /// 16-bit mask).
    pub offset: u64,
}

impl<'a> Region<'a> {
    /// The region starting at byte 0 of `buffer`.
    pub fn new(buffer: &'a wgpu::Buffer) -> Self {
        Region { buffer, offset: 0 }
    }

    /// This region, starting `offset` bytes into the buffer.
    pub fn with_offset(mut self, offset: u64) -> Self {
        self.offset = offset;
        self
    }
}

/// An additive mask in a caller's buffer: `[rows, cols]` values, packed, stored as
/// `dtype`, from `offset` bytes on. Row `r` of the matrix adds mask row `r % rows` to
/// `x / T` (one row for all, one per row, or one per head group); an entry of `-inf`
/// masks its column out, whatever the matrix holds there.
#[derive(Clone, Copy, Debug)]
pub struct MaskView<'a> {
    /// The buffer; it needs `BufferUsages::STORAGE`. A 16-bit mask's buffer must hold
    /// the whole 4-byte word of its last value.
    pub buffer: &'a wgpu::Buffer,
    /// Byte offset of the first value; a multiple of the element size.
    pub offset: u64,
    /// Rows of the mask (at least 1).
    pub rows: usize,
    /// How the values are stored: f32 (the default), f16 or bf16.
    pub dtype: Dtype,
}

impl<'a> MaskView<'a> {
    /// A packed f32 mask of `rows` rows at the start of `buffer`.
    pub fn new(buffer: &'a wgpu::Buffer, rows: usize) -> Self {
        MaskView {
            buffer,
            offset: 0,
            rows,
            dtype: Dtype::F32,
        }
    }

    /// This mask, stored as `dtype`.
    pub fn with_dtype(mut self, dtype: Dtype) -> Self {
        self.dtype = dtype;
        self
    }

    /// This mask, starting `offset` bytes into the buffer.
    pub fn with_offset(mut self, offset: u64) -> Self {
        self.offset = offset;
        self
    }
}

/// Data fused into a resident op, in the caller's buffers (see
/// [`Context::encode`](crate::Context::encode)). All are optional; none costs an extra
/// pass over the matrix. [`HostInputs`](crate::HostInputs) is the host path's twin.
#[derive(Clone, Copy, Debug, Default)]
pub struct RowInputs<'a> {
    /// An additive mask.
    pub mask: Option<MaskView<'a>>,
    /// One u32 per row: columns at or past it are masked out (written as 0; log-softmax
    /// `-inf`). Lengths above `cols` mean `cols`.
    pub lengths: Option<Region<'a>>,
    /// One f32 per row, multiplying [`Options::temperature`]. A row whose temperature is
    /// not a finite number > 0, or whose combined temperature is so small that the f32
    /// reciprocals' product (`(1 / T) * (1 / t)`) overflows, comes out NaN.
    pub temperatures: Option<Region<'a>>,
    /// Row statistics `[rows, 2]` f32, written by the op or given to it.
    pub stats: Option<StatsView<'a>>,
}

impl<'a> RowInputs<'a> {
    /// No inputs.
    pub const NONE: RowInputs<'static> = RowInputs {
        mask: None,
        lengths: None,
        temperatures: None,
        stats: None,
    };

    /// These inputs with an additive mask.
    pub fn with_mask(mut self, mask: MaskView<'a>) -> Self {
        self.mask = Some(mask);
        self
    }

    /// These inputs with per-row valid lengths (u32).
    pub fn with_lengths(mut self, lengths: Region<'a>) -> Self {
        self.lengths = Some(lengths);
        self
    }

    /// These inputs with per-row temperatures (f32).
    pub fn with_temperatures(mut self, temperatures: Region<'a>) -> Self {
        self.temperatures = Some(temperatures);
        self
    }

    /// These inputs with row statistics, written or given.
    pub fn with_stats(mut self, stats: StatsView<'a>) -> Self {
        self.stats = Some(stats);
        self
    }
}

/// The checked bindings of a [`RowInputs`].
#[derive(Default)]
pub(crate) struct InputBindings<'a> {
    mask: Option<(RegionBinding<'a>, u32)>,
    mask_dtype: Dtype,
    lengths: Option<RegionBinding<'a>>,
    temperatures: Option<RegionBinding<'a>>,
    stats: Option<(RegionBinding<'a>, StatsMode)>,
    /// The op's row 0 is row `row_origin` of the inputs.
    row_origin: u32,
}

impl<'a> RowInputs<'a> {
    /// Checks every input against a matrix whose rows `0..rows` are the op's rows
    /// `row_origin..` (the host path passes its whole-matrix inputs with each chunk).
    fn bind(&self, rows: u64, cols: usize, caps: &plan::DeviceCaps) -> Result<InputBindings<'a>> {
        let mask = match self.mask {
            Some(m) => {
                let mask_rows = m.rows;
                if mask_rows == 0 {
                    return Err(Error::Unsupported("a mask needs at least one row".into()));
                }
                let count = (mask_rows as u64)
                    .checked_mul(cols as u64)
                    .ok_or_else(|| Error::Unsupported("the mask region overflows".into()))?;
                let elem = m.dtype.size();
                let b = RegionBinding::new("mask", m.buffer, m.offset, elem, count, caps)?;
                Some((
                    b,
                    u32::try_from(mask_rows).map_err(|_| {
                        Error::Unsupported(format!("{mask_rows} mask rows exceed u32"))
                    })?,
                ))
            }
            None => None,
        };
        let per_row = |which, r: Option<Region<'a>>| -> Result<Option<RegionBinding<'a>>> {
            r.map(|r| RegionBinding::new(which, r.buffer, r.offset, 4, rows, caps))
                .transpose()
        };
        let stats = match self.stats {
            Some(v) => Some((
                RegionBinding::new("stats", v.buffer, v.offset, 8, rows, caps)?,
                v.mode,
            )),
            None => None,
        };
        Ok(InputBindings {
            mask,
            mask_dtype: self.mask.map_or(Dtype::F32, |m| m.dtype),
            lengths: per_row("lengths", self.lengths)?,
            temperatures: per_row("temperatures", self.temperatures)?,
            stats,
            row_origin: 0,
        })
    }
}

impl<'a> InputBindings<'a> {
    /// Refuses destroyed buffers among the row inputs (see [`Gpu::check_alive`]).
    fn check_alive(&self, gpu: &Gpu) -> Result<()> {
        if let Some((b, _)) = &self.mask {
            gpu.check_alive("mask", b.buffer)?;
        }
        if let Some(b) = &self.lengths {
            gpu.check_alive("lengths", b.buffer)?;
        }
        if let Some(b) = &self.temperatures {
            gpu.check_alive("temperatures", b.buffer)?;
        }
        if let Some((b, _)) = &self.stats {
            gpu.check_alive("stats", b.buffer)?;
        }
        Ok(())
    }

    /// Row inputs are read while the output is written, and statistics are written while
    /// everything else is read: none of them may share bytes with what is written at the
    /// same time, or the kernels race.
    fn check_overlaps<'b>(
        &'b self,
        input: (&'b wgpu::Buffer, std::ops::Range<u64>),
        output: (&'b wgpu::Buffer, std::ops::Range<u64>),
    ) -> Result<()> {
        type Bytes<'b> = (&'static str, &'b wgpu::Buffer, std::ops::Range<u64>);
        let region = |which: &'static str, b: &'b RegionBinding<'a>| -> Bytes<'b> {
            (which, b.buffer, b.bytes.clone())
        };
        let mut read: Vec<Bytes<'b>> = Vec::new();
        read.extend(self.mask.as_ref().map(|(b, _)| region("mask", b)));
        read.extend(self.lengths.as_ref().map(|b| region("lengths", b)));
        read.extend(
            self.temperatures
                .as_ref()
                .map(|b| region("temperatures", b)),
        );
        let mut written: Vec<Bytes<'b>> = vec![("output", output.0, output.1)];
        match &self.stats {
            Some((b, StatsMode::Given)) => read.push(region("stats", b)),
            Some((b, StatsMode::Write)) => {
                read.push(("input", input.0, input.1));
                written.push(region("stats", b));
            }
            None => {}
        }
        let shared =
            |a: &Bytes<'_>, b: &Bytes<'_>| a.1 == b.1 && a.2.start < b.2.end && b.2.start < a.2.end;
        for w in &written {
            for other in read.iter().chain(&written) {
                // The output against the input is check_pair's (in place is allowed).
                if w.0 != other.0 && shared(w, other) && !(w.0 == "output" && other.0 == "input") {
                    return Err(Error::RegionOverlap {
                        written: w.0,
                        other: other.0,
                    });
                }
            }
        }
        Ok(())
    }
}

impl<'a> StatsView<'a> {
    /// Statistics the op writes, at the start of `buffer`.
    pub fn write(buffer: &'a wgpu::Buffer) -> Self {
        StatsView {
            buffer,
            offset: 0,
            mode: StatsMode::Write,
        }
    }

    /// Statistics given to the op, at the start of `buffer`.
    pub fn given(buffer: &'a wgpu::Buffer) -> Self {
        StatsView {
            buffer,
            offset: 0,
            mode: StatsMode::Given,
        }
    }

    /// This view, starting `offset` bytes into the buffer.
    pub fn with_offset(mut self, offset: u64) -> Self {
        self.offset = offset;
        self
    }
}

/// A matrix in a caller's buffer: where element `[0, 0]` is, how far apart rows are, and
/// how elements are stored.
#[derive(Clone, Copy, Debug)]
pub struct MatrixView<'a> {
    /// The buffer; it needs `BufferUsages::STORAGE`.
    pub buffer: &'a wgpu::Buffer,
    /// Byte offset of element `[0, 0]`; a multiple of the element size. Rows on
    /// boundaries of four elements (offset a multiple of 16 bytes for f32, 8 for 16-bit
    /// types, and a row stride a multiple of 4) let the kernels use vector access.
    pub offset: u64,
    /// Elements between row starts; `None` means `cols` (rows packed).
    pub row_stride: Option<usize>,
    /// How elements are stored: f32 (the default), f16 or bf16 (arithmetic is f32 in
    /// every case). A 16-bit matrix's buffer must hold the whole 4-byte word of its last
    /// element.
    pub dtype: Dtype,
}

impl<'a> MatrixView<'a> {
    /// A packed matrix at the start of `buffer`.
    pub fn new(buffer: &'a wgpu::Buffer) -> Self {
        MatrixView {
            buffer,
            offset: 0,
            row_stride: None,
            dtype: Dtype::F32,
        }
    }

    /// This view, with elements stored as `dtype`.
    pub fn with_dtype(mut self, dtype: Dtype) -> Self {
        self.dtype = dtype;
        self
    }

    /// This view, starting `offset` bytes into the buffer.
    pub fn with_offset(mut self, offset: u64) -> Self {
        self.offset = offset;
        self
    }

    /// This view, with rows `row_stride` elements apart.
    pub fn with_row_stride(mut self, row_stride: usize) -> Self {
        self.row_stride = Some(row_stride);
        self
    }

    fn placement(&self, cols: usize) -> Placement {
        Placement {
            offset: self.offset,
            row_stride: self.row_stride.unwrap_or(cols),
            elem_bytes: self.dtype.size(),
        }
    }

    /// Checks the view against the shape and returns the byte range it covers.
    fn check(&self, which: &'static str, shape: Shape) -> Result<std::ops::Range<u64>> {
        let p = self.placement(shape.cols);
        if p.row_stride < shape.cols {
            return Err(Error::InvalidStride {
                stride: p.row_stride,
                cols: shape.cols,
            });
        }
        if !p.offset.is_multiple_of(p.elem_bytes) {
            return Err(Error::Misaligned {
                offset: p.offset,
                required: p.elem_bytes,
            });
        }
        if !self.buffer.usage().contains(wgpu::BufferUsages::STORAGE) {
            return Err(Error::MissingUsage {
                which,
                missing: "STORAGE",
            });
        }
        let overflow = Error::ShapeOverflow {
            rows: shape.rows,
            cols: shape.cols,
        };
        let elements = (shape.rows - 1)
            .checked_mul(p.row_stride)
            .and_then(|n| n.checked_add(shape.cols))
            .ok_or(overflow.clone())?;
        let end = (elements as u64)
            .checked_mul(p.elem_bytes)
            .and_then(|b| b.checked_add(p.offset))
            .ok_or(overflow.clone())?;
        // Bindings are whole words (16-bit elements are read and written in pairs).
        let bound_end = end.checked_next_multiple_of(4).ok_or(overflow)?;
        if bound_end > self.buffer.size() {
            return Err(Error::BufferTooSmall {
                which,
                needed: bound_end,
                size: self.buffer.size(),
            });
        }
        Ok(p.offset..end)
    }
}

/// Byte ranges of the input and the output in their buffers.
type PairBytes = (std::ops::Range<u64>, std::ops::Range<u64>);

/// The argument checks shared by every resident op: options, shape, both views, and
/// their overlap (`in_place` allows the very same region for both). Returns both views'
/// byte ranges, or None for an empty shape, which records nothing.
fn check_pair(
    input: MatrixView<'_>,
    output: MatrixView<'_>,
    shape: Shape,
    options: &Options,
    in_place: bool,
) -> Result<Option<PairBytes>> {
    options.validate()?;
    shape.len()?;
    if shape.is_empty() {
        return Ok(None);
    }
    let a = input.check("input", shape)?;
    let b = output.check("output", shape)?;
    if input.buffer == output.buffer {
        let (p, q) = (input.placement(shape.cols), output.placement(shape.cols));
        let same = p == q && input.dtype == output.dtype;
        let spans_meet = a.start < b.end && b.start < a.end;
        if spans_meet && !(in_place && same) && rows_share_bytes(&p, &q, shape) {
            return Err(Error::PartialOverlap);
        }
    }
    Ok(Some((a, b)))
}

/// Whether any row of the matrix at `a` shares a byte with any row of the matrix at `b`
/// (both checked by [`MatrixView::check`], so no row's bytes overflow). Rows of each lie
/// in increasing, disjoint byte ranges, so one merge over both finds a shared byte:
/// strided views whose rows interleave without touching are not refused.
fn rows_share_bytes(a: &Placement, b: &Placement, shape: Shape) -> bool {
    let row = |p: &Placement, i: usize| {
        let start = p.offset + (i as u64) * (p.row_stride as u64) * p.elem_bytes;
        (start, start + shape.cols as u64 * p.elem_bytes)
    };
    let (mut i, mut j) = (0, 0);
    while i < shape.rows && j < shape.rows {
        let ((a0, a1), (b0, b1)) = (row(a, i), row(b, j));
        if a0 < b1 && b0 < a1 {
            return true;
        }
        if a1 <= b1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    false
}

/// The most sweeps of one of the sampler's sweep functions per row: a search's
/// [`MAX_SEARCH_SWEEPS`](crate::sample::MAX_SEARCH_SWEEPS), and one more sweep counts the
/// row (top-k) or the mass top-k kept (top-p).
const SEARCH_SWEEPS: u64 = crate::sample::MAX_SEARCH_SWEEPS as u64 + 1;

/// Where the sampler writes: a column id (`u32`) per row, and optionally its
/// log-probability (`f32`) per row, in the app's buffers.
#[derive(Clone, Copy, Debug)]
pub struct SampleOutputs<'a> {
    /// Row `r`'s id goes to element `r` of this region.
    pub ids: Region<'a>,
    /// Row `r`'s log-probability goes to element `r` of this region, when given.
    pub logprobs: Option<Region<'a>>,
}

impl<'a> SampleOutputs<'a> {
    /// Ids only.
    pub fn new(ids: Region<'a>) -> Self {
        SampleOutputs {
            ids,
            logprobs: None,
        }
    }

    /// These outputs with the log-probabilities too.
    pub fn with_logprobs(mut self, logprobs: Region<'a>) -> Self {
        self.logprobs = Some(logprobs);
        self
    }
}

/// Where the cross-entropy writes: a loss (`f32`) per row into `losses`, and the
/// gradient with respect to the logits into `grad` when given (of the logits' shape; it
/// may be the logits themselves, for the gradient in place).
#[derive(Clone, Copy, Debug)]
pub struct LossOutputs<'a> {
    /// Row `r`'s loss goes to element `r` of this region.
    pub losses: Region<'a>,
    /// The gradient, if wanted.
    pub grad: Option<MatrixView<'a>>,
}

impl<'a> LossOutputs<'a> {
    /// Losses only.
    pub fn new(losses: Region<'a>) -> Self {
        LossOutputs { losses, grad: None }
    }

    /// These outputs with the gradient too.
    pub fn with_grad(mut self, grad: MatrixView<'a>) -> Self {
        self.grad = Some(grad);
        self
    }
}

/// The checked targets and outputs of a cross-entropy call, and its settings.
pub(crate) struct CeBinding<'a> {
    targets: RegionBinding<'a>,
    losses: RegionBinding<'a>,
    /// Indices per row of a gather of log-probabilities; 0 for the loss.
    gather_k: u32,
    grad: bool,
    grad_dtype: Dtype,
    ce: CrossEntropy,
    /// The gradient's scale (the reduction's times the incoming one).
    scale: f32,
}

impl CeBinding<'_> {
    fn params(&self, params: Params, first_row: u32) -> Params {
        Params {
            col_origin: self.ce.column_offset,
            targets_first: self.targets.first + first_row * self.gather_k.max(1),
            losses_first: self.losses.first + first_row * self.gather_k.max(1),
            gather_k: self.gather_k,
            ignore_index: self.ce.ignore_index as i32 as u32,
            smoothing: self.ce.label_smoothing,
            z_loss: self.ce.z_loss,
            grad_scale: self.scale,
            ce_flags: u32::from(self.grad) | if self.gather_k > 0 { 2 } else { 0 },
            ..params
        }
    }
}

/// What a sampling or cross-entropy call binds besides the softmax kernels' bindings.
#[derive(Clone, Copy)]
pub(crate) enum Extra<'b, 'a> {
    Sample(&'b SampleBinding<'a>),
    CrossEntropy(&'b CeBinding<'a>),
    /// The backward pass's logits, for a soft-cap's slope, and their row stride.
    Logits(&'b RegionBinding<'a>, u32),
}

/// The checked outputs of a sampling call, and its sampling.
pub(crate) struct SampleBinding<'a> {
    ids: RegionBinding<'a>,
    logprobs: Option<RegionBinding<'a>>,
    sampling: Sampling,
}

impl SampleBinding<'_> {
    /// A chunk's params with the sampling fields, its first row `first_row` of the call.
    fn params(&self, params: Params, first_row: u32) -> Params {
        let (top_k, top_p, min_p, flags) = self.sampling.kernel_fields();
        Params {
            col_origin: self.sampling.column_offset,
            top_k,
            top_p,
            min_p,
            seed_lo: self.sampling.seed as u32,
            seed_hi: (self.sampling.seed >> 32) as u32,
            step: self.sampling.step,
            rng_row: self.sampling.row_offset,
            sample_flags: flags | if self.logprobs.is_some() { 2 } else { 0 },
            ids_first: self.ids.first + first_row,
            logprobs_first: self.logprobs.as_ref().map_or(0, |b| b.first + first_row),
            ..params
        }
    }
}

impl Gpu {
    /// The uniform buffer (written through the queue) and one bind group per chunk for
    /// `key`.
    // In a browser wgpu's objects are neither Send nor Sync, and neither is anything of
    // this crate there (one thread); the Arc only shares them with the binding cache.
    #[cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]
    fn make_bindings(
        &self,
        key: &BindingKey,
        layout: &wgpu::BindGroupLayout,
        slot: u64,
    ) -> std::sync::Arc<Bindings> {
        let uniforms = uniform_buffer(
            &self.device,
            &self.queue,
            "wgpu-softmax params",
            &key.params,
        );
        let bind_groups = key
            .chunks
            .iter()
            .enumerate()
            .map(|(i, bound)| {
                let mut entries = vec![wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &uniforms,
                        offset: i as u64 * slot,
                        size: wgpu::BufferSize::new(std::mem::size_of::<Params>() as u64),
                    }),
                }];
                entries.extend(bound.iter().map(|(binding, b)| wgpu::BindGroupEntry {
                    binding: *binding,
                    resource: match b {
                        Bound::Unused => wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: &self.kernels.dummy,
                            offset: crate::kernels::dummy_offset(&self.device, *binding),
                            size: wgpu::BufferSize::new(16),
                        }),
                        Bound::Range(buffer, offset, size) => {
                            wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                buffer,
                                offset: *offset,
                                size: wgpu::BufferSize::new(*size),
                            })
                        }
                    },
                }));
                self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("wgpu-softmax chunk"),
                    layout,
                    entries: &entries,
                })
            })
            .collect();
        std::sync::Arc::new(Bindings {
            _uniforms: uniforms,
            bind_groups,
        })
    }
}

impl Gpu {
    /// The resident op (see [`Context::encode`](crate::Context::encode)) on rows
    /// `row_origin..row_origin + shape.rows` of a larger matrix whose row inputs start
    /// at its row 0 (the host path's chunks pass their first row; the app passes 0).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn encode(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        input: MatrixView<'_>,
        output: MatrixView<'_>,
        shape: Shape,
        options: &Options,
        inputs: &RowInputs<'_>,
        row_origin: usize,
    ) -> Result<()> {
        // In place (the very same region) is allowed; any other overlap is not.
        let Some((input_bytes, output_bytes)) = check_pair(input, output, shape, options, true)?
        else {
            return Ok(());
        };
        let total_rows = row_origin as u64 + shape.rows as u64;
        // Row indices and row + causal offset + 1 are u32 in WGSL.
        if total_rows + shape.cols as u64 + 1 > u64::from(u32::MAX) {
            return Err(Error::ShapeOverflow {
                rows: shape.rows,
                cols: shape.cols,
            });
        }
        if !self.caps.aliased_views && input.buffer == output.buffer {
            // Bindings start on the offset alignment below their first byte.
            let align = u64::from(self.caps.storage_offset_alignment.max(4));
            let bound = |r: &std::ops::Range<u64>| r.start - r.start % align..r.end;
            let (a, b) = (bound(&input_bytes), bound(&output_bytes));
            if a.start < b.end && b.start < a.end {
                return Err(Error::Unsupported(
                    "WebGPU refuses two writable storage bindings of one dispatch over the \
                     same bytes: in a browser the input and the output must not share a \
                     buffer range (no in-place op)"
                        .into(),
                ));
            }
        }
        let mut bindings = inputs.bind(total_rows, shape.cols, &self.caps)?;
        bindings.check_overlaps((input.buffer, input_bytes), (output.buffer, output_bytes))?;
        self.check_alive("input", input.buffer)?;
        self.check_alive("output", output.buffer)?;
        bindings.check_alive(self)?;
        bindings.row_origin = row_origin as u32;
        let plan = plan::plan(
            shape.rows,
            shape.cols,
            input.placement(shape.cols),
            output.placement(shape.cols),
            options.tuning(),
            &self.caps,
        )?;
        log::debug!(
            "wgpu-softmax: {shape:?} {:?}: {:?}, {} invocations, vec4 {}, {} chunk(s), split {:?}",
            options.op,
            plan.kernel,
            plan.workgroup_size,
            plan.vec4,
            plan.chunks.len(),
            plan.split
        );
        let shaders = Shader::of_kernel(plan.kernel);
        self.record(
            encoder,
            (&plan, shaders),
            (input, output),
            shape,
            options,
            (&bindings, None),
        )
    }

    /// The sampling op (see [`Context::encode_sample`](crate::Context::encode_sample)) on
    /// rows `row_origin..` of the inputs, as [`Gpu::encode`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn encode_sample(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        input: MatrixView<'_>,
        outputs: SampleOutputs<'_>,
        shape: Shape,
        options: &Options,
        sampling: &Sampling,
        inputs: &RowInputs<'_>,
        row_origin: usize,
    ) -> Result<()> {
        options.validate()?;
        sampling.validate()?;
        shape.len()?;
        if shape.rows == 0 {
            return Ok(());
        }
        if shape.cols == 0 {
            return Err(Error::Unsupported(
                "sampling needs at least one column (a row of none has nothing to draw)".into(),
            ));
        }
        if inputs.stats.is_some() {
            return Err(Error::Unsupported(
                "sampling takes no row statistics (it computes its own)".into(),
            ));
        }
        let input_bytes = input.check("input", shape)?;
        let total_rows = row_origin as u64 + shape.rows as u64;
        if total_rows + shape.cols as u64 + 1 > u64::from(u32::MAX) {
            return Err(Error::ShapeOverflow {
                rows: shape.rows,
                cols: shape.cols,
            });
        }
        let mut bindings = inputs.bind(total_rows, shape.cols, &self.caps)?;
        bindings.row_origin = row_origin as u32;
        let rows = shape.rows as u64;
        let ids = RegionBinding::new(
            "ids",
            outputs.ids.buffer,
            outputs.ids.offset,
            4,
            rows,
            &self.caps,
        )?;
        let logprobs = outputs
            .logprobs
            .map(|r| RegionBinding::new("logprobs", r.buffer, r.offset, 4, rows, &self.caps))
            .transpose()?;
        // What is written must share no byte with anything else the kernel touches.
        type Bytes<'b> = (&'static str, &'b wgpu::Buffer, std::ops::Range<u64>);
        let mut touched: Vec<Bytes<'_>> = vec![("input", input.buffer, input_bytes)];
        touched.extend(
            bindings
                .mask
                .as_ref()
                .map(|(b, _)| ("mask", b.buffer, b.bytes.clone())),
        );
        touched.extend(
            bindings
                .lengths
                .as_ref()
                .map(|b| ("lengths", b.buffer, b.bytes.clone())),
        );
        touched.extend(
            bindings
                .temperatures
                .as_ref()
                .map(|b| ("temperatures", b.buffer, b.bytes.clone())),
        );
        let mut written: Vec<Bytes<'_>> = vec![("ids", ids.buffer, ids.bytes.clone())];
        written.extend(
            logprobs
                .as_ref()
                .map(|b| ("logprobs", b.buffer, b.bytes.clone())),
        );
        for (i, w) in written.iter().enumerate() {
            for other in touched.iter().chain(&written[i + 1..]) {
                if w.1 == other.1 && w.2.start < other.2.end && other.2.start < w.2.end {
                    return Err(Error::RegionOverlap {
                        written: w.0,
                        other: other.0,
                    });
                }
            }
        }
        self.check_alive("input", input.buffer)?;
        self.check_alive("ids", ids.buffer)?;
        if let Some(b) = &logprobs {
            self.check_alive("logprobs", b.buffer)?;
        }
        bindings.check_alive(self)?;
        let plan = self.sample_plan(shape, input.placement(shape.cols), options)?;
        log::debug!(
            "wgpu-softmax: {shape:?} sample {sampling:?}: {} invocations, {} chunk(s), split {:?}",
            plan.workgroup_size,
            plan.chunks.len(),
            plan.split
        );
        // A split row: a part sweep and a fold per step of the worst case (a row done
        // sooner returns from the rest at once).
        let shaders = match plan.split {
            None => vec![Shader::Sample],
            Some(_) => {
                [Shader::SamplePart, Shader::SampleFold].repeat(sampling.split_steps(shape.cols))
            }
        };
        let sample = SampleBinding {
            ids,
            logprobs,
            sampling: *sampling,
        };
        self.record(
            encoder,
            (&plan, &shaders),
            (input, input),
            shape,
            options,
            (&bindings, Some(Extra::Sample(&sample))),
        )
    }

    /// The sampler's plan: one workgroup per row (as [`Gpu::row_per_workgroup_plan`]),
    /// or, for few long rows (where the planner would split a softmax's) and for rows
    /// one workgroup cannot sweep (past a binding or a software adapter's loop cap), each
    /// row split over several workgroups.
    pub(crate) fn sample_plan(
        &self,
        shape: Shape,
        input: Placement,
        options: &Options,
    ) -> Result<Plan> {
        let tuning = options.tuning();
        let split = match tuning.kernel {
            Some(kernel) => kernel == plan::RowKernel::SplitRow,
            None => {
                plan::choose_kernel(shape.rows, shape.cols, &self.caps) == plan::RowKernel::SplitRow
            }
        };
        if !split {
            match self.row_per_workgroup_plan(shape, input, input, options) {
                Err(Error::RowTooLong { .. } | Error::Unsupported(_))
                    if tuning.kernel.is_none() => {}
                other => return other,
            }
        }
        // The draw sweeps a part one column per step: more parts where that passes a
        // software adapter's loop cap.
        let mut parts = tuning.split_parts;
        loop {
            let tuning = plan::Tuning {
                kernel: Some(plan::RowKernel::SplitRow),
                split_parts: parts,
                ..tuning
            };
            let plan = plan::plan(shape.rows, shape.cols, input, input, tuning, &self.caps)?;
            let split = plan
                .split
                .ok_or_else(|| Error::Internal("a split row planned without a split".into()))?;
            let steps = u64::from(split.part_cols).div_ceil(u64::from(plan.workgroup_size));
            match self.caps.max_loop_iterations {
                Some(limit) if steps.max(u64::from(split.parts)) > limit => {
                    if split.part_cols <= 4 {
                        return Err(Error::Unsupported(format!(
                            "no split of a {}-column row fits this adapter's loop cap",
                            shape.cols
                        )));
                    }
                    parts = Some(split.parts.saturating_mul(2));
                }
                _ => return Ok(plan),
            }
        }
    }

    /// The cross-entropy op (see
    /// [`Context::encode_cross_entropy`](crate::Context::encode_cross_entropy)) on rows
    /// `row_origin..` of the inputs; `scale` multiplies the gradient.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn encode_cross_entropy(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        (logits, targets): (MatrixView<'_>, Region<'_>),
        outputs: LossOutputs<'_>,
        shape: Shape,
        options: &Options,
        (ce, scale, gather_k): (&CrossEntropy, f32, u32),
        inputs: &RowInputs<'_>,
        row_origin: usize,
    ) -> Result<()> {
        options.validate()?;
        ce.validate()?;
        if gather_k > 0 && outputs.grad.is_some() {
            return Err(Error::Internal("a gather writes no gradient".into()));
        }
        shape.len()?;
        if shape.rows == 0 {
            return Ok(());
        }
        if shape.cols == 0 {
            return Err(Error::Unsupported(
                "cross-entropy needs at least one column".into(),
            ));
        }
        let given = matches!(
            inputs.stats,
            Some(StatsView {
                mode: StatsMode::Given,
                ..
            })
        );
        if given && ce.label_smoothing != 0.0 {
            return Err(Error::Unsupported(
                "label smoothing needs the mean of the whole row, which a shard given the \
                 row statistics does not have"
                    .into(),
            ));
        }
        let (input_bytes, grad_bytes) = match outputs.grad {
            Some(grad) => {
                let Some((a, b)) = check_pair(logits, grad, shape, options, true)? else {
                    return Ok(());
                };
                if !self.caps.aliased_views && logits.buffer == grad.buffer {
                    let align = u64::from(self.caps.storage_offset_alignment.max(4));
                    let bound = |r: &std::ops::Range<u64>| r.start - r.start % align..r.end;
                    let (x, y) = (bound(&a), bound(&b));
                    if x.start < y.end && y.start < x.end {
                        return Err(Error::Unsupported(
                            "WebGPU refuses two writable storage bindings of one dispatch \
                             over the same bytes: in a browser the gradient cannot be written \
                             over the logits"
                                .into(),
                        ));
                    }
                }
                (a, Some(b))
            }
            None => (logits.check("input", shape)?, None),
        };
        let total_rows = row_origin as u64 + shape.rows as u64;
        if total_rows + shape.cols as u64 + 1 > u64::from(u32::MAX) {
            return Err(Error::ShapeOverflow {
                rows: shape.rows,
                cols: shape.cols,
            });
        }
        let mut bindings = inputs.bind(total_rows, shape.cols, &self.caps)?;
        bindings.row_origin = row_origin as u32;
        let rows = shape.rows as u64 * u64::from(gather_k.max(1));
        let targets_b = RegionBinding::new(
            "targets",
            targets.buffer,
            targets.offset,
            4,
            rows,
            &self.caps,
        )?;
        let losses_b = RegionBinding::new(
            "losses",
            outputs.losses.buffer,
            outputs.losses.offset,
            4,
            rows,
            &self.caps,
        )?;
        // The gradient against the row inputs and statistics (and, in place, the logits).
        let grad_view = outputs.grad.unwrap_or(logits);
        let grad_range = grad_bytes.clone().unwrap_or(0..0);
        bindings.check_overlaps(
            (logits.buffer, input_bytes.clone()),
            (grad_view.buffer, grad_range.clone()),
        )?;
        // The losses and the targets against everything else.
        type Bytes<'b> = (&'static str, &'b wgpu::Buffer, std::ops::Range<u64>);
        let mut others: Vec<Bytes<'_>> = vec![
            ("input", logits.buffer, input_bytes),
            ("targets", targets_b.buffer, targets_b.bytes.clone()),
        ];
        if grad_bytes.is_some() {
            others.push(("grad", grad_view.buffer, grad_range));
        }
        others.extend(
            bindings
                .mask
                .as_ref()
                .map(|(b, _)| ("mask", b.buffer, b.bytes.clone())),
        );
        others.extend(
            bindings
                .lengths
                .as_ref()
                .map(|b| ("lengths", b.buffer, b.bytes.clone())),
        );
        others.extend(
            bindings
                .temperatures
                .as_ref()
                .map(|b| ("temperatures", b.buffer, b.bytes.clone())),
        );
        others.extend(
            bindings
                .stats
                .as_ref()
                .map(|(b, _)| ("stats", b.buffer, b.bytes.clone())),
        );
        let meets =
            |a: &Bytes<'_>, b: &Bytes<'_>| a.1 == b.1 && a.2.start < b.2.end && b.2.start < a.2.end;
        let losses_bytes: Bytes<'_> = ("losses", losses_b.buffer, losses_b.bytes.clone());
        if let Some(o) = others.iter().find(|o| meets(&losses_bytes, o)) {
            return Err(Error::RegionOverlap {
                written: "losses",
                other: o.0,
            });
        }
        let targets_bytes = &others[1];
        if let Some(o) = others[2..]
            .iter()
            .find(|o| (o.0 == "grad" || o.0 == "stats") && meets(targets_bytes, o))
        {
            return Err(Error::RegionOverlap {
                written: o.0,
                other: "targets",
            });
        }
        self.check_alive("input", logits.buffer)?;
        self.check_alive("targets", targets.buffer)?;
        self.check_alive("losses", outputs.losses.buffer)?;
        if let Some(g) = outputs.grad {
            self.check_alive("grad", g.buffer)?;
        }
        bindings.check_alive(self)?;
        let plan = self.row_per_workgroup_plan(
            shape,
            logits.placement(shape.cols),
            grad_view.placement(shape.cols),
            options,
        )?;
        log::debug!(
            "wgpu-softmax: {shape:?} cross-entropy {ce:?}: {} invocations, {} chunk(s)",
            plan.workgroup_size,
            plan.chunks.len()
        );
        let binding = CeBinding {
            targets: targets_b,
            losses: losses_b,
            gather_k,
            grad: outputs.grad.is_some(),
            grad_dtype: grad_view.dtype,
            ce: *ce,
            scale,
        };
        self.record(
            encoder,
            (&plan, &[Shader::CrossEntropy]),
            (logits, grad_view),
            shape,
            options,
            (&bindings, Some(Extra::CrossEntropy(&binding))),
        )
    }

    /// The plan of the kernels that give each row one workgroup, however long (the
    /// sampler, the cross-entropy): about 16 columns per invocation, from 32 invocations
    /// (short rows: each sweep ends in barriers, which cost more than the loads there) to
    /// the largest workgroup; refused where a software adapter's loop cap would cut the
    /// sweeps short (they step one column, or four, per invocation, in at most
    /// SEARCH_SWEEPS sweeps of one loop).
    fn row_per_workgroup_plan(
        &self,
        shape: Shape,
        input: Placement,
        output: Placement,
        options: &Options,
    ) -> Result<Plan> {
        let largest = plan::MAX_SHARED_WORKGROUP
            .min(1 << self.caps.max_invocations_per_workgroup.max(1).ilog2());
        let wanted =
            (shape.cols.div_ceil(16).next_power_of_two() as u32).clamp(32, largest.max(32));
        let tuning = plan::Tuning {
            kernel: Some(plan::RowKernel::WorkgroupShared),
            workgroup_size: Some(
                options
                    .tuning()
                    .workgroup_size
                    .unwrap_or(wanted.min(largest)),
            ),
            split_parts: None,
        };
        let plan = plan::plan(shape.rows, shape.cols, input, output, tuning, &self.caps)?;
        if let Some(limit) = self.caps.max_loop_iterations {
            let steps = (shape.cols as u64).div_ceil(u64::from(plan.workgroup_size));
            if steps > limit || steps.div_ceil(4) * SEARCH_SWEEPS > limit {
                return Err(Error::Unsupported(format!(
                    "a row of {} columns needs more than {limit} loop iterations per \
                     invocation, above this software adapter's cap",
                    shape.cols
                )));
            }
        }
        Ok(plan)
    }

    /// The backward op (see [`Context::encode_backward`](crate::Context::encode_backward)).
    pub(crate) fn encode_backward(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        (logits, y): (Option<MatrixView<'_>>, MatrixView<'_>),
        grad: MatrixView<'_>,
        shape: Shape,
        options: &Options,
    ) -> Result<()> {
        if options.softcap.is_some() != logits.is_some() {
            return Err(Error::Unsupported(if logits.is_some() {
                "the backward pass takes the logits only for a soft-cap's slope: these \
                 options have no soft-cap"
                    .into()
            } else {
                "the backward pass through a soft-cap needs the forward op's logits, for \
                 the cap's slope: use Context::run_backward_capped or \
                 Context::encode_backward_capped"
                    .into()
            }));
        }
        if check_pair(y, grad, shape, options, false)?.is_none() {
            return Ok(());
        }
        self.check_alive("input", y.buffer)?;
        self.check_alive("output", grad.buffer)?;
        let tuning = plan::Tuning {
            kernel: Some(plan::RowKernel::WorkgroupShared),
            workgroup_size: options.tuning().workgroup_size,
            split_parts: None,
        };
        let plan = plan::plan(
            shape.rows,
            shape.cols,
            y.placement(shape.cols),
            grad.placement(shape.cols),
            tuning,
            &self.caps,
        )?;
        let none = RowInputs::NONE.bind(shape.rows as u64, shape.cols, &self.caps)?;
        let forward = Options {
            causal: None,
            ..*options
        };
        let logits_binding = match logits {
            Some(x) => {
                if x.dtype != Dtype::F32 {
                    return Err(Error::Unsupported(
                        "the logits of a capped backward pass are f32".into(),
                    ));
                }
                let x_bytes = x.check("logits", shape)?;
                // The gradient is written while the logits are read; in a browser, their
                // bindings (from the offset alignment below them) must not meet either.
                let g = grad.check("output", shape)?;
                let align = if self.caps.aliased_views {
                    1
                } else {
                    u64::from(self.caps.storage_offset_alignment.max(4))
                };
                let bound = |r: &std::ops::Range<u64>| r.start - r.start % align..r.end;
                let (xb, gb) = (bound(&x_bytes), bound(&g));
                if x.buffer == grad.buffer && xb.start < gb.end && gb.start < xb.end {
                    return Err(Error::RegionOverlap {
                        written: "output",
                        other: "logits",
                    });
                }
                self.check_alive("logits", x.buffer)?;
                let p = x.placement(shape.cols);
                let count = (shape.rows as u64 - 1) * p.row_stride as u64 + shape.cols as u64;
                let stride = u32::try_from(p.row_stride)
                    .map_err(|_| Error::Unsupported("the logits' row stride exceeds u32".into()))?;
                Some((
                    RegionBinding::new("logits", x.buffer, x.offset, 4, count, &self.caps)?,
                    stride,
                ))
            }
            None => None,
        };
        let extra = logits_binding.as_ref().map(|(b, s)| Extra::Logits(b, *s));
        self.record(
            encoder,
            (&plan, &[Shader::Backward]),
            (y, grad),
            shape,
            &forward,
            (&none, extra),
        )
    }

    /// Records `plan` in one compute pass: one uniform buffer holding every chunk's
    /// params, one bind group per chunk, one dispatch per chunk and shader (split rows:
    /// the stats pass of a run of chunks, then its write pass).
    fn record(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        (plan, shaders): (&Plan, &[Shader]),
        (input, output): (MatrixView<'_>, MatrixView<'_>),
        shape: Shape,
        options: &Options,
        (inputs, extra): (&InputBindings<'_>, Option<Extra<'_, '_>>),
    ) -> Result<()> {
        let key = |shader: Shader| PipelineKey {
            shader,
            workgroup_size: plan.workgroup_size,
            vec4: plan.vec4,
            // The backward kernel and the sampler have no register cache: one variant
            // serves every shape.
            cache_slots: if shader.caches_rows() {
                plan.cache_slots
            } else {
                0
            },
            log: options.op == Op::LogSoftmax,
            masked_rows_zero: options.masked_rows == MaskedRows::Zero,
            stats_write: matches!(inputs.stats, Some((_, StatsMode::Write))),
            stats_given: matches!(inputs.stats, Some((_, StatsMode::Given))),
            causal: options.causal.is_some(),
            softcap: options.softcap.is_some(),
            src: input.dtype,
            dst: match extra {
                Some(Extra::Sample(_)) => Dtype::F32,
                Some(Extra::CrossEntropy(ce)) => ce.grad_dtype,
                Some(Extra::Logits(..)) | None => output.dtype,
            },
            mask: inputs.mask.is_some(),
            mask_dtype: if inputs.mask.is_some() {
                inputs.mask_dtype
            } else {
                Dtype::F32
            },
            // Vector reads of the mask need its rows on four-element boundaries (the
            // binding starts on one) and vec4 rows of the matrix.
            mask_vec4: plan.vec4
                && shape.cols.is_multiple_of(4)
                && inputs
                    .mask
                    .as_ref()
                    .is_some_and(|(b, _)| b.first.is_multiple_of(4)),
            lengths: inputs.lengths.is_some(),
            temperatures: inputs.temperatures.is_some(),
        };
        let keys: Vec<PipelineKey> = shaders.iter().map(|&s| key(s)).collect();
        // A split draw keeps each row's state and its parts' results in the scratch
        // buffer, in a 256-byte-aligned stretch per row of the call, zeroed first (see
        // sample_split.wgsl).
        let sample_split = plan.split.is_some() && shaders.first() == Some(&Shader::SamplePart);
        let row_inputs = keys[0].row_inputs();
        let pipelines = keys
            .iter()
            .map(|&k| self.kernels.pipeline(k))
            .collect::<Result<Vec<_>>>()?;
        let (layout, _) = self
            .kernels
            .layout(row_inputs, keys[0].shader.extra_bindings())?;
        let src = input.placement(shape.cols);
        let dst = output.placement(shape.cols);
        let split = plan.split.unwrap_or(plan::Split {
            parts: 1,
            part_cols: shape.cols as u32,
        });
        // What each chunk binds of the scratch: for split rows, the partials of its rows
        // (rows x parts; each chunk's from the start, as chunks run one after another);
        // for a split draw, its rows' stretches.
        let scratch_range = |c: &plan::Chunk| -> (u64, u64) {
            if sample_split {
                let row = crate::sample::split_scratch_bytes(split.parts);
                (c.first_row as u64 * row, u64::from(c.rows) * row)
            } else {
                (0, (u64::from(c.rows) * u64::from(split.parts) * 16).max(16))
            }
        };
        let partial_bytes = plan
            .chunks
            .iter()
            .map(|c| {
                let (offset, size) = scratch_range(c);
                offset + size
            })
            .max()
            .unwrap_or(16);
        let partials = match plan.split {
            Some(_) => Some(self.kernels.partials(partial_bytes)?),
            None => None,
        };
        let slot = (std::mem::size_of::<Params>() as u64).next_multiple_of(u64::from(
            self.device
                .limits()
                .min_uniform_buffer_offset_alignment
                .max(1),
        ));
        let first = |b: Option<&RegionBinding>| b.map_or(0, |b| b.first);
        let mut bytes = vec![0u8; slot as usize * plan.chunks.len()];
        for (i, chunk) in plan.chunks.iter().enumerate() {
            let params = Params {
                rows: chunk.rows,
                cols: shape.cols as u32,
                src_stride: src.row_stride as u32,
                dst_stride: dst.row_stride as u32,
                src_offset: chunk.src.first_element,
                dst_offset: chunk.dst.first_element,
                grid_x: chunk.grid[0],
                inv_temperature: 1.0 / options.temperature,
                softcap: options.softcap.unwrap_or(0.0),
                part_cols: split.part_cols,
                parts: split.parts,
                part_base: chunk.part_base,
                col_base: chunk.col_base as u32,
                row_base: inputs.row_origin + chunk.first_row as u32,
                stats_first: first(inputs.stats.as_ref().map(|(b, _)| b)),
                // At least cols means no column is masked: kept below cols so that
                // row + offset + 1 stays within u32.
                causal_offset: options
                    .causal
                    .map_or(0, |o| o.min(shape.cols as u64) as u32),
                mask_rows: inputs.mask.as_ref().map_or(1, |(_, rows)| *rows),
                mask_first: first(inputs.mask.as_ref().map(|(b, _)| b)),
                lengths_first: first(inputs.lengths.as_ref()),
                temps_first: first(inputs.temperatures.as_ref()),
                ..Params::default()
            };
            let params = match extra {
                Some(Extra::Sample(sb)) => sb.params(params, chunk.first_row as u32),
                Some(Extra::CrossEntropy(ce)) => ce.params(params, chunk.first_row as u32),
                Some(Extra::Logits(b, stride)) => Params {
                    targets_first: b.first + chunk.first_row as u32 * stride,
                    logits_stride: stride,
                    ..params
                },
                None => params,
            };
            let at = i * slot as usize;
            bytes[at..at + std::mem::size_of::<Params>()]
                .copy_from_slice(bytemuck::bytes_of(&params));
        }
        // What each chunk binds, after the params block (bindings 1..).
        let region = |b: Option<&RegionBinding<'_>>| {
            b.map_or(Bound::Unused, |b| {
                Bound::Range(b.buffer.clone(), b.offset, b.size)
            })
        };
        let chunk_bindings: Vec<Vec<(u32, Bound)>> = plan
            .chunks
            .iter()
            .map(|chunk| {
                let src = Bound::Range(input.buffer.clone(), chunk.src.offset, chunk.src.size);
                let dst = Bound::Range(output.buffer.clone(), chunk.dst.offset, chunk.dst.size);
                let (src4, dst4) = if plan.vec4 {
                    (src.clone(), dst.clone())
                } else {
                    (Bound::Unused, Bound::Unused)
                };
                // The sampler's outputs: ids and log-probabilities, whole regions.
                // The cross-entropy's output is its gradient, if any.
                let (dst, dst4) = match extra {
                    Some(Extra::Sample(sb)) => {
                        (region(Some(&sb.ids)), region(sb.logprobs.as_ref()))
                    }
                    Some(Extra::CrossEntropy(ce)) if !ce.grad => (Bound::Unused, Bound::Unused),
                    Some(Extra::CrossEntropy(_) | Extra::Logits(..)) | None => (dst, dst4),
                };
                let partials = partials.as_ref().map_or(Bound::Unused, |b| {
                    let (offset, size) = scratch_range(chunk);
                    Bound::Range(b.clone(), offset, size)
                });
                let mut all = vec![
                    src,
                    src4,
                    dst,
                    dst4,
                    partials,
                    region(inputs.stats.as_ref().map(|(b, _)| b)),
                ];
                if row_inputs {
                    all.extend([
                        region(inputs.mask.as_ref().map(|(b, _)| b)),
                        region(inputs.lengths.as_ref()),
                        region(inputs.temperatures.as_ref()),
                    ]);
                }
                let mut numbered: Vec<(u32, Bound)> = (1..).zip(all).collect();
                match extra {
                    Some(Extra::CrossEntropy(ce)) => numbered.extend([
                        (10, region(Some(&ce.targets))),
                        (11, region(Some(&ce.losses))),
                    ]),
                    Some(Extra::Logits(b, _)) => numbered.push((10, region(Some(b)))),
                    // The backward pass binds its logits' binding (a dummy) without a cap.
                    _ if keys[0].shader == Shader::Backward => numbered.push((10, Bound::Unused)),
                    _ => {}
                }
                numbered
            })
            .collect();
        let key = BindingKey {
            params: bytes,
            chunks: chunk_bindings,
        };
        let bindings = match self.kernels.cached_bindings(&key) {
            Some(b) => b,
            None => {
                let made = scoped(&self.device, || self.make_bindings(&key, &layout, slot))?;
                self.kernels.cache_bindings(key, made.clone());
                made
            }
        };
        scoped(&self.device, || {
            if let (true, Some(scratch)) = (sample_split, &partials) {
                encoder.clear_buffer(scratch, 0, Some(partial_bytes));
            }
            let bind_groups = &bindings.bind_groups;
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("wgpu-softmax"),
                timestamp_writes: None,
            });
            let mut index = 0;
            for run in plan.runs() {
                for pipeline in &pipelines {
                    pass.set_pipeline(pipeline);
                    for (k, chunk) in run.iter().enumerate() {
                        pass.set_bind_group(0, &bind_groups[index + k], &[]);
                        pass.dispatch_workgroups(chunk.grid[0], chunk.grid[1], 1);
                    }
                }
                index += run.len();
            }
        })
    }
}
