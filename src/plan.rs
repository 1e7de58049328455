//! Planning: a pure function from (shape, memory layout, options, device limits) to the
//! kernel, workgroup size and dispatch chunks. No GPU is needed, so it is unit-tested
//! directly.

use crate::error::{Error, Result};

/// The softmax kernels, one WGSL file each in `shaders/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RowKernel {
    /// One invocation per row (`softmax_thread_row.wgsl`): short rows, no barriers.
    ThreadPerRow,
    /// One subgroup per row, several rows per workgroup (`softmax_subgroup_row.wgsl`):
    /// medium rows, no barriers. Needs `Features::SUBGROUP`.
    SubgroupPerRow,
    /// One workgroup per row, reductions in workgroup memory
    /// (`softmax_workgroup_shared.wgsl`): the portable kernel.
    WorkgroupShared,
    /// One workgroup per row, reductions with subgroup operations
    /// (`softmax_workgroup_subgroup.wgsl`): needs `Features::SUBGROUP`.
    WorkgroupSubgroup,
    /// Each row split over several workgroups (`softmax_split_stats.wgsl`, then
    /// `softmax_split_write.wgsl`): few long rows, and rows longer than one binding.
    SplitRow,
}

impl RowKernel {
    /// Every kernel, for tests that run each one.
    pub const ALL: [RowKernel; 5] = [
        RowKernel::ThreadPerRow,
        RowKernel::SubgroupPerRow,
        RowKernel::WorkgroupShared,
        RowKernel::WorkgroupSubgroup,
        RowKernel::SplitRow,
    ];

    /// Whether the kernel needs `Features::SUBGROUP`.
    pub fn needs_subgroups(self) -> bool {
        matches!(
            self,
            RowKernel::SubgroupPerRow | RowKernel::WorkgroupSubgroup
        )
    }
}

/// What kind of device the planner tunes for. Told by the adapter's driver and backend
/// ([`DeviceClass::of`]), not by `DeviceType` alone: a CPU adapter may be Mesa's
/// lavapipe or llvmpipe (which cap loop iterations), SwiftShader (in a browser) or
/// another, and each wants its own thresholds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceClass {
    /// A discrete GPU.
    DiscreteGpu,
    /// An integrated, virtual or unknown kind of GPU, and a browser's WebGPU adapter
    /// whose kind is not told.
    IntegratedGpu,
    /// Mesa's lavapipe (Vulkan on llvmpipe): subgroups of 8 lanes in CPU vectors.
    Lavapipe,
    /// Mesa's llvmpipe through GL: no subgroups.
    LlvmpipeGl,
    /// Google's SwiftShader (Chromium's CPU Vulkan, under WebGPU).
    SwiftShader,
    /// Any other CPU adapter.
    UnknownCpu,
}

impl DeviceClass {
    /// The class of an adapter.
    pub fn of(info: &wgpu::AdapterInfo) -> Self {
        let text = format!("{} {} {}", info.name, info.driver, info.driver_info).to_lowercase();
        if text.contains("llvmpipe") || text.contains("lavapipe") {
            return match info.backend {
                wgpu::Backend::Gl => DeviceClass::LlvmpipeGl,
                _ => DeviceClass::Lavapipe,
            };
        }
        if text.contains("swiftshader") {
            return DeviceClass::SwiftShader;
        }
        match info.device_type {
            wgpu::DeviceType::DiscreteGpu => DeviceClass::DiscreteGpu,
            wgpu::DeviceType::Cpu => DeviceClass::UnknownCpu,
            _ => DeviceClass::IntegratedGpu,
        }
    }

    /// Whether the adapter runs on the CPU.
    pub fn is_cpu(self) -> bool {
        !matches!(self, DeviceClass::DiscreteGpu | DeviceClass::IntegratedGpu)
    }

    /// Loop iterations one invocation may run, where the driver caps them: Mesa's
    /// llvmpipe and lavapipe stop every loop of an invocation after 65535 iterations in
    /// all (a guard against hangs), silently leaving the rest of the work undone. An
    /// unknown CPU adapter is given the same cap, in case it shares the guard.
    pub fn loop_cap(self) -> Option<u64> {
        match self {
            DeviceClass::Lavapipe | DeviceClass::LlvmpipeGl | DeviceClass::UnknownCpu => {
                Some(MESA_LOOP_ITERATIONS)
            }
            _ => None,
        }
    }
}

/// The planner's policy for one class of device: where each kernel takes over and how
/// large the register cache and workgroups are. Data, one constructor per class, kept
/// apart from the geometry (grid limits, binding sizes, column windows, alignment):
/// tuning for a device is an edit of its constructor. The GPU constructors are
/// untuned (no GPU was measured); the CPU ones were tuned on Mesa 22.3.6.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    /// vec4s each invocation may hold in registers (`CACHE_SLOTS` in
    /// `softmax_common.wgsl`): rows whose share fits are read once.
    pub cache_vec4: usize,
    /// Rows up to this many columns run one invocation per row.
    pub thread_per_row_max_cols: usize,
    /// Without subgroups: rows of any length also run one invocation per row when there
    /// are at least this many rows per CPU thread (a workgroup each: no barriers).
    pub thread_per_row_rows_per_thread: Option<usize>,
    /// A workgroup runs as one CPU task and every barrier switches through all its
    /// invocations: prefer kernels without barriers, and small workgroups where a row
    /// needs one.
    pub avoid_barriers: bool,
    /// With `avoid_barriers`: invocations of the kernels that reduce in workgroup memory
    /// (`WorkgroupShared`, `SplitRow`).
    pub barrier_workgroup: u32,
    /// With `avoid_barriers`: invocations of the workgroup kernel with subgroups, used
    /// only for rows too long for one subgroup's cache but not for this many
    /// invocations' (at least one of the largest subgroups).
    pub barrier_subgroup_workgroup: u32,
    /// Workgroups a split aims to give the device (with all rows).
    pub split_target_workgroups: usize,
}

impl Thresholds {
    /// A discrete GPU (untuned): 16 vec4 of registers per invocation, split rows over
    /// 512 workgroups, workgroups sized to cache the row.
    pub fn discrete_gpu() -> Self {
        Thresholds {
            cache_vec4: 16,
            thread_per_row_max_cols: 64,
            thread_per_row_rows_per_thread: None,
            avoid_barriers: false,
            barrier_workgroup: MAX_SHARED_WORKGROUP,
            barrier_subgroup_workgroup: MAX_SUBGROUP_WORKGROUP,
            split_target_workgroups: 512,
        }
    }

    /// An integrated GPU (untuned: the discrete GPU's policy until one is measured).
    pub fn integrated_gpu() -> Self {
        Self::discrete_gpu()
    }

    /// Mesa's lavapipe. The cache's slots live in the CPU's vector registers and stack,
    /// and reading a row once from the storage buffer (each load a loop over the lanes)
    /// matters more than the cache's size: 64 slots, capped by compile time (a pipeline
    /// of 64 slots takes up to about 5 s to build, one of 128 slots 10-14 s). Up to 128
    /// columns one invocation per row beats a subgroup per row, whose reductions cost
    /// more than the row's share of work (0.93-0.96 of the copy kernel against
    /// 0.74-0.79, three alternating runs). The workgroup kernel with subgroups runs two
    /// subgroups of 8, caching up to 4096 columns (0.88 of the copy kernel, against
    /// 0.71-0.73 sweeping); longer rows are swept by one subgroup: a workgroup of 32 or
    /// 64 caching them was no faster on average in interleaved runs and far less steady
    /// (16384 columns: 0.61-0.83 against 0.73-0.76).
    pub fn lavapipe() -> Self {
        Thresholds {
            cache_vec4: 64,
            thread_per_row_max_cols: 128,
            thread_per_row_rows_per_thread: None,
            avoid_barriers: true,
            barrier_workgroup: 32,
            barrier_subgroup_workgroup: 16,
            split_target_workgroups: 8,
        }
    }

    /// Mesa's llvmpipe through GL: as lavapipe, with 32 cache slots (wgpu's GL backend
    /// holds one lock over the context while it builds a pipeline, and panics in any
    /// other thread that waits for it longer than 6 s; 32 slots build in under 1.5 s),
    /// and one invocation per row up to 256 columns, or for longer rows when there are
    /// 64 rows per thread.
    pub fn llvmpipe_gl() -> Self {
        Thresholds {
            cache_vec4: 32,
            thread_per_row_max_cols: 256,
            thread_per_row_rows_per_thread: Some(THREAD_PER_ROW_WORKGROUP as usize),
            ..Self::lavapipe()
        }
    }

    /// SwiftShader (untuned): a CPU adapter that runs workgroups as tasks like Mesa's,
    /// without Mesa's loop cap; the GPU's cache size, since its compile times are not
    /// known.
    pub fn swiftshader() -> Self {
        Thresholds {
            cache_vec4: 16,
            thread_per_row_max_cols: 128,
            ..Self::lavapipe()
        }
    }

    /// Another CPU adapter (untuned): SwiftShader's policy.
    pub fn unknown_cpu() -> Self {
        Self::swiftshader()
    }

    /// The thresholds of a class.
    pub fn for_class(class: DeviceClass) -> Self {
        match class {
            DeviceClass::DiscreteGpu => Self::discrete_gpu(),
            DeviceClass::IntegratedGpu => Self::integrated_gpu(),
            DeviceClass::Lavapipe => Self::lavapipe(),
            DeviceClass::LlvmpipeGl => Self::llvmpipe_gl(),
            DeviceClass::SwiftShader => Self::swiftshader(),
            DeviceClass::UnknownCpu => Self::unknown_cpu(),
        }
    }
}

/// The most register-cache slots any class uses (the largest pipeline variant).
pub const MAX_CACHE_VEC4: usize = 64;

/// Invocations per workgroup of the thread-per-row kernel.
pub const THREAD_PER_ROW_WORKGROUP: u32 = 64;
/// Upper bound of `softmax_workgroup_shared`'s size (its tree arrays are this long).
pub const MAX_SHARED_WORKGROUP: u32 = 256;
/// Upper bound of `softmax_workgroup_subgroup`'s size.
pub const MAX_SUBGROUP_WORKGROUP: u32 = 1024;
/// Lower bound of the workgroup kernels' size.
pub const MIN_WORKGROUP: u32 = 32;

/// What the planner needs to know of a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceCaps {
    /// `Features::SUBGROUP` is enabled on the device.
    pub subgroups: bool,
    /// The smallest subgroup size the adapter may use.
    pub subgroup_min_size: u32,
    /// The largest subgroup size the adapter may use.
    pub subgroup_max_size: u32,
    /// What kind of device it is.
    pub class: DeviceClass,
    /// The planner's thresholds for it (by default, its class's).
    pub thresholds: Thresholds,
    /// Loop iterations one invocation may run, where the driver caps them (see
    /// [`DeviceClass::loop_cap`]); the planner spreads rows over enough invocations to
    /// stay below this.
    pub max_loop_iterations: Option<u64>,
    /// Threads a CPU adapter runs workgroups on (Mesa's default: one per CPU); 1 for
    /// hardware, where it is not used.
    pub software_threads: u32,
    /// `Limits::max_compute_workgroups_per_dimension`.
    pub max_workgroups_per_dimension: u32,
    /// `Limits::max_storage_buffer_binding_size`.
    pub max_storage_binding_size: u64,
    /// `Limits::min_storage_buffer_offset_alignment`.
    pub storage_offset_alignment: u32,
    /// `Limits::max_compute_invocations_per_workgroup`.
    pub max_invocations_per_workgroup: u32,
    /// `Limits::max_buffer_size`.
    pub max_buffer_size: u64,
    /// Whether two writable storage bindings of one dispatch may cover the same bytes
    /// (the matrix as scalars and as vec4s; in place, input and output). Native
    /// backends allow it; WebGPU refuses it ("Writable storage buffer binding aliasing
    /// found"), so in a browser rows are read and written as scalars.
    pub aliased_views: bool,
}

impl DeviceCaps {
    /// Reads the caps of a device.
    pub fn of_device(device: &wgpu::Device) -> Self {
        let limits = device.limits();
        let info = device.adapter_info();
        let class = DeviceClass::of(&info);
        DeviceCaps {
            subgroups: device.features().contains(wgpu::Features::SUBGROUP),
            subgroup_min_size: info.subgroup_min_size.max(1),
            subgroup_max_size: info.subgroup_max_size.max(info.subgroup_min_size).max(1),
            class,
            thresholds: Thresholds::for_class(class),
            max_loop_iterations: class.loop_cap(),
            software_threads: if class.is_cpu() {
                std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
            } else {
                1
            },
            max_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
            // Element indices inside a binding are u32 in WGSL: a binding of more than
            // 4 GiB (Metal allows one as large as a buffer) could hold more elements
            // than they count.
            max_storage_binding_size: limits
                .max_storage_buffer_binding_size
                .min(u64::from(u32::MAX)),
            storage_offset_alignment: limits.min_storage_buffer_offset_alignment,
            max_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
            max_buffer_size: limits.max_buffer_size,
            aliased_views: info.backend != wgpu::Backend::BrowserWebGpu,
        }
    }
}

impl DeviceCaps {
    /// WebGPU's default limits with the class's thresholds, loop cap and (for a CPU
    /// adapter) `threads` threads: a starting point for hand-built caps in tests.
    pub fn of_class(class: DeviceClass, threads: u32) -> Self {
        DeviceCaps {
            class,
            thresholds: Thresholds::for_class(class),
            max_loop_iterations: class.loop_cap(),
            software_threads: if class.is_cpu() { threads.max(1) } else { 1 },
            ..DeviceCaps::default()
        }
    }
}

impl Default for DeviceCaps {
    /// WebGPU's default limits, without subgroups.
    fn default() -> Self {
        let limits = wgpu::Limits::default();
        DeviceCaps {
            subgroups: false,
            subgroup_min_size: wgpu::MINIMUM_SUBGROUP_MIN_SIZE,
            subgroup_max_size: wgpu::MAXIMUM_SUBGROUP_MAX_SIZE,
            class: DeviceClass::IntegratedGpu,
            thresholds: Thresholds::integrated_gpu(),
            max_loop_iterations: None,
            software_threads: 1,
            max_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
            max_storage_binding_size: limits.max_storage_buffer_binding_size,
            storage_offset_alignment: limits.min_storage_buffer_offset_alignment,
            max_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
            max_buffer_size: limits.max_buffer_size,
            aliased_views: true,
        }
    }
}

/// Where a matrix lies in a buffer: byte offset of element `[0, 0]`, the distance
/// between row starts in elements, and the bytes per element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Byte offset of the first element; a multiple of the element size.
    pub offset: u64,
    /// Elements from one row start to the next; at least `cols`.
    pub row_stride: usize,
    /// Bytes per element: 4 (f32) or 2 (f16, bf16).
    pub elem_bytes: u64,
}

impl Placement {
    /// Whether rows can be read in fours: each row starts on a boundary of four
    /// elements, and so does the binding that holds it (bindings start at multiples of
    /// `align` bytes).
    fn vec4_aligned(&self, align: u64) -> bool {
        let four = 4 * self.elem_bytes;
        align.is_multiple_of(four)
            && self.offset.is_multiple_of(four)
            && self.row_stride.is_multiple_of(4)
    }
}

/// The part of a buffer one dispatch binds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BindingRange {
    /// Byte offset of the binding (a multiple of the storage offset alignment).
    pub offset: u64,
    /// Byte size of the binding.
    pub size: u64,
    /// Element offset of the chunk's first row inside the binding.
    pub first_element: u32,
}

/// One dispatch: a run of rows (or, for a split row longer than one binding, a window of
/// one row's parts) that fits one binding and one grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Index of the chunk's first row in the whole matrix.
    pub first_row: usize,
    /// Rows in the chunk.
    pub rows: u32,
    /// Split rows: the first part this dispatch covers (0 otherwise).
    pub part_base: u32,
    /// Split rows: the first column the bindings hold (0 otherwise).
    pub col_base: u64,
    /// Workgroups along x and y.
    pub grid: [u32; 2],
    /// The input range bound for this chunk.
    pub src: BindingRange,
    /// The output range bound for this chunk.
    pub dst: BindingRange,
}

/// The plan for one softmax over a matrix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The kernel used.
    pub kernel: RowKernel,
    /// Invocations per workgroup.
    pub workgroup_size: u32,
    /// Whether rows are read and written as `vec4` (scalar tail for `cols % 4`).
    pub vec4: bool,
    /// Register-cache slots (vec4s) per invocation: the fewest, as a multiple of 4 (or
    /// 1 or 2), that hold an invocation's share of a row; 0 when rows are swept instead
    /// of cached.
    pub cache_slots: u32,
    /// The dispatches, in row order.
    pub chunks: Vec<Chunk>,
    /// How rows are split, for [`RowKernel::SplitRow`].
    pub split: Option<Split>,
    /// The bytes of the matrix the plan reads and writes, against the least any plan
    /// could (each element read once and written once).
    pub traffic: Traffic,
}

/// Bytes a plan moves through memory, by construction (the row statistics, partials
/// and parameters, a few bytes per row, are not counted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Traffic {
    /// Times each input element is read: 1 for rows held in registers, 2 for rows
    /// swept twice (split rows, and rows longer than the register cache).
    pub reads_per_element: u32,
    /// Bytes read from the input.
    pub read: u64,
    /// Bytes written to the output.
    pub written: u64,
    /// The least: one read and one write of every element.
    pub least: u64,
}

impl Traffic {
    fn of(rows: usize, cols: usize, src: Placement, dst: Placement, reads: u32) -> Self {
        let elements = rows as u64 * cols as u64;
        let read = elements * src.elem_bytes;
        let written = elements * dst.elem_bytes;
        Traffic {
            reads_per_element: reads,
            read: read * u64::from(reads),
            written,
            least: read + written,
        }
    }

    /// Bytes moved over the least (1.0 when every element is read and written once).
    pub fn ratio(&self) -> f64 {
        (self.read + self.written) as f64 / self.least.max(1) as f64
    }
}

/// How a split row is cut: `parts` parts of `part_cols` columns (the last may be shorter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    /// Parts per row.
    pub parts: u32,
    /// Columns per part; a multiple of 4.
    pub part_cols: u32,
}

impl Plan {
    /// Runs of chunks to record together: for split rows, the stats pass of every chunk
    /// of a run, then the write pass of every chunk of it (the chunks of a run are the
    /// column windows of one row; otherwise each chunk is its own run).
    pub fn runs(&self) -> Vec<&[Chunk]> {
        self.chunks
            .chunk_by(|a, b| self.split.is_some() && a.first_row == b.first_row)
            .collect()
    }
}

/// Overrides of the planner's choices, for tests, benchmarks and tuning.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tuning {
    /// Use this kernel.
    pub kernel: Option<RowKernel>,
    /// Use this many invocations per workgroup.
    pub workgroup_size: Option<u32>,
    /// Split rows: aim for this many parts per row (still cut further where a part
    /// would not fit a binding or the loop cap).
    pub split_parts: Option<u32>,
}

/// The loop-iteration cap of Mesa's software rasterisers (65535), less a margin for the
/// kernels' short fixed loops (register cache, subgroup folds).
pub const MESA_LOOP_ITERATIONS: u64 = 65535 - 512;

/// Loads taken together in a sweep (`GROUP` in `softmax_common.wgsl`).
pub const LOAD_GROUP: u32 = 8;
/// Groups summed into one block of a sweep (`BLOCK` in `softmax_common.wgsl`).
pub const GROUP_BLOCK: u32 = 4;
/// The largest step a kernel's loop counts a column index up by: a block of groups of
/// vec4 loads (4 columns each) over the largest workgroup, 2^17.
pub const MAX_LOOP_STEP: u64 =
    LOAD_GROUP as u64 * GROUP_BLOCK as u64 * 4 * MAX_SUBGROUP_WORKGROUP as u64;

/// The longest row the kernels take. Their loops count u32 column indices up by steps of
/// at most [`MAX_LOOP_STEP`], so with this margin every counter stops below u32::MAX,
/// and the loops end without the loop bound wgpu would otherwise add (see
/// `kernels.rs`). Longer rows give [`Error::ShapeOverflow`].
pub const MAX_COLS: usize = (u32::MAX as u64 - 2 * MAX_LOOP_STEP) as usize;

/// Rows at least this long may be split over several workgroups when there are few rows.
pub const SPLIT_MIN_COLS: usize = 32_768;
/// Columns a split part holds at least, so that the second pass over the partials and
/// the extra launch stay small next to the part's own work.
pub const SPLIT_MIN_PART_COLS: usize = 8192;

/// Picks the kernel for a shape on a device: split rows when a few long rows could not
/// fill the device; else one invocation per row for short rows (and, where the
/// thresholds say so without subgroups, for longer rows when there are rows enough to
/// give every thread a workgroup); with subgroups, one subgroup per row while the row
/// fits the subgroup's cache, one workgroup per row beyond (avoiding barriers: a small
/// workgroup only while it can cache the row, and a subgroup sweeping longer rows);
/// without subgroups, one workgroup per row reducing in workgroup memory.
pub fn choose_kernel(rows: usize, cols: usize, caps: &DeviceCaps) -> RowKernel {
    let t = &caps.thresholds;
    if cols >= SPLIT_MIN_COLS && rows.saturating_mul(4) <= t.split_target_workgroups {
        return RowKernel::SplitRow;
    }
    let rows_to_fill = t
        .thread_per_row_rows_per_thread
        .map(|per_thread| per_thread.saturating_mul(caps.software_threads as usize));
    if cols <= t.thread_per_row_max_cols
        || (!caps.subgroups && rows_to_fill.is_some_and(|fill| rows >= fill))
    {
        RowKernel::ThreadPerRow
    } else if !caps.subgroups {
        RowKernel::WorkgroupShared
    } else if t.avoid_barriers {
        // A subgroup while it can cache the row; then a small workgroup while it can
        // (its two barriers cost less than reading the row twice); beyond, a subgroup
        // sweeping.
        let cached_by = |lanes: usize| cols / 4 <= lanes * t.cache_vec4;
        if !cached_by(caps.subgroup_min_size as usize)
            && cached_by(t.barrier_subgroup_workgroup as usize)
        {
            RowKernel::WorkgroupSubgroup
        } else {
            RowKernel::SubgroupPerRow
        }
    } else if cols <= 4 * t.cache_vec4 * caps.subgroup_min_size as usize {
        RowKernel::SubgroupPerRow
    } else {
        RowKernel::WorkgroupSubgroup
    }
}

/// Largest power of two at most `n` (n >= 1).
fn floor_pow2(n: u32) -> u32 {
    1 << (31 - n.max(1).leading_zeros())
}

/// Invocations per workgroup for a kernel and row length. For the workgroup kernels: the
/// power of two that lets the row fit the invocations' register caches (or the largest
/// allowed, for rows too long to cache), within the kernel's bounds and the device's
/// limit. For the subgroup kernel: four of the largest subgroups, from 64 to 256 (at
/// least one subgroup, within the device's limit).
pub fn workgroup_size(kernel: RowKernel, cols: usize, vec4: bool, caps: &DeviceCaps) -> u32 {
    let limit = floor_pow2(caps.max_invocations_per_workgroup);
    match kernel {
        RowKernel::ThreadPerRow => THREAD_PER_ROW_WORKGROUP.min(limit),
        RowKernel::SubgroupPerRow => (4 * caps.subgroup_max_size)
            .clamp(64, 256)
            .min(limit)
            .max(caps.subgroup_max_size.min(limit)),
        RowKernel::WorkgroupSubgroup if caps.thresholds.avoid_barriers => {
            // Few subgroups: each barrier switches through every one of them.
            caps.thresholds
                .barrier_subgroup_workgroup
                .max(caps.subgroup_max_size)
                .min(limit)
        }
        RowKernel::WorkgroupShared | RowKernel::SplitRow if caps.thresholds.avoid_barriers => {
            caps.thresholds.barrier_workgroup.min(limit)
        }
        RowKernel::SplitRow => MAX_SHARED_WORKGROUP.min(limit),
        RowKernel::WorkgroupShared | RowKernel::WorkgroupSubgroup => {
            let max = if kernel == RowKernel::WorkgroupShared {
                MAX_SHARED_WORKGROUP
            } else {
                MAX_SUBGROUP_WORKGROUP
            };
            let loads = if vec4 { cols.div_ceil(4) } else { cols };
            let wanted = loads
                .div_ceil(caps.thresholds.cache_vec4)
                .next_power_of_two();
            let wanted = wanted.clamp(MIN_WORKGROUP as usize, max as usize) as u32;
            wanted.min(limit)
        }
    }
}

/// Invocations that share one row.
fn lanes_per_row(kernel: RowKernel, workgroup_size: u32, caps: &DeviceCaps) -> u64 {
    match kernel {
        RowKernel::ThreadPerRow => 1,
        // The smallest subgroup gives each lane the most work.
        RowKernel::SubgroupPerRow => u64::from(caps.subgroup_min_size.min(workgroup_size)),
        RowKernel::WorkgroupShared | RowKernel::WorkgroupSubgroup | RowKernel::SplitRow => {
            u64::from(workgroup_size)
        }
    }
}

/// Loop iterations one invocation runs on a row: two sweeps over its share of the loads
/// (vec4s plus the scalar tail).
pub fn loop_iterations(cols: usize, vec4: bool, lanes: u64) -> u64 {
    let loads = if vec4 { cols / 4 + cols % 4 } else { cols } as u64;
    loads.div_ceil(lanes.max(1)).saturating_mul(2)
}

/// Keeps a plan within the device's loop-iteration cap: a kernel the planner chose moves
/// to one workgroup per row with enough invocations, or to split rows where no
/// workgroup has enough; a forced kernel or workgroup size that does not fit is
/// refused.
fn fit_loop_limit(
    kernel: RowKernel,
    chosen_size: u32,
    cols: usize,
    vec4: bool,
    tuning: Tuning,
    caps: &DeviceCaps,
) -> Result<(RowKernel, u32)> {
    let Some(limit) = caps.max_loop_iterations else {
        return Ok((kernel, chosen_size));
    };
    if kernel == RowKernel::SplitRow {
        // Parts are sized to the cap (split_row).
        return Ok((kernel, chosen_size));
    }
    let fits = |k, wg| loop_iterations(cols, vec4, lanes_per_row(k, wg, caps)) <= limit;
    if fits(kernel, chosen_size) {
        return Ok((kernel, chosen_size));
    }
    let refuse = || {
        Error::Unsupported(format!(
            "a row of {cols} columns needs more than {limit} loop iterations per invocation \
             with {kernel:?}, above this software adapter's cap"
        ))
    };
    if tuning.kernel.is_some() || tuning.workgroup_size.is_some() {
        return Err(refuse());
    }
    let wide = if caps.subgroups {
        RowKernel::WorkgroupSubgroup
    } else {
        RowKernel::WorkgroupShared
    };
    let max = if wide == RowKernel::WorkgroupShared {
        MAX_SHARED_WORKGROUP
    } else {
        MAX_SUBGROUP_WORKGROUP
    }
    .min(floor_pow2(caps.max_invocations_per_workgroup));
    let mut wg = chosen_size.max(MIN_WORKGROUP).min(max);
    while !fits(wide, wg) {
        if wg >= max {
            // Too long for one workgroup: split it.
            let split = RowKernel::SplitRow;
            return Ok((split, workgroup_size(split, cols, vec4, caps)));
        }
        wg *= 2;
    }
    Ok((wide, wg))
}

/// Refuses what [`DeviceCaps::of_device`] and the library's own placements never give:
/// the module is public, so a caller may build them by hand.
fn check_inputs(src: Placement, dst: Placement, caps: &DeviceCaps) -> Result<()> {
    let bad = |what: String| Err(Error::Unsupported(format!("plan: {what}")));
    for p in [src, dst] {
        if p.elem_bytes != 2 && p.elem_bytes != 4 {
            return bad(format!("{} bytes per element (2 or 4)", p.elem_bytes));
        }
    }
    let subgroup_sizes = caps.subgroup_min_size >= 1
        && caps.subgroup_min_size <= caps.subgroup_max_size
        && caps.subgroup_max_size <= wgpu::MAXIMUM_SUBGROUP_MAX_SIZE;
    if caps.subgroups && !subgroup_sizes {
        return bad(format!(
            "subgroup sizes {}..={}",
            caps.subgroup_min_size, caps.subgroup_max_size
        ));
    }
    if caps.max_workgroups_per_dimension == 0
        || caps.max_invocations_per_workgroup == 0
        || caps.max_storage_binding_size == 0
        || !caps.storage_offset_alignment.is_power_of_two()
    {
        return bad(format!("device limits {caps:?}"));
    }
    Ok(())
}

fn overflow(rows: usize, cols: usize) -> Error {
    Error::ShapeOverflow { rows, cols }
}

/// Bytes from the first element of row 0 to the end of row `rows - 1`.
fn span_bytes(rows: usize, cols: usize, stride: usize, elem_bytes: u64) -> Option<u64> {
    let elements = (rows.checked_sub(1)?)
        .checked_mul(stride)?
        .checked_add(cols)?;
    (elements as u64).checked_mul(elem_bytes)
}

/// Plans a softmax of a `[rows, cols]` matrix read at `src` and written at `dst`.
///
/// `tuning` may force a kernel or workgroup size; by default [`choose_kernel`] and
/// [`workgroup_size`] decide.
/// Expects `rows >= 1`, `cols >= 1` and placements already validated (offsets multiples
/// of the element size, strides at least `cols`). Caps or placements no device or
/// layout has (element sizes other than 2 and 4, zero or oversized limits) are refused
/// with [`Error::Unsupported`].
pub fn plan(
    rows: usize,
    cols: usize,
    src: Placement,
    dst: Placement,
    tuning: Tuning,
    caps: &DeviceCaps,
) -> Result<Plan> {
    check_inputs(src, dst, caps)?;
    if cols > MAX_COLS
        || rows
            .checked_mul(cols)
            .and_then(|n| n.checked_mul(4))
            .is_none()
    {
        return Err(overflow(rows, cols));
    }
    let kernel = tuning
        .kernel
        .unwrap_or_else(|| choose_kernel(rows, cols, caps));
    if kernel.needs_subgroups() && !caps.subgroups {
        return Err(Error::Unsupported(format!(
            "{kernel:?} needs Features::SUBGROUP, which the device lacks"
        )));
    }
    let align = u64::from(caps.storage_offset_alignment.max(4));
    let vec4 =
        caps.aliased_views && cols >= 4 && src.vec4_aligned(align) && dst.vec4_aligned(align);
    let workgroup_size = match tuning.workgroup_size {
        None => workgroup_size(kernel, cols, vec4, caps),
        Some(wg) => {
            let max = match kernel {
                RowKernel::WorkgroupShared | RowKernel::SplitRow => MAX_SHARED_WORKGROUP,
                _ => MAX_SUBGROUP_WORKGROUP,
            }
            .min(caps.max_invocations_per_workgroup);
            let min = match kernel {
                RowKernel::SubgroupPerRow => caps.subgroup_max_size,
                _ => 1,
            };
            if !wg.is_power_of_two() || wg < min || wg > max {
                return Err(Error::Unsupported(format!(
                    "workgroup size {wg} for {kernel:?}: needs a power of two in {min}..={max}"
                )));
            }
            wg
        }
    };

    let (kernel, workgroup_size) =
        fit_loop_limit(kernel, workgroup_size, cols, vec4, tuning, caps)?;
    let geometry = Geometry {
        rows,
        cols,
        src,
        dst,
        align,
        limit: caps.max_storage_binding_size,
        max_dim: u64::from(caps.max_workgroups_per_dimension.max(1)),
    };
    if kernel == RowKernel::SplitRow {
        let split = split_row(rows, cols, vec4, workgroup_size, tuning.split_parts, caps)?;
        let chunks = geometry.split_chunks(split)?;
        return Ok(Plan {
            kernel,
            workgroup_size,
            vec4,
            cache_slots: 0,
            chunks,
            split: Some(split),
            traffic: Traffic::of(rows, cols, src, dst, 2),
        });
    }
    // Rows one workgroup covers; for the subgroup kernel, as if every subgroup were as
    // large as the adapter allows (smaller subgroups cover more rows, and the extra
    // workgroups return).
    let rows_per_group = match kernel {
        RowKernel::ThreadPerRow => u64::from(workgroup_size),
        RowKernel::SubgroupPerRow => u64::from((workgroup_size / caps.subgroup_max_size).max(1)),
        _ => 1,
    };
    let by_grid = geometry
        .max_dim
        .saturating_mul(geometry.max_dim)
        .saturating_mul(rows_per_group);
    let chunks = geometry.row_chunks(by_grid, |n| {
        let groups = (n as u64).div_ceil(rows_per_group);
        let grid_x = groups.min(geometry.max_dim);
        [grid_x as u32, groups.div_ceil(grid_x) as u32]
    })?;
    let cache_slots = cache_slots(kernel, cols, vec4, workgroup_size, caps);
    let reads = if cache_slots > 0 { 1 } else { 2 };
    Ok(Plan {
        kernel,
        workgroup_size,
        vec4,
        cache_slots,
        chunks,
        split: None,
        traffic: Traffic::of(rows, cols, src, dst, reads),
    })
}

/// Register-cache slots per invocation for a kernel's rows: the invocation's share of
/// the row's vec4 body (with the fewest lanes a row may get), rounded up to a multiple
/// of 4 (to 1, 2 or 4 below that); 0 where rows are not cached (no vec4 access, split
/// rows, or a share beyond [`Thresholds::cache_vec4`]).
pub fn cache_slots(
    kernel: RowKernel,
    cols: usize,
    vec4: bool,
    workgroup_size: u32,
    caps: &DeviceCaps,
) -> u32 {
    let lanes = lanes_per_row(kernel, workgroup_size, caps);
    let share = ((cols / 4) as u64).div_ceil(lanes);
    let cap = caps.thresholds.cache_vec4.min(MAX_CACHE_VEC4);
    if !vec4 || kernel == RowKernel::SplitRow || share > cap as u64 {
        0
    } else {
        // Few pipeline variants, few empty slots: on CPU adapters an empty slot costs
        // about what a full one does.
        let share = share.max(1);
        if share <= 4 {
            share.next_power_of_two() as u32
        } else {
            share.next_multiple_of(4) as u32
        }
    }
}

/// Cuts a split row into parts: enough to fill the device (with the other rows), each of
/// at least [`SPLIT_MIN_PART_COLS`] where the row has that many (or `forced_parts`, of
/// at least 4 columns), then halved until a part fits one binding and the device's loop
/// cap.
pub fn split_row(
    rows: usize,
    cols: usize,
    vec4: bool,
    workgroup_size: u32,
    forced_parts: Option<u32>,
    caps: &DeviceCaps,
) -> Result<Split> {
    let wanted = caps
        .thresholds
        .split_target_workgroups
        .div_ceil(rows.max(1));
    let mut parts = match forced_parts {
        Some(n) => (n as usize).clamp(1, cols.div_ceil(4).max(1)),
        None => wanted.clamp(1, (cols / SPLIT_MIN_PART_COLS).max(1)),
    };
    let align = u64::from(caps.storage_offset_alignment.max(4));
    let part_cols = |parts: usize| cols.div_ceil(parts).next_multiple_of(4);
    // The write pass also loops once per part, folding the partials.
    let fits = |parts: usize| {
        let pc = part_cols(parts);
        (pc as u64 * 4 + align) <= caps.max_storage_binding_size
            && caps.max_loop_iterations.is_none_or(|cap| {
                loop_iterations(pc, vec4, u64::from(workgroup_size)) + parts as u64 <= cap
            })
    };
    while !fits(parts) {
        if part_cols(parts) <= 4 {
            return Err(Error::Unsupported(format!(
                "no split of a {cols}-column row fits this device"
            )));
        }
        parts *= 2;
    }
    let pc = part_cols(parts);
    let parts = cols.div_ceil(pc);
    let too_many = || Error::ShapeOverflow { rows, cols };
    Ok(Split {
        parts: u32::try_from(parts).map_err(|_| too_many())?,
        part_cols: u32::try_from(pc).map_err(|_| too_many())?,
    })
}

/// The layout facts chunking needs.
struct Geometry {
    rows: usize,
    cols: usize,
    src: Placement,
    dst: Placement,
    align: u64,
    limit: u64,
    max_dim: u64,
}

impl Geometry {
    fn overflow(&self) -> Error {
        overflow(self.rows, self.cols)
    }

    /// The binding of columns [c0, c1) of rows [first_row, first_row + n) at `p`.
    fn range(
        &self,
        p: Placement,
        first_row: usize,
        n: usize,
        c0: u64,
        c1: u64,
    ) -> Result<BindingRange> {
        // A stride too large to count in bytes is fine while only row 0 is bound.
        let start = (p.row_stride as u64)
            .saturating_mul(p.elem_bytes)
            .checked_mul(first_row as u64)
            .and_then(|b| b.checked_add(p.offset))
            .and_then(|b| b.checked_add(c0.checked_mul(p.elem_bytes)?))
            .ok_or_else(|| self.overflow())?;
        let bind_offset = start - start % self.align;
        let span = span_bytes(n, (c1 - c0) as usize, p.row_stride, p.elem_bytes)
            .ok_or_else(|| self.overflow())?;
        Ok(BindingRange {
            offset: bind_offset,
            // Storage bindings are whole words: 16-bit elements round up to the end of
            // the last one's word.
            size: (start - bind_offset + span).next_multiple_of(4),
            first_element: ((start - bind_offset) / p.elem_bytes) as u32,
        })
    }

    /// Rows per chunk such that r whole rows plus the slack fit one binding, or
    /// `RowTooLong`. The slack is up to `align - elem` leading bytes (the binding offset
    /// is rounded down) and, for 16-bit elements, up to 2 more to end on a whole word.
    fn rows_per_binding(&self) -> Result<u64> {
        let fits = |p: Placement| -> Result<u64> {
            let row_bytes = (self.cols as u64)
                .checked_mul(p.elem_bytes)
                .ok_or_else(|| self.overflow())?;
            let slack = self.align - p.elem_bytes + p.elem_bytes % 4;
            let needed = row_bytes.saturating_add(slack);
            let room = self.limit.checked_sub(needed).ok_or(Error::RowTooLong {
                cols: self.cols,
                bytes: needed,
                limit: self.limit,
            })?;
            // Saturated: a stride too large to count in bytes allows one row a binding.
            let stride_bytes = (p.row_stride as u64).saturating_mul(p.elem_bytes);
            Ok(room / stride_bytes.max(4) + 1)
        };
        Ok(fits(self.src)?.min(fits(self.dst)?))
    }

    /// Chunks of whole rows: at most `max_rows` each and what one binding holds.
    fn row_chunks(&self, max_rows: u64, grid: impl Fn(usize) -> [u32; 2]) -> Result<Vec<Chunk>> {
        // Row indices and element offsets inside a binding are u32 in WGSL.
        let chunk_rows = self
            .rows_per_binding()?
            .min(max_rows)
            .min(u64::from(u32::MAX) / 2)
            .max(1) as usize;
        let mut chunks = Vec::with_capacity(self.rows.div_ceil(chunk_rows));
        let mut first_row = 0usize;
        while first_row < self.rows {
            let n = chunk_rows.min(self.rows - first_row);
            let cols = self.cols as u64;
            chunks.push(Chunk {
                first_row,
                rows: n as u32,
                part_base: 0,
                col_base: 0,
                grid: grid(n),
                src: self.range(self.src, first_row, n, 0, cols)?,
                dst: self.range(self.dst, first_row, n, 0, cols)?,
            });
            first_row += n;
        }
        Ok(chunks)
    }

    /// Chunks of a split: whole rows (grid: parts x rows) where a row fits a binding;
    /// else, per row, windows of as many parts as one binding holds.
    fn split_chunks(&self, split: Split) -> Result<Vec<Chunk>> {
        let parts = u64::from(split.parts);
        if parts > self.max_dim {
            return Err(Error::Unsupported(format!(
                "{parts} parts per row exceed the dispatch limit"
            )));
        }
        if let Ok(rows_per_binding) = self.rows_per_binding() {
            return self.row_chunks(rows_per_binding.min(self.max_dim), |n| {
                [split.parts, n as u32]
            });
        }
        let part_bytes = u64::from(split.part_cols) * 4;
        let per_window = ((self.limit - self.align) / part_bytes).clamp(1, parts);
        let mut chunks = Vec::new();
        for row in 0..self.rows {
            let mut part = 0;
            while part < parts {
                let n = per_window.min(parts - part);
                let c0 = part * u64::from(split.part_cols);
                let c1 = ((part + n) * u64::from(split.part_cols)).min(self.cols as u64);
                chunks.push(Chunk {
                    first_row: row,
                    rows: 1,
                    part_base: part as u32,
                    col_base: c0,
                    grid: [n as u32, 1],
                    src: self.range(self.src, row, 1, c0, c1)?,
                    dst: self.range(self.dst, row, 1, c0, c1)?,
                });
                part += n;
            }
        }
        Ok(chunks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The register cache of the GPU classes.
    const CACHE_VEC4: usize = 16;
    /// Rows up to this long run one invocation per row on a GPU.
    const THREAD_PER_ROW_MAX_COLS: usize = 64;

    fn contiguous(cols: usize) -> Placement {
        Placement {
            offset: 0,
            row_stride: cols,
            elem_bytes: 4,
        }
    }

    fn caps_with_subgroups() -> DeviceCaps {
        DeviceCaps {
            subgroups: true,
            ..DeviceCaps::default()
        }
    }

    #[test]
    fn hand_built_caps_and_placements_no_device_has_are_refused() {
        let p = contiguous(100);
        let planned = |src: Placement, caps: DeviceCaps| {
            plan(1000, 100, src, contiguous(100), Tuning::default(), &caps)
        };
        let unsupported = |r: Result<Plan>| matches!(r, Err(Error::Unsupported(_)));
        for elem_bytes in [0, 1, 3, 8] {
            assert!(unsupported(planned(
                Placement { elem_bytes, ..p },
                DeviceCaps::default()
            )));
        }
        let bad_caps = [
            DeviceCaps {
                subgroup_max_size: 0,
                ..caps_with_subgroups()
            },
            DeviceCaps {
                subgroup_min_size: 64,
                subgroup_max_size: 32,
                ..caps_with_subgroups()
            },
            DeviceCaps {
                subgroup_max_size: 1 << 30,
                ..caps_with_subgroups()
            },
            DeviceCaps {
                max_workgroups_per_dimension: 0,
                ..DeviceCaps::default()
            },
            DeviceCaps {
                max_invocations_per_workgroup: 0,
                ..DeviceCaps::default()
            },
            DeviceCaps {
                max_storage_binding_size: 0,
                ..DeviceCaps::default()
            },
            DeviceCaps {
                storage_offset_alignment: 48,
                ..DeviceCaps::default()
            },
        ];
        for caps in bad_caps {
            assert!(unsupported(planned(p, caps)), "{caps:?}");
        }
        // Limits as large as the types allow plan without overflowing.
        let huge = DeviceCaps {
            max_workgroups_per_dimension: u32::MAX,
            max_storage_binding_size: u64::MAX,
            max_buffer_size: u64::MAX,
            ..DeviceCaps::default()
        };
        assert!(planned(p, huge).is_ok());
        let shape = |rows, cols| {
            plan(
                rows,
                cols,
                contiguous(cols),
                contiguous(cols),
                Tuning::default(),
                &huge,
            )
        };
        let overflow = |r: Result<Plan>| matches!(r, Err(Error::ShapeOverflow { .. }));
        assert!(overflow(shape(usize::MAX, 8)));
        // Rows up to MAX_COLS plan; longer ones would let a loop counter wrap.
        assert!(shape(1, MAX_COLS).is_ok());
        assert!(overflow(shape(1, MAX_COLS + 1)));
    }

    #[test]
    fn short_rows_run_one_invocation_per_row() {
        let caps = caps_with_subgroups();
        let t = THREAD_PER_ROW_MAX_COLS;
        assert_eq!(choose_kernel(1000, 1, &caps), RowKernel::ThreadPerRow);
        assert_eq!(choose_kernel(1000, t, &caps), RowKernel::ThreadPerRow);
        assert_eq!(choose_kernel(1000, t + 1, &caps), RowKernel::SubgroupPerRow);
    }

    #[test]
    fn software_adapters_avoid_barriers() {
        let caps = DeviceCaps {
            subgroups: true,
            subgroup_min_size: 8,
            subgroup_max_size: 8,
            ..DeviceCaps::of_class(DeviceClass::Lavapipe, 2)
        };
        assert_eq!(
            choose_kernel(1000, 262_144, &caps),
            RowKernel::SubgroupPerRow
        );
        assert_eq!(choose_kernel(1000, 128, &caps), RowKernel::ThreadPerRow);
        assert_eq!(choose_kernel(1000, 132, &caps), RowKernel::SubgroupPerRow);
        // Rows a subgroup of 8 caches (64 vec4 a lane: 2048 columns), then rows a
        // workgroup of two subgroups caches (4096), with its two barriers; longer rows
        // are swept by a subgroup.
        assert_eq!(choose_kernel(1000, 2048, &caps), RowKernel::SubgroupPerRow);
        assert_eq!(
            choose_kernel(1000, 2052, &caps),
            RowKernel::WorkgroupSubgroup
        );
        let wg = |cols| workgroup_size(RowKernel::WorkgroupSubgroup, cols, true, &caps);
        assert_eq!((wg(2052), wg(4096), wg(16384)), (16, 16, 16));
        assert_eq!(
            choose_kernel(1000, 4096, &caps),
            RowKernel::WorkgroupSubgroup
        );
        assert_eq!(choose_kernel(1000, 4100, &caps), RowKernel::SubgroupPerRow);
        assert_eq!(
            choose_kernel(1000, 16_384, &caps),
            RowKernel::SubgroupPerRow
        );
        let planned = |cols| {
            plan(
                100,
                cols,
                contiguous(cols),
                contiguous(cols),
                Tuning::default(),
                &caps,
            )
            .unwrap()
        };
        let p = planned(4096);
        assert_eq!(p.kernel, RowKernel::WorkgroupSubgroup);
        assert_eq!(
            p.workgroup_size,
            Thresholds::lavapipe().barrier_subgroup_workgroup
        );
        assert_eq!(p.cache_slots, 64);
        let p = planned(16384);
        assert_eq!(p.kernel, RowKernel::SubgroupPerRow);
        assert_eq!(p.cache_slots, 0);
        // Slots round up to a multiple of 4: 375 and 750 vec4 over 8 and 16 lanes.
        let slots = |cols| {
            let p = planned(cols);
            (p.kernel, p.cache_slots)
        };
        assert_eq!(slots(1500), (RowKernel::SubgroupPerRow, 48));
        assert_eq!(slots(3000), (RowKernel::WorkgroupSubgroup, 48));
        let no_subgroups = DeviceCaps {
            subgroups: false,
            ..DeviceCaps::of_class(DeviceClass::LlvmpipeGl, 2)
        };
        assert_eq!(
            choose_kernel(1000, 256, &no_subgroups),
            RowKernel::ThreadPerRow
        );
        // Without subgroups, long rows run one invocation each when there are rows
        // enough for 64 per thread, else one workgroup each.
        let four_threads = DeviceCaps {
            software_threads: 4,
            ..no_subgroups
        };
        assert_eq!(
            choose_kernel(256, 4096, &four_threads),
            RowKernel::ThreadPerRow
        );
        assert_eq!(
            choose_kernel(255, 4096, &four_threads),
            RowKernel::WorkgroupShared
        );
        assert_eq!(
            workgroup_size(RowKernel::WorkgroupShared, 100_000, true, &no_subgroups),
            Thresholds::llvmpipe_gl().barrier_workgroup
        );
    }

    #[test]
    fn software_plans_stay_under_the_loop_iteration_cap() {
        let caps = DeviceCaps {
            subgroups: true,
            subgroup_min_size: 8,
            subgroup_max_size: 8,
            max_invocations_per_workgroup: 1024,
            ..DeviceCaps::of_class(DeviceClass::Lavapipe, 2)
        };
        assert_eq!(caps.max_loop_iterations, Some(MESA_LOOP_ITERATIONS));
        for cols in [1_000_000usize, 1_000_001, 4_000_003, 8_000_003] {
            let p = plan(
                1,
                cols,
                contiguous(cols),
                contiguous(cols),
                Tuning::default(),
                &caps,
            )
            .unwrap();
            let lanes = lanes_per_row(p.kernel, p.workgroup_size, &caps);
            let swept = p.split.map_or(cols, |s| s.part_cols as usize);
            assert!(
                loop_iterations(swept, p.vec4, lanes) <= MESA_LOOP_ITERATIONS,
                "{cols}"
            );
        }
        // Enough rows, short enough, keep the barrier-free kernel; longer ones take a
        // workgroup each.
        let auto = |cols| {
            let c = contiguous(cols);
            plan(8, cols, c, c, Tuning::default(), &caps)
                .unwrap()
                .kernel
        };
        assert_eq!(auto(200_001), RowKernel::SubgroupPerRow);
        assert_eq!(auto(1_000_001), RowKernel::WorkgroupSubgroup);
        // A forced kernel that cannot fit is refused rather than run short.
        let forced = Tuning {
            kernel: Some(RowKernel::ThreadPerRow),
            workgroup_size: None,
            split_parts: None,
        };
        let e = plan(
            1,
            65_535,
            contiguous(65_535),
            contiguous(65_535),
            forced,
            &caps,
        )
        .unwrap_err();
        assert!(matches!(e, Error::Unsupported(_)));
    }

    #[test]
    fn few_long_rows_are_split_over_many_workgroups() {
        let caps = caps_with_subgroups();
        assert_eq!(choose_kernel(1, 262_144, &caps), RowKernel::SplitRow);
        assert_eq!(
            choose_kernel(1, 32_000, &caps),
            RowKernel::WorkgroupSubgroup
        );
        assert_eq!(
            choose_kernel(4096, 262_144, &caps),
            RowKernel::WorkgroupSubgroup
        );
        let p = plan(
            1,
            262_144,
            contiguous(262_144),
            contiguous(262_144),
            Tuning::default(),
            &caps,
        )
        .unwrap();
        let split = p.split.unwrap();
        assert_eq!(split.parts, 262_144 / SPLIT_MIN_PART_COLS as u32);
        assert_eq!(split.part_cols % 4, 0);
        assert_eq!(p.chunks.len(), 1);
        assert_eq!(p.chunks[0].grid, [split.parts, 1]);
    }

    #[test]
    fn a_row_longer_than_a_binding_is_split_into_column_windows() {
        let caps = DeviceCaps {
            max_storage_binding_size: 1 << 20,
            ..DeviceCaps::default()
        };
        let cols = 1_000_003; // 4 MB a row, four times the binding limit
        let src = Placement {
            offset: 64,
            row_stride: cols + 5,
            elem_bytes: 4,
        };
        let p = plan(2, cols, src, contiguous(cols), Tuning::default(), &caps).unwrap();
        assert_eq!(p.kernel, RowKernel::SplitRow);
        let split = p.split.unwrap();
        let runs = p.runs();
        assert_eq!(runs.len(), 2);
        for (row, run) in runs.iter().enumerate() {
            let mut next_part = 0;
            for c in *run {
                assert_eq!(c.first_row, row);
                assert_eq!(c.part_base, next_part);
                assert_eq!(
                    c.col_base,
                    u64::from(c.part_base) * u64::from(split.part_cols)
                );
                next_part += c.grid[0];
                for r in [c.src, c.dst] {
                    assert!(r.size <= caps.max_storage_binding_size);
                }
            }
            assert_eq!(next_part, split.parts);
        }
    }

    #[test]
    fn medium_rows_take_a_subgroup_while_they_fit_its_cache() {
        let caps = DeviceCaps {
            subgroup_min_size: 8,
            subgroup_max_size: 8,
            ..caps_with_subgroups()
        };
        // A subgroup caches 4 * CACHE_VEC4 columns per lane.
        let fits = 4 * CACHE_VEC4 * 8;
        assert_eq!(choose_kernel(1000, fits, &caps), RowKernel::SubgroupPerRow);
        assert_eq!(
            choose_kernel(1000, fits + 1, &caps),
            RowKernel::WorkgroupSubgroup
        );
        let wide = DeviceCaps {
            subgroup_min_size: 32,
            subgroup_max_size: 32,
            ..caps
        };
        let fits = 4 * CACHE_VEC4 * 32;
        assert_eq!(choose_kernel(1000, fits, &wide), RowKernel::SubgroupPerRow);
        assert_eq!(
            choose_kernel(1000, fits + 1, &wide),
            RowKernel::WorkgroupSubgroup
        );
    }

    #[test]
    fn without_subgroups_long_rows_use_workgroup_memory() {
        let caps = DeviceCaps::default();
        let t = THREAD_PER_ROW_MAX_COLS;
        assert_eq!(
            choose_kernel(1000, t + 1, &caps),
            RowKernel::WorkgroupShared
        );
        assert_eq!(
            choose_kernel(1000, 200_001, &caps),
            RowKernel::WorkgroupShared
        );
    }

    #[test]
    fn forcing_the_subgroup_kernel_without_the_feature_is_an_error() {
        let p = plan(
            1,
            64,
            contiguous(64),
            contiguous(64),
            Tuning {
                kernel: Some(RowKernel::WorkgroupSubgroup),
                workgroup_size: None,
                split_parts: None,
            },
            &DeviceCaps::default(),
        );
        assert!(matches!(p, Err(Error::Unsupported(_))));
    }

    #[test]
    fn workgroup_size_is_a_power_of_two_within_bounds() {
        let caps = DeviceCaps::default();
        for cols in [1, 5, 33, 100, 1000, 4096, 100_000, 1_000_000] {
            for vec4 in [false, true] {
                let wg = workgroup_size(RowKernel::WorkgroupShared, cols, vec4, &caps);
                assert!(wg.is_power_of_two(), "{cols} {vec4} -> {wg}");
                assert!((MIN_WORKGROUP..=MAX_SHARED_WORKGROUP).contains(&wg));
                let wg = workgroup_size(RowKernel::WorkgroupSubgroup, cols, vec4, &caps);
                assert!(wg.is_power_of_two(), "{cols} {vec4} -> {wg}");
                assert!(wg <= caps.max_invocations_per_workgroup);
            }
        }
        let small = DeviceCaps {
            max_invocations_per_workgroup: 100,
            ..caps
        };
        assert_eq!(
            workgroup_size(RowKernel::WorkgroupShared, 1_000_000, true, &small),
            64
        );
    }

    #[test]
    fn a_forced_workgroup_size_must_be_a_power_of_two_within_bounds() {
        let caps = DeviceCaps::default();
        let with = |kernel, wg| Tuning {
            kernel: Some(kernel),
            workgroup_size: Some(wg),
            split_parts: None,
        };
        let p = |t| plan(2, 100, contiguous(100), contiguous(100), t, &caps);
        assert_eq!(
            p(with(RowKernel::WorkgroupShared, 64))
                .unwrap()
                .workgroup_size,
            64
        );
        for wg in [0, 48, 512] {
            let e = p(with(RowKernel::WorkgroupShared, wg)).unwrap_err();
            assert!(matches!(e, Error::Unsupported(_)), "{wg}");
        }
    }

    #[test]
    fn cached_rows_get_enough_invocations() {
        let caps = DeviceCaps {
            max_invocations_per_workgroup: 1024,
            ..caps_with_subgroups()
        };
        for cols in [300, 1024, 4096, 8192, 32000] {
            let wg = workgroup_size(RowKernel::WorkgroupSubgroup, cols, true, &caps) as usize;
            assert!(cols.div_ceil(4) <= wg * CACHE_VEC4, "{cols} -> {wg}");
        }
    }

    #[test]
    fn the_subgroup_kernel_grid_covers_rows_for_the_largest_subgroups() {
        let caps = DeviceCaps {
            subgroup_min_size: 8,
            subgroup_max_size: 64,
            ..caps_with_subgroups()
        };
        let p = plan(
            1000,
            100,
            contiguous(100),
            contiguous(100),
            Tuning::default(),
            &caps,
        )
        .unwrap();
        assert_eq!(p.kernel, RowKernel::SubgroupPerRow);
        let rows_per_group = (p.workgroup_size / 64) as usize;
        let groups = p.chunks[0].grid[0] as usize * p.chunks[0].grid[1] as usize;
        assert!(groups * rows_per_group >= 1000);
    }

    #[test]
    fn vec4_needs_16_byte_rows_and_offsets() {
        let caps = DeviceCaps::default();
        let p = |cols, src: Placement, dst: Placement| {
            plan(2, cols, src, dst, Tuning::default(), &caps)
                .unwrap()
                .vec4
        };
        assert!(p(64, contiguous(64), contiguous(64)));
        assert!(p(66, contiguous(68), contiguous(68)));
        assert!(!p(66, contiguous(66), contiguous(66)));
        assert!(!p(3, contiguous(4), contiguous(4)));
        let shifted = Placement {
            offset: 8,
            row_stride: 64,
            elem_bytes: 4,
        };
        assert!(!p(64, shifted, contiguous(64)));
        assert!(!p(64, contiguous(64), shifted));
    }

    #[test]
    fn rows_beyond_one_grid_dimension_use_a_second_dimension() {
        let caps = caps_with_subgroups();
        let wg = Tuning {
            kernel: Some(RowKernel::WorkgroupSubgroup),
            workgroup_size: None,
            split_parts: None,
        };
        let p = plan(65_537, 64, contiguous(64), contiguous(64), wg, &caps).unwrap();
        assert_eq!(p.chunks.len(), 1);
        assert_eq!(p.chunks[0].grid, [65_535, 2]);
        let t = plan(
            65_537 * 64,
            2,
            contiguous(2),
            contiguous(2),
            Tuning::default(),
            &caps,
        )
        .unwrap();
        assert_eq!(t.kernel, RowKernel::ThreadPerRow);
        assert_eq!(t.chunks[0].grid, [65_535, 2]);
    }

    #[test]
    fn every_chunk_fits_the_binding_limit_and_rows_are_covered_once() {
        let caps = DeviceCaps {
            max_storage_binding_size: 1 << 20,
            ..DeviceCaps::default()
        };
        let cols = 1001;
        // f32 and 16-bit elements, odd offsets and strides; 16-bit bindings end on a
        // whole word.
        for (src_elem, dst_elem, offset) in [(4, 4, 12), (2, 2, 6), (2, 4, 2), (4, 2, 8)] {
            let src = Placement {
                offset,
                row_stride: 1003,
                elem_bytes: src_elem,
            };
            let dst = Placement {
                offset: 0,
                row_stride: cols,
                elem_bytes: dst_elem,
            };
            let rows = 5000;
            let p = plan(rows, cols, src, dst, Tuning::default(), &caps).unwrap();
            assert!(p.chunks.len() > 1);
            assert!(!p.vec4);
            let mut next = 0;
            for c in &p.chunks {
                assert_eq!(c.first_row, next);
                next += c.rows as usize;
                for (r, place) in [(c.src, src), (c.dst, dst)] {
                    let e = place.elem_bytes;
                    assert!(r.size <= caps.max_storage_binding_size);
                    assert_eq!(r.offset % 256, 0);
                    assert_eq!(r.size % 4, 0);
                    let start = place.offset + (c.first_row * place.row_stride) as u64 * e;
                    assert_eq!(r.offset + u64::from(r.first_element) * e, start);
                    let end =
                        start + span_bytes(c.rows as usize, cols, place.row_stride, e).unwrap();
                    assert_eq!(r.offset + r.size, end.next_multiple_of(4));
                }
                assert!(u64::from(c.grid[0]) * u64::from(c.grid[1]) >= u64::from(c.rows));
            }
            assert_eq!(next, rows);
        }
    }

    #[test]
    fn cached_rows_get_the_fewest_slots_that_hold_them() {
        let caps = caps_with_subgroups();
        for kernel in [
            RowKernel::ThreadPerRow,
            RowKernel::SubgroupPerRow,
            RowKernel::WorkgroupSubgroup,
        ] {
            for cols in [
                4, 5, 20, 31, 32, 33, 40, 44, 64, 100, 128, 129, 200, 512, 513, 2048, 4096, 20000,
            ] {
                let p = plan(
                    3,
                    cols,
                    contiguous(cols.next_multiple_of(4)),
                    contiguous(cols.next_multiple_of(4)),
                    Tuning {
                        kernel: Some(kernel),
                        workgroup_size: None,
                        split_parts: None,
                    },
                    &caps,
                )
                .unwrap();
                let lanes = lanes_per_row(kernel, p.workgroup_size, &caps) as usize;
                let share = (cols / 4).div_ceil(lanes);
                if p.cache_slots == 0 {
                    assert!(share > CACHE_VEC4, "{kernel:?} {cols}: not cached");
                } else {
                    let slots = p.cache_slots as usize;
                    assert!(slots <= CACHE_VEC4, "{kernel:?} {cols}: {slots}");
                    // Every row of the plan fits; below 4 slots the next power of two,
                    // from 4 the next multiple of 4 (at most 3 slots empty).
                    assert!(share <= slots, "{kernel:?} {cols}: {share} > {slots}");
                    if share <= 4 {
                        assert_eq!(slots, share.next_power_of_two(), "{kernel:?} {cols}");
                    } else {
                        assert_eq!(slots, share.next_multiple_of(4), "{kernel:?} {cols}");
                    }
                }
            }
        }
        // No vec4 access (a stride that is not a multiple of 4): never cached.
        let odd = Placement {
            offset: 0,
            row_stride: 67,
            elem_bytes: 4,
        };
        let p = plan(3, 64, odd, odd, Tuning::default(), &caps).unwrap();
        assert!(!p.vec4);
        assert_eq!(p.cache_slots, 0);
    }

    #[test]
    fn sixteen_bit_rows_use_vec4_on_8_byte_boundaries() {
        let caps = DeviceCaps::default();
        let half = |offset, row_stride| Placement {
            offset,
            row_stride,
            elem_bytes: 2,
        };
        let p = |src, dst| {
            plan(3, 64, src, dst, Tuning::default(), &caps)
                .unwrap()
                .vec4
        };
        assert!(p(half(8, 64), half(0, 68)));
        assert!(p(half(8, 64), contiguous(64)));
        assert!(!p(half(4, 64), half(0, 64)));
        assert!(!p(half(0, 66), half(0, 64)));
    }

    #[test]
    fn a_row_longer_than_one_binding_is_refused_with_a_clear_error() {
        let caps = DeviceCaps {
            max_storage_binding_size: 4096,
            ..DeviceCaps::default()
        };
        let e = plan(
            1,
            2000,
            contiguous(2000),
            contiguous(2000),
            Tuning::default(),
            &caps,
        )
        .unwrap_err();
        assert!(matches!(e, Error::RowTooLong { cols: 2000, .. }));
    }

    #[test]
    fn grids_never_exceed_the_dimension_limit() {
        let caps = DeviceCaps {
            max_workgroups_per_dimension: 7,
            ..DeviceCaps::default()
        };
        let p = plan(
            1000,
            100,
            contiguous(100),
            contiguous(100),
            Tuning::default(),
            &caps,
        )
        .unwrap();
        let mut rows = 0;
        for c in &p.chunks {
            assert!(c.grid[0] <= 7 && c.grid[1] <= 7);
            rows += c.rows as usize;
        }
        assert_eq!(rows, 1000);
        assert!(p.chunks.len() >= 1000 / 49);
    }

    /// Limits like an NVIDIA H200's through Vulkan (subgroups of 32, 1024 invocations,
    /// bindings up to 4 GiB).
    fn h200() -> DeviceCaps {
        DeviceCaps {
            subgroups: true,
            subgroup_min_size: 32,
            subgroup_max_size: 32,
            max_invocations_per_workgroup: 1024,
            max_storage_binding_size: u64::from(u32::MAX),
            max_buffer_size: 1 << 40,
            storage_offset_alignment: 16,
            ..DeviceCaps::of_class(DeviceClass::DiscreteGpu, 1)
        }
    }

    /// Limits like an Apple GPU's through Metal (subgroups of 32, 1024 invocations).
    fn apple() -> DeviceCaps {
        DeviceCaps {
            max_storage_binding_size: 1 << 30,
            max_buffer_size: 1 << 32,
            ..DeviceCaps {
                class: DeviceClass::IntegratedGpu,
                thresholds: Thresholds::integrated_gpu(),
                ..h200()
            }
        }
    }

    fn reads(rows: usize, cols: usize, caps: &DeviceCaps) -> (RowKernel, u32) {
        let c = contiguous(cols);
        let p = plan(rows, cols, c, c, Tuning::default(), caps).unwrap();
        assert_eq!(p.traffic.least, (rows * cols * 8) as u64);
        assert_eq!(
            p.traffic.read + p.traffic.written,
            (rows * cols * 4) as u64 * (1 + u64::from(p.traffic.reads_per_element))
        );
        (p.kernel, p.traffic.reads_per_element)
    }

    #[test]
    fn on_gpu_like_limits_rows_up_to_the_register_cache_are_read_once() {
        use RowKernel::*;
        for caps in [h200(), apple()] {
            // Subgroups of 32 cache 4 * 16 * 32 = 2048 columns; workgroups of up to
            // 1024 invocations cache 65536.
            assert_eq!(reads(4096, 32, &caps), (ThreadPerRow, 1));
            assert_eq!(reads(4096, 2048, &caps), (SubgroupPerRow, 1));
            assert_eq!(reads(4096, 4096, &caps), (WorkgroupSubgroup, 1));
            assert_eq!(reads(4096, 32_000, &caps), (WorkgroupSubgroup, 1));
            assert_eq!(reads(1024, 65_536, &caps), (WorkgroupSubgroup, 1));
            // Longer rows are swept twice, and so are split rows.
            assert_eq!(reads(1024, 131_072, &caps), (WorkgroupSubgroup, 2));
            assert_eq!(reads(1, 262_144, &caps), (SplitRow, 2));
            assert_eq!(reads(64, 128_256, &caps), (SplitRow, 2));
        }
        // WebGPU's default limits: no subgroups, 256 invocations, so rows up to
        // 4 * 16 * 256 = 16384 columns are cached.
        let webgpu = DeviceCaps::default();
        assert_eq!(reads(4096, 1000, &webgpu), (WorkgroupShared, 1));
        assert_eq!(reads(4096, 16_384, &webgpu), (WorkgroupShared, 1));
        assert_eq!(reads(4096, 16_388, &webgpu), (WorkgroupShared, 2));
        assert_eq!(reads(4096, 32_000, &webgpu), (WorkgroupShared, 2));
    }

    #[test]
    fn on_lavapipe_rows_up_to_4096_columns_are_read_once() {
        use RowKernel::*;
        let caps = DeviceCaps {
            subgroups: true,
            subgroup_min_size: 8,
            subgroup_max_size: 8,
            max_storage_binding_size: 128 << 20,
            ..DeviceCaps::of_class(DeviceClass::Lavapipe, 2)
        };
        assert_eq!(reads(1024, 128, &caps), (ThreadPerRow, 1));
        assert_eq!(reads(1024, 2048, &caps), (SubgroupPerRow, 1));
        assert_eq!(reads(1024, 4096, &caps), (WorkgroupSubgroup, 1));
        assert_eq!(reads(1024, 4100, &caps), (SubgroupPerRow, 2));
        assert_eq!(reads(131, 32_000, &caps), (SubgroupPerRow, 2));
        assert_eq!(reads(1, 32_768, &caps), (SplitRow, 2));
    }

    #[test]
    fn device_classes_are_told_by_driver_and_backend() {
        let info = |device_type, backend, name: &str, driver: &str| wgpu::AdapterInfo {
            name: name.into(),
            driver: driver.into(),
            ..wgpu::AdapterInfo::new(device_type, backend)
        };
        use wgpu::{Backend, DeviceType};
        let llvm = "llvmpipe (LLVM 15.0.6, 256 bits)";
        let cases = [
            (
                info(DeviceType::Cpu, Backend::Vulkan, llvm, "llvmpipe"),
                DeviceClass::Lavapipe,
            ),
            (
                info(DeviceType::Cpu, Backend::Gl, llvm, ""),
                DeviceClass::LlvmpipeGl,
            ),
            (
                info(
                    DeviceType::Cpu,
                    Backend::Vulkan,
                    "SwiftShader Device (Subzero)",
                    "",
                ),
                DeviceClass::SwiftShader,
            ),
            (
                info(DeviceType::Cpu, Backend::Vulkan, "some cpu", ""),
                DeviceClass::UnknownCpu,
            ),
            (
                info(
                    DeviceType::DiscreteGpu,
                    Backend::Vulkan,
                    "NVIDIA H200",
                    "NVIDIA",
                ),
                DeviceClass::DiscreteGpu,
            ),
            (
                info(DeviceType::IntegratedGpu, Backend::Metal, "Apple M2", ""),
                DeviceClass::IntegratedGpu,
            ),
            (
                info(DeviceType::Other, Backend::BrowserWebGpu, "", ""),
                DeviceClass::IntegratedGpu,
            ),
        ];
        for (info, class) in cases {
            assert_eq!(DeviceClass::of(&info), class, "{info:?}");
        }
        // Only Mesa's adapters (and unknown CPU ones, to be safe) get the loop cap.
        assert_eq!(DeviceClass::SwiftShader.loop_cap(), None);
        assert_eq!(DeviceClass::DiscreteGpu.loop_cap(), None);
        assert!(DeviceClass::Lavapipe.loop_cap().is_some());
        assert!(DeviceClass::LlvmpipeGl.loop_cap().is_some());
        // Every class's cache fits the largest pipeline variant.
        for class in [
            DeviceClass::DiscreteGpu,
            DeviceClass::IntegratedGpu,
            DeviceClass::Lavapipe,
            DeviceClass::LlvmpipeGl,
            DeviceClass::SwiftShader,
            DeviceClass::UnknownCpu,
        ] {
            assert!(Thresholds::for_class(class).cache_vec4 <= MAX_CACHE_VEC4);
        }
    }
}
