//! Fused cross-entropy over softmax rows: the loss (and its gradient) with integer
//! targets, with no `[rows, cols]` temporary (see [`CrossEntropy`]).

use crate::error::{Error, Result};

/// How a host cross-entropy call reduces its per-row losses, and scales the gradient.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reduction {
    /// Per-row losses; the value returned is their sum, the gradient that of each row's
    /// own loss.
    None,
    /// The sum of the per-row losses.
    Sum,
    /// The mean over the rows whose target is not the ignore index (NaN when every row
    /// is ignored), as PyTorch: the gradient is scaled by one over their number.
    #[default]
    Mean,
}

/// The cross-entropy of each row's softmax against an integer target, as
/// `torch.nn.functional.cross_entropy(z, t, reduction, ignore_index, label_smoothing)`
/// computes it, with an optional z-loss. Over the row's unmasked columns `U` (`K` of
/// them), with `z` the row after the [`Options`](crate::Options)' soft-cap, temperature
/// and mask, `lse = ln(sum_U exp(z))`, smoothing `e` and z-loss weight `w`:
///
/// `loss = (1 - e) * (lse - z_t) + e * (lse - mean_U(z)) + w * lse^2`
///
/// and its gradient with respect to the logits `x`, written over `x` itself if asked:
///
/// `dloss/dz_j = g * ((1 + 2 w lse) * softmax(z)_j - (1 - e) [j = t] - e / K [j in U])`,
/// times `dz/dx = (1 - tanh(x / C)^2) / T` through the soft-cap and the temperature,
/// with `g` the gradient scale times the reduction's (one over the rows not ignored for
/// [`Reduction::Mean`]).
///
/// A row whose target is the ignore index (default -100) has loss 0 and gradient 0. A
/// row with NaN or `+inf`, or with every column masked, has loss NaN (and gradient NaN).
/// The host path refuses a target outside `[0, cols)` that is not the ignore index
/// before any GPU work ([`Error::InvalidTarget`]); the resident path, which cannot see
/// its targets, gives such a row loss NaN.
///
/// ```
/// use wgpu_softmax::{CrossEntropy, Reduction};
/// let ce = CrossEntropy::default()
///     .with_reduction(Reduction::Sum)
///     .with_label_smoothing(0.1)
///     .with_z_loss(1e-4);
/// assert!(ce.validate().is_ok());
/// assert!(CrossEntropy::default().with_label_smoothing(1.5).validate().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct CrossEntropy {
    /// The target value of rows left out (loss and gradient 0).
    pub ignore_index: i64,
    /// `e` in `[0, 1]`.
    pub label_smoothing: f32,
    /// The z-loss weight `w >= 0` (PaLM's auxiliary `w * lse^2`).
    pub z_loss: f32,
    /// How the host path reduces the per-row losses.
    pub reduction: Reduction,
    /// The incoming gradient of the reduced loss (1 for a loss at the end of a graph).
    pub grad_scale: f32,
    /// The whole vocabulary's column of this matrix's column 0: a shard of a split
    /// vocabulary, given the whole rows' statistics, finds its part of the targets.
    pub column_offset: u32,
}

impl Default for CrossEntropy {
    fn default() -> Self {
        CrossEntropy {
            ignore_index: -100,
            label_smoothing: 0.0,
            z_loss: 0.0,
            reduction: Reduction::Mean,
            grad_scale: 1.0,
            column_offset: 0,
        }
    }
}

impl CrossEntropy {
    /// This loss with another ignore index.
    pub fn with_ignore_index(mut self, index: i64) -> Self {
        self.ignore_index = index;
        self
    }

    /// This loss with label smoothing `e`.
    pub fn with_label_smoothing(mut self, e: f32) -> Self {
        self.label_smoothing = e;
        self
    }

    /// This loss with a z-loss of weight `w`.
    pub fn with_z_loss(mut self, w: f32) -> Self {
        self.z_loss = w;
        self
    }

    /// This loss with another reduction.
    pub fn with_reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }

    /// This loss with an incoming gradient scale.
    pub fn with_grad_scale(mut self, scale: f32) -> Self {
        self.grad_scale = scale;
        self
    }

    /// This loss for a shard whose column 0 is column `offset` of the vocabulary.
    pub fn with_column_offset(mut self, offset: u32) -> Self {
        self.column_offset = offset;
        self
    }

    /// The check every call makes first: `e` in `[0, 1]`, `w` finite and `>= 0`, a
    /// finite gradient scale, an ignore index within `i32`; else
    /// [`Error::InvalidLoss`].
    pub fn validate(&self) -> Result<()> {
        let e = self.label_smoothing;
        if !(0.0..=1.0).contains(&e) {
            return Err(Error::InvalidLoss(format!(
                "label smoothing must be in [0, 1], not {e}"
            )));
        }
        if !(self.z_loss.is_finite() && self.z_loss >= 0.0) {
            return Err(Error::InvalidLoss(format!(
                "the z-loss weight must be finite and >= 0, not {}",
                self.z_loss
            )));
        }
        if !self.grad_scale.is_finite() {
            return Err(Error::InvalidLoss(format!(
                "the gradient scale must be finite, not {}",
                self.grad_scale
            )));
        }
        if i32::try_from(self.ignore_index).is_err() {
            return Err(Error::InvalidLoss(format!(
                "the ignore index {} does not fit an i32",
                self.ignore_index
            )));
        }
        Ok(())
    }
}
