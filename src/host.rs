//! The host API: upload, compute, readback, with staging buffers reused across calls and
//! matrices streamed through the GPU in chunks.

use std::sync::{Arc, Mutex};

use crate::context::Context;
use crate::dtype::{Dtype, Element, F16};
use crate::encode::{MatrixView, Options, Region, RowInputs, Shape, StatsMode, StatsView};
use crate::error::{Error, Result};
use crate::kernels::scoped;
use crate::plan::{self, Placement};

/// One slot of the streaming ring: a device buffer the chunk is uploaded to and
/// computed in place in, and a mappable buffer it is read back through.
pub(crate) struct Scratch {
    data: wgpu::Buffer,
    readback: wgpu::Buffer,
    capacity: u64,
}

/// Scratch slots not in use by any call. A call takes what it needs and gives it back,
/// so the number of buffers stays bounded by the number of concurrent calls.
#[derive(Default)]
pub(crate) struct ScratchPool {
    free: Mutex<Vec<Scratch>>,
}

impl ScratchPool {
    fn take(&self, capacity: u64) -> Option<Scratch> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        let i = free.iter().position(|s| s.capacity >= capacity)?;
        Some(free.swap_remove(i))
    }

    fn give_back(&self, scratch: Scratch) {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        // Keep a few; a slot too small for later calls is dropped when replaced.
        if free.len() >= 8 {
            free.sort_by_key(|s| s.capacity);
            free.remove(0);
        }
        free.push(scratch);
    }

    /// Buffers held by the pool (two per slot), for tests of leak-freedom.
    pub(crate) fn buffer_count(&self) -> usize {
        2 * self.free.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Bytes of GPU memory held by the pool.
    pub(crate) fn bytes(&self) -> u64 {
        let free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        free.iter().map(|s| 2 * s.capacity).sum()
    }
}

type MapResult = Arc<Mutex<Option<std::result::Result<(), wgpu::BufferAsyncError>>>>;

/// A chunk submitted and waiting to be read back.
struct InFlight {
    slot: usize,
    submission: wgpu::SubmissionIndex,
    elements: std::ops::Range<usize>,
    mapped: MapResult,
}

/// Inputs fused into a host-API op (see [`RowInputs`] for what each does).
#[derive(Clone, Copy, Debug, Default)]
pub struct HostInputs<'a> {
    /// An additive mask: `mask_rows * cols` values and `mask_rows`; row `r` adds mask
    /// row `r % mask_rows`.
    pub mask: Option<(&'a [f32], usize)>,
    /// The same, stored as f16 (half the bytes to upload); at most one of `mask` and
    /// `mask_f16` may be given.
    pub mask_f16: Option<(&'a [F16], usize)>,
    /// One valid length per row.
    pub lengths: Option<&'a [u32]>,
    /// One temperature per row, multiplying [`Options::temperature`].
    pub temperatures: Option<&'a [f32]>,
}

/// Device copies of a [`HostInputs`] and of the rows' statistics.
#[derive(Default)]
struct InputBuffers {
    mask: Option<(wgpu::Buffer, usize)>,
    mask_dtype: Dtype,
    lengths: Option<wgpu::Buffer>,
    temperatures: Option<wgpu::Buffer>,
    stats: Option<(wgpu::Buffer, StatsMode)>,
}

impl InputBuffers {
    /// The inputs of the matrix's rows, for every chunk (each passes its first row).
    fn row_inputs(&self) -> RowInputs<'_> {
        RowInputs {
            mask: self.mask.as_ref().map(|(b, rows)| (Region::new(b), *rows)),
            mask_dtype: self.mask_dtype,
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

impl Context {
    /// Softmax (or log-softmax, per `options`) of the row-major `shape` matrix in
    /// `input`, returned as a new vector.
    pub async fn run(&self, input: &[f32], shape: Shape, options: &Options) -> Result<Vec<f32>> {
        let mut output = vec![0.0f32; input.len()];
        self.run_into(input, &mut output, shape, options).await?;
        Ok(output)
    }

    /// Blocking [`Context::run`] (native targets).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn run_blocking(&self, input: &[f32], shape: Shape, options: &Options) -> Result<Vec<f32>> {
        pollster::block_on(self.run(input, shape, options))
    }

    /// Blocking [`Context::run_into`] (native targets).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn run_into_blocking(
        &self,
        input: &[f32],
        output: &mut [f32],
        shape: Shape,
        options: &Options,
    ) -> Result<()> {
        pollster::block_on(self.run_into(input, output, shape, options))
    }

    /// Like [`Context::run`], writing into `output` (same length as `input`).
    ///
    /// The matrix goes through the GPU in chunks of whole rows of about
    /// [`ContextOptions::host_chunk_bytes`](crate::ContextOptions::host_chunk_bytes), two
    /// in flight: while one chunk computes, the previous one is read back.
    pub async fn run_into(
        &self,
        input: &[f32],
        output: &mut [f32],
        shape: Shape,
        options: &Options,
    ) -> Result<()> {
        let none = HostInputs::default();
        self.run_host(input, output, shape, options, &none, None)
            .await
    }

    /// [`Context::run`] with inputs fused into the op: an additive mask, per-row valid
    /// lengths and per-row temperatures (see [`RowInputs`]). The mask, like one chunk
    /// of the matrix, must fit one storage binding.
    pub async fn run_with(
        &self,
        input: &[f32],
        shape: Shape,
        options: &Options,
        inputs: &HostInputs<'_>,
    ) -> Result<Vec<f32>> {
        let mut output = vec![0.0f32; input.len()];
        self.run_host(input, &mut output, shape, options, inputs, None)
            .await?;
        Ok(output)
    }

    /// Blocking [`Context::run_with`] (native targets).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn run_with_blocking(
        &self,
        input: &[f32],
        shape: Shape,
        options: &Options,
        inputs: &HostInputs<'_>,
    ) -> Result<Vec<f32>> {
        pollster::block_on(self.run_with(input, shape, options, inputs))
    }

    /// The host API for any storage types: softmax of the `shape` matrix in `input`,
    /// stored as `T`, written to `output` as `U` (each `f32`, [`F16`] or
    /// [`Bf16`](crate::Bf16)), with the row inputs of `inputs`. Arithmetic is f32; the
    /// results are rounded to `U` to nearest, ties to even (f16: beyond 65504 is
    /// infinity, so a log-softmax below -65504 is `-inf`). 16-bit matrices upload and
    /// read back half the bytes of f32 ones.
    pub async fn run_typed_into<T: Element, U: Element>(
        &self,
        input: &[T],
        output: &mut [U],
        shape: Shape,
        options: &Options,
        inputs: &HostInputs<'_>,
    ) -> Result<()> {
        self.run_host(input, output, shape, options, inputs, None)
            .await
    }

    /// Blocking [`Context::run_typed_into`] (native targets).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn run_typed_into_blocking<T: Element, U: Element>(
        &self,
        input: &[T],
        output: &mut [U],
        shape: Shape,
        options: &Options,
        inputs: &HostInputs<'_>,
    ) -> Result<()> {
        pollster::block_on(self.run_typed_into(input, output, shape, options, inputs))
    }

    /// [`Context::run`] that also returns each row's `(max, log-sum-exp)` of `x / T`
    /// (see [`Context::encode_with_stats`]). Rows with no columns (`cols == 0`) have
    /// `(-inf, -inf)`, as fully masked rows do: nothing to add when shards are combined.
    pub async fn run_with_stats(
        &self,
        input: &[f32],
        shape: Shape,
        options: &Options,
        inputs: &HostInputs<'_>,
    ) -> Result<(Vec<f32>, Vec<[f32; 2]>)> {
        let mut output = vec![0.0f32; input.len()];
        // Reserved rather than allocated outright, so that a shape of absurdly many empty
        // rows is an error, not an abort.
        let mut stats = Vec::new();
        stats
            .try_reserve_exact(shape.rows)
            .map_err(|_| Error::ShapeOverflow {
                rows: shape.rows,
                cols: shape.cols,
            })?;
        stats.resize(shape.rows, [f32::NEG_INFINITY; 2]);
        self.run_host(
            input,
            &mut output,
            shape,
            options,
            inputs,
            Some((&mut stats, StatsMode::Write)),
        )
        .await?;
        Ok((output, stats))
    }

    /// [`Context::run`] normalising each row with the given `(max, log-sum-exp)` of
    /// `x / T` instead of its own: for the column shards of a row split across devices,
    /// given the statistics combined over all shards with
    /// [`combine_stats`](crate::combine_stats).
    pub async fn run_with_given_stats(
        &self,
        input: &[f32],
        stats: &[[f32; 2]],
        shape: Shape,
        options: &Options,
        inputs: &HostInputs<'_>,
    ) -> Result<Vec<f32>> {
        check_len("stats", shape.rows, stats.len())?;
        let mut output = vec![0.0f32; input.len()];
        let mut given = stats.to_vec();
        self.run_host(
            input,
            &mut output,
            shape,
            options,
            inputs,
            Some((&mut given, StatsMode::Given)),
        )
        .await?;
        Ok(output)
    }

    /// Blocking [`Context::run_with_stats`] (native targets).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn run_with_stats_blocking(
        &self,
        input: &[f32],
        shape: Shape,
        options: &Options,
        inputs: &HostInputs<'_>,
    ) -> Result<(Vec<f32>, Vec<[f32; 2]>)> {
        pollster::block_on(self.run_with_stats(input, shape, options, inputs))
    }

    /// Blocking [`Context::run_with_given_stats`] (native targets).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn run_with_given_stats_blocking(
        &self,
        input: &[f32],
        stats: &[[f32; 2]],
        shape: Shape,
        options: &Options,
        inputs: &HostInputs<'_>,
    ) -> Result<Vec<f32>> {
        pollster::block_on(self.run_with_given_stats(input, stats, shape, options, inputs))
    }

    async fn run_host<T: Element, U: Element>(
        &self,
        input: &[T],
        output: &mut [U],
        shape: Shape,
        options: &Options,
        inputs: &HostInputs<'_>,
        stats: Option<(&mut [[f32; 2]], StatsMode)>,
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
        let mask = match (inputs.mask, inputs.mask_f16) {
            (Some(_), Some(_)) => {
                return Err(Error::Unsupported(
                    "give the mask as f32 or as f16, not both".into(),
                ))
            }
            (Some((m, rows)), None) => Some((m.len(), rows)),
            (None, Some((m, rows))) => Some((m.len(), rows)),
            (None, None) => None,
        };
        if let Some((len, mask_rows)) = mask {
            let expected = mask_rows
                .checked_mul(shape.cols)
                .ok_or(Error::ShapeOverflow {
                    rows: mask_rows,
                    cols: shape.cols,
                })?;
            check_len("mask", expected, len)?;
        }
        if let Some(lengths) = inputs.lengths {
            check_len("lengths", shape.rows, lengths.len())?;
        }
        if let Some(temperatures) = inputs.temperatures {
            check_len("temperatures", shape.rows, temperatures.len())?;
        }
        if shape.is_empty() {
            return Ok(());
        }
        let layout = ChunkLayout::new::<T, U>(self, shape.cols);
        let chunk_rows = self.host_chunk_rows(shape, layout.row_bytes(), layout.gap())?;
        // Plan once for a full chunk: this checks the row fits a binding before any
        // buffer is made.
        let (src, dst) = layout.placements(chunk_rows);
        plan::plan(
            chunk_rows,
            shape.cols,
            src,
            dst,
            options.tuning(),
            &self.caps,
        )?;
        let chunk_bytes = layout.slot_bytes(chunk_rows);
        let chunks = shape.rows.div_ceil(chunk_rows);
        let mut slots = Vec::new();
        for _ in 0..chunks.min(2) {
            slots.push(self.take_scratch(chunk_bytes)?);
        }
        let mut buffers = self.input_buffers(inputs)?;
        if let Some((values, mode)) = &stats {
            buffers.stats = Some((self.stats_buffer(values, *mode)?, *mode));
        }
        let mut result = self
            .stream(
                input,
                output,
                shape,
                options,
                (chunk_rows, &layout),
                &slots,
                &buffers,
            )
            .await;
        if let (Ok(()), Some((values, StatsMode::Write)), Some((buffer, _))) =
            (&result, stats, &buffers.stats)
        {
            result = self.read_stats(buffer, values);
        }
        let result = result.map_err(|e| self.explain(e));
        if result.is_ok() {
            for s in slots {
                self.scratch.give_back(s);
            }
        }
        // On error the slots are dropped (their buffers freed): one may still be mapped
        // or in use by work that failed.
        result
    }

    /// Device copies of the row inputs, made once per call.
    fn input_buffers(&self, inputs: &HostInputs<'_>) -> Result<InputBuffers> {
        let upload = |label, bytes: &[u8]| {
            scoped(&self.device, || {
                let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size: (bytes.len() as u64).max(16).next_multiple_of(4),
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                write_words(&self.queue, &buffer, bytes);
                buffer
            })
        };
        let (mask, mask_dtype) = match (inputs.mask, inputs.mask_f16) {
            (Some((m, rows)), _) => (
                Some((upload("wgpu-softmax mask", bytemuck::cast_slice(m))?, rows)),
                Dtype::F32,
            ),
            (None, Some((m, rows))) => (
                Some((upload("wgpu-softmax mask", bytemuck::cast_slice(m))?, rows)),
                Dtype::F16,
            ),
            (None, None) => (None, Dtype::F32),
        };
        Ok(InputBuffers {
            mask,
            mask_dtype,
            lengths: inputs
                .lengths
                .map(|l| upload("wgpu-softmax lengths", bytemuck::cast_slice(l)))
                .transpose()?,
            temperatures: inputs
                .temperatures
                .map(|t| upload("wgpu-softmax temperatures", bytemuck::cast_slice(t)))
                .transpose()?,
            stats: None,
        })
    }

    /// The gradient of softmax (or log-softmax, per `options.op`) from the forward output
    /// `y` and the incoming gradient `dy` (see [`Context::encode_backward`]), returned
    /// as a new vector. Chunks of rows go through the GPU one after another.
    pub async fn run_backward(
        &self,
        y: &[f32],
        dy: &[f32],
        shape: Shape,
        options: &Options,
    ) -> Result<Vec<f32>> {
        options.validate()?;
        let expected = shape.len()?;
        check_len("y", expected, y.len())?;
        check_len("dy", expected, dy.len())?;
        let mut dx = vec![0.0f32; expected];
        if shape.is_empty() {
            return Ok(dx);
        }
        let row_bytes = shape.cols as u64 * 4;
        let chunk_rows = self.host_chunk_rows(shape, row_bytes, 0)?;
        let chunk_bytes = chunk_rows as u64 * row_bytes;
        let slots = [
            self.take_scratch(chunk_bytes)?,
            self.take_scratch(chunk_bytes)?,
        ];
        let mut result = Ok(());
        for first_row in (0..shape.rows).step_by(chunk_rows) {
            let rows = chunk_rows.min(shape.rows - first_row);
            let elements = first_row * shape.cols..(first_row + rows) * shape.cols;
            let bytes = (elements.len() * 4) as u64;
            let submitted = scoped(&self.device, || -> Result<wgpu::SubmissionIndex> {
                let (y_slot, grad_slot) = (&slots[0], &slots[1]);
                self.queue.write_buffer(
                    &y_slot.data,
                    0,
                    bytemuck::cast_slice(&y[elements.clone()]),
                );
                self.queue.write_buffer(
                    &grad_slot.data,
                    0,
                    bytemuck::cast_slice(&dy[elements.clone()]),
                );
                let mut encoder =
                    self.device
                        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                            label: Some("wgpu-softmax backward"),
                        });
                self.encode_backward(
                    &mut encoder,
                    MatrixView::new(&y_slot.data),
                    MatrixView::new(&grad_slot.data),
                    Shape::new(rows, shape.cols),
                    options,
                )?;
                encoder.copy_buffer_to_buffer(&grad_slot.data, 0, &grad_slot.readback, 0, bytes);
                Ok(self.queue.submit([encoder.finish()]))
            });
            let submission = match submitted {
                Ok(Ok(index)) => index,
                Ok(Err(e)) | Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            let mapped = match self.map_for_read(&slots[1].readback, 0..bytes) {
                Ok(mapped) => mapped,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            let done = InFlight {
                slot: 1,
                submission,
                elements,
                mapped,
            };
            if let Err(e) = self.finish(done, &slots, &mut dx).await {
                result = Err(e);
                break;
            }
        }
        match result {
            Ok(()) => {
                for s in slots {
                    self.scratch.give_back(s);
                }
                Ok(dx)
            }
            Err(e) => Err(self.explain(e)),
        }
    }

    /// Blocking [`Context::run_backward`] (native targets).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn run_backward_blocking(
        &self,
        y: &[f32],
        dy: &[f32],
        shape: Shape,
        options: &Options,
    ) -> Result<Vec<f32>> {
        pollster::block_on(self.run_backward(y, dy, shape, options))
    }

    /// A device buffer for the rows' statistics, holding `values` when they are given.
    fn stats_buffer(&self, values: &[[f32; 2]], mode: StatsMode) -> Result<wgpu::Buffer> {
        scoped(&self.device, || {
            let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgpu-softmax host stats"),
                size: (values.len() as u64 * 8).max(16),
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_DST
                    | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            if mode == StatsMode::Given {
                self.queue
                    .write_buffer(&buffer, 0, bytemuck::cast_slice(values));
            }
            buffer
        })
    }

    /// Reads the statistics written to `buffer` into `values`.
    fn read_stats(&self, buffer: &wgpu::Buffer, values: &mut [[f32; 2]]) -> Result<()> {
        let bytes = values.len() as u64 * 8;
        let (readback, submission) = scoped(&self.device, || {
            let readback = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgpu-softmax stats readback"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let mut encoder = self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("wgpu-softmax stats readback"),
                });
            encoder.copy_buffer_to_buffer(buffer, 0, &readback, 0, bytes);
            let submission = self.queue.submit([encoder.finish()]);
            (readback, submission)
        })?;
        let mapped = self.map_for_read(&readback, ..)?;
        self.wait_for(submission, &mapped)?;
        let outcome = mapped.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.check_mapped(outcome)?;
        let view = readback
            .get_mapped_range(..)
            .map_err(|e| Error::Map(e.to_string()))?;
        bytemuck::cast_slice_mut::<[f32; 2], u8>(values).copy_from_slice(&view);
        Ok(())
    }

    /// Turns a map callback's outcome into a result.
    fn check_mapped(
        &self,
        outcome: Option<std::result::Result<(), wgpu::BufferAsyncError>>,
    ) -> Result<()> {
        match outcome {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(match self.lost_reason() {
                Some(reason) => Error::DeviceLost(reason),
                None => Error::Map(e.to_string()),
            }),
            None => Err(Error::Map("the map callback never ran".into())),
        }
    }

    fn take_scratch(&self, bytes: u64) -> Result<Scratch> {
        if let Some(s) = self.scratch.take(bytes) {
            return Ok(s);
        }
        // Round up so slightly larger later calls reuse the slot, but not past the chunk
        // size (the GPU memory budget) unless one row is larger still.
        let capacity = bytes
            .next_power_of_two()
            .min(self.options.host_chunk_bytes)
            .min(self.caps.max_buffer_size)
            .max(bytes);
        scoped(&self.device, || Scratch {
            data: self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgpu-softmax host data"),
                size: capacity,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_DST
                    | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
            readback: self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgpu-softmax host readback"),
                size: capacity,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            capacity,
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn stream<T: Element, U: Element>(
        &self,
        input: &[T],
        output: &mut [U],
        shape: Shape,
        options: &Options,
        (chunk_rows, layout): (usize, &ChunkLayout),
        slots: &[Scratch],
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
            let scratch = &slots[slot];
            let chunk_shape = Shape::new(rows, shape.cols);
            let submission = scoped(&self.device, || -> Result<wgpu::SubmissionIndex> {
                write_words(
                    &self.queue,
                    &scratch.data,
                    bytemuck::cast_slice(&input[elements.clone()]),
                );
                let mut encoder =
                    self.device
                        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                            label: Some("wgpu-softmax host"),
                        });
                let src = MatrixView::new(&scratch.data).with_dtype(T::DTYPE);
                let dst = MatrixView::new(&scratch.data)
                    .with_offset(layout.gap_at(rows))
                    .with_dtype(U::DTYPE);
                self.encode_inner(
                    &mut encoder,
                    src,
                    dst,
                    chunk_shape,
                    options,
                    &row_inputs,
                    first_row,
                )?;
                encoder.copy_buffer_to_buffer(
                    &scratch.data,
                    layout.gap_at(rows),
                    &scratch.readback,
                    0,
                    bytes,
                );
                Ok(self.queue.submit([encoder.finish()]))
            })??;
            let mapped = self.map_for_read(&scratch.readback, 0..bytes)?;
            in_flight.push(InFlight {
                slot,
                submission,
                elements,
                mapped,
            });
            first_row += rows;
            chunk_index += 1;
        }
        for done in in_flight {
            self.finish(done, slots, output).await?;
        }
        Ok(())
    }

    /// Waits for a chunk (bounded by the context's time-out) and copies it out.
    async fn finish<U: Element>(
        &self,
        done: InFlight,
        slots: &[Scratch],
        output: &mut [U],
    ) -> Result<()> {
        let readback = &slots[done.slot].readback;
        let bytes = (done.elements.len() * std::mem::size_of::<U>()) as u64;
        let mapped_bytes = bytes.next_multiple_of(4);
        self.wait_for(done.submission, &done.mapped)?;
        let outcome = done.mapped.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.check_mapped(outcome)?;
        {
            let view = readback
                .get_mapped_range(0..mapped_bytes)
                .map_err(|e| Error::Map(e.to_string()))?;
            bytemuck::cast_slice_mut::<U, u8>(&mut output[done.elements])
                .copy_from_slice(&view[..bytes as usize]);
        }
        readback.unmap();
        Ok(())
    }

    /// Starts mapping `range` of `buffer` for reading; the result, set when the map
    /// callback runs, is what the host waits on. In an error scope, as every
    /// call wgpu may fail: else its default handler panics.
    fn map_for_read(
        &self,
        buffer: &wgpu::Buffer,
        range: impl std::ops::RangeBounds<wgpu::BufferAddress>,
    ) -> Result<MapResult> {
        let mapped: MapResult = Arc::new(Mutex::new(None));
        let flag = mapped.clone();
        scoped(&self.device, || {
            buffer.map_async(wgpu::MapMode::Read, range, move |r| {
                *flag.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
            })
        })?;
        Ok(mapped)
    }

    /// Rows per host chunk of rows of `row_bytes` (a non-empty shape): about the
    /// context's chunk size, at least one row, and no chunk (plus `gap` bytes) larger
    /// than the device's largest buffer.
    fn host_chunk_rows(&self, shape: Shape, row_bytes: u64, gap: u64) -> Result<usize> {
        let max_rows_by_buffer =
            (self.caps.max_buffer_size.saturating_sub(gap) / row_bytes) as usize;
        let chunk_rows = ((self.options.host_chunk_bytes / row_bytes) as usize)
            .clamp(1, shape.rows)
            .min(max_rows_by_buffer);
        if chunk_rows == 0 {
            return Err(Error::RowTooLong {
                cols: shape.cols,
                bytes: row_bytes,
                limit: self.caps.max_buffer_size,
            });
        }
        Ok(chunk_rows)
    }

    /// Blocks until the chunk's submission is done and its map callback has run, for at
    /// most the context's time-out. Another thread's poll may be the one that runs the
    /// callback, so the map result itself is what ends the wait.
    #[cfg(not(target_arch = "wasm32"))]
    fn wait_for(&self, submission: wgpu::SubmissionIndex, mapped: &MapResult) -> Result<()> {
        // No deadline where the time-out is too long to add to the clock.
        let deadline = std::time::Instant::now().checked_add(self.options.timeout);
        let expired = || deadline.is_some_and(|d| std::time::Instant::now() >= d);
        let timed_out = || match self.lost_reason() {
            Some(reason) => Error::DeviceLost(reason),
            None => Error::Timeout(self.options.timeout),
        };
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
            match self.device.poll(wgpu::PollType::Wait {
                submission_index: Some(submission.clone()),
                timeout: left,
            }) {
                Ok(_) => break,
                // A backend may wait less than asked (wgpu's GL backend at most about
                // 4.3 s a call): wait again until the context's own time-out is spent.
                Err(wgpu::PollError::Timeout) if !expired() => {}
                Err(wgpu::PollError::Timeout) => return Err(timed_out()),
                Err(e) => return Err(Error::Internal(e.to_string())),
            }
        }
        while mapped.lock().unwrap_or_else(|p| p.into_inner()).is_none() {
            if expired() {
                return Err(timed_out());
            }
            self.device
                .poll(wgpu::PollType::Poll)
                .map_err(|e| Error::Internal(e.to_string()))?;
            std::thread::yield_now();
        }
        Ok(())
    }
}

/// Where a host chunk lies in its scratch buffer: the input from byte 0; the output in
/// the same place when input and output have one storage type (computed in place), else
/// after the input, from the next storage-aligned byte.
pub(crate) struct ChunkLayout {
    cols: usize,
    in_elem: u64,
    out_elem: u64,
    align: u64,
    /// Whether the output has its own region.
    separate: bool,
}

impl ChunkLayout {
    fn new<T: Element, U: Element>(ctx: &Context, cols: usize) -> Self {
        let align = u64::from(ctx.caps.storage_offset_alignment.max(16));
        let separate = T::DTYPE != U::DTYPE;
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

    /// Scratch bytes per row of a chunk.
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

    /// Scratch bytes for a chunk of `rows` rows (whole words, for copies).
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
