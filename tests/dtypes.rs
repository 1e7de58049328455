//! f16 and bf16 storage (arithmetic in f32): the host API's typed calls, resident views
//! at odd offsets and strides, 16-bit masks, special values, and the backward pass, all
//! against the f64 reference on the values the 16-bit inputs hold.

mod common;

use common::{ctx, kernels, normal_matrix, read_back, softmax, storage_buffer, upload, Rng};
use wgpu_softmax::half::{bf16, f16};
use wgpu_softmax::internals::reference::{
    backward_f64, first_mismatch, softmax_f64_with, Tolerance,
};
use wgpu_softmax::{
    block_on, Context, ContextOptions, Dtype, Element, Error, HostInputs, MaskView, MatrixView, Op,
    Options, RowInputs, Shape,
};

fn quantize<T: Element>(x: &[f32]) -> Vec<T> {
    x.iter().map(|&v| T::from_f32(v)).collect()
}

fn widen<T: Element>(x: &[T]) -> Vec<f32> {
    x.iter().map(|v| v.to_f32()).collect()
}

/// Checks a result stored as `U` against the f64 reference on the inputs `x` (already
/// the values the 16-bit input holds).
fn check<U: Element>(
    got: &[U],
    x: &[f32],
    shape: Shape,
    options: &Options,
    inputs: &HostInputs,
    what: &str,
) {
    // A finite result beyond the storage type's range is stored as an infinity.
    let want: Vec<f64> = softmax_f64_with(x, shape.cols, options, inputs)
        .into_iter()
        .map(|r| {
            let stored = U::from_f32(r as f32).to_f32();
            if r.is_finite() && stored.is_infinite() {
                f64::from(stored)
            } else {
                r
            }
        })
        .collect();
    let tol = Tolerance::for_storage(options.op, U::DTYPE);
    if let Some((i, y, r)) = first_mismatch(&widen(got), &want, tol) {
        panic!(
            "{what} {shape:?} {:?} {:?}: element {i} (row {}, col {}) is {y:e}, reference \
             {r:e} (input {:e})",
            U::DTYPE,
            options.op,
            i / shape.cols,
            i % shape.cols,
            x[i]
        );
    }
}

/// Runs the typed host API from `T` to `U` and checks the result.
fn host<T: Element, U: Element>(ctx: &Context, x: &[f32], shape: Shape, options: &Options) {
    let input: Vec<T> = quantize(x);
    let mut out = vec![U::from_f32(0.0); x.len()];
    block_on(ctx.run(&input, &mut out, shape, options, HostInputs::default()))
        .unwrap_or_else(|e| panic!("{:?} -> {:?} {shape:?}: {e}", T::DTYPE, U::DTYPE));
    let what = format!("{:?} -> {:?}", T::DTYPE, U::DTYPE);
    check(
        &out,
        &widen(&input),
        shape,
        options,
        &HostInputs::default(),
        &what,
    );
}

#[test]
fn every_kernel_reads_and_writes_f16_and_bf16_at_awkward_lengths() {
    let ctx = ctx();
    for kernel in kernels(ctx) {
        for (rows, cols) in [(3, 1), (5, 3), (4, 7), (3, 33), (2, 255), (3, 1001)] {
            let shape = Shape::new(rows, cols);
            let x = normal_matrix((rows * 7919 + cols) as u64, rows * cols, 3.0);
            for options in [Options::softmax(), Options::log_softmax()] {
                let o = options.with_kernel(kernel);
                host::<f16, f16>(ctx, &x, shape, &o);
                host::<bf16, bf16>(ctx, &x, shape, &o);
            }
        }
    }
}

#[test]
fn mixed_storage_types_convert_on_the_way_in_and_out() {
    let ctx = ctx();
    for (rows, cols) in [(7, 5), (33, 64), (4, 3000)] {
        let shape = Shape::new(rows, cols);
        let x = normal_matrix(cols as u64, rows * cols, 2.0);
        let o = Options::softmax().with_temperature(0.7);
        host::<f16, f32>(ctx, &x, shape, &o);
        host::<f32, f16>(ctx, &x, shape, &o);
        host::<bf16, f32>(ctx, &x, shape, &o);
        host::<f32, bf16>(ctx, &x, shape, &o);
        host::<f16, bf16>(ctx, &x, shape, &Options::log_softmax());
    }
}

/// Bits apart of two 16-bit values of the same sign.
fn ulps(a: u16, b: u16) -> u16 {
    a.abs_diff(b)
}

#[test]
fn the_shaders_round_like_the_host_conversions() {
    // The f32 result rounded on the host and the 16-bit result rounded on the GPU agree
    // to the last bit, except where the two f32 computations straddle a rounding
    // boundary: then they are one unit apart.
    let ctx = ctx();
    let shape = Shape::new(64, 200);
    let x: Vec<f32> = widen(&quantize::<f16>(&normal_matrix(5, 64 * 200, 4.0)));
    for options in [Options::softmax(), Options::log_softmax()] {
        let exact = softmax(ctx, &x, shape, &options).unwrap();
        let mut h = vec![f16::ZERO; x.len()];
        block_on(ctx.run(&x, &mut h, shape, &options, HostInputs::default())).unwrap();
        let mut b = vec![bf16::ZERO; x.len()];
        block_on(ctx.run(&x, &mut b, shape, &options, HostInputs::default())).unwrap();
        let mut same = 0;
        for i in 0..x.len() {
            let (hh, bb) = (f16::from_f32(exact[i]), bf16::from_f32(exact[i]));
            let (h_bits, b_bits) = (h[i].to_bits(), b[i].to_bits());
            assert!(
                ulps(h_bits, hh.to_bits()) <= 1,
                "f16 {i}: {:?} vs {:?}",
                h[i],
                hh
            );
            assert!(
                ulps(b_bits, bb.to_bits()) <= 1,
                "bf16 {i}: {:?} vs {:?}",
                b[i],
                bb
            );
            same += usize::from(h_bits == hh.to_bits() && b_bits == bb.to_bits());
        }
        assert!(same * 10 >= x.len() * 9, "only {same} of {} agree", x.len());
    }
}

#[test]
fn special_values_in_16_bits() {
    let ctx = ctx();
    let inf = f32::INFINITY;
    let rows: Vec<Vec<f32>> = vec![
        vec![1.0, -inf, 2.0, -inf, 0.5],            // -inf entries give 0
        vec![-inf; 5],                              // fully masked: NaN
        vec![1.0, f32::NAN, 2.0, 3.0, 4.0],         // NaN poisons the row
        vec![1.0, inf, 2.0, 3.0, 4.0],              // +inf poisons the row
        vec![65504.0, -65504.0, 0.0, 65504.0, 1.0], // f16's extremes
        vec![6e-8, -6e-8, 1e-5, 0.0, -0.0],         // f16 subnormals
    ];
    let cols = 5;
    let x: Vec<f32> = rows.concat();
    let shape = Shape::new(rows.len(), cols);
    for options in [Options::softmax(), Options::log_softmax()] {
        host::<f16, f16>(ctx, &x, shape, &options);
        host::<bf16, bf16>(ctx, &x, shape, &options);
        host::<f16, f32>(ctx, &x, shape, &options);
    }
    // bf16 has f32's range: values near f32::MAX come out right.
    let big = [3e38f32, -3e38, 1e38, 3e38, 0.0];
    host::<bf16, bf16>(ctx, &big, Shape::new(1, 5), &Options::softmax());
    host::<bf16, f32>(ctx, &big, Shape::new(1, 5), &Options::log_softmax());
}

#[test]
fn an_f16_log_softmax_below_its_range_is_minus_infinity() {
    let ctx = ctx();
    // log-softmax of the second entry is about -1e5, beyond f16's -65504.
    let x = [0.0f32, -1e5, -1.0];
    let mut out = [f16::ZERO; 3];
    block_on(ctx.run(
        &x,
        &mut out,
        Shape::new(1, 3),
        &Options::log_softmax(),
        HostInputs::default(),
    ))
    .unwrap();
    assert_eq!(out[1].to_f32(), f32::NEG_INFINITY);
    assert!(
        (out[0].to_f32() + 0.3133).abs() < 1e-3,
        "{:?}",
        out[0].to_f32()
    );
    let mut bf = [bf16::ZERO; 3];
    block_on(ctx.run(
        &x,
        &mut bf,
        Shape::new(1, 3),
        &Options::log_softmax(),
        HostInputs::default(),
    ))
    .unwrap();
    assert!((bf[1].to_f32() + 1e5).abs() < 1e3, "{:?}", bf[1].to_f32());
}

/// Row inputs with a 16-bit mask stored as `M`: f32 data and data stored as `M` too,
/// with every kernel, against the reference on the values the mask and data hold.
fn masks_with_temperatures_and_lengths<M: Element>(ctx: &Context) {
    let (rows, cols) = (6, 37);
    let shape = Shape::new(rows, cols);
    let x: Vec<f32> = widen(&quantize::<M>(&normal_matrix(11, rows * cols, 2.0)));
    let mut rng = Rng::new(3);
    let mask: Vec<M> = (0..2 * cols)
        .map(|_| {
            let v = if rng.unit() < 0.2 {
                f32::NEG_INFINITY
            } else {
                rng.normal(0.0, 1.0)
            };
            M::from_f32(v)
        })
        .collect();
    let lengths: Vec<u32> = (0..rows as u32).map(|r| 5 + r * 6).collect();
    let temps: Vec<f32> = (0..rows).map(|r| 0.5 + r as f32 * 0.25).collect();
    let inputs = || {
        HostInputs::default()
            .with_mask(&mask, 2)
            .with_lengths(&lengths)
            .with_temperatures(&temps)
    };
    let name = format!("{:?}", M::DTYPE);
    for kernel in kernels(ctx) {
        for options in [Options::softmax(), Options::log_softmax()] {
            let o = options.with_kernel(kernel).with_temperature(1.5);
            // f32 data with a 16-bit mask, and 16-bit data with a 16-bit mask.
            let mut y = vec![0.0f32; x.len()];
            block_on(ctx.run(&x, &mut y, shape, &o, inputs())).unwrap();
            check(
                &y,
                &x,
                shape,
                &o,
                &inputs(),
                &format!("f32 data, {name} mask"),
            );
            let xh: Vec<M> = quantize(&x);
            let mut yh = vec![M::from_f32(0.0); x.len()];
            block_on(ctx.run(&xh, &mut yh, shape, &o, inputs())).unwrap();
            let what = format!("{name} data, {name} mask");
            check(&yh, &x, shape, &o, &inputs(), &what);
        }
    }
}

#[test]
fn f16_masks_with_temperatures_and_lengths() {
    masks_with_temperatures_and_lengths::<f16>(ctx());
}

#[test]
fn bf16_masks_with_temperatures_and_lengths() {
    masks_with_temperatures_and_lengths::<bf16>(ctx());
}

#[test]
fn masks_on_four_element_boundaries_are_read_four_at_a_time() {
    // Mask rows of a multiple of 4 columns from a 16-byte (f32) or 8-byte (16-bit)
    // boundary are read as vectors; one element later they are read as words. Both
    // must give the same, right answer, with every kernel.
    let ctx = ctx();
    for cols in [64, 4100] {
        let shape = Shape::new(3, cols);
        let x = normal_matrix(cols as u64, 3 * cols, 2.0);
        let mut rng = Rng::new(cols as u64);
        let mask: Vec<f32> = (0..2 * cols)
            .map(|_| {
                if rng.unit() < 0.1 {
                    f32::NEG_INFINITY
                } else {
                    rng.normal(0.0, 1.0)
                }
            })
            .collect();
        for dtype in [Dtype::F32, Dtype::F16, Dtype::Bf16] {
            for first in [4usize, 1] {
                for kernel in kernels(ctx) {
                    let o = Options::softmax().with_kernel(kernel);
                    check_resident_mask(ctx, &x, shape, &o, (&mask, 2, dtype), first);
                }
            }
        }
    }
}

#[test]
fn a_mask_given_twice_is_one_mask_the_last() {
    // The old API had an f32 and an f16 mask field, and refused both at once. Now a
    // call has one mask of any storage type: a second `with_mask` replaces the first,
    // so the op adds the last mask only, never both.
    let ctx = ctx();
    let shape = Shape::new(2, 4);
    let x = normal_matrix(31, 8, 1.0);
    let m = [0.0f32, f32::NEG_INFINITY, 3.0, 0.0];
    let mh: Vec<f16> = quantize(&[1.0, 0.0, f32::NEG_INFINITY, -2.0]);
    let inputs = || HostInputs::default().with_mask(&m, 1).with_mask(&mh, 1);
    let held = inputs().mask.expect("a mask");
    assert_eq!((held.dtype(), held.rows(), held.len()), (Dtype::F16, 1, 4));
    let o = Options::softmax();
    let y = common::run(ctx, &x, shape, &o, inputs()).unwrap();
    check(&y, &x, shape, &o, &inputs(), "the last of two masks");
    let only_last = common::run(ctx, &x, shape, &o, HostInputs::default().with_mask(&mh, 1));
    assert_eq!(y, only_last.unwrap());
}

/// Streams `x` through `small`'s chunks from f16 and f32 data into f16, f32 and bf16,
/// with a mask stored as `M`.
fn stream_with_mask<M: Element>(small: &Context, x: &[f32], shape: Shape) {
    let cols = shape.cols;
    let lengths: Vec<u32> = (0..shape.rows as u32).map(|r| (r * 11) % 301 + 1).collect();
    let mask: Vec<M> = quantize(&normal_matrix(18, 3 * cols, 1.0));
    let inputs = || {
        HostInputs::default()
            .with_mask(&mask, 3)
            .with_lengths(&lengths)
    };
    let name = format!("{:?} mask", M::DTYPE);
    let o = Options::softmax();
    let xh: Vec<f16> = quantize(x);
    let xq = widen(&xh);
    let mut same = vec![f16::ZERO; x.len()];
    block_on(small.run(&xh, &mut same, shape, &o, inputs())).unwrap();
    check(
        &same,
        &xq,
        shape,
        &o,
        &inputs(),
        &format!("f16 -> f16 in chunks, {name}"),
    );
    let mut wide = vec![0.0f32; x.len()];
    block_on(small.run(&xh, &mut wide, shape, &o, inputs())).unwrap();
    check(
        &wide,
        &xq,
        shape,
        &o,
        &inputs(),
        &format!("f16 -> f32 in chunks, {name}"),
    );
    let mut narrow = vec![bf16::ZERO; x.len()];
    block_on(small.run(x, &mut narrow, shape, &o, inputs())).unwrap();
    check(
        &narrow,
        x,
        shape,
        &o,
        &inputs(),
        &format!("f32 -> bf16 in chunks, {name}"),
    );
}

#[test]
fn sixteen_bit_matrices_stream_through_small_host_chunks() {
    // Chunks of a few rows: odd byte counts per chunk (padded to whole words on the
    // way in and out), and for mixed types an output region after the input's.
    let options = ContextOptions::default().with_host_chunk_bytes(2048);
    let small = block_on(Context::new(options)).unwrap();
    let (rows, cols) = (29, 301);
    let shape = Shape::new(rows, cols);
    let x = normal_matrix(17, rows * cols, 2.0);
    stream_with_mask::<f16>(&small, &x, shape);
    stream_with_mask::<bf16>(&small, &x, shape);
    assert!(
        small.staging_bytes() <= 2 * 2 * 4096,
        "{}",
        small.staging_bytes()
    );
}

// ---- The GPU-resident API ------------------------------------------------------------

const SENTINEL: u16 = 0x5a5a;

/// A 16-bit matrix at element `start` with row stride `stride`, every other element
/// SENTINEL, in a buffer of whole words.
fn place(x: &[u16], start: usize, stride: usize, shape: Shape) -> Vec<u16> {
    let len = (start + (shape.rows - 1) * stride + shape.cols + 3).next_multiple_of(2);
    let mut buf = vec![SENTINEL; len];
    for r in 0..shape.rows {
        let at = start + r * stride;
        buf[at..at + shape.cols].copy_from_slice(&x[r * shape.cols..(r + 1) * shape.cols]);
    }
    buf
}

fn encode(
    ctx: &Context,
    input: MatrixView,
    output: MatrixView,
    shape: Shape,
    options: &Options,
    inputs: &RowInputs,
) {
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    ctx.encode(&mut encoder, input, output, shape, options, inputs)
        .expect("encode");
    ctx.queue().submit([encoder.finish()]);
}

#[test]
fn resident_16_bit_views_at_odd_offsets_and_strides_leave_neighbours_untouched() {
    let ctx = ctx();
    for dtype in [Dtype::F16, Dtype::Bf16] {
        let bits = |x: &[f32]| -> Vec<u16> {
            match dtype {
                Dtype::F16 => x.iter().map(|&v| f16::from_f32(v).to_bits()).collect(),
                _ => x.iter().map(|&v| bf16::from_f32(v).to_bits()).collect(),
            }
        };
        let value = |b: u16| match dtype {
            Dtype::F16 => f16::from_bits(b).to_f32(),
            _ => bf16::from_bits(b).to_f32(),
        };
        for kernel in kernels(ctx) {
            // (start, stride) in elements: odd, even but not a multiple of 4, aligned.
            for (cols, start, stride) in [(9, 1, 11), (33, 3, 35), (40, 2, 42), (64, 4, 68)] {
                let shape = Shape::new(5, cols);
                let x = normal_matrix(cols as u64, 5 * cols, 3.0);
                let xb = bits(&x);
                let xq: Vec<f32> = xb.iter().map(|&b| value(b)).collect();
                let src = upload(ctx, &place(&xb, start, stride, shape));
                // The output at another odd place, in a buffer full of sentinels.
                let (out_start, out_stride) = (start + 2, stride + 1);
                let before = place(&vec![SENTINEL; 5 * cols], out_start, out_stride, shape);
                let dst = upload(ctx, &before);
                let o = Options::softmax().with_kernel(kernel);
                let view = |b, s: usize, st: usize| {
                    MatrixView::new(b)
                        .with_offset(2 * s as u64)
                        .with_row_stride(st)
                        .with_dtype(dtype)
                };
                encode(
                    ctx,
                    view(&src, start, stride),
                    view(&dst, out_start, out_stride),
                    shape,
                    &o,
                    &RowInputs::default(),
                );
                let after: Vec<u16> = read_back(ctx, &dst);
                let mut got = Vec::new();
                for (i, (&a, &b)) in after.iter().zip(&before).enumerate() {
                    let rel = i as isize - out_start as isize;
                    let inside = rel >= 0
                        && (rel as usize) % out_stride < cols
                        && (rel as usize) / out_stride < shape.rows;
                    if inside {
                        got.push(value(a));
                    } else {
                        assert_eq!(
                            a, b,
                            "{dtype:?} {kernel:?} cols {cols}: element {i} changed"
                        );
                    }
                }
                let what = format!("{dtype:?} {kernel:?} start {start} stride {stride}");
                let tol = Tolerance::for_storage(Op::Softmax, dtype);
                let want = softmax_f64_with(&xq, cols, &o, &HostInputs::default());
                if let Some((i, y, r)) = first_mismatch(&got, &want, tol) {
                    panic!("{what}: element {i} is {y}, reference {r}");
                }
                // In place, at the input's odd placement.
                encode(
                    ctx,
                    view(&src, start, stride),
                    view(&src, start, stride),
                    shape,
                    &o.with_kernel(kernel),
                    &RowInputs::default(),
                );
                let after: Vec<u16> = read_back(ctx, &src);
                let got: Vec<f32> = (0..shape.rows)
                    .flat_map(|r| {
                        let at = start + r * stride;
                        after[at..at + cols]
                            .iter()
                            .map(|&b| value(b))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                if let Some((i, y, r)) = first_mismatch(&got, &want, tol) {
                    panic!("{what} in place: element {i} is {y}, reference {r}");
                }
                assert_eq!(
                    after[0], SENTINEL,
                    "{what}: the element before the input changed"
                );
            }
        }
    }
}

/// A mask stored as `dtype`: its bytes, and the values they hold.
fn stored_mask(mask: &[f32], dtype: Dtype) -> (Vec<u8>, Vec<f32>) {
    match dtype {
        Dtype::F16 => {
            let h: Vec<f16> = quantize(mask);
            (bytemuck::cast_slice(&h).to_vec(), widen(&h))
        }
        Dtype::Bf16 => {
            let h: Vec<bf16> = quantize(mask);
            (bytemuck::cast_slice(&h).to_vec(), widen(&h))
        }
        _ => (bytemuck::cast_slice(mask).to_vec(), mask.to_vec()),
    }
}

/// Runs the resident op on `x` with a mask of `mask_rows` rows stored as `dtype`,
/// `first` elements into its buffer, and checks the result against the reference on
/// the values the mask holds.
fn check_resident_mask(
    ctx: &Context,
    x: &[f32],
    shape: Shape,
    o: &Options,
    (mask, mask_rows, dtype): (&[f32], usize, Dtype),
    first: usize,
) {
    let (bytes, values) = stored_mask(mask, dtype);
    let at = first * dtype.size() as usize;
    let mut padded = vec![0x5au8; at];
    padded.extend(&bytes);
    let mask_buffer = storage_buffer(ctx.device(), ctx.queue(), &padded);
    let inputs = RowInputs::default().with_mask(
        MaskView::new(&mask_buffer, mask_rows)
            .with_offset(at as u64)
            .with_dtype(dtype),
    );
    let input = upload(ctx, x);
    let output = upload(ctx, &vec![0.0f32; x.len()]);
    encode(
        ctx,
        MatrixView::new(&input),
        MatrixView::new(&output),
        shape,
        o,
        &inputs,
    );
    let got: Vec<f32> = read_back(ctx, &output);
    let host = HostInputs::default().with_mask(&values, mask_rows);
    let what = format!("{dtype:?} mask at element {first}, {:?}", o.kernel());
    check(&got, x, shape, o, &host, &what);
}

#[test]
fn resident_16_bit_masks_at_odd_offsets() {
    let ctx = ctx();
    let (rows, cols) = (4, 13);
    let x = normal_matrix(21, rows * cols, 2.0);
    let mut rng = Rng::new(9);
    let mask: Vec<f32> = (0..rows * cols).map(|_| rng.normal(0.0, 2.0)).collect();
    for dtype in [Dtype::F16, Dtype::Bf16] {
        // One element of padding first: the mask starts at byte 2.
        let o = Options::softmax().with_temperature(2.0);
        check_resident_mask(ctx, &x, Shape::new(rows, cols), &o, (&mask, rows, dtype), 1);
    }
}

#[test]
fn the_backward_pass_reads_and_writes_f16() {
    let ctx = ctx();
    let (rows, cols) = (5, 301);
    let shape = Shape::new(rows, cols);
    let x = normal_matrix(41, rows * cols, 2.0);
    let dy: Vec<f16> = quantize(&normal_matrix(42, rows * cols, 1.0));
    for options in [Options::softmax(), Options::log_softmax()] {
        let y: Vec<f16> = quantize(&softmax(ctx, &x, shape, &options).unwrap());
        let yb = upload(ctx, &y);
        let gb = upload(ctx, &dy);
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        ctx.encode_backward(
            &mut encoder,
            MatrixView::new(&yb).with_dtype(Dtype::F16),
            MatrixView::new(&gb).with_dtype(Dtype::F16),
            shape,
            &options,
        )
        .unwrap();
        ctx.queue().submit([encoder.finish()]);
        let dx: Vec<f16> = read_back::<f16>(ctx, &gb)[..x.len()].to_vec();
        let want = backward_f64(&widen(&y), &widen(&dy), cols, &options);
        // Gradients sum to about zero: the f16 rounding of each is relative to the
        // largest in its row, not to itself.
        let tol = Tolerance {
            abs: 2e-3,
            rel: 2e-3,
        };
        if let Some((i, g, r)) = first_mismatch(&widen(&dx), &want, tol) {
            panic!("{:?}: dx[{i}] is {g}, reference {r}", options.op);
        }
    }
}

#[test]
fn misaligned_and_short_16_bit_views_are_refused() {
    let ctx = ctx();
    let b = storage_buffer(ctx.device(), ctx.queue(), &[0u8; 64]);
    let shape = Shape::new(2, 7);
    let try_encode = |input: MatrixView, output: MatrixView| {
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        ctx.encode(
            &mut encoder,
            input,
            output,
            shape,
            &Options::softmax(),
            &RowInputs::NONE,
        )
    };
    let other = storage_buffer(ctx.device(), ctx.queue(), &[0u8; 64]);
    let h = |buf| MatrixView::new(buf).with_dtype(Dtype::F16);
    // Byte offset 1 is not a whole f16.
    let e = try_encode(h(&b).with_offset(1), h(&other)).unwrap_err();
    assert!(matches!(e, Error::Misaligned { required: 2, .. }), "{e:?}");
    // 14 f16 (28 bytes) at byte 34 end at byte 62: the word of the last one ends at 64,
    // which fits; at byte 38 it would end at 66 (word: 68), which does not.
    try_encode(h(&b).with_offset(34), h(&other)).unwrap();
    let e = try_encode(h(&b).with_offset(38), h(&other)).unwrap_err();
    assert!(
        matches!(e, Error::BufferTooSmall { needed: 68, .. }),
        "{e:?}"
    );
    // In place needs the same dtype too.
    let e = try_encode(h(&b), MatrixView::new(&b).with_dtype(Dtype::Bf16)).unwrap_err();
    assert_eq!(e, Error::PartialOverlap);
    try_encode(h(&b), h(&b)).unwrap();
}
