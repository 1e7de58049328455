//! Shared helpers of the integration tests: one context per test binary, seeded data,
//! and checks against the f64 reference.
#![allow(dead_code)]

use std::sync::OnceLock;

use wgpu_softmax::reference::{first_mismatch, softmax_f64, Tolerance, ROW_SUM_F32};
use wgpu_softmax::{Context, Op, Options, Shape};

/// The context every GPU test shares. Set `WGPU_SOFTMAX_SKIP_GPU=1` to skip GPU tests on
/// a machine without any adapter; otherwise a missing adapter fails the test run.
pub fn ctx() -> Option<&'static Context> {
    static CTX: OnceLock<Option<Context>> = OnceLock::new();
    CTX.get_or_init(|| match Context::new_blocking() {
        Ok(c) => {
            eprintln!(
                "adapter: {} ({:?}, subgroups: {})",
                c.adapter_info().name,
                c.adapter_info().backend,
                c.caps().subgroups
            );
            Some(c)
        }
        Err(e) if std::env::var_os("WGPU_SOFTMAX_SKIP_GPU").is_some() => {
            eprintln!("skipping GPU tests: {e}");
            None
        }
        Err(e) => panic!("no GPU adapter ({e}); set WGPU_SOFTMAX_SKIP_GPU=1 to skip"),
    })
    .as_ref()
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

/// Runs the host API and checks every element against the f64 reference, and softmax
/// row sums against 1. Returns the output.
pub fn check_host(ctx: &Context, input: &[f32], shape: Shape, options: &Options) -> Vec<f32> {
    let got = ctx
        .run_blocking(input, shape, options)
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
