//! WGSL sources and the pipeline cache.
//!
//! Each kernel is `shaders/common/softmax_common.wgsl` followed by the kernel's own file;
//! the kernel's file name, entry point, pipeline label and [`RowKernel`] agree. Variants
//! (log-softmax, vec4 access, workgroup size, masked-row policy) are WGSL `override`
//! constants set at pipeline creation, never edits of the WGSL text.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::plan::RowKernel;

const COMMON: &str = include_str!("../shaders/common/softmax_common.wgsl");

/// The WGSL source of a kernel, as compiled (common helpers plus the kernel's file).
pub fn kernel_source(kernel: RowKernel) -> String {
    let own = match kernel {
        RowKernel::ThreadPerRow => include_str!("../shaders/softmax_thread_row.wgsl"),
        RowKernel::SubgroupPerRow => include_str!("../shaders/softmax_subgroup_row.wgsl"),
        RowKernel::WorkgroupShared => include_str!("../shaders/softmax_workgroup_shared.wgsl"),
        RowKernel::WorkgroupSubgroup => {
            include_str!("../shaders/softmax_workgroup_subgroup.wgsl")
        }
    };
    format!("{COMMON}\n{own}")
}

/// The entry point (and pipeline label) of a kernel.
pub fn entry_point(kernel: RowKernel) -> &'static str {
    match kernel {
        RowKernel::ThreadPerRow => "softmax_thread_row",
        RowKernel::SubgroupPerRow => "softmax_subgroup_row",
        RowKernel::WorkgroupShared => "softmax_workgroup_shared",
        RowKernel::WorkgroupSubgroup => "softmax_workgroup_subgroup",
    }
}

/// The bandwidth baseline kernel (`shaders/copy_vec4.wgsl`).
pub const COPY_VEC4_SOURCE: &str = include_str!("../shaders/copy_vec4.wgsl");

/// The uniform block of the softmax kernels (`Params` in `softmax_common.wgsl`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub rows: u32,
    pub cols: u32,
    pub src_stride: u32,
    pub dst_stride: u32,
    pub src_offset: u32,
    pub dst_offset: u32,
    pub grid_x: u32,
    pub inv_temperature: f32,
}

/// Everything that selects a distinct compiled pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PipelineKey {
    pub kernel: RowKernel,
    pub workgroup_size: u32,
    pub vec4: bool,
    pub log: bool,
    pub masked_rows_zero: bool,
}

/// Runs `f` inside validation, out-of-memory and internal error scopes and returns the
/// first error caught. On native wgpu the popped scopes resolve at once.
pub(crate) fn scoped<T>(device: &wgpu::Device, f: impl FnOnce() -> T) -> Result<T> {
    let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let internal = device.push_error_scope(wgpu::ErrorFilter::Internal);
    let value = f();
    let internal = internal.pop();
    let validation = validation.pop();
    let oom = oom.pop();
    let errors = pollster::block_on(async { (internal.await, validation.await, oom.await) });
    match errors {
        (None, None, None) => Ok(value),
        (_, _, Some(e)) | (_, Some(e), None) | (Some(e), None, None) => Err(Error::from_wgpu(e)),
    }
}

/// Bind group layout, pipeline layout and the lazily built pipelines of one device.
pub(crate) struct Kernels {
    device: wgpu::Device,
    pub layout: wgpu::BindGroupLayout,
    pipeline_layout: wgpu::PipelineLayout,
    modules: Mutex<HashMap<RowKernel, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>>,
    /// Bound to the vec4 views when a plan does not use them.
    pub dummy: wgpu::Buffer,
}

impl Kernels {
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        scoped(device, || {
            let storage = |binding| wgpu::BindGroupLayoutEntry {
                binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only: false },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            };
            let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("wgpu-softmax bindings"),
                entries: &[
                    wgpu::BindGroupLayoutEntry {
                        binding: 0,
                        visibility: wgpu::ShaderStages::COMPUTE,
                        ty: wgpu::BindingType::Buffer {
                            ty: wgpu::BufferBindingType::Uniform,
                            has_dynamic_offset: false,
                            min_binding_size: wgpu::BufferSize::new(
                                std::mem::size_of::<Params>() as u64
                            ),
                        },
                        count: None,
                    },
                    storage(1),
                    storage(2),
                    storage(3),
                    storage(4),
                ],
            });
            let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some("wgpu-softmax pipeline layout"),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
            let dummy = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgpu-softmax unused vec4 view"),
                size: 16,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            });
            Kernels {
                device: device.clone(),
                layout,
                pipeline_layout,
                modules: Mutex::new(HashMap::new()),
                pipelines: Mutex::new(HashMap::new()),
                dummy,
            }
        })
    }

    /// The pipeline for `key`, compiled on first use and cached for the context's life.
    pub fn pipeline(&self, key: PipelineKey) -> Result<Arc<wgpu::ComputePipeline>> {
        let mut pipelines = self.pipelines.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = pipelines.get(&key) {
            return Ok(p.clone());
        }
        let mut modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        let module = match modules.get(&key.kernel) {
            Some(m) => m.clone(),
            None => {
                let source = kernel_source(key.kernel);
                let m = scoped(&self.device, || {
                    self.device
                        .create_shader_module(wgpu::ShaderModuleDescriptor {
                            label: Some(entry_point(key.kernel)),
                            source: wgpu::ShaderSource::Wgsl(source.into()),
                        })
                })?;
                modules.insert(key.kernel, m.clone());
                m
            }
        };
        drop(modules);
        let bool_constant = |b: bool| if b { 1.0 } else { 0.0 };
        let constants = [
            ("LOG_SOFTMAX", bool_constant(key.log)),
            ("MASKED_ROWS_ZERO", bool_constant(key.masked_rows_zero)),
            ("VEC4", bool_constant(key.vec4)),
            ("WORKGROUP_SIZE", f64::from(key.workgroup_size)),
        ];
        let pipeline = scoped(&self.device, || {
            self.device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(entry_point(key.kernel)),
                    layout: Some(&self.pipeline_layout),
                    module: &module,
                    entry_point: Some(entry_point(key.kernel)),
                    compilation_options: wgpu::PipelineCompilationOptions {
                        constants: &constants,
                        // Every workgroup variable is written before it is read.
                        zero_initialize_workgroup_memory: false,
                    },
                    cache: None,
                })
        })?;
        let pipeline = Arc::new(pipeline);
        pipelines.insert(key, pipeline.clone());
        Ok(pipeline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_block_is_32_bytes_like_the_wgsl_struct() {
        assert_eq!(std::mem::size_of::<Params>(), 32);
    }

    #[test]
    fn entry_points_match_file_names() {
        for k in RowKernel::ALL {
            let src = kernel_source(k);
            assert!(src.contains(&format!("fn {}(", entry_point(k))), "{k:?}");
        }
    }
}
