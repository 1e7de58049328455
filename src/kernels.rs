//! The pipeline cache: modules composed from `shaders/` (see `compose.rs`), pipelines
//! with their override constants, layouts, bindings and scratch, built once per device.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use crate::compose::{MaskRead, Shader, Variant, COPY_VEC4_SOURCE};
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::wait::scoped;

/// The uniform block of the softmax kernels (`Params` in `softmax_common.wgsl`, where
/// each field is described).
#[allow(missing_docs)]
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
    pub part_cols: u32,
    pub parts: u32,
    pub part_base: u32,
    pub col_base: u32,
    pub row_base: u32,
    pub stats_first: u32,
    pub causal_offset: u32,
    pub mask_rows: u32,
    pub mask_first: u32,
    pub lengths_first: u32,
    pub temps_first: u32,
    pub col_origin: u32,
    pub top_k: u32,
    pub top_p: f32,
    pub min_p: f32,
    pub seed_lo: u32,
    pub seed_hi: u32,
    pub step: u32,
    pub sample_flags: u32,
    pub ids_first: u32,
    pub logprobs_first: u32,
    pub rng_row: u32,
    pub softcap: f32,
    pub targets_first: u32,
    pub losses_first: u32,
    pub ignore_index: u32,
    pub smoothing: f32,
    pub z_loss: f32,
    pub grad_scale: f32,
    pub ce_flags: u32,
    pub gather_k: u32,
    pub logits_stride: u32,
}

impl Params {
    /// Each field's name and byte offset, for the reflection test that checks them
    /// against the WGSL struct (`tests/variants.rs`).
    pub const FIELDS: [(&'static str, usize); 40] = [
        ("rows", std::mem::offset_of!(Params, rows)),
        ("cols", std::mem::offset_of!(Params, cols)),
        ("src_stride", std::mem::offset_of!(Params, src_stride)),
        ("dst_stride", std::mem::offset_of!(Params, dst_stride)),
        ("src_offset", std::mem::offset_of!(Params, src_offset)),
        ("dst_offset", std::mem::offset_of!(Params, dst_offset)),
        ("grid_x", std::mem::offset_of!(Params, grid_x)),
        (
            "inv_temperature",
            std::mem::offset_of!(Params, inv_temperature),
        ),
        ("part_cols", std::mem::offset_of!(Params, part_cols)),
        ("parts", std::mem::offset_of!(Params, parts)),
        ("part_base", std::mem::offset_of!(Params, part_base)),
        ("col_base", std::mem::offset_of!(Params, col_base)),
        ("row_base", std::mem::offset_of!(Params, row_base)),
        ("stats_first", std::mem::offset_of!(Params, stats_first)),
        ("causal_offset", std::mem::offset_of!(Params, causal_offset)),
        ("mask_rows", std::mem::offset_of!(Params, mask_rows)),
        ("mask_first", std::mem::offset_of!(Params, mask_first)),
        ("lengths_first", std::mem::offset_of!(Params, lengths_first)),
        ("temps_first", std::mem::offset_of!(Params, temps_first)),
        ("col_origin", std::mem::offset_of!(Params, col_origin)),
        ("top_k", std::mem::offset_of!(Params, top_k)),
        ("top_p", std::mem::offset_of!(Params, top_p)),
        ("min_p", std::mem::offset_of!(Params, min_p)),
        ("seed_lo", std::mem::offset_of!(Params, seed_lo)),
        ("seed_hi", std::mem::offset_of!(Params, seed_hi)),
        ("step", std::mem::offset_of!(Params, step)),
        ("sample_flags", std::mem::offset_of!(Params, sample_flags)),
        ("ids_first", std::mem::offset_of!(Params, ids_first)),
        (
            "logprobs_first",
            std::mem::offset_of!(Params, logprobs_first),
        ),
        ("rng_row", std::mem::offset_of!(Params, rng_row)),
        ("softcap", std::mem::offset_of!(Params, softcap)),
        ("targets_first", std::mem::offset_of!(Params, targets_first)),
        ("losses_first", std::mem::offset_of!(Params, losses_first)),
        ("ignore_index", std::mem::offset_of!(Params, ignore_index)),
        ("smoothing", std::mem::offset_of!(Params, smoothing)),
        ("z_loss", std::mem::offset_of!(Params, z_loss)),
        ("grad_scale", std::mem::offset_of!(Params, grad_scale)),
        ("ce_flags", std::mem::offset_of!(Params, ce_flags)),
        ("gather_k", std::mem::offset_of!(Params, gather_k)),
        ("logits_stride", std::mem::offset_of!(Params, logits_stride)),
    ];
}

/// Everything that selects a distinct compiled pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PipelineKey {
    pub shader: Shader,
    pub workgroup_size: u32,
    pub vec4: bool,
    /// Register-cache slots per invocation, 0 for none (see `plan::cache_slots`).
    pub cache_slots: u32,
    pub log: bool,
    pub masked_rows_zero: bool,
    pub stats_write: bool,
    pub stats_given: bool,
    pub causal: bool,
    pub softcap: bool,
    /// How the input and the output are stored.
    pub src: Dtype,
    pub dst: Dtype,
    /// Which row inputs are bound; all false compiles the variant without their bindings.
    pub mask: bool,
    /// How the mask is stored (F32 when there is none).
    pub mask_dtype: Dtype,
    /// Whether the mask's rows start on four-element boundaries, so that it is read four
    /// elements at a time (with vec4 rows only).
    pub mask_vec4: bool,
    pub lengths: bool,
    pub temperatures: bool,
}

impl PipelineKey {
    pub fn row_inputs(&self) -> bool {
        self.mask || self.lengths || self.temperatures
    }

    /// The module this pipeline is made from.
    pub fn variant(&self) -> Variant {
        let mask = match (self.mask && self.mask_vec4, self.mask_dtype.is_half()) {
            (false, _) => MaskRead::Words,
            (true, false) => MaskRead::Vec4F32,
            (true, true) => MaskRead::Vec4Half,
        };
        Variant {
            shader: self.shader,
            src_half: self.src.is_half(),
            dst_half: self.dst.is_half(),
            row_inputs: self.row_inputs().then_some(mask),
            cache_slots: if self.shader.caches_rows() {
                self.cache_slots
            } else {
                0
            },
        }
    }
}

/// A uniform buffer holding `bytes`, written through the queue. (wgpu's
/// `create_buffer_init` maps the new buffer, and panics where the device is lost; a
/// queue write fails with an error that the caller's error scope catches.)
pub(crate) fn uniform_buffer(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    label: &str,
    bytes: &[u8],
) -> wgpu::Buffer {
    let buffer = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: (bytes.len() as u64).next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT),
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    queue.write_buffer(&buffer, 0, bytes);
    buffer
}

/// What one storage binding of a chunk holds: a buffer range, or the dummy buffer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Bound {
    Unused,
    Range(wgpu::Buffer, u64, u64),
}

/// Everything a recorded op's uniform buffer and bind groups are made from: the params
/// of every chunk, and what every chunk binds.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct BindingKey {
    pub params: Vec<u8>,
    /// Per chunk, each storage binding's number and what it holds.
    pub chunks: Vec<Vec<(u32, Bound)>>,
}

/// A recorded op's uniform buffer and bind groups, reused while the same call recurs.
pub(crate) struct Bindings {
    pub _uniforms: wgpu::Buffer,
    pub bind_groups: Vec<wgpu::BindGroup>,
}

/// Calls whose bindings are kept: repeated calls on the same buffers (an inference loop,
/// the host path's pooled staging buffers) then create no buffer and no bind group.
const BINDING_CACHE: usize = 16;

/// The bind group layout of every kernel: the params block at binding 0, then the
/// storage bindings 1-6 (input, input as vec4, output, output as vec4, partials,
/// statistics) and, with the row inputs, 7-9 (mask, lengths, temperatures). All are
/// read-write so that one buffer may be bound on both sides for in-place use. The
/// reflection test (`tests/variants.rs`) checks every variant's WGSL declares exactly
/// these. Some kernels add bindings past them (see [`Shader::extra_bindings`]).
pub fn binding_layout(row_inputs: bool, extra: &[u32]) -> Vec<wgpu::BindGroupLayoutEntry> {
    let storage_bindings = if row_inputs { 9 } else { 6 };
    let mut entries = vec![wgpu::BindGroupLayoutEntry {
        binding: 0,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: false,
            min_binding_size: wgpu::BufferSize::new(std::mem::size_of::<Params>() as u64),
        },
        count: None,
    }];
    entries.extend(
        (1..=storage_bindings)
            .chain(extra.iter().copied())
            .map(|binding| wgpu::BindGroupLayoutEntry {
                binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only: false },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            }),
    );
    entries
}

/// Byte offset in the dummy buffer of the range bound to unused storage binding
/// `binding` (1 to 11).
pub(crate) fn dummy_offset(device: &wgpu::Device, binding: u32) -> u64 {
    u64::from(binding.saturating_sub(1))
        * u64::from(device.limits().min_storage_buffer_offset_alignment.max(16))
}

/// A cache entry built at most once: its lock is held while it is built.
type Slot<T> = Arc<Mutex<Option<T>>>;

/// The slot of `key` in `map`, made empty if there is none (the map's lock is held only
/// for this).
fn slot<K: std::hash::Hash + Eq, T>(map: &Mutex<HashMap<K, Slot<T>>>, key: K) -> Slot<T> {
    map.lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key)
        .or_default()
        .clone()
}

/// Bind group layout, pipeline layout and the lazily built pipelines of one device.
pub(crate) struct Kernels {
    device: wgpu::Device,
    /// Keyed by whether the row-input bindings are present.
    #[allow(clippy::type_complexity)]
    layouts: Mutex<HashMap<(bool, &'static [u32]), (wgpu::BindGroupLayout, wgpu::PipelineLayout)>>,
    /// Keyed by shader, row inputs, whether the input and the output are 16-bit, and
    /// register-cache slots. Each entry is a slot of its own: the map's lock is held
    /// only to find a slot, and a compile holds only its slot's lock, so threads asking
    /// for other variants, built or not, never wait for it.
    modules: Mutex<HashMap<Variant, Slot<wgpu::ShaderModule>>>,
    pipelines: Mutex<HashMap<PipelineKey, Slot<Arc<wgpu::ComputePipeline>>>>,
    /// On GL, compiles queue here: wgpu's GL backend builds a pipeline under its one
    /// context lock, and panics in a thread that waits for that lock longer than 6 s,
    /// so several compiles at once could panic the last in line. Elsewhere `None`:
    /// different variants compile in parallel.
    compile_queue: Option<Mutex<()>>,
    /// Bound to the vec4 views, the partials and the statistics when unused.
    pub dummy: wgpu::Buffer,
    /// Scratch for split rows' partial statistics, grown on demand. One buffer serves
    /// every call: a device has one queue, and wgpu orders (and puts barriers between)
    /// every pass that writes it.
    partials: Mutex<Option<wgpu::Buffer>>,
    /// The bindings of the most recent distinct calls, most recent first. They hold
    /// references to the buffers they name until newer calls push them out.
    bindings: Mutex<std::collections::VecDeque<(BindingKey, Arc<Bindings>)>>,
}

impl Kernels {
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        scoped(device, || {
            // One 16-byte range per storage binding, each on its own offset boundary:
            // WebGPU refuses two writable bindings of one dispatch over the same bytes.
            let dummy = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgpu-softmax unused binding"),
                size: dummy_offset(device, 11) + 16,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            });
            Kernels {
                device: device.clone(),
                layouts: Mutex::new(HashMap::new()),
                modules: Mutex::new(HashMap::new()),
                pipelines: Mutex::new(HashMap::new()),
                compile_queue: (device.adapter_info().backend == wgpu::Backend::Gl)
                    .then(|| Mutex::new(())),
                dummy,
                partials: Mutex::new(None),
                bindings: Mutex::new(std::collections::VecDeque::new()),
            }
        })
    }

    /// The bind group layout (and pipeline layout) with or without the row-input
    /// bindings 7-9, made on first use: a device with WebGPU's default limits has room
    /// for the 6 storage bindings of plain kernels, not the 9 of kernels with row inputs.
    pub fn layout(
        &self,
        row_inputs: bool,
        extra: &'static [u32],
    ) -> Result<(wgpu::BindGroupLayout, wgpu::PipelineLayout)> {
        let mut layouts = self.layouts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = layouts.get(&(row_inputs, extra)) {
            return Ok(l.clone());
        }
        let storage_bindings = binding_layout(row_inputs, extra).len() as u32 - 1;
        let allowed = self.device.limits().max_storage_buffers_per_shader_stage;
        if allowed < storage_bindings {
            return Err(Error::Unsupported(format!(
                "this op's inputs need {storage_bindings} storage buffers per shader stage; \
                 the device allows {allowed} (ask for a higher \
                 max_storage_buffers_per_shader_stage)"
            )));
        }
        let layout = scoped(&self.device, || {
            let entries = binding_layout(row_inputs, extra);
            let bind_group_layout =
                self.device
                    .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                        label: Some("wgpu-softmax bindings"),
                        entries: &entries,
                    });
            let pipeline_layout =
                self.device
                    .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                        label: Some("wgpu-softmax pipeline layout"),
                        bind_group_layouts: &[Some(&bind_group_layout)],
                        immediate_size: 0,
                    });
            (bind_group_layout, pipeline_layout)
        })?;
        layouts.insert((row_inputs, extra), layout.clone());
        Ok(layout)
    }

    /// The cached bindings of `key`, moved to the front.
    pub fn cached_bindings(&self, key: &BindingKey) -> Option<Arc<Bindings>> {
        let mut cache = self.bindings.lock().unwrap_or_else(|p| p.into_inner());
        let i = cache.iter().position(|(k, _)| k == key)?;
        let entry = cache.remove(i)?;
        let found = entry.1.clone();
        cache.push_front(entry);
        Some(found)
    }

    /// Keeps `bindings` for `key`, dropping the least recent beyond the cache's size.
    pub fn cache_bindings(&self, key: BindingKey, bindings: Arc<Bindings>) {
        let mut cache = self.bindings.lock().unwrap_or_else(|p| p.into_inner());
        cache.push_front((key, bindings));
        cache.truncate(BINDING_CACHE);
    }

    /// Drops every cached binding (and with them their references to buffers).
    pub fn clear_bindings(&self) {
        self.bindings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// The partials scratch buffer, at least `bytes` long.
    pub fn partials(&self, bytes: u64) -> Result<wgpu::Buffer> {
        let mut slot = self.partials.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = slot.as_ref().filter(|b| b.size() >= bytes) {
            return Ok(b.clone());
        }
        let buffer = scoped(&self.device, || {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgpu-softmax split partials"),
                size: bytes.max(16).next_power_of_two(),
                // Copy destination: a split draw zeroes its rows' state first.
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })?;
        *slot = Some(buffer.clone());
        Ok(buffer)
    }

    /// The pipeline for `key`, compiled on first use and cached for the context's life.
    /// Only callers asking for the same key wait while it compiles.
    pub fn pipeline(&self, key: PipelineKey) -> Result<Arc<wgpu::ComputePipeline>> {
        let entry = slot(&self.pipelines, key);
        let mut built = entry.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = built.as_ref() {
            return Ok(p.clone());
        }
        let _queue = self
            .compile_queue
            .as_ref()
            .map(|q| q.lock().unwrap_or_else(|p| p.into_inner()));
        let (_, pipeline_layout) = self.layout(key.row_inputs(), key.shader.extra_bindings())?;
        let variant = key.variant();
        let module_entry = slot(&self.modules, variant);
        let mut module_built = module_entry.lock().unwrap_or_else(|p| p.into_inner());
        let module = match module_built.as_ref() {
            Some(m) => m.clone(),
            None => {
                let source = variant
                    .source()
                    .map_err(|e| Error::Internal(format!("composing {variant:?}: {e}")))?;
                let descriptor = wgpu::ShaderModuleDescriptor {
                    label: Some(key.shader.entry_point()),
                    source: wgpu::ShaderSource::Wgsl(source.into()),
                };
                // Every check wgpu adds by default except the loop bound: a 64-bit
                // counter that naga's SPIR-V, MSL and HLSL writers put into every loop,
                // tested on each iteration, which may also keep a driver from unrolling
                // the kernels' fixed-length group loops (its second exit). Without it,
                // lavapipe sweeps rows of 16384 to 131072 columns at about 0.05 more of
                // the copy kernel (0.73-0.77 to 0.79-0.82, three interleaved pairs of
                // report runs). Bounds checks stay on.
                //
                // SAFETY: the bound only guards against loops that never end, and every
                // loop in these kernels ends: each counts up by a step of at least 1
                // (a workgroup or subgroup size, or a multiple) to a bound taken from the
                // params, or down by halving. plan::plan refuses rows longer than
                // plan::MAX_COLS, so no counter passes u32::MAX before its bound. The
                // largest step (plan::MAX_LOOP_STEP) is made of WGSL constants (GROUP,
                // BLOCK) and the largest workgroup, which tests/variants.rs checks are
                // the same on both sides.
                let runtime_checks = wgpu::ShaderRuntimeChecks {
                    force_loop_bounding: false,
                    ..wgpu::ShaderRuntimeChecks::checked()
                };
                let m = scoped(&self.device, || unsafe {
                    self.device
                        .create_shader_module_trusted(descriptor, runtime_checks)
                })?;
                *module_built = Some(m.clone());
                m
            }
        };
        drop(module_built);
        let bool_constant = |b: bool| if b { 1.0 } else { 0.0 };
        let mut constants = vec![
            ("LOG_SOFTMAX", bool_constant(key.log)),
            ("MASKED_ROWS_ZERO", bool_constant(key.masked_rows_zero)),
            ("VEC4", bool_constant(key.vec4)),
            ("WORKGROUP_SIZE", f64::from(key.workgroup_size)),
            ("STATS_WRITE", bool_constant(key.stats_write)),
            ("STATS_GIVEN", bool_constant(key.stats_given)),
            ("CAUSAL", bool_constant(key.causal)),
            ("SOFTCAP", bool_constant(key.softcap)),
        ];
        // These exist only in the variants that declare them.
        if key.row_inputs() {
            let mask_dtype = match key.mask_dtype {
                Dtype::F32 => 0.0,
                Dtype::F16 => 1.0,
                Dtype::Bf16 => 2.0,
            };
            constants.extend([
                ("HAS_MASK", bool_constant(key.mask)),
                ("HAS_LENGTHS", bool_constant(key.lengths)),
                ("HAS_TEMPERATURES", bool_constant(key.temperatures)),
                ("MASK_DTYPE", mask_dtype),
            ]);
        }
        if key.src.is_half() {
            constants.push(("SRC_BF16", bool_constant(key.src == Dtype::Bf16)));
        }
        if key.dst.is_half() {
            constants.push(("DST_BF16", bool_constant(key.dst == Dtype::Bf16)));
        }
        let pipeline = scoped(&self.device, || {
            self.device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(key.shader.entry_point()),
                    layout: Some(&pipeline_layout),
                    module: &module,
                    entry_point: Some(key.shader.entry_point()),
                    compilation_options: wgpu::PipelineCompilationOptions {
                        constants: &constants,
                        // Every workgroup variable is written before it is read.
                        zero_initialize_workgroup_memory: false,
                    },
                    cache: None,
                })
        })?;
        let pipeline = Arc::new(pipeline);
        *built = Some(pipeline.clone());
        Ok(pipeline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_block_is_160_bytes_like_the_wgsl_struct() {
        assert_eq!(std::mem::size_of::<Params>(), 160);
    }

    fn key(shader: Shader, cache_slots: u32, log: bool) -> PipelineKey {
        PipelineKey {
            shader,
            workgroup_size: 64,
            vec4: true,
            cache_slots,
            log,
            masked_rows_zero: false,
            stats_write: false,
            stats_given: false,
            causal: false,
            softcap: false,
            src: Dtype::F32,
            dst: Dtype::F32,
            mask: false,
            mask_dtype: Dtype::F32,
            mask_vec4: false,
            lengths: false,
            temperatures: false,
        }
    }

    /// A device of the adapter `WGPU_BACKEND` names, made for this test alone.
    fn device() -> wgpu::Device {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter =
            pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
                .expect("adapter");
        pollster::block_on(adapter.request_device(&Default::default()))
            .expect("device")
            .0
    }

    #[test]
    fn a_compile_blocks_no_thread_that_asks_for_another_pipeline() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::time::{Duration, Instant};
        // Mesa keeps built shaders in a cache on disk, which would make the slow variant
        // fast from the second run on. Only this test of the binary makes a device, so
        // the driver reads this before anything else loads it.
        std::env::set_var("MESA_SHADER_CACHE_DISABLE", "true");
        let device = device();
        let gl = device.adapter_info().backend == wgpu::Backend::Gl;
        let kernels = Arc::new(Kernels::new(&device).expect("kernels"));
        let built = key(Shader::ThreadRow, 0, false);
        kernels.pipeline(built).expect("a small pipeline");
        // The slow variant: 128 register-cache slots written out in the workgroup
        // kernel, seconds to build on the software adapters.
        let slow = key(Shader::WorkgroupShared, 128, false);
        let (started, done) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let compiling = {
            let (kernels, started, done) = (kernels.clone(), started.clone(), done.clone());
            std::thread::spawn(move || {
                started.store(true, Ordering::SeqCst);
                let t = Instant::now();
                kernels.pipeline(slow).expect("the slow pipeline");
                done.store(true, Ordering::SeqCst);
                t.elapsed()
            })
        };
        while !started.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_millis(50));
        // A built pipeline comes back while the slow one is still compiling.
        let t = Instant::now();
        kernels.pipeline(built).expect("the built pipeline");
        let lookup = t.elapsed();
        let lookup_first = !done.load(Ordering::SeqCst);
        // Another variant not built yet: in parallel, except on GL, where compiles queue
        // (see `compile_queue`).
        kernels
            .pipeline(key(Shader::ThreadRow, 0, true))
            .expect("another small pipeline");
        let other_first = !done.load(Ordering::SeqCst);
        let slow_took = compiling.join().expect("thread");
        eprintln!(
            "slow compile {slow_took:.2?}; lookup of a built pipeline meanwhile {lookup:.2?}; \
             another compile finished first: {other_first} (GL: {gl})"
        );
        assert!(
            lookup_first,
            "a lookup of a built pipeline waited for another compile"
        );
        assert_eq!(other_first, !gl, "a second compile, GL: {gl}");
    }
}
