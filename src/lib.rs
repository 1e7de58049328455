//! Batched softmax and log-softmax over the last axis of row-major `[rows, cols]`
//! matrices stored as f32, f16 or bf16 (arithmetic in f32), computed by WGSL compute
//! shaders on any adapter wgpu reaches, natively and in the browser's WebGPU
//! (`wasm32-unknown-unknown`); and what ML code does around it: sampling a token per
//! row without a sort ([`Context::sample`], [`Sampling`]), the fused cross-entropy loss
//! and gradient ([`Context::cross_entropy`], [`CrossEntropy`]), log-probabilities at
//! given indices ([`Context::gather_log_probs`]) and logit soft-capping
//! ([`Options::with_softcap`]).
//!
//! One description of the op ([`Options`]: softmax or log-softmax, temperature, causal
//! offset, masked-row policy), two ways to run it:
//!
//! - **Host path** ([`Context::run`], [`Context::run_backward`]): from slices to
//!   slices; the library uploads, computes and reads back, reusing its pipelines and
//!   staging buffers, and streams large matrices through the GPU in chunks. The
//!   futures wait without blocking; [`block_on`] runs them to completion on native
//!   targets.
//! - **Resident path** ([`Context::encode`], [`Context::encode_backward`]): records the
//!   work into the app's own `CommandEncoder`, on the app's own `Device`
//!   ([`Context::from_device`]), reading and writing the app's buffers ([`MatrixView`]:
//!   byte offset, row stride, storage type; in-place allowed).
//!
//! Fused into the same kernels on both paths, with no extra pass over the matrix
//! ([`HostInputs`] and [`RowInputs`] are twins): an additive mask of any storage type,
//! per-row valid lengths, per-row temperatures, and per-row statistics written or given
//! for vocabularies sharded across devices ([`combine_stats`]).
//!
//! ```
//! use wgpu_softmax::{block_on, Context, ContextOptions, HostInputs, Options, Shape};
//! # fn main() -> Result<(), wgpu_softmax::Error> {
//! let ctx = block_on(Context::new(ContextOptions::default()))?;
//! let x = [7.0f32, 4.0, 0.0];
//! let mut y = [0.0f32; 3];
//! block_on(ctx.run(&x, &mut y, Shape::new(1, 3), &Options::softmax(), HostInputs::default()))?;
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
//! one subgroup) per row; few long rows are split over many workgroups.
//!
//! # Numerics contract
//!
//! Accumulation is in f32. Against an f64 reference that subtracts the row max:
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
//! validation and out-of-memory errors are caught with error scopes (see
//! [`Context::encode`] for the browser); waiting for the GPU is bounded by
//! [`ContextOptions::timeout`].
//!
//! # Features
//!
//! `vulkan`, `metal`, `dx12`, `gles` and `webgpu` forward to wgpu's backends (all on by
//! default; each is compiled only on targets that have it). `internals` exposes the
//! planner, the kernels' sources, the bandwidth baseline and the f64 reference, for
//! this crate's tests, benchmarks and tools (which enable it through a dev-dependency on
//! the crate itself); it is hidden from these docs and not part of the stable API.

#![warn(missing_docs)]

#[cfg_attr(not(feature = "internals"), allow(dead_code))]
mod bandwidth;
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
mod compose;
mod context;
mod dtype;
mod encode;
mod error;
mod gpu;
mod host;
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
mod kernels;
mod loss;
mod op;
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
mod plan;
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
mod reference;
mod sample;
mod staging;
mod stats;
mod wait;

pub use context::{Context, ContextOptions};
pub use dtype::{Dtype, Element};
pub use encode::{LossOutputs, MaskView, MatrixView, Region, RowInputs, SampleOutputs, StatsView};
pub use error::{Error, Result};
pub use host::{HostInputs, HostMask, HostStats};
pub use loss::{CrossEntropy, Reduction};
pub use op::{MaskedRows, Op, Options, Shape, MIN_TEMPERATURE};
pub use sample::{philox4x32_10, Sampling, NO_TOKEN};
pub use stats::{
    combine_shard_stats, combine_stats, stats_from_reductions, stats_max_terms, stats_sum_terms,
    StatsMode,
};
pub use {half, wgpu};

/// Runs a future to completion on the calling thread (native targets): the blocking
/// facade of the host path, e.g. `block_on(ctx.run(..))`. The thread sleeps while the
/// GPU works. This is `pollster::block_on`; any executor serves as well.
#[cfg(not(target_arch = "wasm32"))]
pub use pollster::block_on;

/// Internals for this crate's tests, benchmarks and tools: the planner, the kernels'
/// sources, the bandwidth baseline and the f64 reference. Not part of the stable API.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod internals {
    pub use crate::compose::{MaskRead, Shader, Variant, COPY_VEC4_SOURCE};
    pub use crate::kernels::{binding_layout, Params};
    pub use crate::plan::RowKernel;

    /// The planner (see `src/plan.rs`).
    pub mod plan {
        pub use crate::plan::*;
    }

    /// The f64 CPU reference and the tolerances of the numerics contract.
    pub mod reference {
        pub use crate::reference::*;
    }

    /// The bandwidth baseline: a plain `vec4` WGSL copy kernel.
    pub mod bandwidth {
        pub use crate::bandwidth::*;
    }
}

/// The README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The Rust examples of docs/sharded.md, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../docs/sharded.md")]
pub struct ShardedDoctests;
