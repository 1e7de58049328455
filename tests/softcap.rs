//! Logit soft-capping, `z = C * tanh(x / C) / T + mask`: against the f64 reference for
//! softmax, log-softmax, statistics and sampling, with every kernel, huge and infinite
//! logits, the mask applied after the cap, and the refusals.

mod common;

use common::{check_host, ctx, kernels, run, Rng};
use wgpu_softmax::internals::reference::{
    first_mismatch, row_stats_f64_with, softmax_f64_with, Tolerance,
};
use wgpu_softmax::{block_on, Error, HostInputs, Options, Sampling, Shape};

/// Logits far past any cap: +-1e4, +-1e30, f32::MAX, and ordinary ones.
fn wild_logits(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..rows * cols)
        .map(|i| match i % 11 {
            0 => 1e4,
            3 => -1e4,
            5 => 1e30 * if rng.below(2) == 0 { 1.0 } else { -1.0 },
            7 => f32::MAX,
            _ => rng.normal(0.0, 40.0),
        })
        .collect()
}

#[test]
fn capped_softmax_and_log_softmax_match_the_reference_with_every_kernel() {
    let ctx = ctx();
    for kernel in kernels(ctx) {
        for cols in [5usize, 33, 1000, 5000] {
            let rows = 7;
            let input = wild_logits(rows, cols, cols as u64);
            for base in [Options::softmax(), Options::log_softmax()] {
                let options = base
                    .with_softcap(30.0)
                    .with_temperature(0.7)
                    .with_kernel(kernel);
                check_host(ctx, &input, Shape::new(rows, cols), &options);
            }
        }
    }
}

#[test]
fn infinities_cap_to_plus_minus_c_and_nan_still_poisons() {
    let ctx = ctx();
    let (inf, ninf) = (f32::INFINITY, f32::NEG_INFINITY);
    let input = [inf, ninf, 0.0, 1.0, /* */ f32::NAN, 1.0, 2.0, 3.0];
    let options = Options::softmax().with_softcap(5.0).with_temperature(2.0);
    let got = check_host(ctx, &input, Shape::new(2, 4), &options);
    // Row 0 is softmax([5, -5, 5 tanh(0.2), 5 tanh(0.2)]... / 2): finite everywhere.
    let z: Vec<f64> = [5.0f64, -5.0, 0.0, 5.0 * (0.2f64).tanh()]
        .iter()
        .map(|v| v / 2.0)
        .collect();
    let m = z.iter().copied().fold(f64::MIN, f64::max);
    let sum: f64 = z.iter().map(|v| (v - m).exp()).sum();
    for j in 0..4 {
        let want = (z[j] - m).exp() / sum;
        assert!(
            (f64::from(got[j]) - want).abs() < 1e-6,
            "col {j}: {} vs {want}",
            got[j]
        );
    }
    assert!(got[4..].iter().all(|v| v.is_nan()), "{:?}", &got[4..]);
}

#[test]
fn the_mask_and_row_inputs_apply_to_the_capped_value() {
    let ctx = ctx();
    let (rows, cols) = (6, 40);
    let input = wild_logits(rows, cols, 9);
    let mask: Vec<f32> = (0..2 * cols)
        .map(|i| match i % 5 {
            0 => f32::NEG_INFINITY,
            1 => 3.0,
            _ => 0.0,
        })
        .collect();
    let lengths: Vec<u32> = (0..rows as u32).map(|r| 10 + 5 * r).collect();
    let temps: Vec<f32> = (0..rows).map(|r| 0.5 + r as f32 * 0.25).collect();
    let inputs = || {
        HostInputs::default()
            .with_mask(&mask, 2)
            .with_lengths(&lengths)
            .with_temperatures(&temps)
    };
    for base in [Options::softmax(), Options::log_softmax()] {
        let options = base.with_softcap(15.0).with_causal(20);
        let got = run(ctx, &input, Shape::new(rows, cols), &options, inputs()).expect("run");
        let want = softmax_f64_with(&input, cols, &options, &inputs());
        let tol = Tolerance::for_op(options.op);
        assert_eq!(first_mismatch(&got, &want, tol), None, "{options:?}");
    }
}

#[test]
fn statistics_and_sampling_see_the_capped_values() {
    let ctx = ctx();
    let (rows, cols) = (9, 300);
    let input = wild_logits(rows, cols, 10);
    let options = Options::softmax().with_softcap(20.0).with_temperature(1.5);
    let mut y = vec![0f32; rows * cols];
    let mut stats = vec![[0f32; 2]; rows];
    let inputs = HostInputs::default().with_stats_out(&mut stats);
    block_on(ctx.run(&input, &mut y, Shape::new(rows, cols), &options, inputs)).expect("run");
    let want = row_stats_f64_with(&input, cols, &options, &HostInputs::default());
    for r in 0..rows {
        for k in 0..2 {
            let (g, w) = (f64::from(stats[r][k]), want[r][k]);
            assert!(
                (g - w).abs() <= 1e-5 + 1e-5 * w.abs(),
                "row {r}: {g} vs {w}"
            );
        }
    }
    // Greedy draws the capped argmax (the first of the tied caps), with its capped
    // log-probability.
    let mut ids = vec![0u32; rows];
    let mut lp = vec![0f32; rows];
    let greedy = Sampling::greedy();
    block_on(ctx.sample(
        &input,
        &mut ids,
        Some(&mut lp),
        Shape::new(rows, cols),
        &options,
        &greedy,
        HostInputs::default(),
    ))
    .expect("sample");
    let log = softmax_f64_with(
        &input,
        cols,
        &Options::log_softmax()
            .with_softcap(20.0)
            .with_temperature(1.5),
        &HostInputs::default(),
    );
    for r in 0..rows {
        let row = &input[r * cols..(r + 1) * cols];
        let capped: Vec<f64> = row
            .iter()
            .map(|&x| 20.0 * (f64::from(x) / 20.0).tanh())
            .collect();
        let max = capped.iter().copied().fold(f64::MIN, f64::max);
        let first = capped.iter().position(|&v| v == max).unwrap();
        // Capped values that round to the same f32 tie on the GPU: any of them is the
        // argmax there.
        let id = ids[r] as usize;
        assert!(
            (capped[id] - max).abs() <= 1e-5 * max.abs(),
            "row {r}: {id} vs {first}"
        );
        assert!(
            Tolerance::for_op(wgpu_softmax::Op::LogSoftmax).accepts(lp[r], log[r * cols + id]),
            "row {r}"
        );
    }
}

#[test]
fn bad_caps_and_the_plain_backward_pass_through_a_cap_are_refused() {
    let ctx = ctx();
    let x = [1.0f32, 2.0];
    for c in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        let got = run(
            ctx,
            &x,
            Shape::new(1, 2),
            &Options::softmax().with_softcap(c),
            HostInputs::default(),
        );
        assert!(matches!(got, Err(Error::InvalidSoftcap(_))), "{c}: {got:?}");
    }
    let mut dx = [0f32; 2];
    let got = block_on(ctx.run_backward(
        &x,
        &x,
        &mut dx,
        Shape::new(1, 2),
        &Options::softmax().with_softcap(3.0),
    ));
    assert!(matches!(got, Err(Error::Unsupported(_))), "{got:?}");
}

#[test]
fn the_capped_backward_pass_multiplies_by_the_caps_slope() {
    use wgpu_softmax::internals::reference::{backward_f64, BACKWARD_F32};
    let ctx = ctx();
    for (cols, op) in [
        (333usize, Options::softmax()),
        (1024, Options::log_softmax()),
    ] {
        let rows = 6;
        let x = wild_logits(rows, cols, 11 + cols as u64);
        let options = op.with_softcap(12.0).with_temperature(0.8);
        let y = run(
            ctx,
            &x,
            Shape::new(rows, cols),
            &options,
            HostInputs::default(),
        )
        .expect("forward");
        let mut rng = Rng::new(12);
        let dy: Vec<f32> = (0..rows * cols).map(|_| rng.normal(0.0, 1.0)).collect();
        let mut dx = vec![0f32; rows * cols];
        block_on(ctx.run_backward_capped(&x, &y, &dy, &mut dx, Shape::new(rows, cols), &options))
            .expect("capped backward");
        let plain = backward_f64(&y, &dy, cols, &options);
        let want: Vec<f64> = plain
            .iter()
            .zip(&x)
            .map(|(&g, &xi)| {
                let t = (f64::from(xi) / 12.0).tanh();
                g * (1.0 - t * t)
            })
            .collect();
        assert_eq!(
            first_mismatch(&dx, &want, BACKWARD_F32),
            None,
            "{options:?}"
        );
    }
    // The logits only go with a cap.
    let x = [1.0f32, 2.0];
    let mut dx = [0f32; 2];
    let got = block_on(ctx.run_backward_capped(
        &x,
        &x,
        &x,
        &mut dx,
        Shape::new(1, 2),
        &Options::softmax(),
    ));
    assert!(matches!(got, Err(Error::Unsupported(_))), "{got:?}");
}
