//! The bandwidth baseline: a plain `vec4` WGSL copy kernel (`shaders/copy_vec4.wgsl`),
//! the limit a memory-bound softmax is measured against, shared by the CLI, the
//! benchmarks and the report.

use crate::error::{Error, Result};
use crate::kernels::{uniform_buffer, COPY_VEC4_SOURCE};
use crate::wait::scoped;

/// Invocations per workgroup of the copy kernel.
const WORKGROUP: u32 = 256;

/// The uniform block of `copy_vec4.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct CopyParams {
    count: u32,
    grid_x: u32,
    total_invocations: u32,
    _pad: u32,
}

/// A compiled copy kernel for one device.
pub struct CopyKernel {
    device: wgpu::Device,
    queue: wgpu::Queue,
    pipeline: wgpu::ComputePipeline,
    workgroup: u32,
}

/// A copy kernel bound to one source and destination, ready to record.
pub struct BoundCopy {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    grid: [u32; 2],
}

impl CopyKernel {
    /// Builds the pipeline (errors caught and returned). The queue writes the kernel's
    /// parameters when it is bound.
    pub fn new(device: &wgpu::Device, queue: &wgpu::Queue) -> Result<Self> {
        let workgroup = WORKGROUP.min(device.limits().max_compute_invocations_per_workgroup);
        let pipeline = scoped(device, || {
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("copy_vec4"),
                source: wgpu::ShaderSource::Wgsl(COPY_VEC4_SOURCE.into()),
            });
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some("copy_vec4"),
                layout: None,
                module: &module,
                entry_point: Some("copy_vec4"),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &[("WORKGROUP_SIZE", f64::from(workgroup))],
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            })
        })?;
        Ok(CopyKernel {
            device: device.clone(),
            queue: queue.clone(),
            pipeline,
            workgroup,
        })
    }

    /// Binds a copy of the first `bytes` bytes (rounded down to 16) of `src` to `dst`.
    /// Both need `STORAGE`; the copy must fit one storage binding.
    pub fn bind(&self, src: &wgpu::Buffer, dst: &wgpu::Buffer, bytes: u64) -> Result<BoundCopy> {
        let count = u32::try_from(bytes / 16).map_err(|_| {
            Error::Unsupported(format!("a copy of {bytes} bytes exceeds u32 vec4 indices"))
        })?;
        let max_dim = self
            .device
            .limits()
            .max_compute_workgroups_per_dimension
            .max(1);
        // A 2-D grid, as one dimension stops at 65535 workgroups; the kernel's grid-stride
        // loop covers any remainder.
        let groups = count.div_ceil(self.workgroup).max(1);
        let grid_x = groups.min(max_dim);
        let grid_y = groups.div_ceil(grid_x).min(max_dim);
        let total_invocations =
            u32::try_from(u64::from(grid_x) * u64::from(grid_y) * u64::from(self.workgroup))
                .map_err(|_| {
                    Error::Unsupported(format!(
                        "a copy of {count} vec4s needs more invocations than a u32 counts"
                    ))
                })?;
        let params = CopyParams {
            count,
            grid_x,
            total_invocations,
            _pad: 0,
        };
        let size = wgpu::BufferSize::new(u64::from(count.max(1)) * 16);
        let view = |buffer| {
            wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer,
                offset: 0,
                size,
            })
        };
        let bind_group = scoped(&self.device, || {
            let uniforms = uniform_buffer(
                &self.device,
                &self.queue,
                "copy_vec4 params",
                bytemuck::bytes_of(&params),
            );
            self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("copy_vec4"),
                layout: &self.pipeline.get_bind_group_layout(0),
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: uniforms.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: view(src),
                    },
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: view(dst),
                    },
                ],
            })
        })?;
        Ok(BoundCopy {
            pipeline: self.pipeline.clone(),
            bind_group,
            grid: [grid_x, grid_y],
        })
    }
}

impl BoundCopy {
    /// Records the copy as one compute pass.
    pub fn record(&self, encoder: &mut wgpu::CommandEncoder) {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("copy_vec4"),
            timestamp_writes: None,
        });
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.grid[0], self.grid[1], 1);
    }
}
