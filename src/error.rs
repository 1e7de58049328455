//! The crate's one error type.

use std::time::Duration;

/// Everything that can go wrong in `wgpu-softmax`.
///
/// Argument errors (shape, temperature, buffers) are reported before any GPU work is
/// recorded. GPU errors (validation, out of memory, lost device, map failures, time-outs)
/// are caught with wgpu error scopes and returned, never left to wgpu's uncaptured-error
/// handler.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No adapter matched the request (or `WGPU_BACKEND` excluded every adapter found).
    #[error("no GPU adapter found: {0}")]
    NoAdapter(String),
    /// The adapter refused to create a device.
    #[error("could not create a device: {0}")]
    RequestDevice(String),
    /// The data length does not equal `rows * cols`.
    #[error("shape [{rows}, {cols}] needs {expected} elements but {actual} were given")]
    ShapeMismatch {
        /// Rows asked for.
        rows: usize,
        /// Columns asked for.
        cols: usize,
        /// `rows * cols`.
        expected: usize,
        /// Elements actually given.
        actual: usize,
    },
    /// `rows * cols` (or a byte size derived from it) does not fit in the address space,
    /// or a row is longer than the kernels take (2^32 - 2^18 columns).
    #[error("shape [{rows}, {cols}] is too large to address")]
    ShapeOverflow {
        /// Rows asked for.
        rows: usize,
        /// Columns asked for.
        cols: usize,
    },
    /// A host-API input (mask, lengths, temperatures, statistics) has the wrong length.
    #[error("{which} holds {actual} values but the shape needs {expected}")]
    InputLength {
        /// Which input.
        which: &'static str,
        /// Values the shape needs.
        expected: usize,
        /// Values given.
        actual: usize,
    },
    /// The temperature is not finite, or below [`crate::MIN_TEMPERATURE`] (about
    /// 2.93874e-39, the least f32 whose reciprocal is finite).
    #[error("temperature must be finite and at least 2.93874e-39 (MIN_TEMPERATURE), got {0:e}")]
    InvalidTemperature(f32),
    /// A soft-cap that is not finite and > 0.
    #[error("soft-cap must be finite and > 0, got {0}")]
    InvalidSoftcap(f32),
    /// A cross-entropy setting out of its range (see [`crate::CrossEntropy::validate`]).
    #[error("invalid cross-entropy: {0}")]
    InvalidLoss(String),
    /// A target outside `[0, cols)` that is not the ignore index.
    #[error("row {row}: target {target} is outside [0, {cols}) and not the ignore index")]
    InvalidTarget {
        /// The row.
        row: usize,
        /// Its target.
        target: i64,
        /// The row length.
        cols: usize,
    },
    /// A sampling filter out of its range (see [`crate::Sampling::validate`]).
    #[error("invalid sampling: {0}")]
    InvalidSampling(String),
    /// A row stride shorter than the row.
    #[error("row stride {stride} is smaller than the row length {cols}")]
    InvalidStride {
        /// The stride given, in elements.
        stride: usize,
        /// The row length, in elements.
        cols: usize,
    },
    /// A byte offset that is not a multiple of the element size (4 bytes; 2 for f16
    /// and bf16).
    #[error("byte offset {offset} is not a multiple of {required}")]
    Misaligned {
        /// The offset given, in bytes.
        offset: u64,
        /// The alignment required, in bytes.
        required: u64,
    },
    /// A buffer is too small for the region the call names.
    #[error("{which} buffer holds {size} bytes but the call needs {needed}")]
    BufferTooSmall {
        /// `"input"` or `"output"`.
        which: &'static str,
        /// Bytes needed: offset plus the last byte of the matrix.
        needed: u64,
        /// The buffer's size.
        size: u64,
    },
    /// A buffer was created without a usage flag the operation needs.
    #[error("{which} buffer lacks the usage flag {missing}")]
    MissingUsage {
        /// `"input"` or `"output"`.
        which: &'static str,
        /// The usage it needs, e.g. `STORAGE`.
        missing: &'static str,
    },
    /// Output and input share bytes without being the same region (in-place use must name
    /// the same buffer, offset, stride and dtype for both). Strided regions whose rows
    /// interleave without sharing a byte are not refused.
    #[error("output shares bytes with the input without being the same region")]
    PartialOverlap,
    /// A buffer the call names has been destroyed (`Buffer::destroy`).
    #[error("the {which} buffer has been destroyed")]
    BufferDestroyed {
        /// Which buffer: "input", "output", "mask", "lengths", "temperatures" or
        /// "stats".
        which: &'static str,
    },
    /// A region the op writes (the output, or statistics written) shares bytes with
    /// another region of the call (a row input, the input, or the other written region):
    /// the kernels would race.
    #[error("the {written} region, which the op writes, shares bytes with the {other} region")]
    RegionOverlap {
        /// The written region: "output" or "stats".
        written: &'static str,
        /// The region it shares bytes with: "input", "output", "mask", "lengths",
        /// "temperatures" or "stats".
        other: &'static str,
    },
    /// One row does not fit a single storage binding of this device.
    #[error("a row of {cols} elements ({bytes} bytes) exceeds the device's storage binding limit of {limit} bytes")]
    RowTooLong {
        /// The row length, in elements.
        cols: usize,
        /// The bytes one row's binding needs.
        bytes: u64,
        /// `max_storage_buffer_binding_size`.
        limit: u64,
    },
    /// The options ask for something this device or kernel cannot do (a subgroup kernel
    /// without `Features::SUBGROUP`, a workgroup size out of bounds).
    #[error("unsupported option: {0}")]
    Unsupported(String),
    /// wgpu reported a validation error.
    #[error("wgpu validation error: {0}")]
    Validation(String),
    /// wgpu reported that the device ran out of memory.
    #[error("GPU out of memory: {0}")]
    OutOfMemory(String),
    /// wgpu reported an internal error (e.g. a shader the driver failed to compile).
    #[error("wgpu internal error: {0}")]
    Internal(String),
    /// Mapping a readback buffer failed (the device may be lost or destroyed).
    #[error("buffer map failed: {0}")]
    Map(String),
    /// The GPU did not finish within the context's time-out.
    #[error("the GPU did not finish within {0:?}")]
    Timeout(Duration),
    /// The device was lost (destroyed, reset or removed).
    #[error("the device was lost: {0}")]
    DeviceLost(String),
}

/// The crate's `Result`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Converts a wgpu error caught by an error scope.
    /// The message keeps the whole cause chain, on one line.
    pub(crate) fn from_wgpu(error: wgpu::Error) -> Self {
        let mut message = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = cause.source();
        }
        let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
        match error {
            wgpu::Error::OutOfMemory { .. } => Error::OutOfMemory(message),
            wgpu::Error::Validation { .. } => Error::Validation(message),
            wgpu::Error::Internal { .. } => Error::Internal(message),
        }
    }
}
