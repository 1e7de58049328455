//! The host path's staging buffers: one slot is a device buffer a chunk is uploaded to
//! and computed in, and a mappable buffer it is read back through. Slots are pooled
//! per context and reused across calls.

use std::sync::Mutex;

/// One slot of the streaming ring.
pub(crate) struct StagingSlot {
    pub data: wgpu::Buffer,
    pub readback: wgpu::Buffer,
    pub capacity: u64,
}

impl StagingSlot {
    /// A slot of `capacity` bytes (call inside an error scope).
    pub fn new(device: &wgpu::Device, capacity: u64) -> Self {
        StagingSlot {
            data: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgpu-softmax staging data"),
                size: capacity,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_DST
                    | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
            readback: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgpu-softmax staging readback"),
                size: capacity,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            capacity,
        }
    }
}

/// Slots not in use by any call. A call takes what it needs and gives it back, so the
/// number of buffers stays bounded by the number of concurrent calls.
#[derive(Default)]
pub(crate) struct StagingPool {
    free: Mutex<Vec<StagingSlot>>,
}

/// Slots the pool keeps at most; a slot too small for later calls is dropped when
/// replaced.
const KEPT: usize = 8;

impl StagingPool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<StagingSlot>> {
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A free slot of at least `capacity` bytes, if the pool has one.
    pub fn take(&self, capacity: u64) -> Option<StagingSlot> {
        let mut free = self.lock();
        let i = free.iter().position(|s| s.capacity >= capacity)?;
        Some(free.swap_remove(i))
    }

    fn give_back(&self, slot: StagingSlot) {
        let mut free = self.lock();
        if free.len() >= KEPT {
            free.sort_by_key(|s| s.capacity);
            free.remove(0);
        }
        free.push(slot);
    }

    /// Bytes of GPU memory held by the pool.
    pub fn bytes(&self) -> u64 {
        self.lock().iter().map(|s| 2 * s.capacity).sum()
    }
}

/// The slots one call holds. They go back to the pool only when the call says it
/// finished cleanly: after an error, or when the call's future is dropped mid-flight,
/// a slot may still be mapped or in use by submitted work, so it is dropped instead
/// (wgpu frees its memory once the GPU is done with it).
pub(crate) struct Lease<'a> {
    pool: &'a StagingPool,
    pub slots: Vec<StagingSlot>,
}

impl<'a> Lease<'a> {
    pub fn new(pool: &'a StagingPool) -> Self {
        Lease {
            pool,
            slots: Vec::new(),
        }
    }

    /// Ends the lease: the slots go back to the pool if `clean`, else they are dropped.
    pub fn finish(mut self, clean: bool) {
        if clean {
            for slot in self.slots.drain(..) {
                self.pool.give_back(slot);
            }
        }
    }
}
