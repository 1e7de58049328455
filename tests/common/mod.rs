//! Shared helpers of the integration tests: one context per test binary, the kernels it
//! can run, an app-owned device, buffers and readback, seeded data, and checks against
//! the f64 reference.
//!
//! A GPU test never passes without a GPU: when no adapter is found, [`ctx`] panics and
//! every test that uses it fails.
#![allow(dead_code)]

use std::sync::OnceLock;

use wgpu_softmax::internals::reference::{first_mismatch, softmax_f64, Tolerance, ROW_SUM_F32};
use wgpu_softmax::internals::RowKernel;
use wgpu_softmax::{
    block_on, wgpu, Context, ContextOptions, HostInputs, Op, Options, Result, Shape,
};

/// The context every GPU test of a binary shares. Fails the test when no adapter is
/// found.
pub fn ctx() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| {
        let c = block_on(Context::new(ContextOptions::default()))
            .unwrap_or_else(|e| panic!("no GPU adapter: {e}"));
        eprintln!(
            "adapter: {} ({:?}, subgroups: {})",
            c.adapter_info().name,
            c.adapter_info().backend,
            c.caps().subgroups
        );
        c
    })
}

/// The kernels `ctx` can run (the subgroup kernels need `Features::SUBGROUP`).
pub fn kernels(ctx: &Context) -> Vec<RowKernel> {
    RowKernel::ALL
        .into_iter()
        .filter(|k| !k.needs_subgroups() || ctx.caps().subgroups)
        .collect()
}

/// A device and queue the test owns, as an app would create them: the adapter
/// `WGPU_BACKEND` allows, with `limits` (and no optional feature).
pub fn app_device(limits: wgpu::Limits) -> (wgpu::Device, wgpu::Queue) {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
        .expect("adapter");
    block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_limits: limits,
        ..Default::default()
    }))
    .expect("device")
}

/// A storage buffer (also a copy source and destination) holding `bytes`, padded to a
/// whole word.
pub fn storage_buffer(device: &wgpu::Device, queue: &wgpu::Queue, bytes: &[u8]) -> wgpu::Buffer {
    let buffer = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("test storage"),
        size: (bytes.len() as u64).next_multiple_of(4).max(4),
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut padded = bytes.to_vec();
    padded.resize(bytes.len().next_multiple_of(4), 0);
    queue.write_buffer(&buffer, 0, &padded);
    buffer
}

/// A storage buffer on `ctx`'s device holding `values`.
pub fn upload<T: bytemuck::Pod>(ctx: &Context, values: &[T]) -> wgpu::Buffer {
    storage_buffer(ctx.device(), ctx.queue(), bytemuck::cast_slice(values))
}

/// Every byte of `buffer`, read back through a mappable copy (blocking: tests only).
pub fn read_bytes(device: &wgpu::Device, queue: &wgpu::Queue, buffer: &wgpu::Buffer) -> Vec<u8> {
    let staging = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("test readback"),
        size: buffer.size(),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = device.create_command_encoder(&Default::default());
    encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, buffer.size());
    queue.submit([encoder.finish()]);
    staging.map_async(wgpu::MapMode::Read, .., |r| r.expect("map"));
    device
        .poll(wgpu::PollType::wait_indefinitely())
        .expect("poll");
    let out = staging.get_mapped_range(..).expect("view").to_vec();
    staging.unmap();
    out
}

/// `buffer` read back as values of `T` (its size must be a multiple of `T`'s).
pub fn read_back<T: bytemuck::Pod>(ctx: &Context, buffer: &wgpu::Buffer) -> Vec<T> {
    bytemuck::pod_collect_to_vec(&read_bytes(ctx.device(), ctx.queue(), buffer))
}

/// The host path, blocking, into a new vector of the input's type.
pub fn run<T: wgpu_softmax::Element>(
    ctx: &Context,
    input: &[T],
    shape: Shape,
    options: &Options,
    inputs: HostInputs<'_>,
) -> Result<Vec<T>> {
    let mut output = vec![T::from_f32(0.0); input.len()];
    block_on(ctx.run(input, &mut output, shape, options, inputs))?;
    Ok(output)
}

/// The plain host path on f32 data, blocking.
pub fn softmax(ctx: &Context, input: &[f32], shape: Shape, options: &Options) -> Result<Vec<f32>> {
    run(ctx, input, shape, options, HostInputs::default())
}

/// SplitMix64: small, seeded, good enough for test data.
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

    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit() as f32
    }

    pub fn normal(&mut self, mean: f32, std: f32) -> f32 {
        let u1 = self.unit().max(1e-300);
        let u2 = self.unit();
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        mean + std * z as f32
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

pub fn normal_matrix(seed: u64, len: usize, std: f32) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| rng.normal(0.0, std)).collect()
}

/// Runs the host path and checks every element against the f64 reference, and softmax
/// row sums against 1. Returns the output.
pub fn check_host(ctx: &Context, input: &[f32], shape: Shape, options: &Options) -> Vec<f32> {
    let got = softmax(ctx, input, shape, options)
        .unwrap_or_else(|e| panic!("{shape:?} {options:?}: {e}"));
    check_output(&got, input, shape, options);
    got
}

pub fn check_output(got: &[f32], input: &[f32], shape: Shape, options: &Options) {
    assert_eq!(got.len(), input.len());
    let want = softmax_f64(input, shape.cols, options);
    let tol = Tolerance::for_op(options.op);
    if let Some((i, y, r)) = first_mismatch(got, &want, tol) {
        panic!(
            "{shape:?} {options:?}: element {i} (row {}, col {}) is {y:e}, reference {r:e} \
             (input {:e})",
            i / shape.cols,
            i % shape.cols,
            input[i]
        );
    }
    if options.op == Op::Softmax {
        for (r, row) in got.chunks(shape.cols).enumerate() {
            if row.iter().any(|y| y.is_nan()) {
                continue;
            }
            let sum: f64 = row.iter().map(|&y| f64::from(y)).sum();
            let all_zero = row.iter().all(|&y| y == 0.0);
            assert!(
                all_zero || (sum - 1.0).abs() <= ROW_SUM_F32,
                "{shape:?}: row {r} sums to {sum}"
            );
        }
    }
}
