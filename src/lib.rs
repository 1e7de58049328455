//! Batched softmax and log-softmax over the last axis of row-major `[rows, cols]`
//! matrices stored as f32, f16 or bf16 (arithmetic in f32), computed by WGSL compute
//! shaders on any adapter wgpu reaches.
//!
//! Two ways in:
//!
//! - **Host API** ([`Context::run`], [`Context::run_blocking`], [`Context::run_into`]):
//!   from a `&[f32]` and a [`Shape`] to the result; the library uploads, computes and
//!   reads back, reusing its pipelines and staging buffers, and streams large matrices
//!   through the GPU in chunks.
//! - **GPU-resident API** ([`Context::encode`]): records the work into the app's own
//!   `CommandEncoder`, on the app's own `Device` ([`Context::from_device`]), reading and
//!   writing the app's buffers ([`MatrixView`]: byte offset, row stride; in-place allowed).
//!
//! Fused into the same kernels, with no extra pass over the matrix: a scalar and a
//! per-row temperature, an additive mask, a causal mask, per-row valid lengths
//! ([`HostInputs`], [`RowInputs`], [`Context::run_with`], [`Context::encode_with`]), a
//! policy for fully masked rows ([`MaskedRows`]), per-row statistics for vocabularies
//! sharded across devices ([`Context::run_with_stats`], [`combine_stats`]), and the
//! backward pass ([`Context::run_backward`], [`Context::encode_backward`]).
//!
//! 16-bit storage ([`Dtype`]): matrices and masks in f16 or bf16, read and written in
//! pairs of a `u32` and converted by bit operations, so `Features::SHADER_F16` is not
//! needed ([`MatrixView::with_dtype`], [`RowInputs::mask_dtype`],
//! [`Context::run_typed_into`] with [`F16`] and [`Bf16`]).
//!
//! ```no_run
//! use wgpu_softmax::{Context, Options, Shape};
//! # fn main() -> Result<(), wgpu_softmax::Error> {
//! let ctx = Context::new_blocking()?;
//! let y = ctx.run_blocking(&[7.0, 4.0, 0.0], Shape::new(1, 3), &Options::softmax())?;
//! // [0.95174, 0.04739, 0.00087]: the largest score squeezes out the others.
//! assert!((y[0] - 0.95174).abs() < 1e-5);
//! # Ok(()) }
//! ```
//!
//! # Method
//!
//! A row that fits the invocations' registers is read once: its max, then
//! `exp(x - max)` once per element, summed and written scaled by one reciprocal. A longer
//! row is swept once for a running `(max, sum of exp(x - max))` pair per invocation and
//! once more to write. Reductions use subgroup operations where the device has
//! `Features::SUBGROUP`, workgroup memory otherwise. Short rows run one invocation (or
//! one subgroup) per row; few long rows are split over many workgroups. See [`plan`] for
//! how the kernel and dispatch are chosen.
//!
//! # Numerics contract
//!
//! Accumulation is in f32. Against an f64 reference that subtracts the row max
//! ([`reference::softmax_f64`]):
//!
//! | output | tolerance |
//! | --- | --- |
//! | softmax | `abs(y - r) <= 1e-6 + 1e-5 * abs(r)`; rows sum to 1 within 1e-5 |
//! | log-softmax | `abs(y - r) <= 1e-5 + 1e-5 * abs(r)` |
//! | f16 output (f32 compute) | `abs(y - r) <= 1e-4 + 2e-3 * abs(r)` |
//! | bf16 output (f32 compute) | `abs(y - r) <= 1e-4 + 8e-3 * abs(r)` |
//!
//! (For 16-bit inputs, `r` is computed from the values the 16-bit input holds.)
//!
//! With a temperature `T`, the result is that of `x / T`; the kernels compute
//! `(x - max) / T`, so large common offsets (integers plus 1e7) cancel exactly first.
//!
//! Non-finite inputs, as PyTorch treats them: a `-inf` entry gives 0 (log-softmax:
//! `-inf`); a row of only `-inf` gives NaN, or with [`MaskedRows::Zero`] 0 (log-softmax:
//! `-inf`); a `+inf` or NaN anywhere in a row makes the whole row NaN. Values near
//! `f32::MAX` (and rows mixing `-f32::MAX` with `f32::MAX`) come out right. The kernels
//! find NaN and infinities by their bit patterns, since WGSL lets compilers assume
//! floats are finite.
//!
//! # Errors
//!
//! Every call returns [`Result`]. Argument errors come back before any GPU work; wgpu
//! validation and out-of-memory errors are caught with error scopes; waiting for the GPU
//! is bounded by [`ContextOptions::timeout`].

#![warn(missing_docs)]

pub mod bandwidth;
mod context;
mod dtype;
mod encode;
mod error;
mod host;
mod kernels;
pub mod plan;
pub mod reference;

pub use context::{Context, ContextOptions};
pub use dtype::{Bf16, Dtype, Element, F16};
pub use encode::{
    combine_stats, MaskedRows, MatrixView, Op, Options, Region, RowInputs, Shape, StatsMode,
    StatsView,
};
pub use error::{Error, Result};
pub use host::HostInputs;
pub use kernels::{Shader, COPY_VEC4_SOURCE};
pub use plan::RowKernel;
pub use wgpu;

impl Context {
    /// Buffers held by the host API's staging pool (for leak checks).
    pub fn staging_buffer_count(&self) -> usize {
        self.scratch.buffer_count()
    }

    /// Drops the cached bindings of recent calls. A context keeps the uniform buffer and
    /// bind groups of its 16 most recent distinct calls, so that a repeated call (same
    /// buffers, shape and options) creates no GPU object; they hold references to the
    /// buffers they name until newer calls push them out, or until this is called.
    pub fn clear_cached_bindings(&self) {
        self.kernels.clear_bindings();
    }

    /// Bytes of GPU memory held by the host API's staging pool. Between calls this is
    /// what the largest recent calls used: a streaming call holds at most two chunk
    /// slots, each a device buffer and a readback buffer of
    /// [`ContextOptions::host_chunk_bytes`] (rounded up to a power of two).
    pub fn staging_bytes(&self) -> u64 {
        self.scratch.bytes()
    }
}
