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
    /// One workgroup per row, reductions in workgroup memory
    /// (`softmax_workgroup_shared.wgsl`): the portable kernel.
    WorkgroupShared,
    /// One workgroup per row, reductions with subgroup operations
    /// (`softmax_workgroup_subgroup.wgsl`): needs `Features::SUBGROUP`.
    WorkgroupSubgroup,
}

impl RowKernel {
    /// Every kernel, for tests that run each one.
    pub const ALL: [RowKernel; 3] = [
        RowKernel::ThreadPerRow,
        RowKernel::WorkgroupShared,
        RowKernel::WorkgroupSubgroup,
    ];

    /// Whether the kernel needs `Features::SUBGROUP`.
    pub fn needs_subgroups(self) -> bool {
        matches!(self, RowKernel::WorkgroupSubgroup)
    }
}

/// Rows up to this many columns run one invocation per row.
pub const THREAD_PER_ROW_MAX_COLS: usize = 32;
/// Invocations per workgroup of the thread-per-row kernel.
pub const THREAD_PER_ROW_WORKGROUP: u32 = 64;
/// Upper bound of the workgroup kernels' size (their workgroup arrays are this long).
pub const MAX_WORKGROUP: u32 = 256;
/// Lower bound of the workgroup kernels' size.
pub const MIN_WORKGROUP: u32 = 32;

/// What the planner needs to know of a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceCaps {
    /// `Features::SUBGROUP` is enabled on the device.
    pub subgroups: bool,
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
}

impl DeviceCaps {
    /// Reads the caps of a device.
    pub fn of_device(device: &wgpu::Device) -> Self {
        let limits = device.limits();
        DeviceCaps {
            subgroups: device.features().contains(wgpu::Features::SUBGROUP),
            max_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
            max_storage_binding_size: limits.max_storage_buffer_binding_size,
            storage_offset_alignment: limits.min_storage_buffer_offset_alignment,
            max_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
            max_buffer_size: limits.max_buffer_size,
        }
    }
}

impl Default for DeviceCaps {
    /// WebGPU's default limits, without subgroups.
    fn default() -> Self {
        let limits = wgpu::Limits::default();
        DeviceCaps {
            subgroups: false,
            max_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
            max_storage_binding_size: limits.max_storage_buffer_binding_size,
            storage_offset_alignment: limits.min_storage_buffer_offset_alignment,
            max_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
            max_buffer_size: limits.max_buffer_size,
        }
    }
}

/// Where a matrix lies in a buffer: byte offset of element `[0, 0]` and the distance
/// between row starts, in elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Byte offset of the first element; a multiple of 4.
    pub offset: u64,
    /// Elements from one row start to the next; at least `cols`.
    pub row_stride: usize,
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

/// One dispatch: a run of rows that fits one binding and one grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Index of the chunk's first row in the whole matrix.
    pub first_row: usize,
    /// Rows in the chunk.
    pub rows: u32,
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
    /// The dispatches, in row order.
    pub chunks: Vec<Chunk>,
}

/// Picks the kernel for a row length on a device.
pub fn choose_kernel(cols: usize, caps: &DeviceCaps) -> RowKernel {
    if cols <= THREAD_PER_ROW_MAX_COLS {
        RowKernel::ThreadPerRow
    } else if caps.subgroups {
        RowKernel::WorkgroupSubgroup
    } else {
        RowKernel::WorkgroupShared
    }
}

/// Invocations per workgroup for a kernel and row length: for the workgroup kernels, a
/// power of two giving each invocation about eight loads (vec4 or scalar) per sweep,
/// between [`MIN_WORKGROUP`] and [`MAX_WORKGROUP`] and within the device's limit.
pub fn workgroup_size(kernel: RowKernel, cols: usize, vec4: bool, caps: &DeviceCaps) -> u32 {
    let limit = caps.max_invocations_per_workgroup.max(1);
    match kernel {
        RowKernel::ThreadPerRow => THREAD_PER_ROW_WORKGROUP.min(limit),
        RowKernel::WorkgroupShared | RowKernel::WorkgroupSubgroup => {
            let loads = if vec4 { cols.div_ceil(4) } else { cols };
            let wanted = loads.div_ceil(8).next_power_of_two();
            let wanted = wanted.clamp(MIN_WORKGROUP as usize, MAX_WORKGROUP as usize) as u32;
            // Largest power of two within the device limit.
            let cap = 1u32 << (31 - limit.min(MAX_WORKGROUP).leading_zeros());
            wanted.min(cap)
        }
    }
}

fn overflow(rows: usize, cols: usize) -> Error {
    Error::ShapeOverflow { rows, cols }
}

/// Bytes from the first element of row 0 to the end of row `rows - 1`.
fn span_bytes(rows: usize, cols: usize, stride: usize) -> Option<u64> {
    let elements = (rows.checked_sub(1)?)
        .checked_mul(stride)?
        .checked_add(cols)?;
    (elements as u64).checked_mul(4)
}

/// Plans a softmax of a `[rows, cols]` matrix read at `src` and written at `dst`.
///
/// `kernel` forces a kernel (tests, benchmarks); `None` lets [`choose_kernel`] decide.
/// Expects `rows >= 1`, `cols >= 1` and placements already validated (offsets multiples
/// of 4, strides at least `cols`).
pub fn plan(
    rows: usize,
    cols: usize,
    src: Placement,
    dst: Placement,
    kernel: Option<RowKernel>,
    caps: &DeviceCaps,
) -> Result<Plan> {
    let kernel = kernel.unwrap_or_else(|| choose_kernel(cols, caps));
    if kernel.needs_subgroups() && !caps.subgroups {
        return Err(Error::Validation(
            "the subgroup kernel was asked for but the device lacks Features::SUBGROUP".into(),
        ));
    }
    let align = u64::from(caps.storage_offset_alignment.max(4));
    let vec4 = cols >= 4
        && align % 16 == 0
        && src.offset % 16 == 0
        && dst.offset % 16 == 0
        && src.row_stride % 4 == 0
        && dst.row_stride % 4 == 0;
    let workgroup_size = workgroup_size(kernel, cols, vec4, caps);

    // Rows per chunk, from the binding limit: the span of r rows plus up to `align - 4`
    // bytes of leading slack (the binding offset is rounded down) must fit one binding.
    let limit = caps.max_storage_binding_size;
    let row_bytes = (cols as u64)
        .checked_mul(4)
        .ok_or_else(|| overflow(rows, cols))?;
    let fits = |stride: usize| -> Result<u64> {
        let room = limit
            .checked_sub(row_bytes + (align - 4))
            .ok_or(Error::RowTooLong {
                cols,
                bytes: row_bytes + (align - 4),
                limit,
            })?;
        Ok(room / (stride as u64 * 4).max(4) + 1)
    };
    let by_binding = fits(src.row_stride)?.min(fits(dst.row_stride)?);
    // ... and from the grid: at most max_dim x max_dim workgroups per dispatch.
    let max_dim = u64::from(caps.max_workgroups_per_dimension.max(1));
    let rows_per_group = match kernel {
        RowKernel::ThreadPerRow => u64::from(workgroup_size),
        _ => 1,
    };
    let by_grid = max_dim * max_dim * rows_per_group;
    // Row indices and element offsets inside a binding are u32 in WGSL.
    let chunk_rows = by_binding.min(by_grid).min(u64::from(u32::MAX) / 2).max(1) as usize;

    let mut chunks = Vec::with_capacity(rows.div_ceil(chunk_rows));
    let mut first_row = 0usize;
    while first_row < rows {
        let n = chunk_rows.min(rows - first_row);
        let range = |p: Placement| -> Result<BindingRange> {
            let start = (first_row as u64)
                .checked_mul(p.row_stride as u64 * 4)
                .and_then(|b| b.checked_add(p.offset))
                .ok_or_else(|| overflow(rows, cols))?;
            let bind_offset = start - start % align;
            let span = span_bytes(n, cols, p.row_stride).ok_or_else(|| overflow(rows, cols))?;
            Ok(BindingRange {
                offset: bind_offset,
                size: start - bind_offset + span,
                first_element: ((start - bind_offset) / 4) as u32,
            })
        };
        let groups = (n as u64).div_ceil(rows_per_group);
        let grid_x = groups.min(max_dim);
        let grid_y = groups.div_ceil(grid_x);
        chunks.push(Chunk {
            first_row,
            rows: n as u32,
            grid: [grid_x as u32, grid_y as u32],
            src: range(src)?,
            dst: range(dst)?,
        });
        first_row += n;
    }
    Ok(Plan {
        kernel,
        workgroup_size,
        vec4,
        chunks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contiguous(cols: usize) -> Placement {
        Placement {
            offset: 0,
            row_stride: cols,
        }
    }

    fn caps_with_subgroups() -> DeviceCaps {
        DeviceCaps {
            subgroups: true,
            ..DeviceCaps::default()
        }
    }

    #[test]
    fn short_rows_run_one_invocation_per_row() {
        let caps = caps_with_subgroups();
        assert_eq!(choose_kernel(1, &caps), RowKernel::ThreadPerRow);
        assert_eq!(choose_kernel(32, &caps), RowKernel::ThreadPerRow);
        assert_eq!(choose_kernel(33, &caps), RowKernel::WorkgroupSubgroup);
    }

    #[test]
    fn without_subgroups_long_rows_use_workgroup_memory() {
        let caps = DeviceCaps::default();
        assert_eq!(choose_kernel(33, &caps), RowKernel::WorkgroupShared);
        assert_eq!(choose_kernel(200_001, &caps), RowKernel::WorkgroupShared);
    }

    #[test]
    fn forcing_the_subgroup_kernel_without_the_feature_is_an_error() {
        let p = plan(
            1,
            64,
            contiguous(64),
            contiguous(64),
            Some(RowKernel::WorkgroupSubgroup),
            &DeviceCaps::default(),
        );
        assert!(matches!(p, Err(Error::Validation(_))));
    }

    #[test]
    fn workgroup_size_is_a_power_of_two_within_bounds() {
        let caps = DeviceCaps::default();
        for cols in [1, 5, 33, 100, 1000, 4096, 100_000, 1_000_000] {
            for vec4 in [false, true] {
                let wg = workgroup_size(RowKernel::WorkgroupShared, cols, vec4, &caps);
                assert!(wg.is_power_of_two(), "{cols} {vec4} -> {wg}");
                assert!((MIN_WORKGROUP..=MAX_WORKGROUP).contains(&wg));
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
    fn vec4_needs_16_byte_rows_and_offsets() {
        let caps = DeviceCaps::default();
        let p = |cols, src: Placement, dst: Placement| {
            plan(2, cols, src, dst, None, &caps).unwrap().vec4
        };
        assert!(p(64, contiguous(64), contiguous(64)));
        assert!(p(66, contiguous(68), contiguous(68)));
        assert!(!p(66, contiguous(66), contiguous(66)));
        assert!(!p(3, contiguous(4), contiguous(4)));
        let shifted = Placement {
            offset: 8,
            row_stride: 64,
        };
        assert!(!p(64, shifted, contiguous(64)));
        assert!(!p(64, contiguous(64), shifted));
    }

    #[test]
    fn rows_beyond_one_grid_dimension_use_a_second_dimension() {
        let caps = caps_with_subgroups();
        let p = plan(65_537, 64, contiguous(64), contiguous(64), None, &caps).unwrap();
        assert_eq!(p.chunks.len(), 1);
        assert_eq!(p.chunks[0].grid, [65_535, 2]);
        let t = plan(65_537 * 64, 2, contiguous(2), contiguous(2), None, &caps).unwrap();
        assert_eq!(t.kernel, RowKernel::ThreadPerRow);
        assert_eq!(t.chunks[0].grid, [65_535, 2]);
    }

    #[test]
    fn every_chunk_fits_the_binding_limit_and_rows_are_covered_once() {
        let caps = DeviceCaps {
            max_storage_binding_size: 1 << 20,
            ..DeviceCaps::default()
        };
        let cols = 1000;
        let src = Placement {
            offset: 12,
            row_stride: 1003,
        };
        let dst = contiguous(cols);
        let rows = 5000;
        let p = plan(rows, cols, src, dst, None, &caps).unwrap();
        assert!(p.chunks.len() > 1);
        let mut next = 0;
        for c in &p.chunks {
            assert_eq!(c.first_row, next);
            next += c.rows as usize;
            for (r, place) in [(c.src, src), (c.dst, dst)] {
                assert!(r.size <= caps.max_storage_binding_size);
                assert_eq!(r.offset % 256, 0);
                let start = place.offset + (c.first_row * place.row_stride * 4) as u64;
                assert_eq!(r.offset + u64::from(r.first_element) * 4, start);
                let end = start + span_bytes(c.rows as usize, cols, place.row_stride).unwrap();
                assert_eq!(r.offset + r.size, end);
            }
            assert!(u64::from(c.grid[0]) * u64::from(c.grid[1]) >= u64::from(c.rows));
        }
        assert_eq!(next, rows);
    }

    #[test]
    fn a_row_longer_than_one_binding_is_refused_with_a_clear_error() {
        let caps = DeviceCaps {
            max_storage_binding_size: 4096,
            ..DeviceCaps::default()
        };
        let e = plan(1, 2000, contiguous(2000), contiguous(2000), None, &caps).unwrap_err();
        assert!(matches!(e, Error::RowTooLong { cols: 2000, .. }));
    }

    #[test]
    fn grids_never_exceed_the_dimension_limit() {
        let caps = DeviceCaps {
            max_workgroups_per_dimension: 7,
            ..DeviceCaps::default()
        };
        let p = plan(1000, 100, contiguous(100), contiguous(100), None, &caps).unwrap();
        let mut rows = 0;
        for c in &p.chunks {
            assert!(c.grid[0] <= 7 && c.grid[1] <= 7);
            rows += c.rows as usize;
        }
        assert_eq!(rows, 1000);
        assert!(p.chunks.len() >= 1000 / 49);
    }
}
