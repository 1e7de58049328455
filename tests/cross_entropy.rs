//! Fused cross-entropy against the f64 reference of its formula (and the reference's
//! gradient against finite differences): targets at the first and last column, ignored
//! rows, every row ignored, label smoothing with masked columns, z-loss, soft-cap on
//! huge logits, temperature, 16-bit storage, a vocabulary split in two shards, the
//! gradient in place on the resident path, and the refusals.

mod common;

use common::{app_device, ctx, read_bytes, storage_buffer, Rng};
use wgpu_softmax::internals::reference::cross_entropy_f64;
use wgpu_softmax::{
    block_on, combine_stats, half, wgpu, Context, ContextOptions, CrossEntropy, Element, Error,
    HostInputs, LossOutputs, MatrixView, Options, Reduction, Region, RowInputs, SampleOutputs,
    Sampling, Shape,
};

const LOSS_TOL: (f64, f64) = (1e-5, 1e-5);
const GRAD_TOL: (f64, f64) = (1e-6, 1e-4);

fn close(got: f32, want: f64, (abs, rel): (f64, f64)) -> bool {
    if want.is_nan() {
        return got.is_nan();
    }
    if want.is_infinite() {
        // A target under a -inf mask entry: an infinite loss, as PyTorch gives.
        return f64::from(got) == want;
    }
    (f64::from(got) - want).abs() <= abs + rel * want.abs()
}

/// The host call with f32 logits and gradient; returns (reduced, losses, grad).
fn run_ce<T: Element>(
    ctx: &Context,
    logits: &[T],
    targets: &[i64],
    shape: Shape,
    options: &Options,
    ce: &CrossEntropy,
    inputs: HostInputs<'_>,
) -> (f64, Vec<f32>, Vec<f32>) {
    let mut losses = vec![0f32; shape.rows];
    let mut grad = vec![0f32; shape.rows * shape.cols];
    let reduced = block_on(ctx.cross_entropy(
        logits,
        targets,
        &mut losses,
        Some(&mut grad[..]),
        shape,
        options,
        ce,
        inputs,
    ))
    .unwrap_or_else(|e| panic!("{shape:?} {ce:?}: {e}"));
    (reduced, losses, grad)
}

/// Checks a call against the reference, the reduction included.
#[allow(clippy::too_many_arguments)]
fn check(
    input: &[f32],
    targets: &[i64],
    shape: Shape,
    options: &Options,
    ce: &CrossEntropy,
    inputs: impl Fn() -> HostInputs<'static>,
    got: (f64, Vec<f32>, Vec<f32>),
) {
    let valid = targets.iter().filter(|&&t| t != ce.ignore_index).count();
    let scale = match ce.reduction {
        Reduction::Mean => f64::from(ce.grad_scale) / valid as f64,
        _ => f64::from(ce.grad_scale),
    };
    let scale = if valid == 0 { 0.0 } else { scale };
    let (losses, grad) =
        cross_entropy_f64(input, shape.cols, targets, options, &inputs(), ce, scale);
    for (r, (&g, &w)) in got.1.iter().zip(&losses).enumerate() {
        assert!(close(g, w, LOSS_TOL), "{ce:?} row {r}: loss {g} vs {w}");
    }
    for (i, (&g, &w)) in got.2.iter().zip(&grad).enumerate() {
        assert!(
            close(g, w, GRAD_TOL),
            "{ce:?} element {i} (row {}): grad {g:e} vs {w:e}",
            i / shape.cols
        );
    }
    let sum: f64 = losses.iter().sum();
    let want = match ce.reduction {
        Reduction::Mean => sum / valid as f64,
        _ => sum,
    };
    if want.is_nan() {
        assert!(got.0.is_nan(), "{ce:?}: reduced {}", got.0);
    } else {
        assert!(
            (got.0 - want).abs() <= 1e-5 * (1.0 + want.abs()),
            "{ce:?}: reduced {} vs {want}",
            got.0
        );
    }
}

fn no_inputs() -> HostInputs<'static> {
    HostInputs::default()
}

fn data(rows: usize, cols: usize, seed: u64) -> (Vec<f32>, Vec<i64>) {
    let mut rng = Rng::new(seed);
    let input: Vec<f32> = (0..rows * cols).map(|_| rng.normal(0.0, 3.0)).collect();
    let targets: Vec<i64> = (0..rows)
        .map(|r| match r % 5 {
            0 => 0,
            1 => cols as i64 - 1,
            2 => -100,
            _ => rng.below(cols) as i64,
        })
        .collect();
    (input, targets)
}

#[test]
fn losses_gradients_and_reductions_match_the_reference() {
    let ctx = ctx();
    for cols in [1usize, 5, 1000, 5003] {
        let rows = 37;
        let (input, targets) = data(rows, cols, cols as u64);
        let shape = Shape::new(rows, cols);
        for reduction in [Reduction::None, Reduction::Sum, Reduction::Mean] {
            let ce = CrossEntropy::default()
                .with_reduction(reduction)
                .with_grad_scale(0.5);
            let got = run_ce(
                ctx,
                &input,
                &targets,
                shape,
                &Options::softmax(),
                &ce,
                no_inputs(),
            );
            check(
                &input,
                &targets,
                shape,
                &Options::softmax(),
                &ce,
                no_inputs,
                got,
            );
        }
    }
}

#[test]
fn the_reference_gradient_matches_finite_differences() {
    // Values on a 1/8 grid and h = 2^-10: x +- h is exact in f32.
    let cols = 7;
    let input: Vec<f32> = (0..cols)
        .map(|j| ((j * 5) % 11) as f32 / 8.0 - 0.5)
        .collect();
    let mask: Vec<f32> = (0..cols)
        .map(|j| {
            if j == 4 {
                f32::NEG_INFINITY
            } else {
                0.25 * j as f32
            }
        })
        .collect();
    let options = Options::softmax().with_temperature(0.7).with_softcap(2.0);
    let ce = CrossEntropy::default()
        .with_label_smoothing(0.2)
        .with_z_loss(0.05);
    let inputs = || HostInputs::default().with_mask(&mask, 1);
    let loss = |x: &[f32]| cross_entropy_f64(x, cols, &[2], &options, &inputs(), &ce, 1.0).0[0];
    let (_, grad) = cross_entropy_f64(&input, cols, &[2], &options, &inputs(), &ce, 1.0);
    let h = 1.0 / 1024.0;
    for j in 0..cols {
        let (mut up, mut down) = (input.clone(), input.clone());
        up[j] += h;
        down[j] -= h;
        let fd = (loss(&up) - loss(&down)) / (2.0 * f64::from(h));
        assert!(
            (fd - grad[j]).abs() < 1e-5,
            "col {j}: finite difference {fd} vs {}",
            grad[j]
        );
    }
}

#[test]
fn smoothing_with_masked_columns_z_loss_and_every_row_input() {
    let ctx = ctx();
    let (rows, cols) = (24, 64);
    let (input, mut targets) = data(rows, cols, 3);
    let mask: Vec<f32> = (0..3 * cols)
        .map(|i| match i % 9 {
            0 => f32::NEG_INFINITY,
            4 => 0.5,
            _ => 0.0,
        })
        .collect();
    let lengths: Vec<u32> = (0..rows as u32).map(|r| 20 + 2 * r).collect();
    let temps: Vec<f32> = (0..rows).map(|r| 0.5 + 0.1 * r as f32).collect();
    // Targets inside each row's unmasked columns (the mask's -inf entries are at
    // multiples of 9 of its flat index; lengths and the causal limit allow 20 or more).
    for (r, t) in targets.iter_mut().enumerate() {
        if *t >= 0 {
            let mut c = 1 + (r * 7) % 18;
            while ((r % 3) * cols + c) % 9 == 0 {
                c += 1;
            }
            *t = c as i64;
        }
    }
    let mask: &'static [f32] = Box::leak(mask.into_boxed_slice());
    let lengths: &'static [u32] = Box::leak(lengths.into_boxed_slice());
    let temps: &'static [f32] = Box::leak(temps.into_boxed_slice());
    let inputs = move || {
        HostInputs::default()
            .with_mask(mask, 3)
            .with_lengths(lengths)
            .with_temperatures(temps)
    };
    let options = Options::softmax().with_temperature(1.3).with_causal(30);
    for ce in [
        CrossEntropy::default().with_label_smoothing(0.1),
        CrossEntropy::default()
            .with_z_loss(1e-3)
            .with_reduction(Reduction::Sum),
        CrossEntropy::default()
            .with_label_smoothing(0.3)
            .with_z_loss(0.01),
    ] {
        let got = run_ce(
            ctx,
            &input,
            &targets,
            Shape::new(rows, cols),
            &options,
            &ce,
            inputs(),
        );
        check(
            &input,
            &targets,
            Shape::new(rows, cols),
            &options,
            &ce,
            inputs,
            got,
        );
    }
}

#[test]
fn a_soft_cap_on_huge_logits_and_a_temperature() {
    let ctx = ctx();
    let (rows, cols) = (16, 300);
    let (mut input, targets) = data(rows, cols, 4);
    for (i, x) in input.iter_mut().enumerate() {
        match i % 13 {
            0 => *x = 1e4,
            6 => *x = -1e4,
            _ => {}
        }
    }
    let options = Options::softmax().with_softcap(30.0).with_temperature(0.8);
    let ce = CrossEntropy::default().with_label_smoothing(0.05);
    let got = run_ce(
        ctx,
        &input,
        &targets,
        Shape::new(rows, cols),
        &options,
        &ce,
        no_inputs(),
    );
    check(
        &input,
        &targets,
        Shape::new(rows, cols),
        &options,
        &ce,
        no_inputs,
        got,
    );
}

#[test]
fn every_row_ignored_gives_a_nan_mean_and_zero_gradients() {
    let ctx = ctx();
    let (input, _) = data(4, 10, 5);
    let targets = [-100i64; 4];
    let (mean, losses, grad) = run_ce(
        ctx,
        &input,
        &targets,
        Shape::new(4, 10),
        &Options::softmax(),
        &CrossEntropy::default(),
        no_inputs(),
    );
    assert!(mean.is_nan());
    assert!(losses.iter().all(|&l| l == 0.0));
    assert!(grad.iter().all(|&g| g == 0.0));
    // A row of NaN, and a row masked out whole, give NaN.
    let mut bad = input.clone();
    bad[3] = f32::NAN;
    bad[10..20].fill(f32::NEG_INFINITY);
    let (_, losses, grad) = run_ce(
        ctx,
        &bad,
        &[1, 2, 3, 4],
        Shape::new(4, 10),
        &Options::softmax(),
        &CrossEntropy::default(),
        no_inputs(),
    );
    assert!(losses[0].is_nan() && losses[1].is_nan() && losses[2].is_finite());
    assert!(grad[..20].iter().all(|g| g.is_nan()) && grad[20..].iter().all(|g| g.is_finite()));
}

#[test]
fn sixteen_bit_logits_and_gradients() {
    let ctx = ctx();
    let (rows, cols) = (20, 777);
    let (input, targets) = data(rows, cols, 6);
    let ce = CrossEntropy::default();
    let options = Options::softmax();
    let halves: Vec<half::f16> = input.iter().map(|&x| half::f16::from_f32(x)).collect();
    let brains: Vec<half::bf16> = input.iter().map(|&x| half::bf16::from_f32(x)).collect();
    let as_f32 = |v: Vec<f32>| v;
    for (name, values, got) in [
        (
            "f16",
            as_f32(halves.iter().map(|h| h.to_f32()).collect()),
            run_ce(
                ctx,
                &halves,
                &targets,
                Shape::new(rows, cols),
                &options,
                &ce,
                no_inputs(),
            ),
        ),
        (
            "bf16",
            as_f32(brains.iter().map(|h| h.to_f32()).collect()),
            run_ce(
                ctx,
                &brains,
                &targets,
                Shape::new(rows, cols),
                &options,
                &ce,
                no_inputs(),
            ),
        ),
    ] {
        eprintln!("{name}");
        check(
            &values,
            &targets,
            Shape::new(rows, cols),
            &options,
            &ce,
            no_inputs,
            got,
        );
    }
    // An f16 gradient: within f16's rounding of the reference.
    let mut losses = vec![0f32; rows];
    let mut grad = vec![half::f16::ZERO; rows * cols];
    block_on(ctx.cross_entropy(
        &input,
        &targets,
        &mut losses,
        Some(&mut grad[..]),
        Shape::new(rows, cols),
        &options,
        &ce,
        no_inputs(),
    ))
    .expect("f16 gradient");
    let valid = targets.iter().filter(|&&t| t != -100).count() as f64;
    let (_, want) = cross_entropy_f64(
        &input,
        cols,
        &targets,
        &options,
        &no_inputs(),
        &ce,
        1.0 / valid,
    );
    for (i, (g, w)) in grad.iter().zip(&want).enumerate() {
        assert!(
            close(g.to_f32(), *w, (1e-6, 2e-3)),
            "element {i}: {g} vs {w}"
        );
    }
}

#[test]
fn a_vocabulary_split_in_two_shards_gives_the_unsplit_loss_and_gradient() {
    let ctx = ctx();
    let other = block_on(Context::new(ContextOptions::default())).expect("a second context");
    let (rows, cols, cut) = (12, 1000, 377);
    let (input, targets) = data(rows, cols, 7);
    let options = Options::softmax().with_temperature(0.9).with_softcap(25.0);
    let ce = CrossEntropy::default()
        .with_z_loss(1e-3)
        .with_reduction(Reduction::Sum);
    let shard = |lo: usize, hi: usize| -> Vec<f32> {
        input
            .chunks(cols)
            .flat_map(|r| r[lo..hi].to_vec())
            .collect()
    };
    let (a, b) = (shard(0, cut), shard(cut, cols));
    // Each shard's statistics, combined.
    let stats_of = |ctx: &Context, x: &[f32], n: usize| {
        let mut y = vec![0f32; x.len()];
        let mut st = vec![[0f32; 2]; rows];
        block_on(ctx.run(
            x,
            &mut y,
            Shape::new(rows, n),
            &options,
            HostInputs::default().with_stats_out(&mut st),
        ))
        .expect("shard statistics");
        st
    };
    let (sa, sb) = (stats_of(ctx, &a, cut), stats_of(&other, &b, cols - cut));
    let whole: Vec<[f32; 2]> = sa
        .iter()
        .zip(&sb)
        .map(|(x, y)| combine_stats(*x, *y))
        .collect();
    let part = |ctx: &Context, x: &[f32], n: usize, offset: u32| {
        let mut losses = vec![0f32; rows];
        let mut grad = vec![0f32; rows * n];
        block_on(ctx.cross_entropy(
            x,
            &targets,
            &mut losses,
            Some(&mut grad[..]),
            Shape::new(rows, n),
            &options,
            &ce.with_column_offset(offset),
            HostInputs::default().with_stats_given(&whole),
        ))
        .expect("shard cross-entropy");
        (losses, grad)
    };
    let (la, ga) = part(ctx, &a, cut, 0);
    let (lb, gb) = part(&other, &b, cols - cut, cut as u32);
    let (_, losses, grad) = run_ce(
        ctx,
        &input,
        &targets,
        Shape::new(rows, cols),
        &options,
        &ce,
        no_inputs(),
    );
    for r in 0..rows {
        let sum = la[r] + lb[r];
        assert!(
            close(sum, f64::from(losses[r]), (1e-5, 1e-5)),
            "row {r}: shards {sum} vs whole {}",
            losses[r]
        );
        for j in 0..cols {
            let g = if j < cut {
                ga[r * cut + j]
            } else {
                gb[r * (cols - cut) + j - cut]
            };
            assert!(
                close(g, f64::from(grad[r * cols + j]), (1e-6, 1e-4)),
                "row {r} col {j}"
            );
        }
    }
    // Label smoothing needs the whole row's mean: refused for a shard.
    let mut losses = vec![0f32; rows];
    let got = block_on(ctx.cross_entropy::<f32, f32>(
        &a,
        &targets,
        &mut losses,
        None,
        Shape::new(rows, cut),
        &options,
        &ce.with_label_smoothing(0.1),
        HostInputs::default().with_stats_given(&whole),
    ));
    assert!(matches!(got, Err(Error::Unsupported(_))), "{got:?}");
}

#[test]
fn the_resident_path_writes_losses_and_the_gradient_in_place() {
    let (device, queue) = app_device(wgpu::Limits::default());
    let app = Context::from_device(&device, &queue, ContextOptions::default()).expect("context");
    let (rows, cols) = (9, 1024);
    let (input, targets) = data(rows, cols, 8);
    let logits = storage_buffer(&device, &queue, bytemuck::cast_slice(&input));
    let t32: Vec<i32> = targets.iter().map(|&t| t as i32).collect();
    let tbuf = storage_buffer(&device, &queue, bytemuck::cast_slice(&t32));
    let lbuf = storage_buffer(&device, &queue, &vec![0u8; rows * 4]);
    let ce = CrossEntropy::default()
        .with_reduction(Reduction::Sum)
        .with_label_smoothing(0.1);
    let mut encoder = device.create_command_encoder(&Default::default());
    let outputs = LossOutputs::new(Region::new(&lbuf)).with_grad(MatrixView::new(&logits));
    app.encode_cross_entropy(
        &mut encoder,
        MatrixView::new(&logits),
        Region::new(&tbuf),
        outputs,
        Shape::new(rows, cols),
        &Options::softmax(),
        &ce,
        &RowInputs::NONE,
    )
    .expect("encode");
    queue.submit([encoder.finish()]);
    let losses: Vec<f32> = bytemuck::pod_collect_to_vec(&read_bytes(&device, &queue, &lbuf));
    let grad: Vec<f32> = bytemuck::pod_collect_to_vec(&read_bytes(&device, &queue, &logits));
    let (want_l, want_g) = cross_entropy_f64(
        &input,
        cols,
        &targets,
        &Options::softmax(),
        &HostInputs::default(),
        &ce,
        1.0,
    );
    for r in 0..rows {
        assert!(close(losses[r], want_l[r], LOSS_TOL), "row {r}");
    }
    for (i, (&g, &w)) in grad.iter().zip(&want_g).enumerate() {
        assert!(close(g, w, GRAD_TOL), "element {i}: {g} vs {w}");
    }
    // A mean needs the rows not ignored, which only the GPU sees: refused.
    let mut encoder = device.create_command_encoder(&Default::default());
    let got = app.encode_cross_entropy(
        &mut encoder,
        MatrixView::new(&logits),
        Region::new(&tbuf),
        LossOutputs::new(Region::new(&lbuf)),
        Shape::new(rows, cols),
        &Options::softmax(),
        &CrossEntropy::default(),
        &RowInputs::NONE,
    );
    assert!(matches!(got, Err(Error::Unsupported(_))), "{got:?}");
    // Losses over the targets are refused.
    let got = app.encode_cross_entropy(
        &mut encoder,
        MatrixView::new(&logits),
        Region::new(&tbuf),
        LossOutputs::new(Region::new(&tbuf)),
        Shape::new(rows, cols),
        &Options::softmax(),
        &ce,
        &RowInputs::NONE,
    );
    assert!(matches!(got, Err(Error::RegionOverlap { .. })), "{got:?}");
}

#[test]
fn bad_targets_and_settings_are_refused_before_any_gpu_work() {
    let ctx = ctx();
    let input = [0f32; 6];
    let mut losses = [0f32; 2];
    let mut call = |targets: &[i64], ce: &CrossEntropy| {
        block_on(ctx.cross_entropy::<f32, f32>(
            &input,
            targets,
            &mut losses,
            None,
            Shape::new(2, 3),
            &Options::softmax(),
            ce,
            HostInputs::default(),
        ))
    };
    let ce = CrossEntropy::default();
    assert!(matches!(
        call(&[0, 3], &ce),
        Err(Error::InvalidTarget {
            row: 1,
            target: 3,
            ..
        })
    ));
    assert!(matches!(
        call(&[-1, 0], &ce),
        Err(Error::InvalidTarget { row: 0, .. })
    ));
    assert!(call(&[-100, 2], &ce).is_ok());
    assert!(call(&[7, 2], &ce.with_ignore_index(7)).is_ok());
    for bad in [
        ce.with_label_smoothing(-0.1),
        ce.with_label_smoothing(1.1),
        ce.with_z_loss(-1.0),
        ce.with_grad_scale(f32::NAN),
        ce.with_ignore_index(1 << 40),
    ] {
        assert!(
            matches!(call(&[0, 0], &bad), Err(Error::InvalidLoss(_))),
            "{bad:?}"
        );
    }
    assert!(matches!(
        call(&[0], &ce),
        Err(Error::InputLength {
            which: "targets",
            ..
        })
    ));
}

#[test]
fn gathered_log_probabilities_match_the_reference_log_softmax() {
    use wgpu_softmax::internals::reference::softmax_f64_with;
    let ctx = ctx();
    let (rows, cols, k) = (33, 4099, 5);
    let (mut input, _) = data(rows, cols, 9);
    input[0] = 1e4;
    let mut rng = Rng::new(10);
    let indices: Vec<i64> = (0..rows * k)
        .map(|i| match i % k {
            0 => 0,
            1 => cols as i64 - 1,
            _ => rng.below(cols) as i64,
        })
        .collect();
    let options = Options::softmax().with_softcap(50.0).with_temperature(1.7);
    let mut out = vec![0f32; rows * k];
    block_on(ctx.gather_log_probs(
        &input,
        &indices,
        k,
        &mut out,
        Shape::new(rows, cols),
        &options,
        HostInputs::default(),
    ))
    .expect("gather");
    let log_options = Options::log_softmax()
        .with_softcap(50.0)
        .with_temperature(1.7);
    let log = softmax_f64_with(&input, cols, &log_options, &HostInputs::default());
    for (i, &t) in indices.iter().enumerate() {
        let want = log[(i / k) * cols + t as usize];
        assert!(
            close(out[i], want, (1e-5, 1e-5)),
            "index {i}: {} vs {want}",
            out[i]
        );
    }
    // The resident path gathers the same, from the app's buffers.
    let (device, queue) = app_device(wgpu::Limits::default());
    let app = Context::from_device(&device, &queue, ContextOptions::default()).expect("context");
    let logits = storage_buffer(&device, &queue, bytemuck::cast_slice(&input));
    let i32s: Vec<i32> = indices.iter().map(|&t| t as i32).collect();
    let ibuf = storage_buffer(&device, &queue, bytemuck::cast_slice(&i32s));
    let obuf = storage_buffer(&device, &queue, &vec![0u8; rows * k * 4]);
    let mut encoder = device.create_command_encoder(&Default::default());
    app.encode_gather_log_probs(
        &mut encoder,
        MatrixView::new(&logits),
        Region::new(&ibuf),
        k as u32,
        Region::new(&obuf),
        Shape::new(rows, cols),
        &options,
        &RowInputs::NONE,
    )
    .expect("encode");
    queue.submit([encoder.finish()]);
    let got: Vec<f32> = bytemuck::pod_collect_to_vec(&read_bytes(&device, &queue, &obuf));
    assert_eq!(got, out, "resident and host gathers differ");
    // An index outside the row is refused by the host path.
    let bad = vec![cols as i64; rows * k];
    let got = block_on(ctx.gather_log_probs(
        &input,
        &bad,
        k,
        &mut out,
        Shape::new(rows, cols),
        &options,
        HostInputs::default(),
    ));
    assert!(matches!(got, Err(Error::InvalidTarget { .. })), "{got:?}");
}

#[test]
fn resident_losses_and_draws_over_more_than_one_binding_match_the_host_path() {
    // 1100 x 32000 f32 is 140.8 MB, past the 128 MiB binding: the resident calls record
    // two chunks of rows; the host path streams 32 MiB chunks.
    let (device, queue) = app_device(wgpu::Limits::default());
    let app = Context::from_device(&device, &queue, ContextOptions::default()).unwrap();
    let (rows, cols) = (1100usize, 32000usize);
    let mut rng = Rng::new(3);
    let input: Vec<f32> = (0..rows * cols).map(|_| rng.normal(0.0, 2.0)).collect();
    let targets: Vec<i64> = (0..rows).map(|r| ((r * 7919) % cols) as i64).collect();
    let logits = storage_buffer(&device, &queue, bytemuck::cast_slice(&input));
    let t32: Vec<i32> = targets.iter().map(|&t| t as i32).collect();
    let tbuf = storage_buffer(&device, &queue, bytemuck::cast_slice(&t32));
    let lbuf = storage_buffer(&device, &queue, &vec![0u8; rows * 4]);
    let ids = storage_buffer(&device, &queue, &vec![0u8; rows * 4]);
    let ce = CrossEntropy::default().with_reduction(Reduction::Sum);
    let s = Sampling::new(5).with_top_k(20);
    let mut enc = device.create_command_encoder(&Default::default());
    app.encode_cross_entropy(
        &mut enc,
        MatrixView::new(&logits),
        Region::new(&tbuf),
        LossOutputs::new(Region::new(&lbuf)),
        Shape::new(rows, cols),
        &Options::softmax(),
        &ce,
        &RowInputs::NONE,
    )
    .unwrap();
    app.encode_sample(
        &mut enc,
        MatrixView::new(&logits),
        SampleOutputs::new(Region::new(&ids)),
        Shape::new(rows, cols),
        &Options::softmax(),
        &s,
        &RowInputs::NONE,
    )
    .unwrap();
    queue.submit([enc.finish()]);
    let losses: Vec<f32> = bytemuck::pod_collect_to_vec(&read_bytes(&device, &queue, &lbuf));
    let got_ids: Vec<u32> = bytemuck::pod_collect_to_vec(&read_bytes(&device, &queue, &ids));
    let ctx = ctx();
    let mut host_losses = vec![0f32; rows];
    block_on(ctx.cross_entropy::<f32, f32>(
        &input,
        &targets,
        &mut host_losses,
        None,
        Shape::new(rows, cols),
        &Options::softmax(),
        &ce,
        HostInputs::default(),
    ))
    .unwrap();
    let mut host_ids = vec![0u32; rows];
    block_on(ctx.sample(
        &input,
        &mut host_ids,
        None,
        Shape::new(rows, cols),
        &Options::softmax(),
        &s,
        HostInputs::default(),
    ))
    .unwrap();
    let bad = losses
        .iter()
        .zip(&host_losses)
        .filter(|(a, b)| (*a - *b).abs() > 1e-4)
        .count();
    let diff = got_ids
        .iter()
        .zip(&host_ids)
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(bad, 0, "losses differ from the host path's");
    assert_eq!(diff, 0, "draws differ from the host path's");
}

#[test]
fn a_large_common_offset_cancels_in_the_loss_and_the_gather() {
    let ctx = ctx();
    // ln(1 + e) for target 0 of [off, off + 1], whatever the offset.
    let want = (1.0f64 + 1f64.exp()).ln();
    for off in [0.0f32, 1e4, 1e6, 1e7] {
        let x = [off, off + 1.0];
        let ce = CrossEntropy::default()
            .with_reduction(Reduction::Sum)
            .with_label_smoothing(0.2);
        let mut losses = [0f32; 1];
        block_on(ctx.cross_entropy::<f32, f32>(
            &x,
            &[0],
            &mut losses,
            None,
            Shape::new(1, 2),
            &Options::softmax(),
            &ce,
            HostInputs::default(),
        ))
        .expect("loss");
        // With smoothing 0.2: 0.8 (lse - z_0) + 0.2 (lse - mean z), mean z = off + 0.5.
        let smoothed = 0.8 * want + 0.2 * (want - 0.5);
        assert!(
            close(losses[0], smoothed, (1e-5, 1e-5)),
            "offset {off}: {} vs {smoothed}",
            losses[0]
        );
        let mut lp = [0f32; 2];
        block_on(ctx.gather_log_probs(
            &x,
            &[0, 1],
            2,
            &mut lp,
            Shape::new(1, 2),
            &Options::softmax(),
            HostInputs::default(),
        ))
        .expect("gather");
        assert!(close(lp[0], -want, (1e-5, 1e-5)), "offset {off}: {}", lp[0]);
        assert!(
            close(lp[1], 1.0 - want, (1e-5, 1e-5)),
            "offset {off}: {}",
            lp[1]
        );
    }
}
