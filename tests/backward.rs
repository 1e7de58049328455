//! The fused backward kernel: the softmax and log-softmax gradients against the f64
//! formula and against finite differences, through the host and GPU-resident APIs.

mod common;

use common::{ctx, normal_matrix, read_back, softmax, upload};
use wgpu_softmax::internals::reference::{
    backward_f64, first_mismatch, softmax_f64, Tolerance, BACKWARD_F32,
};
use wgpu_softmax::{block_on, Context, Error, MatrixView, Op, Options, Result, Shape};

/// The host backward op, blocking, into a new vector of the shape's length.
fn backward(
    ctx: &Context,
    y: &[f32],
    dy: &[f32],
    shape: Shape,
    options: &Options,
) -> Result<Vec<f32>> {
    let mut dx = vec![0.0; shape.rows * shape.cols];
    block_on(ctx.run_backward(y, dy, &mut dx, shape, options))?;
    Ok(dx)
}

fn check(got: &[f32], want: &[f64], what: &str) {
    if let Some((i, y, r)) = first_mismatch(got, want, BACKWARD_F32) {
        panic!("{what}: element {i} is {y:e}, reference {r:e}");
    }
}

#[test]
fn gradients_match_the_f64_formula() {
    let ctx = ctx();
    for (rows, cols) in [(4, 1), (5, 3), (3, 17), (4, 256), (3, 1025), (2, 30_001)] {
        let shape = Shape::new(rows, cols);
        let x = normal_matrix(cols as u64, rows * cols, 2.0);
        let dy = normal_matrix(7 + cols as u64, rows * cols, 1.0);
        for base in [Options::softmax(), Options::log_softmax()] {
            for t in [1.0, 2.0] {
                let o = base.with_temperature(t);
                let y = softmax(ctx, &x, shape, &o).unwrap();
                let dx = backward(ctx, &y, &dy, shape, &o).unwrap();
                check(
                    &dx,
                    &backward_f64(&y, &dy, cols, &o),
                    &format!("{shape:?} {o:?}"),
                );
            }
        }
    }
}

/// d/dx_j of sum_i dy_i * f(x)_i by central differences in f64, f the reference op.
fn finite_differences(x: &[f32], dy: &[f32], options: &Options) -> Vec<f64> {
    let cols = x.len();
    let loss = |x: &[f64]| -> f64 {
        let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let t = f64::from(options.temperature);
        let sum: f64 = x.iter().map(|v| ((v - m) / t).exp()).sum();
        x.iter()
            .zip(dy)
            .map(|(v, g)| {
                let z = (v - m) / t;
                let f = match options.op {
                    Op::Softmax => z.exp() / sum,
                    _ => z - sum.ln(),
                };
                f * f64::from(*g)
            })
            .sum()
    };
    let base: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    let h = 1e-5;
    (0..cols)
        .map(|j| {
            let (mut up, mut down) = (base.clone(), base.clone());
            up[j] += h;
            down[j] -= h;
            (loss(&up) - loss(&down)) / (2.0 * h)
        })
        .collect()
}

#[test]
fn gradients_match_finite_differences_on_small_rows() {
    let ctx = ctx();
    for cols in [2, 5, 9, 16] {
        let x = normal_matrix(cols as u64, cols, 1.5);
        let dy = normal_matrix(100 + cols as u64, cols, 1.0);
        for base in [Options::softmax(), Options::log_softmax()] {
            for t in [1.0, 0.5] {
                let o = base.with_temperature(t);
                let y = softmax(ctx, &x, Shape::new(1, cols), &o).unwrap();
                let dx = backward(ctx, &y, &dy, Shape::new(1, cols), &o).unwrap();
                check(
                    &dx,
                    &finite_differences(&x, &dy, &o),
                    &format!("{cols} {o:?}"),
                );
            }
        }
    }
}

#[test]
fn the_resident_backward_writes_dx_over_dy_and_nothing_else() {
    let ctx = ctx();
    let (rows, cols, stride, lead) = (3, 50, 53, 7);
    let shape = Shape::new(rows, cols);
    let x = normal_matrix(1, rows * cols, 2.0);
    let y = softmax(ctx, &x, shape, &Options::softmax()).unwrap();
    let dy = normal_matrix(2, rows * cols, 1.0);
    const GUARD: f32 = 4321.0;
    let mut grad_words = vec![GUARD; lead + rows * stride];
    for r in 0..rows {
        grad_words[lead + r * stride..][..cols].copy_from_slice(&dy[r * cols..][..cols]);
    }
    let y_buffer = upload(ctx, &y);
    let grad = upload(ctx, &grad_words);
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    let grad_view = MatrixView::new(&grad)
        .with_offset(lead as u64 * 4)
        .with_row_stride(stride);
    ctx.encode_backward(
        &mut encoder,
        MatrixView::new(&y_buffer),
        grad_view,
        shape,
        &Options::softmax(),
    )
    .unwrap();
    ctx.queue().submit([encoder.finish()]);
    let got: Vec<f32> = read_back(ctx, &grad);
    let mut dx = Vec::new();
    for (i, v) in got.iter().enumerate() {
        let inside = i >= lead && (i - lead) % stride < cols;
        if inside {
            dx.push(*v);
        } else {
            assert_eq!(*v, GUARD, "word {i} outside dx was written");
        }
    }
    check(
        &dx,
        &backward_f64(&y, &dy, cols, &Options::softmax()),
        "resident",
    );
    // y and grad may not overlap.
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    let e = ctx
        .encode_backward(
            &mut encoder,
            MatrixView::new(&grad),
            grad_view,
            shape,
            &Options::softmax(),
        )
        .unwrap_err();
    assert_eq!(e, Error::PartialOverlap);
}

#[test]
fn the_forward_reference_and_its_gradient_agree_on_a_row_sum() {
    // Softmax gradients sum to zero over a row (the outputs always sum to one).
    let ctx = ctx();
    let shape = Shape::new(4, 300);
    let x = normal_matrix(3, 1200, 2.0);
    let y = softmax(ctx, &x, shape, &Options::softmax()).unwrap();
    let want = softmax_f64(&x, 300, &Options::softmax());
    assert!(first_mismatch(&y, &want, Tolerance::for_op(Op::Softmax)).is_none());
    let dy = normal_matrix(4, 1200, 1.0);
    let dx = backward(ctx, &y, &dy, shape, &Options::softmax()).unwrap();
    for row in dx.chunks(300) {
        let sum: f64 = row.iter().map(|&v| f64::from(v)).sum();
        assert!(sum.abs() < 1e-5, "{sum}");
    }
}

#[test]
fn mismatched_gradient_lengths_are_refused() {
    let ctx = ctx();
    let e = backward(
        ctx,
        &[0.5; 4],
        &[1.0; 3],
        Shape::new(2, 2),
        &Options::softmax(),
    )
    .unwrap_err();
    assert_eq!(
        e,
        Error::InputLength {
            which: "dy",
            expected: 4,
            actual: 3
        }
    );
}
