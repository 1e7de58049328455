//! wgpu-softmax in the browser: what the browser suite (`tests/browser.rs`) and the demo
//! page (`demo/`) share. Everything here is for `wasm32-unknown-unknown` with the
//! browser's WebGPU; natively the crate is empty.
//!
//! Nothing here blocks: every wait is a future the browser's event loop completes (a
//! buffer map, `queue.onSubmittedWorkDone`), awaited through `wasm-bindgen-futures`.
#![cfg(target_arch = "wasm32")]

pub mod check;
pub mod demo;
pub mod speed;

use wgpu_softmax::wgpu;

/// A device and queue of the app's own, as a web app creates them: the browser's
/// adapter, `SUBGROUP` where it has it, and `limits` (`None`: every limit the adapter
/// offers; `Some(wgpu::Limits::default())`: WebGPU's defaults).
pub async fn app_device(
    limits: Option<wgpu::Limits>,
) -> Result<(wgpu::Device, wgpu::Queue), String> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = instance
        .request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("no WebGPU adapter: {e}"))?;
    let required_limits = limits.unwrap_or_else(|| adapter.limits());
    adapter
        .request_device(&wgpu::DeviceDescriptor {
            label: Some("app device"),
            required_features: adapter.features() & wgpu::Features::SUBGROUP,
            required_limits,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("request_device: {e}"))
}

/// A storage buffer (also a copy source and destination) holding `bytes`, padded to a
/// whole word.
pub fn storage_buffer(device: &wgpu::Device, queue: &wgpu::Queue, bytes: &[u8]) -> wgpu::Buffer {
    let buffer = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("app storage"),
        size: (bytes.len() as u64).next_multiple_of(4).max(4),
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let whole = bytes.len() / 4 * 4;
    if whole > 0 {
        queue.write_buffer(&buffer, 0, &bytes[..whole]);
    }
    if whole < bytes.len() {
        let mut last = [0u8; 4];
        last[..bytes.len() - whole].copy_from_slice(&bytes[whole..]);
        queue.write_buffer(&buffer, whole as u64, &last);
    }
    buffer
}

/// Every byte of `buffer`, read back by the app: a copy to a mappable buffer, then
/// `map_async` awaited (the browser resolves it; nothing polls or blocks).
pub async fn read_bytes(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    buffer: &wgpu::Buffer,
) -> Result<Vec<u8>, String> {
    let staging = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("app readback"),
        size: buffer.size(),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = device.create_command_encoder(&Default::default());
    encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, buffer.size());
    queue.submit([encoder.finish()]);
    let (tx, rx) = futures::channel::oneshot::channel();
    staging.map_async(wgpu::MapMode::Read, .., move |r| {
        let _ = tx.send(r);
    });
    rx.await
        .map_err(|_| "the map callback was dropped".to_string())?
        .map_err(|e| format!("map_async: {e}"))?;
    let bytes = staging
        .get_mapped_range(..)
        .map_err(|e| format!("get_mapped_range: {e}"))?
        .to_vec();
    staging.unmap();
    Ok(bytes)
}

/// `buffer` read back as values of `T`.
pub async fn read_back<T: bytemuck::Pod>(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    buffer: &wgpu::Buffer,
) -> Result<Vec<T>, String> {
    Ok(bytemuck::pod_collect_to_vec(
        &read_bytes(device, queue, buffer).await?,
    ))
}

/// Resolves when the GPU has finished everything submitted to `queue` so far
/// (`queue.onSubmittedWorkDone`).
pub async fn work_done(queue: &wgpu::Queue) {
    let (tx, rx) = futures::channel::oneshot::channel();
    queue.on_submitted_work_done(move || {
        let _ = tx.send(());
    });
    let _ = rx.await;
}

/// Milliseconds since the page started (`performance.now()`).
pub fn now_ms() -> f64 {
    web_sys::window()
        .and_then(|w| w.performance())
        .map_or_else(js_sys::Date::now, |p| p.now())
}

/// SplitMix64: small, seeded, the same generator as the native tests' `Rng`.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[0, n)` (as the native tests' `Rng::below`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn normal(&mut self, mean: f32, std: f32) -> f32 {
        let u1 = self.unit().max(1e-300);
        let u2 = self.unit();
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        mean + std * z as f32
    }
}

/// `len` values drawn from N(0, std), seeded.
pub fn normal_matrix(seed: u64, len: usize, std: f32) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| rng.normal(0.0, std)).collect()
}
