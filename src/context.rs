//! The context: picking an adapter and device, or wrapping the app's own, and the
//! public methods of both paths, in one place.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::dtype::Element;
use crate::encode::{LossOutputs, MatrixView, Region, RowInputs, SampleOutputs};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::host::{Host, HostInputs};
use crate::loss::CrossEntropy;
use crate::op::{Options, Shape};
use crate::sample::Sampling;
use crate::staging::StagingPool;
use crate::wait::Poller;

/// Settings of a [`Context`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ContextOptions {
    /// How long a host-path call waits for one readback before it returns
    /// [`Error::Timeout`] (native targets; in a browser the page decides).
    pub timeout: Duration,
    /// The host path moves matrices through the GPU in chunks of about this many bytes
    /// (two chunks in flight, so upload, compute and readback overlap). At least one row
    /// per chunk.
    pub host_chunk_bytes: u64,
    /// Optional features to enable too, where the adapter has them, when
    /// [`Context::new`] creates the device (e.g. `TIMESTAMP_QUERY` for an app that
    /// times its passes). The kernels need none; they use `SUBGROUP` where it exists.
    pub extra_features: wgpu::Features,
}

impl Default for ContextOptions {
    fn default() -> Self {
        ContextOptions {
            timeout: Duration::from_secs(120),
            host_chunk_bytes: 32 << 20,
            extra_features: wgpu::Features::empty(),
        }
    }
}

impl ContextOptions {
    /// These settings with another time-out.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// These settings with another host chunk size.
    pub fn with_host_chunk_bytes(mut self, bytes: u64) -> Self {
        self.host_chunk_bytes = bytes;
        self
    }

    /// These settings with more optional features.
    pub fn with_extra_features(mut self, features: wgpu::Features) -> Self {
        self.extra_features |= features;
        self
    }
}

/// A device and queue with the softmax pipelines built for them.
///
/// `Send + Sync` on native targets: host-path calls from several threads run
/// concurrently (each takes its own staging buffers from a pool).
pub struct Context {
    gpu: Gpu,
    staging: StagingPool,
    poller: Poller,
    options: ContextOptions,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("adapter", &self.gpu.info.name)
            .field("backend", &self.gpu.info.backend)
            .field("caps", &self.gpu.caps)
            .finish_non_exhaustive()
    }
}

#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
/// Rank of an adapter: lower is better. Discrete GPUs first, then other hardware, then
/// software; among equals, the native APIs before GL.
fn adapter_rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let kind = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    let backend = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        wgpu::Backend::Gl => 1,
        _ => 2,
    };
    (kind, backend)
}

/// The optional features the kernels use when the adapter has them.
fn wanted_features() -> wgpu::Features {
    wgpu::Features::SUBGROUP
}

/// The adapter every [`Context::new`] of the process creates its device on: picked on
/// the first call (native: the best of those `WGPU_BACKEND` allows, see
/// [`adapter_rank`]), on one wgpu instance, and kept.
///
/// One instance, because wgpu-core identifies a buffer by an index into its instance's
/// registry, and checks that a buffer belongs to the device it is used on only within
/// one instance: a buffer of another instance's device resolves to whatever buffer of
/// this instance has the same index, so a kernel would silently read or write an
/// unrelated buffer. With one instance, a buffer of another context's device is
/// refused by wgpu's validation ([`Error::Validation`]). Buffers of a device the app
/// made on an instance of its own, given to a context of another instance, cannot be
/// told apart: an app keeps each context's buffers on that context's device.
///
/// One adapter, because wgpu's GL backend gives every adapter it enumerates the
/// instance's one EGL context behind a lock of the adapter's own: devices of two
/// adapters of one instance, used from two threads, make the same EGL context current
/// at once, which fails (and wgpu panics). Devices of one adapter share its lock.
#[cfg(not(target_arch = "wasm32"))]
async fn shared_adapter() -> Result<wgpu::Adapter> {
    static ADAPTER: Mutex<Option<wgpu::Adapter>> = Mutex::new(None);
    let held = ADAPTER.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some(adapter) = held {
        return Ok(adapter);
    }
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let picked = pick_adapter(&instance).await?;
    // Two first calls may race: the first to finish is kept, and the other uses it.
    let mut slot = ADAPTER.lock().unwrap_or_else(|p| p.into_inner());
    Ok(slot.get_or_insert(picked).clone())
}

/// In a browser every instance is the page's `navigator.gpu`, which tells devices
/// apart itself.
#[cfg(target_arch = "wasm32")]
async fn shared_adapter() -> Result<wgpu::Adapter> {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    pick_adapter(&instance).await
}

/// The adapter of `instance` [`Context::new`] uses: on native targets the best of those
/// `WGPU_BACKEND` allows (see [`adapter_rank`]); in a browser the one it offers.
#[cfg(not(target_arch = "wasm32"))]
async fn pick_adapter(instance: &wgpu::Instance) -> Result<wgpu::Adapter> {
    let backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all());
    let mut adapters = instance.enumerate_adapters(backends).await;
    adapters.sort_by_key(|a| adapter_rank(&a.get_info()));
    adapters.into_iter().next().ok_or_else(|| {
        Error::NoAdapter(format!(
            "no adapter on backends {backends:?} (set WGPU_BACKEND, or install a Vulkan \
             or GL driver such as Mesa's lavapipe or llvmpipe)"
        ))
    })
}

#[cfg(target_arch = "wasm32")]
async fn pick_adapter(instance: &wgpu::Instance) -> Result<wgpu::Adapter> {
    instance
        .request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        })
        .await
        .map_err(|e| Error::NoAdapter(format!("{e} (does the browser have WebGPU on?)")))
}

impl Context {
    /// Picks an adapter (native: discrete GPU, then any hardware, then software, among
    /// the backends `WGPU_BACKEND` names when it is set; browser: the one WebGPU
    /// offers), creates a device with every limit the adapter offers, and builds the
    /// kernels. The device's uncaptured errors stay with wgpu's handler, but every call
    /// of this crate catches its own.
    ///
    /// ```
    /// # fn main() -> Result<(), wgpu_softmax::Error> {
    /// use wgpu_softmax::{block_on, Context, ContextOptions};
    /// let ctx = block_on(Context::new(ContextOptions::default()))?;
    /// println!("{}", ctx.adapter_info().name);
    /// # Ok(()) }
    /// ```
    pub async fn new(options: ContextOptions) -> Result<Self> {
        let adapter = shared_adapter().await?;
        let info = adapter.get_info();
        log::info!(
            "wgpu-softmax: adapter {} ({:?}, {:?}, driver {} {})",
            info.name,
            info.backend,
            info.device_type,
            info.driver,
            info.driver_info
        );
        let features = adapter.features() & (wanted_features() | options.extra_features);
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("wgpu-softmax"),
                required_features: features,
                required_limits: adapter.limits(),
                ..Default::default()
            })
            .await
            .map_err(|e| Error::RequestDevice(e.to_string()))?;
        let lost = Arc::new(Mutex::new(None));
        let flag = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            let mut slot = flag.lock().unwrap_or_else(|p| p.into_inner());
            *slot = Some(format!("{reason:?}: {message}"));
        });
        Self::build(device, queue, options, lost)
    }

    /// Wraps the app's own device and queue: no second device, no error handler or
    /// device-lost callback installed (the app keeps its own). The kernels use the
    /// device's enabled features and limits: with `Features::SUBGROUP` they use
    /// subgroup operations; with fewer than 9 storage buffers per shader stage (WebGPU's
    /// default is 8), the fused row inputs are refused with [`Error::Unsupported`].
    pub fn from_device(
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        options: ContextOptions,
    ) -> Result<Self> {
        Self::build(
            device.clone(),
            queue.clone(),
            options,
            Arc::new(Mutex::new(None)),
        )
    }

    fn build(
        device: wgpu::Device,
        queue: wgpu::Queue,
        options: ContextOptions,
        lost: Arc<Mutex<Option<String>>>,
    ) -> Result<Self> {
        let poller = Poller::new(&device, options.timeout);
        Ok(Context {
            gpu: Gpu::new(device, queue, lost)?,
            staging: StagingPool::default(),
            poller,
            options,
        })
    }

    /// **Host path**: softmax (or what `options` asks for) of the row-major `shape`
    /// matrix in `input`, written to `output`, with the data of `inputs` fused in.
    ///
    /// Any storage types: `T` and `U` are each `f32`, [`half::f16`] or [`half::bf16`].
    /// Arithmetic is f32; results are rounded to `U` to nearest, ties to even (f16:
    /// beyond 65504 is infinity, so a log-softmax below -65504 is `-inf`). 16-bit
    /// matrices upload and read back half the bytes of f32 ones.
    ///
    /// The matrix goes through the GPU in chunks of whole rows of about
    /// [`ContextOptions::host_chunk_bytes`], two in flight: while one chunk computes,
    /// the previous one is read back. The future waits without blocking: it returns
    /// `Poll::Pending` while the GPU works and is woken when a readback is mapped (on
    /// native targets the context's poller thread drives `device.poll`). Dropping it
    /// stops the call after the chunk in flight; its staging buffers are freed, not
    /// returned to the pool, and `output` is left partly written. Blocking callers use
    /// [`block_on`](crate::block_on).
    ///
    /// Argument errors come back before any GPU work; wgpu errors are caught with error
    /// scopes; each readback waits at most [`ContextOptions::timeout`].
    ///
    /// ```
    /// # fn main() -> Result<(), wgpu_softmax::Error> {
    /// use wgpu_softmax::{block_on, Context, ContextOptions, HostInputs, Options, Shape};
    /// let ctx = block_on(Context::new(ContextOptions::default()))?;
    /// let mut y = [0.0f32; 3];
    /// let softmax = Options::softmax();
    /// block_on(ctx.run(&[7.0f32, 4.0, 0.0], &mut y, Shape::new(1, 3), &softmax, HostInputs::default()))?;
    /// // [0.95174, 0.04739, 0.00087]: the largest score squeezes out the others.
    /// assert!((y[0] - 0.95174).abs() < 1e-5);
    /// # Ok(()) }
    /// ```
    pub async fn run<T: Element, U: Element>(
        &self,
        input: &[T],
        output: &mut [U],
        shape: Shape,
        options: &Options,
        inputs: HostInputs<'_>,
    ) -> Result<()> {
        self.host().run(input, output, shape, options, inputs).await
    }

    /// **Host path**, backward: the gradient `dx` of softmax (or log-softmax, per
    /// `options.op`) from the forward output `y` and the incoming gradient `dy` (see
    /// [`Context::encode_backward`] for the formulas). Any storage types, as
    /// [`Context::run`]; chunks of rows go through the GPU one after another.
    pub async fn run_backward<T: Element, U: Element>(
        &self,
        y: &[T],
        dy: &[U],
        dx: &mut [U],
        shape: Shape,
        options: &Options,
    ) -> Result<()> {
        self.host()
            .run_backward((None, y), dy, dx, shape, options)
            .await
    }

    /// **Resident path**: records the op `options` describes, over the `shape` matrix at
    /// `input`, into `output`, with the data of `inputs` fused in, on the caller's
    /// `encoder`. Nothing is submitted: the caller submits the encoder when it likes, on
    /// this context's device.
    ///
    /// `output` may be `input` itself (same buffer, offset, stride and dtype) for
    /// in-place use; any other overlap is refused. Only the named rows (and in them only
    /// the first `cols` elements) of `output` are written. An empty shape records
    /// nothing (with `cols == 0` statistics written are left as they are; the host
    /// path gives `(-inf, -inf)` rows).
    ///
    /// With [`RowInputs::stats`] written, each row's `(max, log-sum-exp)` of `x / T` is
    /// written too (`(NaN, NaN)` for a row with NaN or `+inf`, `(-inf, -inf)` for a fully
    /// masked row); given, rows are normalised with them instead of their own. The
    /// mask, lengths and temperatures take three more storage bindings (9 in all), which
    /// a device created with WebGPU's default limits (8) lacks: that gives
    /// [`Error::Unsupported`].
    ///
    /// Nothing here blocks or waits. Argument errors are returned before anything is
    /// recorded. On native targets wgpu's validation and out-of-memory errors while
    /// recording are caught and returned (wgpu resolves error scopes at once there); in
    /// a browser they go to the device's own error handling, as those of any wgpu call
    /// the app makes.
    pub fn encode(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        input: MatrixView<'_>,
        output: MatrixView<'_>,
        shape: Shape,
        options: &Options,
        inputs: &RowInputs<'_>,
    ) -> Result<()> {
        self.gpu
            .encode(encoder, input, output, shape, options, inputs, 0)
            .map_err(|e| self.gpu.explain(e))
    }

    /// **Resident path**, backward: records the gradient of softmax (or log-softmax, per
    /// `options.op`) in one fused kernel: `y` holds the forward op's output, and `grad`
    /// holds the incoming gradient `dy` and receives `dx` in its place: softmax
    /// `dx = y * (dy - sum(dy * y)) / T`, log-softmax `dx = (dy - exp(y) * sum(dy)) / T`,
    /// with `T` the forward op's scalar temperature. Only the op and temperature of
    /// `options` apply. `y` and `grad` must not overlap. Errors as [`Context::encode`].
    pub fn encode_backward(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        y: MatrixView<'_>,
        grad: MatrixView<'_>,
        shape: Shape,
        options: &Options,
    ) -> Result<()> {
        self.gpu
            .encode_backward(encoder, (None, y), grad, shape, options)
            .map_err(|e| self.gpu.explain(e))
    }

    /// **Host path**, sampling: draws one column per row of the `shape` matrix `input`
    /// (logits, any storage type) as `sampling` says, after the softmax that `options`
    /// describes (its temperature, causal mask and masked-row policy; its op is ignored)
    /// with the mask, lengths and per-row temperatures of `inputs` fused in. Row `r`'s
    /// column goes to `ids[r]` and, when given, its log-probability under the whole,
    /// unfiltered softmax to `logprobs[r]`. A row with nothing to draw from (all masked,
    /// or a NaN or `+inf` in it) gets [`NO_TOKEN`](crate::NO_TOKEN) and a log-probability
    /// of NaN (`-inf` for a fully masked row under [`MaskedRows::Zero`](crate::MaskedRows)).
    /// The row is never read back: 4 bytes per row are (8 with log-probabilities).
    /// Statistics in `inputs` are refused. See [`Sampling`] for the filters, their order
    /// and the generator.
    ///
    /// ```
    /// # fn main() -> Result<(), wgpu_softmax::Error> {
    /// use wgpu_softmax::{block_on, Context, ContextOptions, HostInputs, Options, Sampling, Shape};
    /// let ctx = block_on(Context::new(ContextOptions::default()))?;
    /// let logits = [7.0f32, 4.0, 0.0, 1.0, 9.0, 2.0];
    /// let mut ids = [0u32; 2];
    /// let greedy = Sampling::greedy();
    /// block_on(ctx.sample(&logits, &mut ids, None, Shape::new(2, 3), &Options::softmax(), &greedy, HostInputs::default()))?;
    /// assert_eq!(ids, [0, 1]);
    /// # Ok(()) }
    /// ```
    #[allow(clippy::too_many_arguments)]
    pub async fn sample<T: Element>(
        &self,
        input: &[T],
        ids: &mut [u32],
        logprobs: Option<&mut [f32]>,
        shape: Shape,
        options: &Options,
        sampling: &Sampling,
        inputs: HostInputs<'_>,
    ) -> Result<()> {
        self.host()
            .sample(input, ids, logprobs, shape, options, sampling, inputs)
            .await
    }

    /// **Resident path**, sampling: records the draw of [`Context::sample`] over the
    /// `shape` matrix at `input` on the caller's `encoder`, writing each row's id (and,
    /// when asked, log-probability) into `outputs`, the app's buffers. A decoder loop
    /// then reads back 4 bytes per row, or nothing at all if the ids feed the next step
    /// on the GPU. The outputs must not overlap the input, the row inputs or each other;
    /// statistics in `inputs` are refused; `cols == 0` (with rows) is refused, as rows of
    /// nothing have nothing to draw from. Errors as [`Context::encode`].
    #[allow(clippy::too_many_arguments)]
    pub fn encode_sample(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        input: MatrixView<'_>,
        outputs: SampleOutputs<'_>,
        shape: Shape,
        options: &Options,
        sampling: &Sampling,
        inputs: &RowInputs<'_>,
    ) -> Result<()> {
        self.gpu
            .encode_sample(encoder, input, outputs, shape, options, sampling, inputs, 0)
            .map_err(|e| self.gpu.explain(e))
    }

    /// **Host path**, cross-entropy: the loss of each row of the `shape` matrix `logits`
    /// (any storage type) against its integer target (`targets`, one per row, as
    /// PyTorch's `long`), into `losses`, and with `grad` the gradient with respect to the
    /// logits (of their shape, any storage type); returns the reduced loss in f64 (the
    /// sum, or the mean over the rows not ignored, per [`CrossEntropy::reduction`]; the
    /// sum for [`Reduction::None`](crate::Reduction::None)). The `Options`' soft-cap,
    /// temperature, causal mask and masked-row policy and the mask, lengths and per-row
    /// temperatures of `inputs` apply as for softmax; statistics in `inputs` are written,
    /// or given (a shard of a split vocabulary: see [`CrossEntropy::column_offset`]). A
    /// target outside the row that is not the ignore index is refused before any GPU
    /// work. See [`CrossEntropy`] for the formulas.
    ///
    /// ```
    /// # fn main() -> Result<(), wgpu_softmax::Error> {
    /// use wgpu_softmax::{block_on, Context, ContextOptions, CrossEntropy, HostInputs, Options, Shape};
    /// let ctx = block_on(Context::new(ContextOptions::default()))?;
    /// let logits = [7.0f32, 4.0, 0.0];
    /// let mut losses = [0f32; 1];
    /// let mut grad = [0f32; 3];
    /// let mean = block_on(ctx.cross_entropy(&logits, &[1], &mut losses, Some(&mut grad[..]),
    ///     Shape::new(1, 3), &Options::softmax(), &CrossEntropy::default(), HostInputs::default()))?;
    /// // -ln(0.04739): the target's probability was small.
    /// assert!((mean - 3.04946).abs() < 1e-4);
    /// assert!((grad[1] - (0.04739 - 1.0)).abs() < 1e-4);
    /// # Ok(()) }
    /// ```
    #[allow(clippy::too_many_arguments)]
    pub async fn cross_entropy<T: Element, U: Element>(
        &self,
        logits: &[T],
        targets: &[i64],
        losses: &mut [f32],
        grad: Option<&mut [U]>,
        shape: Shape,
        options: &Options,
        loss: &CrossEntropy,
        inputs: HostInputs<'_>,
    ) -> Result<f64> {
        self.host()
            .cross_entropy(logits, targets, losses, grad, shape, options, loss, inputs)
            .await
    }

    /// **Resident path**, cross-entropy: records the loss of [`Context::cross_entropy`]
    /// per row into `outputs.losses` (f32) and, with `outputs.grad`, the gradient (which
    /// may be `logits` itself: the gradient in place of the logits, as Liger's kernel
    /// does; not in a browser, where WebGPU forbids it), reading the targets (i32 per
    /// row) from the app's `targets` buffer. The resident path does not reduce: the
    /// gradient is scaled by [`CrossEntropy::grad_scale`] alone, so for a mean fold one
    /// over the rows not ignored into it ([`Reduction::Mean`](crate::Reduction::Mean) is
    /// refused here, as the rows not ignored are only known on the GPU). A target
    /// outside the row gives that row loss NaN. Errors as [`Context::encode`].
    #[allow(clippy::too_many_arguments)]
    pub fn encode_cross_entropy(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        logits: MatrixView<'_>,
        targets: Region<'_>,
        outputs: LossOutputs<'_>,
        shape: Shape,
        options: &Options,
        loss: &CrossEntropy,
        inputs: &RowInputs<'_>,
    ) -> Result<()> {
        if loss.reduction == crate::Reduction::Mean {
            return Err(Error::Unsupported(
                "the resident cross-entropy writes per-row losses: give Reduction::None or \
                 Sum, with one over the rows not ignored folded into grad_scale for a mean"
                    .into(),
            ));
        }
        self.gpu
            .encode_cross_entropy(
                encoder,
                (logits, targets),
                outputs,
                shape,
                options,
                (loss, loss.grad_scale, 0),
                inputs,
                0,
            )
            .map_err(|e| self.gpu.explain(e))
    }

    /// **Host path**, scoring: `log_softmax(z)[r, indices[r * k + j]]` for each row `r`
    /// of the `shape` matrix `logits` and each of its `k` indices, into `out` (`rows * k`
    /// values), without reading a row back; `z` as for softmax (soft-cap, temperature,
    /// mask, lengths, causal). An index outside `[0, cols)` is refused before any GPU
    /// work.
    #[allow(clippy::too_many_arguments)]
    pub async fn gather_log_probs<T: Element>(
        &self,
        logits: &[T],
        indices: &[i64],
        k: usize,
        out: &mut [f32],
        shape: Shape,
        options: &Options,
        inputs: HostInputs<'_>,
    ) -> Result<()> {
        self.host()
            .gather_log_probs(logits, indices, k, out, shape, options, inputs)
            .await
    }

    /// **Resident path**, scoring: records [`Context::gather_log_probs`] with the
    /// indices (i32, `[rows, k]`) read from the app's `indices` and the log-probabilities
    /// (f32, `[rows, k]`) written to `out`. An index outside the row gives NaN. Errors as
    /// [`Context::encode`].
    #[allow(clippy::too_many_arguments)]
    pub fn encode_gather_log_probs(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        logits: MatrixView<'_>,
        indices: Region<'_>,
        k: u32,
        out: Region<'_>,
        shape: Shape,
        options: &Options,
        inputs: &RowInputs<'_>,
    ) -> Result<()> {
        if k == 0 {
            return Ok(());
        }
        if inputs.stats.is_some() {
            return Err(Error::Unsupported(
                "the gather takes no row statistics".into(),
            ));
        }
        self.gpu
            .encode_cross_entropy(
                encoder,
                (logits, indices),
                LossOutputs::new(out),
                shape,
                options,
                (&CrossEntropy::default(), 1.0, k),
                inputs,
                0,
            )
            .map_err(|e| self.gpu.explain(e))
    }

    /// **Resident path**, backward through a soft-cap: [`Context::encode_backward`] for
    /// options with [`Options::softcap`], given the forward op's `logits` (f32, the
    /// shape's; they must not overlap `grad`), whose cap's slope `1 - tanh(x / C)^2`
    /// multiplies `dx`. The logits are bound whole, so they must fit one storage binding
    /// (the host path's chunks always do). (The plain backward pass refuses a soft-cap,
    /// as it cannot see the logits.)
    pub fn encode_backward_capped(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        logits: MatrixView<'_>,
        y: MatrixView<'_>,
        grad: MatrixView<'_>,
        shape: Shape,
        options: &Options,
    ) -> Result<()> {
        self.gpu
            .encode_backward(encoder, (Some(logits), y), grad, shape, options)
            .map_err(|e| self.gpu.explain(e))
    }

    /// **Host path**, backward through a soft-cap: [`Context::run_backward`] for options
    /// with [`Options::softcap`], given the forward op's `logits`.
    pub async fn run_backward_capped<T: Element, U: Element>(
        &self,
        logits: &[f32],
        y: &[T],
        dy: &[U],
        dx: &mut [U],
        shape: Shape,
        options: &Options,
    ) -> Result<()> {
        self.host()
            .run_backward((Some(logits), y), dy, dx, shape, options)
            .await
    }

    /// The device the context records work on.
    pub fn device(&self) -> &wgpu::Device {
        &self.gpu.device
    }

    /// The queue the host path submits to.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.gpu.queue
    }

    /// The adapter's name, backend, type and driver.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.gpu.info
    }

    /// The context's settings.
    pub fn options(&self) -> &ContextOptions {
        &self.options
    }

    /// Bytes of GPU memory held between calls: the host path's staging pool (what the
    /// largest recent calls used: a streaming call holds at most two chunk slots, each a
    /// device buffer and a readback buffer of [`ContextOptions::host_chunk_bytes`],
    /// rounded up to a power of two).
    pub fn staging_bytes(&self) -> u64 {
        self.staging.bytes()
    }

    /// Drops the cached bindings of recent calls. A context keeps the uniform buffer and
    /// bind groups of its 16 most recent distinct calls, so that a repeated call (same
    /// buffers, shape and options) creates no GPU object; they hold references to the
    /// buffers they name until newer calls push them out, or until this is called.
    pub fn clear_cached_bindings(&self) {
        self.gpu.kernels.clear_bindings();
    }

    fn host(&self) -> Host<'_> {
        Host {
            gpu: &self.gpu,
            staging: &self.staging,
            poller: &self.poller,
            chunk_bytes: self.options.host_chunk_bytes,
        }
    }
}

/// Internals for tests, benchmarks and the tools (the `internals` feature); not part of
/// the stable API.
#[cfg(feature = "internals")]
#[doc(hidden)]
impl Context {
    /// What the planner knows of the device.
    pub fn caps(&self) -> &crate::plan::DeviceCaps {
        &self.gpu.caps
    }

    /// The plan of a sampling call over a contiguous `[rows, cols]` matrix of `dtype`.
    pub fn sample_plan(
        &self,
        shape: Shape,
        dtype: crate::Dtype,
        options: &Options,
    ) -> Result<crate::plan::Plan> {
        let placement = crate::plan::Placement {
            offset: 0,
            row_stride: shape.cols,
            elem_bytes: dtype.size(),
        };
        self.gpu.sample_plan(shape, placement, options)
    }

    /// Whether the host path's poller thread is running (native targets).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn poller_running(&self) -> bool {
        self.poller.is_running()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(device_type: wgpu::DeviceType, backend: wgpu::Backend) -> wgpu::AdapterInfo {
        wgpu::AdapterInfo::new(device_type, backend)
    }

    #[test]
    fn discrete_gpus_rank_before_software_and_vulkan_before_gl() {
        let mut v = [
            info(wgpu::DeviceType::Cpu, wgpu::Backend::Gl),
            info(wgpu::DeviceType::Cpu, wgpu::Backend::Vulkan),
            info(wgpu::DeviceType::IntegratedGpu, wgpu::Backend::Vulkan),
            info(wgpu::DeviceType::DiscreteGpu, wgpu::Backend::Gl),
        ];
        v.sort_by_key(adapter_rank);
        assert_eq!(v[0].device_type, wgpu::DeviceType::DiscreteGpu);
        assert_eq!(v[1].device_type, wgpu::DeviceType::IntegratedGpu);
        assert_eq!(v[2].backend, wgpu::Backend::Vulkan);
        assert_eq!(v[3].backend, wgpu::Backend::Gl);
    }
}
