//! WGSL sources and the pipeline cache.
//!
//! Each kernel is `shaders/common/softmax_common.wgsl` followed by the kernel's own file;
//! the kernel's file name, entry point, pipeline label and [`RowKernel`] agree. Variants
//! (log-softmax, vec4 access, workgroup size, masked-row policy) are WGSL `override`
//! constants set at pipeline creation; the one edit of the WGSL text is the register
//! cache's slot count, written out slot by slot (`with_cache_slots`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::plan::RowKernel;
use crate::wait::scoped;

const COMMON: &str = include_str!("../shaders/common/softmax_common.wgsl");
const ROW_INPUTS: &str = include_str!("../shaders/common/row_inputs.wgsl");
const ROW_INPUTS_NONE: &str = include_str!("../shaders/common/row_inputs_none.wgsl");
const WORKGROUP_TREE: &str = include_str!("../shaders/common/workgroup_tree.wgsl");
const HALF: &str = include_str!("../shaders/common/half.wgsl");
const MASK_WORDS: &str = include_str!("../shaders/common/mask_words.wgsl");
const MASK_VEC4: &str = include_str!("../shaders/common/mask_vec4.wgsl");
const MASK_VEC4_HALF: &str = include_str!("../shaders/common/mask_vec4_half.wgsl");
const SRC_F32: &str = include_str!("../shaders/common/src_f32.wgsl");
const SRC_HALF: &str = include_str!("../shaders/common/src_half.wgsl");
const DST_F32: &str = include_str!("../shaders/common/dst_f32.wgsl");
const DST_HALF: &str = include_str!("../shaders/common/dst_half.wgsl");

/// One compiled WGSL entry point: its file in `shaders/` and its entry point share the
/// name. A [`RowKernel`] runs one shader, or two for split rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Shader {
    /// `softmax_thread_row`.
    ThreadRow,
    /// `softmax_subgroup_row`.
    SubgroupRow,
    /// `softmax_workgroup_shared`.
    WorkgroupShared,
    /// `softmax_workgroup_subgroup`.
    WorkgroupSubgroup,
    /// `softmax_split_stats`.
    SplitStats,
    /// `softmax_split_write`.
    SplitWrite,
    /// `softmax_backward`.
    Backward,
}

impl Shader {
    /// Every shader, for validation.
    pub const ALL: [Shader; 7] = [
        Shader::ThreadRow,
        Shader::SubgroupRow,
        Shader::WorkgroupShared,
        Shader::WorkgroupSubgroup,
        Shader::SplitStats,
        Shader::SplitWrite,
        Shader::Backward,
    ];

    /// The entry point, which is also the file name and pipeline label.
    pub fn entry_point(self) -> &'static str {
        match self {
            Shader::ThreadRow => "softmax_thread_row",
            Shader::SubgroupRow => "softmax_subgroup_row",
            Shader::WorkgroupShared => "softmax_workgroup_shared",
            Shader::WorkgroupSubgroup => "softmax_workgroup_subgroup",
            Shader::SplitStats => "softmax_split_stats",
            Shader::SplitWrite => "softmax_split_write",
            Shader::Backward => "softmax_backward",
        }
    }

    /// Whether it uses subgroup operations (`Features::SUBGROUP`).
    pub fn needs_subgroups(self) -> bool {
        matches!(self, Shader::SubgroupRow | Shader::WorkgroupSubgroup)
    }

    /// The WGSL source with f32 input and output and a mask read as words: see
    /// [`Shader::source_with_mask`].
    pub fn source(self, row_inputs: bool) -> String {
        self.source_with_mask(row_inputs, Dtype::F32, Dtype::F32, None)
    }

    /// The WGSL source as compiled: the common helpers, the input's and the output's
    /// bindings for their storage types (f32, or 16-bit words decoded by
    /// `common/half.wgsl`), the row inputs (mask, lengths, temperatures: three more
    /// bindings) or their stand-ins, the workgroup-memory trees for the shaders that use
    /// them, then the shader's own file. f16 and bf16 share their text; an override
    /// constant tells them apart. `vec4_mask` is `Some(mask dtype)` for a mask whose
    /// rows start on four-element boundaries, read four elements at a time (`None`: read
    /// as words).
    pub fn source_with_mask(
        self,
        row_inputs: bool,
        src: Dtype,
        dst: Dtype,
        vec4_mask: Option<Dtype>,
    ) -> String {
        let own = match self {
            Shader::ThreadRow => include_str!("../shaders/softmax_thread_row.wgsl"),
            Shader::SubgroupRow => include_str!("../shaders/softmax_subgroup_row.wgsl"),
            Shader::WorkgroupShared => include_str!("../shaders/softmax_workgroup_shared.wgsl"),
            Shader::WorkgroupSubgroup => {
                include_str!("../shaders/softmax_workgroup_subgroup.wgsl")
            }
            Shader::SplitStats => include_str!("../shaders/softmax_split_stats.wgsl"),
            Shader::SplitWrite => include_str!("../shaders/softmax_split_write.wgsl"),
            Shader::Backward => include_str!("../shaders/softmax_backward.wgsl"),
        };
        let inputs = if row_inputs {
            let mask = match vec4_mask {
                None => MASK_WORDS,
                Some(d) if d.is_half() => MASK_VEC4_HALF,
                Some(_) => MASK_VEC4,
            };
            format!("{ROW_INPUTS}\n{mask}")
        } else {
            ROW_INPUTS_NONE.to_string()
        };
        let src = if src.is_half() { SRC_HALF } else { SRC_F32 };
        let dst = if dst.is_half() { DST_HALF } else { DST_F32 };
        let tree = match self {
            Shader::WorkgroupShared | Shader::SplitStats | Shader::Backward => WORKGROUP_TREE,
            _ => "",
        };
        format!("{COMMON}\n{HALF}\n{src}\n{dst}\n{inputs}\n{tree}\n{own}")
    }

    /// Every distinct source text of the shader (row inputs or not, f32 or 16-bit input
    /// and output, each way of reading the mask), for validation.
    pub fn every_source(self) -> Vec<String> {
        let mut all = Vec::new();
        for src in [Dtype::F32, Dtype::F16] {
            for dst in [Dtype::F32, Dtype::F16] {
                all.push(self.source_with_mask(false, src, dst, None));
                for mask in [None, Some(Dtype::F32), Some(Dtype::F16)] {
                    all.push(self.source_with_mask(true, src, dst, mask));
                }
            }
        }
        all
    }

    /// The shaders a kernel runs, in order.
    pub fn of_kernel(kernel: RowKernel) -> &'static [Shader] {
        match kernel {
            RowKernel::ThreadPerRow => &[Shader::ThreadRow],
            RowKernel::SubgroupPerRow => &[Shader::SubgroupRow],
            RowKernel::WorkgroupShared => &[Shader::WorkgroupShared],
            RowKernel::WorkgroupSubgroup => &[Shader::WorkgroupSubgroup],
            RowKernel::SplitRow => &[Shader::SplitStats, Shader::SplitWrite],
        }
    }
}

/// The declaration of the register cache's size in `softmax_common.wgsl`.
const CACHE_SLOTS_DECLARATION: &str = "const CACHE_SLOTS: u32 = 16u;";
/// The head of a loop over the register cache's slots.
const CACHE_LOOP: &str = "for (var k = 0u; k < CACHE_SLOTS; k++) {";

/// `source` with `slots` register-cache slots: the size declared, and each loop over
/// the slots written out as one block per slot (`{ let k = 0u; ... }`, ...). The loops
/// then cost nothing where a pipeline's rows are not cached, and the cache's array is
/// only ever indexed by constants, even for more slots than a driver would unroll.
pub(crate) fn with_cache_slots(source: &str, slots: u32) -> String {
    let source = source.replace(
        CACHE_SLOTS_DECLARATION,
        &format!("const CACHE_SLOTS: u32 = {slots}u;"),
    );
    let mut out = String::with_capacity(source.len());
    let mut rest = source.as_str();
    while let Some(at) = rest.find(CACHE_LOOP) {
        out.push_str(&rest[..at]);
        let body_start = at + CACHE_LOOP.len();
        // The body ends at the brace that closes the loop's.
        let mut depth = 1;
        let mut end = body_start;
        for (i, c) in rest[body_start..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                end = body_start + i;
                break;
            }
        }
        let body = &rest[body_start..end];
        for k in 0..slots {
            out.push_str(&format!("{{\n        let k = {k}u;{body}}}\n    "));
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
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
    pub _pad: u32,
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

    /// The mask's dtype where it is read four elements at a time.
    pub fn vec4_mask(&self) -> Option<Dtype> {
        (self.mask && self.mask_vec4).then_some(self.mask_dtype)
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
    pub chunks: Vec<Vec<Bound>>,
}

/// A recorded op's uniform buffer and bind groups, reused while the same call recurs.
pub(crate) struct Bindings {
    pub _uniforms: wgpu::Buffer,
    pub bind_groups: Vec<wgpu::BindGroup>,
}

/// Calls whose bindings are kept: repeated calls on the same buffers (an inference loop,
/// the host path's pooled staging buffers) then create no buffer and no bind group.
const BINDING_CACHE: usize = 16;

/// What selects a distinct WGSL text: the shader, whether it has the row inputs,
/// whether the input and the output are 16-bit, the register-cache slots, and the mask's
/// vector access (with whether it is 16-bit).
type ModuleKey = (Shader, bool, bool, bool, u32, Option<bool>);

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
    layouts: Mutex<HashMap<bool, (wgpu::BindGroupLayout, wgpu::PipelineLayout)>>,
    /// Keyed by shader, row inputs, whether the input and the output are 16-bit, and
    /// register-cache slots. Each entry is a slot of its own: the map's lock is held
    /// only to find a slot, and a compile holds only its slot's lock, so threads asking
    /// for other variants, built or not, never wait for it.
    modules: Mutex<HashMap<ModuleKey, Slot<wgpu::ShaderModule>>>,
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
            let dummy = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgpu-softmax unused binding"),
                size: 16,
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
    ) -> Result<(wgpu::BindGroupLayout, wgpu::PipelineLayout)> {
        let mut layouts = self.layouts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = layouts.get(&row_inputs) {
            return Ok(l.clone());
        }
        let storage_bindings = if row_inputs { 9 } else { 6 };
        let allowed = self.device.limits().max_storage_buffers_per_shader_stage;
        if allowed < storage_bindings {
            return Err(Error::Unsupported(format!(
                "row inputs need {storage_bindings} storage buffers per shader stage; the \
                 device allows {allowed} (ask for a higher max_storage_buffers_per_shader_stage)"
            )));
        }
        let layout = scoped(&self.device, || {
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
                (1..=storage_bindings).map(|binding| wgpu::BindGroupLayoutEntry {
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
        layouts.insert(row_inputs, layout.clone());
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
                usage: wgpu::BufferUsages::STORAGE,
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
        let (_, pipeline_layout) = self.layout(key.row_inputs())?;
        let module_key = (
            key.shader,
            key.row_inputs(),
            key.src.is_half(),
            key.dst.is_half(),
            key.cache_slots,
            key.vec4_mask().map(Dtype::is_half),
        );
        let module_entry = slot(&self.modules, module_key);
        let mut module_built = module_entry.lock().unwrap_or_else(|p| p.into_inner());
        let module = match module_built.as_ref() {
            Some(m) => m.clone(),
            None => {
                let source = with_cache_slots(
                    &key.shader.source_with_mask(
                        key.row_inputs(),
                        key.src,
                        key.dst,
                        key.vec4_mask(),
                    ),
                    key.cache_slots,
                );
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
                // plan::MAX_COLS, so no counter passes u32::MAX before its bound.
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
    fn cache_loops_are_written_out_once_per_slot_and_validate() {
        for shader in Shader::ALL {
            let source = shader.source(false);
            assert_eq!(source.matches(CACHE_SLOTS_DECLARATION).count(), 1);
            let loops = source.matches(CACHE_LOOP).count();
            for slots in [0, 1, 4, 12, 16, 60, 128] {
                let s = with_cache_slots(&source, slots);
                assert!(!s.contains(CACHE_LOOP));
                assert!(s.contains(&format!("const CACHE_SLOTS: u32 = {slots}u;")));
                let copies = if slots == 0 { 0 } else { loops };
                assert_eq!(s.matches("let k = 0u;").count(), copies);
                let last = format!("let k = {}u;", slots.max(1) - 1);
                assert_eq!(s.matches(&last).count(), copies);
                let module = naga::front::wgsl::parse_str(&s)
                    .unwrap_or_else(|e| panic!("{shader:?} {slots}: {}", e.emit_to_string(&s)));
                let caps = if shader.needs_subgroups() {
                    naga::valid::Capabilities::SUBGROUP
                } else {
                    naga::valid::Capabilities::empty()
                };
                naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
                    .validate(&module)
                    .unwrap_or_else(|e| panic!("{shader:?} {slots}: {}", e.emit_to_string(&s)));
            }
        }
    }

    #[test]
    fn params_block_is_80_bytes_like_the_wgsl_struct() {
        assert_eq!(std::mem::size_of::<Params>(), 80);
    }

    #[test]
    fn every_kernel_has_shaders_whose_entry_points_are_in_their_source() {
        for k in RowKernel::ALL {
            for shader in Shader::of_kernel(k) {
                let src = shader.source(false);
                assert!(
                    src.contains(&format!("fn {}(", shader.entry_point())),
                    "{k:?}"
                );
                assert!(!shader.needs_subgroups() || k.needs_subgroups());
            }
        }
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
        let (started, done) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
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
        assert!(lookup_first, "a lookup of a built pipeline waited for another compile");
        assert_eq!(other_first, !gl, "a second compile, GL: {gl}");
    }
}
