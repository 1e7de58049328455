//! The device a context works on, with what the planner knows of it and its kernels:
//! what the recording and host layers share.

use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::kernels::Kernels;
use crate::plan::DeviceCaps;

/// A device and queue with the kernels built for them.
pub(crate) struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub caps: DeviceCaps,
    pub kernels: Kernels,
    /// Set by the device-lost callback of a device the context created.
    pub lost: Arc<Mutex<Option<String>>>,
}

impl Gpu {
    pub fn new(
        device: wgpu::Device,
        queue: wgpu::Queue,
        lost: Arc<Mutex<Option<String>>>,
    ) -> Result<Self> {
        let kernels = Kernels::new(&device)?;
        Ok(Gpu {
            info: device.adapter_info(),
            caps: DeviceCaps::of_device(&device),
            kernels,
            device,
            queue,
            lost,
        })
    }

    /// Refuses a buffer that has been destroyed. wgpu checks this when a bind group is
    /// made, but a repeated call reuses its cached bind groups, and a bind group naming
    /// a destroyed buffer fails only at `submit`, in the app's error handler: so every
    /// call checks every buffer it names, first calls and repeated ones alike. The
    /// check makes no GPU object (it asks wgpu-core whether the buffer still has its
    /// memory). Where the backend's hal is not compiled in (the browser), it cannot
    /// tell, and wgpu's own validation at submit is what remains.
    pub fn check_alive(&self, which: &'static str, buffer: &wgpu::Buffer) -> Result<()> {
        if destroyed(self.info.backend, buffer) {
            Err(Error::BufferDestroyed { which })
        } else {
            Ok(())
        }
    }

    /// The device-lost message, if the device this context created was lost.
    pub fn lost_reason(&self) -> Option<String> {
        self.lost.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reports a GPU error on a device known to be lost as [`Error::DeviceLost`]: once
    /// the device is gone, every call fails with some validation or map error, and the
    /// loss is the cause worth telling.
    pub fn explain(&self, error: Error) -> Error {
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

/// Whether `buffer` (of a device on `backend`) has been destroyed; false where this
/// cannot be told.
#[allow(unused_variables)]
fn destroyed(backend: wgpu::Backend, buffer: &wgpu::Buffer) -> bool {
    // SAFETY: the hal buffer is only looked up, never used, and its guard (a read lock
    // on the device's destruction lock) is dropped at once. `as_hal` gives `None` for
    // a destroyed buffer, and for one of another backend, which `backend` rules out.
    match backend {
        #[cfg(all(
            feature = "vulkan",
            any(
                windows,
                target_os = "linux",
                target_os = "android",
                target_os = "freebsd"
            )
        ))]
        wgpu::Backend::Vulkan => unsafe { buffer.as_hal::<wgpu::hal::api::Vulkan>() }.is_none(),
        #[cfg(all(
            feature = "gles",
            any(
                windows,
                target_os = "linux",
                target_os = "android",
                target_os = "freebsd"
            )
        ))]
        wgpu::Backend::Gl => unsafe { buffer.as_hal::<wgpu::hal::api::Gles>() }.is_none(),
        #[cfg(all(feature = "metal", target_vendor = "apple"))]
        wgpu::Backend::Metal => unsafe { buffer.as_hal::<wgpu::hal::api::Metal>() }.is_none(),
        #[cfg(all(feature = "dx12", windows))]
        wgpu::Backend::Dx12 => unsafe { buffer.as_hal::<wgpu::hal::api::Dx12>() }.is_none(),
        _ => false,
    }
}
