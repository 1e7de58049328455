//! What to compute: the matrix shape and the op's description, shared by the host and
//! the resident paths.

use crate::error::{Error, Result};
#[cfg(feature = "internals")]
use crate::plan::RowKernel;
use crate::plan::Tuning;

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

/// What a row whose entries are all masked out (or `-inf`) gives.
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

/// The smallest temperature accepted: the least positive f32 whose reciprocal is
/// finite in f32 (`1 / T` must not overflow, since the kernels multiply by it). It is
/// `2^-128 * (1 + 2^-21)` (the subnormal whose bits are `0x0020_0001`), about
/// 2.93874e-39.
pub const MIN_TEMPERATURE: f32 = f32::from_bits(0x0020_0001);

/// The description of one op: what every row of a call computes. The host path
/// ([`Context::run`](crate::Context::run)) and the resident path
/// ([`Context::encode`](crate::Context::encode)) take the same description; the data
/// each call binds (mask, lengths, temperatures per row, statistics) travel beside it.
///
/// ```
/// use wgpu_softmax::{MaskedRows, Options};
/// let attention = Options::softmax()
///     .with_temperature(0.125)
///     .with_causal(0)
///     .with_masked_rows(MaskedRows::Zero);
/// assert!(attention.validate().is_ok());
/// assert!(Options::log_softmax().with_temperature(0.0).validate().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct Options {
    /// Softmax or log-softmax.
    pub op: Op,
    /// Inputs are divided by this: finite and at least [`MIN_TEMPERATURE`] (so that its
    /// f32 reciprocal is finite). 1 leaves them as they are.
    pub temperature: f32,
    /// What fully masked (all `-inf`) rows give.
    pub masked_rows: MaskedRows,
    /// A causal mask: row `i` keeps columns `j <= i + offset` (the offset of a KV cache),
    /// the rest masked out. Rows count from the first row of the call.
    pub causal: Option<u64>,
    /// A soft-cap `C` (finite, > 0): each input `x` becomes `C * tanh(x / C)` first,
    /// before the temperature and the mask (`z = C * tanh(x / C) / T + mask`), as
    /// Gemma-style models cap their logits. Like `torch.tanh`, it maps `+-inf` to `+-C`
    /// (mask entries out with a mask, not with `-inf` inputs, when capping); NaN stays
    /// NaN.
    pub softcap: Option<f32>,
    /// The planner's overrides, for tests and benchmarks (the `internals` feature).
    pub(crate) tuning: Tuning,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            op: Op::Softmax,
            temperature: 1.0,
            masked_rows: MaskedRows::Nan,
            causal: None,
            softcap: None,
            tuning: Tuning::default(),
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

    /// These options with a causal mask at `offset`.
    pub fn with_causal(mut self, offset: u64) -> Self {
        self.causal = Some(offset);
        self
    }

    /// These options with a soft-cap `C`.
    pub fn with_softcap(mut self, cap: f32) -> Self {
        self.softcap = Some(cap);
        self
    }

    /// The check every call makes of the options first: a temperature that is not
    /// finite or below [`MIN_TEMPERATURE`] is [`Error::InvalidTemperature`]; a soft-cap
    /// that is not finite and > 0 is [`Error::InvalidSoftcap`].
    pub fn validate(&self) -> Result<()> {
        let t = self.temperature;
        if !(t.is_finite() && t >= MIN_TEMPERATURE) {
            return Err(Error::InvalidTemperature(self.temperature));
        }
        match self.softcap {
            Some(c) if !(c.is_finite() && c > 0.0) => Err(Error::InvalidSoftcap(c)),
            _ => Ok(()),
        }
    }

    pub(crate) fn tuning(&self) -> Tuning {
        self.tuning
    }
}

#[cfg(feature = "internals")]
#[doc(hidden)]
impl Options {
    /// These options with a forced kernel instead of the planner's choice.
    pub fn with_kernel(mut self, kernel: RowKernel) -> Self {
        self.tuning.kernel = Some(kernel);
        self
    }

    /// These options with a forced workgroup size (a power of two within the kernel's
    /// and the device's bounds) instead of the planner's choice.
    pub fn with_workgroup_size(mut self, workgroup_size: u32) -> Self {
        self.tuning.workgroup_size = Some(workgroup_size);
        self
    }

    /// These options with split rows cut into about `parts` parts (split kernels only).
    pub fn with_split_parts(mut self, parts: u32) -> Self {
        self.tuning.split_parts = Some(parts);
        self
    }

    /// The forced kernel, if any.
    pub fn kernel(&self) -> Option<RowKernel> {
        self.tuning.kernel
    }

    /// The forced workgroup size, if any.
    pub fn workgroup_size(&self) -> Option<u32> {
        self.tuning.workgroup_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_temperature_is_the_least_with_a_finite_reciprocal() {
        assert!((1.0 / MIN_TEMPERATURE).is_finite());
        let below = f32::from_bits(MIN_TEMPERATURE.to_bits() - 1);
        assert!((1.0 / below).is_infinite());
        assert!(Options::softmax()
            .with_temperature(MIN_TEMPERATURE)
            .validate()
            .is_ok());
        assert!(Options::softmax()
            .with_temperature(below)
            .validate()
            .is_err());
        assert!(Options::softmax()
            .with_temperature(2.9e-39)
            .validate()
            .is_err());
        assert!(Options::softmax()
            .with_temperature(2.94e-39)
            .validate()
            .is_ok());
    }
}
