//! Recording a plan into a `CommandEncoder`: the GPU-resident API.

use crate::context::Context;
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::kernels::{
    scoped, uniform_buffer, BindingKey, Bindings, Bound, Params, PipelineKey, Shader,
};
use crate::plan::{self, Placement, Plan, RowKernel};

/// A `[rows, cols]` matrix shape, row-major.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    /// Number of rows (independent softmaxes).
    pub rows: usize,
    /// Row length: the axis softmax runs over.
    pub cols: usize,
}

impl Shape {
    /// A `[rows, cols]` shape.
    pub fn new(rows: usize, cols: usize) -> Self {
        Shape { rows, cols }
    }

    /// `rows * cols`, or [`Error::ShapeOverflow`].
    pub fn len(&self) -> Result<usize> {
        self.rows
            .checked_mul(self.cols)
            .filter(|n| n.checked_mul(4).is_some())
            .ok_or(Error::ShapeOverflow {
                rows: self.rows,
                cols: self.cols,
            })
    }

    /// Whether the shape holds no element.
    pub fn is_empty(&self) -> bool {
        self.rows == 0 || self.cols == 0
    }
}

/// The function computed along each row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Op {
    /// `exp(z_i - m) / sum_j exp(z_j - m)`.
    #[default]
    Softmax,
    /// `(z_i - m) - ln(sum_j exp(z_j - m))`, computed directly (not as `ln(softmax)`).
    LogSoftmax,
}

/// What a row whose entries are all `-inf` gives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MaskedRows {
    /// NaN in every entry, as PyTorch does.
    #[default]
    Nan,
    /// The value of probability zero: 0 for softmax, `-inf` for log-softmax (as attention
    /// kernels want for fully masked rows).
    Zero,
}

/// Options of one softmax.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct Options {
    /// Softmax or log-softmax.
    pub op: Op,
    /// Inputs are divided by this: finite, > 0, and with a finite f32 reciprocal (at
    /// least about 2.9e-39). 1 leaves them as they are.
    pub temperature: f32,
    /// What fully masked (all `-inf`) rows give.
    pub masked_rows: MaskedRows,
    /// Forces a kernel instead of the planner's choice (for tests and benchmarks).
    pub kernel: Option<RowKernel>,
    /// Forces the invocations per workgroup (a power of two within the kernel's and the
    /// device's bounds) instead of the planner's choice (for tuning).
    pub workgroup_size: Option<u32>,
    /// A causal mask: row `i` keeps columns `j <= i + offset` (the offset of a KV cache),
    /// the rest masked out. Rows count from the first row of the call.
    pub causal: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            op: Op::Softmax,
            temperature: 1.0,
            masked_rows: MaskedRows::Nan,
            kernel: None,
            workgroup_size: None,
            causal: None,
        }
    }
}

impl Options {
    /// Softmax with default settings.
    pub fn softmax() -> Self {
        Self::default()
    }

    /// Log-softmax with default settings.
    pub fn log_softmax() -> Self {
        Options {
            op: Op::LogSoftmax,
            ..Self::default()
        }
    }

    /// These options with another temperature.
    pub fn with_temperature(mut self, temperature: f32) -> Self {
        self.temperature = temperature;
        self
    }

    /// These options with another masked-row policy.
    pub fn with_masked_rows(mut self, masked_rows: MaskedRows) -> Self {
        self.masked_rows = masked_rows;
        self
    }

    /// These options with a forced kernel.
    pub fn with_kernel(mut self, kernel: RowKernel) -> Self {
        self.kernel = Some(kernel);
        self
    }

    /// These options with a causal mask at `offset`.
    pub fn with_causal(mut self, offset: u64) -> Self {
        self.causal = Some(offset);
        self
    }

    /// These options with a forced workgroup size.
    pub fn with_workgroup_size(mut self, workgroup_size: u32) -> Self {
        self.workgroup_size = Some(workgroup_size);
        self
    }

    pub(crate) fn tuning(&self) -> plan::Tuning {
        plan::Tuning {
            kernel: self.kernel,
            workgroup_size: self.workgroup_size,
        }
    }

    /// The check every call makes of the options first: a temperature that is not
    /// finite, not > 0, or so small that its f32 reciprocal overflows is
    /// [`Error::InvalidTemperature`].
    pub fn validate(&self) -> Result<()> {
        // The kernels multiply by 1 / T, which overflows f32 below about 2.9e-39.
        let t = self.temperature;
        if t.is_finite() && t > 0.0 && (1.0 / t).is_finite() {
            Ok(())
        } else {
            Err(Error::InvalidTemperature(self.temperature))
        }
    }
}

/// What [`Context::encode_with_stats`] does with the statistics buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatsMode {
    /// Write each row's `(max, log-sum-exp)` of `x / T` (and the softmax, as usual).
    Write,
    /// Normalise each row with the `(max, log-sum-exp)` read from the buffer.
    Given,
}

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

/// Inputs fused into the op, in the caller's buffers, for
/// [`Context::encode_with`]. All are optional; each costs no extra pass over the matrix.
#[derive(Clone, Copy, Debug, Default)]
pub struct RowInputs<'a> {
    /// An additive mask, `[mask_rows, cols]` packed, stored as `mask_dtype`: row `r`
    /// adds mask row `r % mask_rows` to `x / T` (one row for all, one per row, or one
    /// per head group). `-inf` entries mask out.
    pub mask: Option<(Region<'a>, usize)>,
    /// How the mask is stored: f32 (the default), f16 or bf16. A 16-bit mask's buffer
    /// must hold the whole 4-byte word of its last value.
    pub mask_dtype: Dtype,
    /// One u32 per row: columns at or past it are masked out (written as 0; log-softmax
    /// `-inf`). Lengths above `cols` mean `cols`.
    pub lengths: Option<Region<'a>>,
    /// One f32 per row, multiplying [`Options::temperature`]. A row whose temperature is
    /// not a finite number > 0, or whose combined temperature is so small that the f32
    /// reciprocals' product (`(1 / T) * (1 / t)`) overflows, comes out NaN.
    pub temperatures: Option<Region<'a>>,
    /// Row statistics, written or given (see [`Context::encode_with_stats`]).
    pub stats: Option<StatsView<'a>>,
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
            Some((region, mask_rows)) => {
                if mask_rows == 0 {
                    return Err(Error::Unsupported("a mask needs at least one row".into()));
                }
                let count = (mask_rows as u64)
                    .checked_mul(cols as u64)
                    .ok_or_else(|| Error::Unsupported("the mask region overflows".into()))?;
                let elem = self.mask_dtype.size();
                let b =
                    RegionBinding::new("mask", region.buffer, region.offset, elem, count, caps)?;
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
            mask_dtype: self.mask_dtype,
            lengths: per_row("lengths", self.lengths)?,
            temperatures: per_row("temperatures", self.temperatures)?,
            stats,
            row_origin: 0,
        })
    }
}

impl<'a> InputBindings<'a> {
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

/// Combines the statistics of two column shards of the same row: the larger max, and the
/// log of the summed exponentials. `(NaN, NaN)` (a poisoned shard) poisons the result;
/// `(-inf, -inf)` (a fully masked shard) leaves the other unchanged.
pub fn combine_stats(a: [f32; 2], b: [f32; 2]) -> [f32; 2] {
    if a[1].is_nan() || b[1].is_nan() || a[1] == f32::INFINITY || b[1] == f32::INFINITY {
        return [f32::NAN, f32::NAN];
    }
    if a[1] == f32::NEG_INFINITY {
        return b;
    }
    if b[1] == f32::NEG_INFINITY {
        return a;
    }
    let (hi, lo) = if a[1] >= b[1] {
        (f64::from(a[1]), f64::from(b[1]))
    } else {
        (f64::from(b[1]), f64::from(a[1]))
    };
    let lse = hi + (lo - hi).exp().ln_1p();
    [a[0].max(b[0]), lse as f32]
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
        let same = input.placement(shape.cols) == output.placement(shape.cols)
            && input.dtype == output.dtype;
        let overlap = a.start < b.end && b.start < a.end;
        if overlap && !(in_place && same) {
            return Err(Error::PartialOverlap);
        }
    }
    Ok(Some((a, b)))
}

impl Context {
    /// The uniform buffer (written through the queue) and one bind group per chunk for
    /// `key`.
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
                entries.extend(bound.iter().enumerate().map(|(k, b)| wgpu::BindGroupEntry {
                    binding: k as u32 + 1,
                    resource: match b {
                        Bound::Unused => self.kernels.dummy.as_entire_binding(),
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

impl Context {
    /// Records a softmax (or log-softmax) of the `shape` matrix at `input` into `output`
    /// on the caller's `encoder`. Nothing is submitted: the caller submits the encoder
    /// when it likes, on this context's device.
    ///
    /// `output` may be `input` itself (same buffer, offset and stride) for in-place use;
    /// any other overlap is refused. Only the named rows (and in them only the first
    /// `cols` elements) of `output` are written. An empty shape records nothing.
    ///
    /// Argument errors are returned before anything is recorded; wgpu validation and
    /// out-of-memory errors while recording are caught and returned.
    pub fn encode(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        input: MatrixView<'_>,
        output: MatrixView<'_>,
        shape: Shape,
        options: &Options,
    ) -> Result<()> {
        self.encode_with(
            encoder,
            input,
            output,
            shape,
            options,
            &RowInputs::default(),
        )
    }

    /// [`Context::encode`] with row statistics (`stats.mode`): with [`StatsMode::Write`]
    /// each row's `(max, log-sum-exp)` of `x / T` is also written to `stats` (`[rows, 2]`
    /// f32); with [`StatsMode::Given`] rows are normalised with the statistics read from
    /// `stats` instead of their own, e.g. statistics combined with [`combine_stats`] over
    /// the column shards of a vocabulary split across devices.
    ///
    /// A row with NaN or `+inf` has statistics `(NaN, NaN)`, a fully masked row
    /// `(-inf, -inf)`; given such statistics, a row is written as NaN or masked. An
    /// empty shape records nothing: with `cols == 0` the statistics buffer is left as it
    /// is (the host form, [`Context::run_with_stats`], returns `(-inf, -inf)` rows).
    pub fn encode_with_stats(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        input: MatrixView<'_>,
        output: MatrixView<'_>,
        shape: Shape,
        options: &Options,
        stats: StatsView<'_>,
    ) -> Result<()> {
        let inputs = RowInputs {
            stats: Some(stats),
            ..RowInputs::default()
        };
        self.encode_with(encoder, input, output, shape, options, &inputs)
    }

    /// [`Context::encode`] with inputs fused into the op: an additive mask, per-row
    /// valid lengths, per-row temperatures and row statistics (see [`RowInputs`]). The
    /// mask, lengths and temperatures take three more storage bindings (9 in all), which
    /// a device created with WebGPU's default limits (8) lacks: that gives
    /// [`Error::Unsupported`].
    pub fn encode_with(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        input: MatrixView<'_>,
        output: MatrixView<'_>,
        shape: Shape,
        options: &Options,
        inputs: &RowInputs<'_>,
    ) -> Result<()> {
        self.encode_inner(encoder, input, output, shape, options, inputs, 0)
            .map_err(|e| self.explain(e))
    }

    /// The resident op on rows `row_origin..row_origin + shape.rows` of a larger matrix
    /// whose row inputs start at its row 0 (the host path's chunks).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn encode_inner(
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
        let mut bindings = inputs.bind(total_rows, shape.cols, &self.caps)?;
        bindings.check_overlaps((input.buffer, input_bytes), (output.buffer, output_bytes))?;
        bindings.row_origin = row_origin as u32;
        let plan = plan::plan(
            shape.rows,
            shape.cols,
            input.placement(shape.cols),
            output.placement(shape.cols),
            options.tuning(),
            &self.caps,
        )?;
        let shaders = Shader::of_kernel(plan.kernel);
        self.record(
            encoder,
            (&plan, shaders),
            (input, output),
            shape,
            options,
            &bindings,
        )
    }

    /// Records the gradient of softmax (or log-softmax, per `options.op`) into the
    /// caller's encoder, in one fused kernel: `y` holds the forward op's output, and
    /// `grad` holds the incoming gradient `dy` and receives `dx` in its place:
    /// softmax `dx = y * (dy - sum(dy * y)) / T`, log-softmax
    /// `dx = (dy - exp(y) * sum(dy)) / T`, with `T` the forward op's scalar temperature.
    /// Only the op, temperature and tuning of `options` apply. `y` and `grad` must not
    /// overlap.
    pub fn encode_backward(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        y: MatrixView<'_>,
        grad: MatrixView<'_>,
        shape: Shape,
        options: &Options,
    ) -> Result<()> {
        self.encode_backward_inner(encoder, y, grad, shape, options)
            .map_err(|e| self.explain(e))
    }

    fn encode_backward_inner(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        y: MatrixView<'_>,
        grad: MatrixView<'_>,
        shape: Shape,
        options: &Options,
    ) -> Result<()> {
        if check_pair(y, grad, shape, options, false)?.is_none() {
            return Ok(());
        }
        let tuning = plan::Tuning {
            kernel: Some(plan::RowKernel::WorkgroupShared),
            workgroup_size: options.workgroup_size,
        };
        let plan = plan::plan(
            shape.rows,
            shape.cols,
            y.placement(shape.cols),
            grad.placement(shape.cols),
            tuning,
            &self.caps,
        )?;
        let none = RowInputs::default().bind(shape.rows as u64, shape.cols, &self.caps)?;
        let forward = Options {
            causal: None,
            ..*options
        };
        self.record(
            encoder,
            (&plan, &[Shader::Backward]),
            (y, grad),
            shape,
            &forward,
            &none,
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
        inputs: &InputBindings<'_>,
    ) -> Result<()> {
        let key = |shader| PipelineKey {
            shader,
            workgroup_size: plan.workgroup_size,
            vec4: plan.vec4,
            // The backward kernel has no register cache: one variant serves every shape.
            cache_slots: if shader == Shader::Backward {
                0
            } else {
                plan.cache_slots
            },
            log: options.op == Op::LogSoftmax,
            masked_rows_zero: options.masked_rows == MaskedRows::Zero,
            stats_write: matches!(inputs.stats, Some((_, StatsMode::Write))),
            stats_given: matches!(inputs.stats, Some((_, StatsMode::Given))),
            causal: options.causal.is_some(),
            src: input.dtype,
            dst: output.dtype,
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
        let row_inputs = keys[0].row_inputs();
        let pipelines = keys
            .iter()
            .map(|&k| self.kernels.pipeline(k))
            .collect::<Result<Vec<_>>>()?;
        let (layout, _) = self.kernels.layout(row_inputs)?;
        let src = input.placement(shape.cols);
        let dst = output.placement(shape.cols);
        let split = plan.split.unwrap_or(plan::Split {
            parts: 1,
            part_cols: shape.cols as u32,
        });
        // The partials of the largest chunk (rows x parts), for split rows.
        let partial_bytes = plan
            .chunks
            .iter()
            .map(|c| u64::from(c.rows) * u64::from(split.parts) * 16)
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
                _pad: 0,
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
        let chunk_bindings: Vec<Vec<Bound>> = plan
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
                let partials = partials.as_ref().map_or(Bound::Unused, |b| {
                    let size = (u64::from(chunk.rows) * u64::from(split.parts) * 16).max(16);
                    Bound::Range(b.clone(), 0, size)
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
                all
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
