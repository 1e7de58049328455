//! Sampling on the GPU: the distribution of the draws (chi-square against the f64
//! reference's filtered distribution), the filters' exact edges (ties at the top-k and
//! top-p boundaries), greedy, reproducibility, the generator replayed on the CPU, long
//! and short rows, 16-bit logits, row inputs, special rows, and the resident path; and
//! rows split over several workgroups (few long rows), which draw what one workgroup
//! per row draws.

mod common;

use common::{app_device, ctx, read_bytes, storage_buffer, Rng};
use wgpu_softmax::internals::reference::{
    sample_filter_f64, sample_replay_f64, softmax_f64_with, Tolerance,
};
use wgpu_softmax::internals::RowKernel;
use wgpu_softmax::{
    block_on, half, wgpu, Context, ContextOptions, Dtype, Element, Error, HostInputs, MaskedRows,
    MatrixView, Options, Region, RowInputs, SampleOutputs, Sampling, Shape, NO_TOKEN,
};

/// Draws with the host path: ids and log-probabilities.
fn draw<T: Element>(
    ctx: &Context,
    input: &[T],
    shape: Shape,
    options: &Options,
    sampling: &Sampling,
    inputs: HostInputs<'_>,
) -> (Vec<u32>, Vec<f32>) {
    let mut ids = vec![0u32; shape.rows];
    let mut lp = vec![0f32; shape.rows];
    block_on(ctx.sample(
        input,
        &mut ids,
        Some(&mut lp),
        shape,
        options,
        sampling,
        inputs,
    ))
    .unwrap_or_else(|e| panic!("{shape:?} {sampling:?}: {e}"));
    (ids, lp)
}

/// The regularised upper incomplete gamma function Q(a, x), for the chi-square
/// distribution's tail: a series below a + 1, a continued fraction above.
fn gamma_q(a: f64, x: f64) -> f64 {
    fn ln_gamma(z: f64) -> f64 {
        // Lanczos, g = 7, n = 9.
        const C: [f64; 9] = [
            0.999_999_999_999_809_9,
            676.520_368_121_885_1,
            -1_259.139_216_722_402_8,
            771.323_428_777_653_1,
            -176.615_029_162_140_6,
            12.507_343_278_686_905,
            -0.138_571_095_265_720_12,
            9.984_369_578_019_572e-6,
            1.505_632_735_149_311_6e-7,
        ];
        let z = z - 1.0;
        let mut s = C[0];
        for (i, c) in C.iter().enumerate().skip(1) {
            s += c / (z + i as f64);
        }
        let t = z + 7.5;
        0.5 * (2.0 * std::f64::consts::PI).ln() + (z + 0.5) * t.ln() - t + s.ln()
    }
    if x <= 0.0 {
        return 1.0;
    }
    let front = (-x + a * x.ln() - ln_gamma(a)).exp();
    if x < a + 1.0 {
        let (mut term, mut sum, mut n) = (1.0 / a, 1.0 / a, a);
        for _ in 0..10_000 {
            n += 1.0;
            term *= x / n;
            sum += term;
            if term.abs() < sum.abs() * 1e-15 {
                break;
            }
        }
        1.0 - front * sum
    } else {
        // Lentz's method.
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..10_000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < tiny {
                d = tiny;
            }
            c = b + an / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            let delta = d * c;
            h *= delta;
            if (delta - 1.0).abs() < 1e-15 {
                break;
            }
        }
        front * h
    }
}

/// Pearson's chi-square of `counts` against `probs` (bins expecting fewer than 5 draws
/// pooled), and its p-value.
fn chi_square(counts: &[u64], probs: &[f64]) -> (f64, usize, f64) {
    let n: u64 = counts.iter().sum();
    let mut bins: Vec<(f64, f64)> = Vec::new();
    let mut pool = (0.0, 0.0);
    for (c, p) in counts.iter().zip(probs) {
        if *p == 0.0 {
            continue;
        }
        let e = p * n as f64;
        if e < 5.0 {
            pool.0 += *c as f64;
            pool.1 += e;
        } else {
            bins.push((*c as f64, e));
        }
    }
    if pool.1 > 0.0 {
        bins.push(pool);
    }
    let stat: f64 = bins.iter().map(|(o, e)| (o - e) * (o - e) / e).sum();
    let df = bins.len().saturating_sub(1).max(1);
    (stat, df, gamma_q(df as f64 / 2.0, stat / 2.0))
}

/// The significance the distribution tests reject at.
const ALPHA: f64 = 1e-3;

#[test]
fn the_chi_square_tail_matches_known_values() {
    // Chi-square critical values: df 1 at 3.841 (p 0.05), df 10 at 23.209 (p 0.01),
    // df 49 at 85.351 (p 0.001).
    assert!((gamma_q(0.5, 3.841 / 2.0) - 0.05).abs() < 1e-4);
    assert!((gamma_q(5.0, 23.209 / 2.0) - 0.01).abs() < 1e-4);
    assert!((gamma_q(24.5, 85.351 / 2.0) - 0.001).abs() < 1e-4);
}

/// 20000 copies of one 50-entry row, drawn in one call: every draw is a survivor, and
/// the histogram matches the filtered distribution.
fn check_distribution(row: &[f32], options: &Options, sampling: &Sampling) -> f64 {
    check_copies(row, options, sampling, 20_000)
}

/// The draws from `copies` copies of `row`, as one call would draw them, made in blocks
/// of rows, each with its row offset: on GL every submission holds wgpu's context lock
/// while it runs, and a test's thread that waits over 6 s for that lock panics.
fn draw_copies<T: Element + Copy>(
    ctx: &Context,
    row: &[T],
    copies: usize,
    options: &Options,
    sampling: &Sampling,
) -> Vec<u32> {
    const BLOCK: usize = 1000;
    let cols = row.len();
    let input: Vec<T> = row.iter().copied().cycle().take(BLOCK * cols).collect();
    let mut ids = Vec::with_capacity(copies);
    for first in (0..copies).step_by(BLOCK) {
        let n = BLOCK.min(copies - first);
        let shape = Shape::new(n, cols);
        let s = sampling.with_row_offset(first as u32);
        let block = &input[..n * cols];
        ids.extend(draw(ctx, block, shape, options, &s, HostInputs::default()).0);
    }
    ids
}

/// [`check_distribution`] with `copies` copies of the row.
fn check_copies(row: &[f32], options: &Options, sampling: &Sampling, copies: usize) -> f64 {
    let ctx = ctx();
    let cols = row.len();
    let ids = draw_copies(ctx, row, copies, options, sampling);
    let want = sample_filter_f64(row, cols, options, &HostInputs::default(), sampling)[0]
        .clone()
        .expect("a row to draw from");
    let mut counts = vec![0u64; cols];
    for (r, &id) in ids.iter().enumerate() {
        assert!((id as usize) < cols, "row {r}: id {id}");
        assert!(
            want[id as usize] > 0.0,
            "row {r} drew {id}, which {sampling:?} filters out"
        );
        counts[id as usize] += 1;
    }
    let (stat, df, p) = chi_square(&counts, &want);
    eprintln!(
        "{sampling:?} T={} ({copies} copies, kernel {:?}): chi2 {stat:.2}, df {df}, p {p:.4}",
        options.temperature,
        options.kernel()
    );
    assert!(
        p > ALPHA,
        "{sampling:?}: chi-square {stat:.2} on {df} df, p {p:.2e}"
    );
    p
}

/// `options` with the draw split into `parts` parts per row, once the planner is seen to
/// split `shape` so (a split test that ran one workgroup per row would prove nothing).
fn split(ctx: &Context, shape: Shape, options: Options, parts: u32) -> Options {
    let forced = options
        .with_kernel(RowKernel::SplitRow)
        .with_split_parts(parts);
    let plan = ctx.sample_plan(shape, Dtype::F32, &forced).expect("a plan");
    let split = plan.split.expect("a split plan");
    assert_eq!(split.parts, parts, "{shape:?}: {split:?}");
    forced
}

/// `options` with one workgroup per row, whatever the shape.
fn one_workgroup(options: Options) -> Options {
    options.with_kernel(RowKernel::WorkgroupShared)
}

fn fifty_logits() -> Vec<f32> {
    let mut rng = Rng::new(50);
    (0..50).map(|_| rng.normal(0.0, 1.5)).collect()
}

#[test]
fn draws_follow_the_distribution_unfiltered_and_with_temperature() {
    let row = fifty_logits();
    check_distribution(&row, &Options::softmax(), &Sampling::new(1));
    check_distribution(
        &row,
        &Options::softmax().with_temperature(0.7),
        &Sampling::new(2),
    );
    check_distribution(
        &row,
        &Options::softmax().with_temperature(2.5),
        &Sampling::new(3),
    );
}

#[test]
fn draws_follow_each_filter_and_their_combinations() {
    let row = fifty_logits();
    let softmax = Options::softmax();
    for s in [
        Sampling::new(11).with_top_k(10),
        Sampling::new(12).with_top_k(3),
        Sampling::new(13).with_top_p(0.7),
        Sampling::new(14).with_top_p(0.95),
        Sampling::new(15).with_min_p(0.1),
        Sampling::new(16).with_top_k(20).with_top_p(0.8),
        Sampling::new(17)
            .with_top_k(20)
            .with_top_p(0.8)
            .with_min_p(0.05),
        Sampling::new(18).with_top_p(0.9).with_min_p(0.2),
    ] {
        check_distribution(&row, &softmax, &s);
    }
    check_distribution(
        &row,
        &softmax.with_temperature(0.6),
        &Sampling::new(19).with_top_k(8).with_top_p(0.9),
    );
}

#[test]
fn split_rows_draws_follow_the_filtered_distribution() {
    // Each 50-entry row in 5 parts of 12 columns (the last of 2); fewer copies than one
    // workgroup per row gets, as each of the many rows runs every step of the split's
    // worst case (a_split_row_draws_what_one_workgroup_draws checks the draws
    // themselves).
    let row = fifty_logits();
    let copies = 4000;
    let parts = split(ctx(), Shape::new(1000, 50), Options::softmax(), 5);
    check_copies(
        &row,
        &parts.with_temperature(0.7),
        &Sampling::new(101),
        copies,
    );
    let s = Sampling::new(104)
        .with_top_k(20)
        .with_top_p(0.8)
        .with_min_p(0.05);
    check_copies(&row, &parts, &s, copies);
}

#[test]
fn ties_at_the_top_k_boundary_are_all_kept() {
    let row = [5.0f32, 1.0, 5.0, 3.0, 5.0, 3.0, 0.5, 2.0];
    let softmax = Options::softmax();
    // The 2nd largest is 5, tied three ways: all three 5s survive, nothing else.
    let s = Sampling::new(21).with_top_k(2);
    let want = sample_filter_f64(&row, 8, &softmax, &HostInputs::default(), &s)[0]
        .clone()
        .unwrap();
    assert_eq!(want.iter().filter(|&&p| p > 0.0).count(), 3);
    check_distribution(&row, &softmax, &s);
    // The 4th largest is 3, tied: the 5s and both 3s.
    let s = Sampling::new(22).with_top_k(4);
    let want = sample_filter_f64(&row, 8, &softmax, &HostInputs::default(), &s)[0]
        .clone()
        .unwrap();
    assert_eq!(want.iter().filter(|&&p| p > 0.0).count(), 5);
    check_distribution(&row, &softmax, &s);
    // k at or past the row's length keeps all.
    check_distribution(&row, &softmax, &Sampling::new(23).with_top_k(8));
    check_distribution(&row, &softmax, &Sampling::new(24).with_top_k(100));
}

#[test]
fn ties_at_the_top_p_boundary_follow_the_strict_rule() {
    // Probabilities exactly 1/2, 1/4, 1/4 (exact in f32 all the way).
    let row = [std::f32::consts::LN_2, 0.0, 0.0];
    let softmax = Options::softmax();
    let count = |s: &Sampling| {
        sample_filter_f64(&row, 3, &softmax, &HostInputs::default(), s)[0]
            .clone()
            .unwrap()
            .iter()
            .filter(|&&p| p > 0.0)
            .count()
    };
    // p = 0.5: what is above each 1/4 entry holds exactly 0.5, not less: only the head.
    let s = Sampling::new(31).with_top_p(0.5);
    assert_eq!(count(&s), 1);
    let ctx = ctx();
    let input: Vec<f32> = row.iter().copied().cycle().take(3 * 2000).collect();
    let (ids, _) = draw(
        ctx,
        &input,
        Shape::new(2000, 3),
        &softmax,
        &s,
        HostInputs::default(),
    );
    assert!(ids.iter().all(|&i| i == 0), "p = 0.5 kept a 1/4 entry");
    // p = 0.6: both tied 1/4 entries are kept.
    let s = Sampling::new(32).with_top_p(0.6);
    assert_eq!(count(&s), 3);
    check_distribution(&row, &softmax, &s);
    // p = 1 keeps all.
    check_distribution(&row, &softmax, &Sampling::new(33).with_top_p(1.0));
}

#[test]
fn greedy_is_the_reference_argmax_lowest_index_among_ties() {
    let ctx = ctx();
    let mut rng = Rng::new(40);
    let (rows, cols) = (64, 333);
    let mut input: Vec<f32> = (0..rows * cols).map(|_| rng.normal(0.0, 3.0)).collect();
    // Ties for the max in some rows, at two columns.
    for r in (0..rows).step_by(5) {
        let (a, b) = (rng.below(cols), rng.below(cols));
        input[r * cols + a] = 50.0;
        input[r * cols + b] = 50.0;
    }
    for s in [Sampling::greedy(), Sampling::new(7).with_top_k(1)] {
        let (ids, lp) = draw(
            ctx,
            &input,
            Shape::new(rows, cols),
            &Options::softmax(),
            &s,
            HostInputs::default(),
        );
        let log = softmax_f64_with(
            &input,
            cols,
            &Options::log_softmax(),
            &HostInputs::default(),
        );
        for r in 0..rows {
            let row = &input[r * cols..(r + 1) * cols];
            let max = row.iter().copied().fold(f32::MIN, f32::max);
            let want = row.iter().position(|&x| x == max).unwrap();
            assert_eq!(ids[r] as usize, want, "row {r}");
            let tol = Tolerance::for_op(wgpu_softmax::Op::LogSoftmax);
            assert!(
                tol.accepts(lp[r], log[r * cols + want]),
                "row {r} log-prob {}",
                lp[r]
            );
        }
    }
}

#[test]
fn a_seed_reproduces_its_draws_and_other_seeds_and_steps_differ() {
    let ctx = ctx();
    let row = fifty_logits();
    let input: Vec<f32> = row.iter().copied().cycle().take(50 * 500).collect();
    let shape = Shape::new(500, 50);
    let softmax = Options::softmax();
    let run = |s: Sampling| draw(ctx, &input, shape, &softmax, &s, HostInputs::default()).0;
    let a = run(Sampling::new(5).with_top_p(0.9));
    assert_eq!(
        a,
        run(Sampling::new(5).with_top_p(0.9)),
        "same seed, other ids"
    );
    let differs = |b: &Vec<u32>| a.iter().zip(b).filter(|(x, y)| x != y).count();
    assert!(differs(&run(Sampling::new(6).with_top_p(0.9))) > 100);
    assert!(differs(&run(Sampling::new(5 | 1 << 40).with_top_p(0.9))) > 100);
    assert!(differs(&run(Sampling::new(5).with_top_p(0.9).with_step(1))) > 100);
    // Identical rows in one call draw independently.
    let distinct: std::collections::BTreeSet<u32> = a.iter().copied().collect();
    assert!(distinct.len() > 5);
}

#[test]
fn the_draw_is_the_documented_generators_replayed_on_the_cpu() {
    let ctx = ctx();
    let (rows, cols) = (300, 200);
    let mut rng = Rng::new(60);
    let input: Vec<f32> = (0..rows * cols).map(|_| rng.normal(0.0, 2.0)).collect();
    let softmax = Options::softmax().with_temperature(0.8);
    let in_parts = split(ctx, Shape::new(rows, cols), softmax, 4);
    for (options, s) in [
        (softmax, Sampling::new(0xdead_beef_0123).with_step(9)),
        (
            softmax,
            Sampling::new(77)
                .with_top_k(30)
                .with_top_p(0.8)
                .with_column_offset(1000),
        ),
        (in_parts, Sampling::new(78).with_top_k(30).with_top_p(0.8)),
    ] {
        let (ids, _) = draw(
            ctx,
            &input,
            Shape::new(rows, cols),
            &options,
            &s,
            HostInputs::default(),
        );
        let kept = sample_filter_f64(&input, cols, &softmax, &HostInputs::default(), &s);
        let same = (0..rows)
            .filter(|&r| {
                let row = &input[r * cols..(r + 1) * cols];
                let kept = kept[r].as_ref().unwrap();
                sample_replay_f64(row, r, &softmax, &HostInputs::default(), &s, kept)
                    == Some(ids[r] as usize)
            })
            .count();
        eprintln!(
            "{s:?} (split {:?}): {same} of {rows} rows drew the CPU replay's column",
            options.kernel()
        );
        // The GPU adds f32 z and g, the replay f64: only near-ties may differ.
        assert!(same >= rows * 99 / 100, "{same} of {rows}");
    }
}

/// Draws from `input` with each of `samplings` (every draw a survivor, its log-probability
/// the reference's) and greedily (the lowest column of the row's max).
fn check_survivors_and_greedy(ctx: &Context, input: &[f32], shape: Shape, samplings: &[Sampling]) {
    let cols = shape.cols;
    let softmax = Options::softmax();
    let log = softmax_f64_with(input, cols, &Options::log_softmax(), &HostInputs::default());
    let tol = Tolerance::for_op(wgpu_softmax::Op::LogSoftmax);
    for s in samplings {
        let (ids, lp) = draw(ctx, input, shape, &softmax, s, HostInputs::default());
        let kept = sample_filter_f64(input, cols, &softmax, &HostInputs::default(), s);
        for r in 0..shape.rows {
            let id = ids[r] as usize;
            assert!(
                kept[r].as_ref().unwrap()[id] > 0.0,
                "{shape:?} {s:?} row {r}: drew {id}"
            );
            assert!(
                tol.accepts(lp[r], log[r * cols + id]),
                "{shape:?} row {r}: log-prob"
            );
        }
    }
    let (ids, _) = draw(
        ctx,
        input,
        shape,
        &softmax,
        &Sampling::greedy(),
        HostInputs::default(),
    );
    for (r, row) in input.chunks(cols).enumerate() {
        let max = row.iter().copied().fold(f32::MIN, f32::max);
        let want = row.iter().position(|&x| x == max).unwrap();
        assert_eq!(ids[r] as usize, want, "{shape:?} row {r}");
    }
}

#[test]
fn short_and_long_rows_draw_survivors_and_greedy_finds_the_max() {
    let ctx = ctx();
    for cols in [1usize, 2, 33, 4097, 200_001] {
        let rows = if cols > 10_000 { 3 } else { 40 };
        let mut rng = Rng::new(cols as u64);
        let input: Vec<f32> = (0..rows * cols).map(|_| rng.normal(0.0, 4.0)).collect();
        let s = Sampling::new(cols as u64).with_top_k(50).with_top_p(0.9);
        check_survivors_and_greedy(ctx, &input, Shape::new(rows, cols), &[s]);
    }
}

#[test]
fn sixteen_bit_logits_draw_from_their_own_values() {
    let ctx = ctx();
    let row = fifty_logits();
    let copies = 20_000;
    for dtype in ["f16", "bf16"] {
        // The f32 values the 16-bit logits hold, for the reference.
        let (bits, values): (Vec<u16>, Vec<f32>) = row
            .iter()
            .map(|&x| match dtype {
                "f16" => {
                    let h = half::f16::from_f32(x);
                    (h.to_bits(), h.to_f32())
                }
                _ => {
                    let h = half::bf16::from_f32(x);
                    (h.to_bits(), h.to_f32())
                }
            })
            .unzip();
        let s = Sampling::new(90).with_top_k(12).with_top_p(0.85);
        let softmax = Options::softmax();
        let want = sample_filter_f64(&values, 50, &softmax, &HostInputs::default(), &s)[0]
            .clone()
            .unwrap();
        let ids = if dtype == "f16" {
            let row: Vec<half::f16> = bits.iter().map(|&b| half::f16::from_bits(b)).collect();
            draw_copies(ctx, &row, copies, &softmax, &s)
        } else {
            let row: Vec<half::bf16> = bits.iter().map(|&b| half::bf16::from_bits(b)).collect();
            draw_copies(ctx, &row, copies, &softmax, &s)
        };
        let mut counts = vec![0u64; 50];
        for &id in &ids {
            assert!(want[id as usize] > 0.0, "{dtype}: drew {id}");
            counts[id as usize] += 1;
        }
        let (stat, df, p) = chi_square(&counts, &want);
        eprintln!("{dtype}: chi2 {stat:.2}, df {df}, p {p:.4}");
        assert!(
            p > ALPHA,
            "{dtype}: chi-square {stat:.2} on {df} df, p {p:.2e}"
        );
    }
}

#[test]
fn masked_entries_are_never_drawn_with_every_row_input() {
    let ctx = ctx();
    let (rows, cols) = (3000, 40);
    let mut rng = Rng::new(70);
    let input: Vec<f32> = (0..rows * cols).map(|_| rng.normal(0.0, 1.0)).collect();
    // Mask rows of 4 patterns: -inf on some columns (the largest logits among them),
    // finite biases elsewhere.
    let mask: Vec<f32> = (0..4 * cols)
        .map(|i| match i % 7 {
            0 | 3 => f32::NEG_INFINITY,
            5 => 1.5,
            _ => 0.0,
        })
        .collect();
    let lengths: Vec<u32> = (0..rows as u32).map(|r| 5 + r % 36).collect();
    let temps: Vec<f32> = (0..rows).map(|r| 0.5 + (r % 3) as f32 * 0.5).collect();
    let options = Options::softmax().with_causal(10).with_temperature(1.3);
    let inputs = || {
        HostInputs::default()
            .with_mask(&mask, 4)
            .with_lengths(&lengths)
            .with_temperatures(&temps)
    };
    let s = Sampling::new(71).with_min_p(0.02);
    let (ids, lp) = draw(ctx, &input, Shape::new(rows, cols), &options, &s, inputs());
    let kept = sample_filter_f64(&input, cols, &options, &inputs(), &s);
    let log_options = Options::log_softmax().with_causal(10).with_temperature(1.3);
    let log = softmax_f64_with(&input, cols, &log_options, &inputs());
    for r in 0..rows {
        let kept = kept[r].as_ref().unwrap();
        assert!(
            kept[ids[r] as usize] > 0.0,
            "row {r} drew a masked or filtered column {}",
            ids[r]
        );
        let tol = Tolerance::for_op(wgpu_softmax::Op::LogSoftmax);
        assert!(
            tol.accepts(lp[r], log[r * cols + ids[r] as usize]),
            "row {r} log-prob"
        );
    }
}

#[test]
fn rows_with_nothing_to_draw_give_no_token() {
    let ctx = ctx();
    let cols = 6;
    let ninf = f32::NEG_INFINITY;
    let input = [
        [ninf; 6],
        [1.0, f32::NAN, 2.0, 0.0, 0.0, 0.0],
        [1.0, 2.0, f32::INFINITY, 0.0, 0.0, 0.0],
        [ninf, ninf, 3.0, ninf, ninf, ninf],
    ]
    .concat();
    let shape = Shape::new(4, cols);
    for (policy, masked_lp) in [(MaskedRows::Nan, f32::NAN), (MaskedRows::Zero, ninf)] {
        let softmax = Options::softmax().with_masked_rows(policy);
        for (options, s) in [
            (softmax, Sampling::new(1).with_top_k(2).with_top_p(0.5)),
            (softmax, Sampling::greedy()),
            (
                split(ctx, shape, softmax, 2),
                Sampling::new(1).with_top_k(2).with_top_p(0.5),
            ),
            (split(ctx, shape, softmax, 2), Sampling::greedy()),
        ] {
            let (ids, lp) = draw(ctx, &input, shape, &options, &s, HostInputs::default());
            assert_eq!(ids, [NO_TOKEN, NO_TOKEN, NO_TOKEN, 2], "{policy:?} {s:?}");
            assert_eq!(lp[0].to_bits(), masked_lp.to_bits(), "{policy:?}");
            assert!(lp[1].is_nan() && lp[2].is_nan());
            assert_eq!(lp[3], 0.0);
        }
    }
    // A row of no columns has nothing to draw from either.
    let mut ids = [7u32; 2];
    block_on(ctx.sample::<f32>(
        &[],
        &mut ids,
        None,
        Shape::new(2, 0),
        &Options::softmax(),
        &Sampling::new(1),
        HostInputs::default(),
    ))
    .unwrap();
    assert_eq!(ids, [NO_TOKEN; 2]);
}

#[test]
fn a_small_chunk_budget_streams_rows_with_the_same_draws() {
    let small = block_on(Context::new(
        ContextOptions::default().with_host_chunk_bytes(64 * 1024),
    ))
    .expect("a context");
    let (rows, cols) = (200, 1000);
    let mut rng = Rng::new(80);
    let input: Vec<f32> = (0..rows * cols).map(|_| rng.normal(0.0, 2.0)).collect();
    let s = Sampling::new(81).with_top_k(40);
    let shape = Shape::new(rows, cols);
    let a = draw(
        ctx(),
        &input,
        shape,
        &Options::softmax(),
        &s,
        HostInputs::default(),
    );
    let b = draw(
        &small,
        &input,
        shape,
        &Options::softmax(),
        &s,
        HostInputs::default(),
    );
    assert_eq!(a.0, b.0, "chunked rows drew other ids");
    // A block of the rows, drawn on its own with its row offset, draws the same.
    let (first, n) = (120, 50);
    let block = &input[first * cols..(first + n) * cols];
    let c = draw(
        ctx(),
        block,
        Shape::new(n, cols),
        &Options::softmax(),
        &s.with_row_offset(first as u32),
        HostInputs::default(),
    );
    assert_eq!(
        c.0,
        a.0[first..first + n],
        "a block with its row offset drew other ids"
    );
    assert_eq!(
        a.1.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        b.1.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
}

#[test]
fn bad_arguments_are_refused_before_any_gpu_work() {
    let ctx = ctx();
    let input = [0.0f32; 6];
    let shape = Shape::new(2, 3);
    let softmax = Options::softmax();
    let mut ids = [0u32; 2];
    let run = |s: &Sampling, ids: &mut [u32], inputs: HostInputs<'_>| {
        block_on(ctx.sample(&input, ids, None, shape, &softmax, s, inputs))
    };
    for s in [
        Sampling::new(1).with_top_k(0),
        Sampling::new(1).with_top_p(0.0),
        Sampling::new(1).with_min_p(1.5),
    ] {
        assert!(matches!(
            run(&s, &mut ids, HostInputs::default()),
            Err(Error::InvalidSampling(_))
        ));
    }
    let mut short = [0u32; 1];
    assert!(matches!(
        run(&Sampling::new(1), &mut short, HostInputs::default()),
        Err(Error::InputLength { which: "ids", .. })
    ));
    let mut stats = [[0f32; 2]; 2];
    assert!(matches!(
        run(
            &Sampling::new(1),
            &mut ids,
            HostInputs::default().with_stats_out(&mut stats)
        ),
        Err(Error::Unsupported(_))
    ));
}

#[test]
fn the_resident_path_writes_ids_and_log_probs_into_app_buffers() {
    let (device, queue) = app_device(wgpu::Limits::default());
    let app = Context::from_device(&device, &queue, ContextOptions::default()).expect("context");
    let (rows, cols) = (37, 1025);
    let mut rng = Rng::new(90);
    let input: Vec<f32> = (0..rows * cols).map(|_| rng.normal(0.0, 2.0)).collect();
    let logits = storage_buffer(&device, &queue, bytemuck::cast_slice(&input));
    // Ids at byte 256 and log-probs at byte 512 of one buffer.
    let out = storage_buffer(&device, &queue, &vec![0u8; 512 + rows * 4]);
    let s = Sampling::new(91).with_top_k(20).with_min_p(0.01);
    let softmax = Options::softmax();
    let mut encoder = device.create_command_encoder(&Default::default());
    let outputs = SampleOutputs::new(Region::new(&out).with_offset(256))
        .with_logprobs(Region::new(&out).with_offset(512));
    app.encode_sample(
        &mut encoder,
        MatrixView::new(&logits),
        outputs,
        Shape::new(rows, cols),
        &softmax,
        &s,
        &RowInputs::NONE,
    )
    .expect("encode");
    queue.submit([encoder.finish()]);
    let bytes = read_bytes(&device, &queue, &out);
    let ids: Vec<u32> = bytemuck::pod_collect_to_vec(&bytes[256..256 + rows * 4]);
    let lp: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes[512..512 + rows * 4]);
    let (host_ids, host_lp) = draw(
        ctx(),
        &input,
        Shape::new(rows, cols),
        &softmax,
        &s,
        HostInputs::default(),
    );
    assert_eq!(ids, host_ids, "resident and host paths drew differently");
    assert_eq!(lp, host_lp);
    // Overlapping outputs are refused.
    let mut encoder = device.create_command_encoder(&Default::default());
    let clash = SampleOutputs::new(Region::new(&out).with_offset(256))
        .with_logprobs(Region::new(&out).with_offset(256 + 4 * 10));
    assert!(matches!(
        app.encode_sample(
            &mut encoder,
            MatrixView::new(&logits),
            clash,
            Shape::new(rows, cols),
            &softmax,
            &s,
            &RowInputs::NONE
        ),
        Err(Error::RegionOverlap { .. })
    ));
    let into_input = SampleOutputs::new(Region::new(&logits));
    assert!(matches!(
        app.encode_sample(
            &mut encoder,
            MatrixView::new(&logits),
            into_input,
            Shape::new(rows, cols),
            &softmax,
            &s,
            &RowInputs::NONE
        ),
        Err(Error::RegionOverlap { .. })
    ));
}

#[test]
fn rows_past_a_software_adapters_loop_cap_are_split() {
    let ctx = ctx();
    let cols = 5_000_000;
    let mut rng = Rng::new(95);
    let input: Vec<f32> = (0..cols).map(|_| rng.normal(0.0, 2.0)).collect();
    let shape = Shape::new(1, cols);
    let softmax = Options::softmax();
    let s = Sampling::new(96).with_top_k(5);
    let mut ids = [0u32; 1];
    // One workgroup cannot sweep the row within Mesa's loop cap: forced, it is refused.
    let forced = block_on(ctx.sample(
        &input,
        &mut ids,
        None,
        shape,
        &one_workgroup(softmax),
        &s,
        HostInputs::default(),
    ));
    if ctx.caps().max_loop_iterations.is_some() {
        assert!(matches!(forced, Err(Error::Unsupported(_))), "{forced:?}");
    }
    // The planner splits it, and the draw is one of the five largest.
    let plan = ctx.sample_plan(shape, Dtype::F32, &softmax).expect("plan");
    assert!(plan.split.is_some(), "{plan:?}");
    let (ids, _) = draw(ctx, &input, shape, &softmax, &s, HostInputs::default());
    let kept = sample_filter_f64(&input, cols, &softmax, &HostInputs::default(), &s);
    let kept = kept[0].as_ref().unwrap();
    assert_eq!(kept.iter().filter(|&&p| p > 0.0).count(), 5);
    assert!(kept[ids[0] as usize] > 0.0, "drew {}", ids[0]);
}

/// Seeded rows of normal logits, every other one rounded to halves (ties at the filters'
/// edges).
fn tied_rows(seed: u64, rows: usize, cols: usize) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..rows * cols)
        .map(|i| {
            let x = rng.normal(0.0, 3.0);
            if (i / cols).is_multiple_of(2) {
                (x * 2.0).round() / 2.0
            } else {
                x
            }
        })
        .collect()
}

#[test]
fn a_split_row_draws_what_one_workgroup_draws() {
    let ctx = ctx();
    let samplings = [
        Sampling::new(5),
        Sampling::new(6).with_top_k(40),
        Sampling::new(7).with_min_p(0.05),
        Sampling::new(8).with_top_p(0.6),
        Sampling::new(9)
            .with_top_k(40)
            .with_top_p(0.8)
            .with_min_p(0.02),
        Sampling::greedy(),
    ];
    for (rows, cols, parts) in [(200, 33, 3), (60, 1000, 5), (10, 4097, 7), (2, 40_000, 4)] {
        let input = tied_rows(cols as u64, rows, cols);
        let shape = Shape::new(rows, cols);
        for options in [Options::softmax(), Options::softmax().with_temperature(0.7)] {
            let in_parts = split(ctx, shape, options, parts);
            let log = softmax_f64_with(
                &input,
                cols,
                &Options::log_softmax().with_temperature(options.temperature),
                &HostInputs::default(),
            );
            for s in &samplings {
                let one = draw(
                    ctx,
                    &input,
                    shape,
                    &one_workgroup(options),
                    s,
                    HostInputs::default(),
                );
                let (ids, lp) = draw(ctx, &input, shape, &in_parts, s, HostInputs::default());
                let kept = sample_filter_f64(&input, cols, &options, &HostInputs::default(), s);
                let mut differ = 0;
                for r in 0..rows {
                    let what = format!(
                        "{rows} x {cols} in {parts}, T {}, {s:?}, row {r}",
                        options.temperature
                    );
                    assert!(
                        kept[r].as_ref().unwrap()[ids[r] as usize] > 0.0,
                        "{what}: drew {}",
                        ids[r]
                    );
                    let tol = Tolerance::for_op(wgpu_softmax::Op::LogSoftmax);
                    assert!(
                        tol.accepts(lp[r], log[r * cols + ids[r] as usize]),
                        "{what}: log-prob {}",
                        lp[r]
                    );
                    differ += usize::from(ids[r] != one.0[r]);
                }
                // The parts' masses are summed in another order than one workgroup's:
                // only top-p's edge, where the mass above an entry meets p within
                // rounding, may move. Every other filter keeps the same entries, and the
                // draw among them is the same.
                if s.top_p.is_none() {
                    assert_eq!(differ, 0, "{rows} x {cols} in {parts}, {s:?}: ids differ");
                } else {
                    assert!(
                        differ <= rows / 100,
                        "{rows} x {cols}, {s:?}: {differ} differ"
                    );
                }
            }
        }
    }
}

#[test]
fn few_long_rows_are_split_and_draw_survivors() {
    let ctx = ctx();
    for (rows, cols) in [(1, 262_144), (2, 200_001)] {
        let shape = Shape::new(rows, cols);
        let plan = ctx
            .sample_plan(shape, Dtype::F32, &Options::softmax())
            .expect("plan");
        let parts = plan.split.map_or(1, |s| s.parts);
        assert!(parts > 1, "{shape:?}: {plan:?}");
        let input = tied_rows(cols as u64 + 7, rows, cols);
        let samplings = [
            Sampling::new(3).with_top_k(50).with_top_p(0.9),
            Sampling::new(4).with_top_p(0.5).with_min_p(0.1),
        ];
        check_survivors_and_greedy(ctx, &input, shape, &samplings);
        eprintln!("{shape:?}: {parts} parts of {:?}", plan.split);
    }
}
