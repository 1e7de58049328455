//! Picking an adapter and device, or wrapping the app's own.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::host::ScratchPool;
use crate::kernels::Kernels;
use crate::plan::DeviceCaps;

/// Settings of a [`Context`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ContextOptions {
    /// How long a host-API call waits for the GPU before returning [`Error::Timeout`].
    pub timeout: Duration,
    /// The host API moves matrices through the GPU in chunks of about this many bytes
    /// (two chunks in flight, so upload, compute and readback overlap). At least one row
    /// per chunk.
    pub host_chunk_bytes: u64,
}

impl Default for ContextOptions {
    fn default() -> Self {
        ContextOptions {
            timeout: Duration::from_secs(120),
            host_chunk_bytes: 32 << 20,
        }
    }
}

/// A device and queue with the softmax pipelines built for them.
///
/// Cheap to share: it is `Send + Sync`, and host-API calls from several threads run
/// concurrently (each takes its own staging buffers from a pool).
pub struct Context {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) info: wgpu::AdapterInfo,
    pub(crate) caps: DeviceCaps,
    pub(crate) kernels: Kernels,
    pub(crate) scratch: ScratchPool,
    pub(crate) options: ContextOptions,
    /// Set by the device-lost callback of a device this context created.
    pub(crate) lost: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("adapter", &self.info.name)
            .field("backend", &self.info.backend)
            .field("caps", &self.caps)
            .finish_non_exhaustive()
    }
}

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

/// The optional features the kernels and benchmarks use when the adapter has them (the
/// report times kernels with timestamps written on the encoder).
fn wanted_features() -> wgpu::Features {
    wgpu::Features::SUBGROUP
        | wgpu::Features::TIMESTAMP_QUERY
        | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS
        | wgpu::Features::SHADER_F16
}

impl Context {
    /// Picks the best adapter (discrete GPU, then any hardware, then software; only the
    /// backends named by `WGPU_BACKEND` when it is set), creates a device with every
    /// limit the adapter offers, and builds the kernels.
    pub async fn new() -> Result<Self> {
        Self::with_options(ContextOptions::default()).await
    }

    /// [`Context::new`] with settings.
    pub async fn with_options(options: ContextOptions) -> Result<Self> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all());
        let mut adapters = instance.enumerate_adapters(backends).await;
        adapters.sort_by_key(|a| adapter_rank(&a.get_info()));
        let adapter = adapters.into_iter().next().ok_or_else(|| {
            Error::NoAdapter(format!(
                "no adapter on backends {backends:?} (set WGPU_BACKEND, or install a Vulkan \
                 or GL driver such as Mesa's lavapipe or llvmpipe)"
            ))
        })?;
        let features = adapter.features() & wanted_features();
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

    /// Blocking [`Context::new`] (native targets).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking() -> Result<Self> {
        pollster::block_on(Self::new())
    }

    /// Blocking [`Context::with_options`] (native targets).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn with_options_blocking(options: ContextOptions) -> Result<Self> {
        pollster::block_on(Self::with_options(options))
    }

    /// Wraps the app's own device and queue: no second device, no error handler or
    /// device-lost callback installed (the app keeps its own). The kernels use the
    /// device's enabled features and limits.
    pub fn from_device(device: &wgpu::Device, queue: &wgpu::Queue) -> Result<Self> {
        Self::from_device_with_options(device, queue, ContextOptions::default())
    }

    /// [`Context::from_device`] with settings.
    pub fn from_device_with_options(
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
        let kernels = Kernels::new(&device)?;
        Ok(Context {
            info: device.adapter_info(),
            caps: DeviceCaps::of_device(&device),
            kernels,
            scratch: ScratchPool::default(),
            device,
            queue,
            options,
            lost,
        })
    }

    /// The device the context records work on.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The queue the host API submits to.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// The adapter's name, backend, type and driver.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// What the planner knows of the device.
    pub fn caps(&self) -> &DeviceCaps {
        &self.caps
    }

    /// The context's settings.
    pub fn options(&self) -> &ContextOptions {
        &self.options
    }

    /// The device-lost message, if the device this context created was lost.
    pub(crate) fn lost_reason(&self) -> Option<String> {
        self.lost.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reports a GPU error on a device known to be lost as [`Error::DeviceLost`]: once
    /// the device is gone, every call fails with some validation or map error, and the
    /// loss is the cause worth telling.
    pub(crate) fn explain(&self, error: Error) -> Error {
        match (&error, self.lost_reason()) {
            (
                Error::Validation(_)
                | Error::Map(_)
                | Error::Internal(_)
                | Error::OutOfMemory(_)
                | Error::Timeout(_),
                Some(reason),
            ) => Error::DeviceLost(reason),
            _ => error,
        }
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
