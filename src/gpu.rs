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
