//! Bad input through the public API: each gives a clear `Err` before any GPU work.

mod common;

use common::{ctx, softmax};
use wgpu_softmax::internals::bandwidth::CopyKernel;
use wgpu_softmax::wgpu;
use wgpu_softmax::{
    block_on, Context, ContextOptions, Dtype, Error, HostInputs, MatrixView, Options, RowInputs,
    Shape, MIN_TEMPERATURE,
};

/// A buffer of `size` bytes with only `usage`, on the shared context's device.
fn buffer(usage: wgpu::BufferUsages, size: u64) -> wgpu::Buffer {
    ctx().device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size,
        usage,
        mapped_at_creation: false,
    })
}

fn encode(
    input: MatrixView,
    output: MatrixView,
    shape: Shape,
    options: &Options,
) -> Result<(), Error> {
    let ctx = ctx();
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    ctx.encode(
        &mut encoder,
        input,
        output,
        shape,
        options,
        &RowInputs::NONE,
    )
}

#[test]
fn a_length_not_matching_the_shape() {
    let ctx = ctx();
    let e = softmax(ctx, &[1.0; 5], Shape::new(2, 3), &Options::softmax()).unwrap_err();
    assert_eq!(
        e,
        Error::ShapeMismatch {
            rows: 2,
            cols: 3,
            expected: 6,
            actual: 5
        }
    );
    let mut out = vec![0.0f32; 5];
    let e = block_on(ctx.run(
        &[1.0f32; 6],
        &mut out,
        Shape::new(2, 3),
        &Options::softmax(),
        HostInputs::default(),
    ))
    .unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { actual: 5, .. }));
}

#[test]
fn a_shape_whose_size_overflows() {
    let ctx = ctx();
    let e = softmax(ctx, &[1.0], Shape::new(usize::MAX, 2), &Options::softmax()).unwrap_err();
    assert!(matches!(e, Error::ShapeOverflow { .. }));
}

#[test]
fn bad_temperatures() {
    let ctx = ctx();
    // 1e-40 is a positive subnormal whose reciprocal overflows f32.
    for t in [
        0.0,
        -1.0,
        f32::NAN,
        f32::INFINITY,
        -0.0,
        1e-40,
        f32::MIN_POSITIVE / 8.0,
        // The largest f32 below the smallest accepted temperature.
        f32::from_bits(MIN_TEMPERATURE.to_bits() - 1),
    ] {
        let e = softmax(
            ctx,
            &[1.0, 2.0],
            Shape::new(1, 2),
            &Options::softmax().with_temperature(t),
        )
        .unwrap_err();
        assert!(matches!(e, Error::InvalidTemperature(_)), "{t}: {e}");
    }
    // The smallest accepted temperatures: a row's largest entry gets (almost) all of it.
    for t in [f32::MIN_POSITIVE, 3.0e-39, MIN_TEMPERATURE] {
        let y = softmax(
            ctx,
            &[1.0, 2.0],
            Shape::new(1, 2),
            &Options::softmax().with_temperature(t),
        )
        .unwrap();
        assert_eq!(y, [0.0, 1.0], "{t}");
    }
}

#[test]
fn empty_shapes_give_empty_results() {
    let ctx = ctx();
    assert_eq!(
        softmax(ctx, &[], Shape::new(0, 5), &Options::softmax()).unwrap(),
        Vec::<f32>::new()
    );
    assert_eq!(
        softmax(ctx, &[], Shape::new(3, 0), &Options::softmax()).unwrap(),
        Vec::<f32>::new()
    );
    // Rows with no columns have the statistics of fully masked rows, which add nothing
    // when shards are combined.
    let mut y: [f32; 0] = [];
    let mut stats = [[0.0f32; 2]; 3];
    block_on(ctx.run(
        &[] as &[f32],
        &mut y,
        Shape::new(3, 0),
        &Options::softmax(),
        HostInputs::default().with_stats_out(&mut stats),
    ))
    .unwrap();
    assert_eq!(stats, [[f32::NEG_INFINITY; 2]; 3]);
    // More empty rows than any statistics slice can hold: an error, not an abort (the
    // caller's slice is checked against the rows; nothing is allocated for them).
    let e = block_on(ctx.run(
        &[] as &[f32],
        &mut y,
        Shape::new(usize::MAX, 0),
        &Options::softmax(),
        HostInputs::default().with_stats_out(&mut stats),
    ))
    .unwrap_err();
    assert_eq!(
        e,
        Error::InputLength {
            which: "stats",
            expected: usize::MAX,
            actual: 3
        }
    );
}

#[test]
fn a_stride_smaller_than_the_row() {
    let b = buffer(wgpu::BufferUsages::STORAGE, 256);
    let e = encode(
        MatrixView::new(&b).with_row_stride(3),
        MatrixView::new(&b),
        Shape::new(2, 4),
        &Options::softmax(),
    )
    .unwrap_err();
    assert_eq!(e, Error::InvalidStride { stride: 3, cols: 4 });
}

#[test]
fn an_offset_that_is_not_a_multiple_of_four() {
    let b = buffer(wgpu::BufferUsages::STORAGE, 256);
    let c = buffer(wgpu::BufferUsages::STORAGE, 256);
    let e = encode(
        MatrixView::new(&b).with_offset(6),
        MatrixView::new(&c),
        Shape::new(2, 4),
        &Options::softmax(),
    )
    .unwrap_err();
    assert_eq!(
        e,
        Error::Misaligned {
            offset: 6,
            required: 4
        }
    );
}

#[test]
fn a_buffer_too_small() {
    let small = buffer(wgpu::BufferUsages::STORAGE, 28);
    let big = buffer(wgpu::BufferUsages::STORAGE, 256);
    let e = encode(
        MatrixView::new(&big),
        MatrixView::new(&small),
        Shape::new(2, 4),
        &Options::softmax(),
    )
    .unwrap_err();
    assert_eq!(
        e,
        Error::BufferTooSmall {
            which: "output",
            needed: 32,
            size: 28
        }
    );
    let e = encode(
        MatrixView::new(&big).with_offset(240),
        MatrixView::new(&big),
        Shape::new(2, 4),
        &Options::softmax(),
    )
    .unwrap_err();
    assert!(matches!(
        e,
        Error::BufferTooSmall {
            which: "input",
            needed: 272,
            ..
        }
    ));
}

#[test]
fn a_buffer_without_storage_usage() {
    let plain = buffer(wgpu::BufferUsages::COPY_DST, 256);
    let good = buffer(wgpu::BufferUsages::STORAGE, 256);
    let e = encode(
        MatrixView::new(&plain),
        MatrixView::new(&good),
        Shape::new(2, 4),
        &Options::softmax(),
    )
    .unwrap_err();
    assert_eq!(
        e,
        Error::MissingUsage {
            which: "input",
            missing: "STORAGE"
        }
    );
}

#[test]
fn an_output_partially_overlapping_the_input() {
    let b = buffer(wgpu::BufferUsages::STORAGE, 1024);
    let e = encode(
        MatrixView::new(&b),
        MatrixView::new(&b).with_offset(16),
        Shape::new(2, 8),
        &Options::softmax(),
    )
    .unwrap_err();
    assert_eq!(e, Error::PartialOverlap);
    let e = encode(
        MatrixView::new(&b),
        MatrixView::new(&b).with_row_stride(9),
        Shape::new(2, 8),
        &Options::softmax(),
    )
    .unwrap_err();
    assert_eq!(e, Error::PartialOverlap);
    // Disjoint regions of one buffer are fine.
    encode(
        MatrixView::new(&b),
        MatrixView::new(&b).with_offset(512),
        Shape::new(2, 8),
        &Options::softmax(),
    )
    .unwrap();
}

#[test]
fn a_buffer_from_another_device_is_a_validation_error_not_a_panic() {
    let ctx = ctx();
    // Another context's device: another device of the process's one wgpu instance, as
    // the library creates them (see `Context::new`).
    let other = block_on(Context::new(ContextOptions::default())).expect("a second context");
    let foreign = other.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 256,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let mine = buffer(wgpu::BufferUsages::STORAGE, 256);
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    let e = ctx
        .encode(
            &mut encoder,
            MatrixView::new(&foreign),
            MatrixView::new(&mine),
            Shape::new(2, 4),
            &Options::softmax(),
            &RowInputs::NONE,
        )
        .unwrap_err();
    assert!(matches!(e, Error::Validation(_)), "{e}");
}

#[test]
fn errors_say_what_is_wrong() {
    let e = Error::ShapeMismatch {
        rows: 2,
        cols: 3,
        expected: 6,
        actual: 5,
    };
    assert_eq!(
        e.to_string(),
        "shape [2, 3] needs 6 elements but 5 were given"
    );
    assert_eq!(
        Error::InvalidTemperature(0.0).to_string(),
        "temperature must be finite and at least 2.93874e-39 (MIN_TEMPERATURE), got 0e0"
    );
}

#[test]
fn byte_counts_past_u64_are_errors_not_panics() {
    let b = buffer(wgpu::BufferUsages::STORAGE, 256);
    let out = buffer(wgpu::BufferUsages::STORAGE, 256);
    // One row: its stride is never used, however large.
    let one_row = Shape::new(1, 4);
    let huge_stride = MatrixView::new(&b).with_row_stride(1 << 62);
    assert_eq!(
        encode(
            huge_stride,
            MatrixView::new(&out),
            one_row,
            &Options::softmax()
        ),
        Ok(())
    );
    // Two: the second row lies past any buffer.
    let e = encode(
        huge_stride,
        MatrixView::new(&out),
        Shape::new(2, 4),
        &Options::softmax(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::ShapeOverflow { .. }), "{e}");
    // A 16-bit view whose end, rounded up to a whole word, passes u64::MAX.
    let e = encode(
        MatrixView::new(&b)
            .with_dtype(Dtype::F16)
            .with_offset(u64::MAX - 3),
        MatrixView::new(&out),
        Shape::new(1, 1),
        &Options::softmax(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::ShapeOverflow { .. }), "{e}");
}

#[test]
fn a_copy_kernel_too_large_to_count_is_refused() {
    let ctx = ctx();
    let a = buffer(wgpu::BufferUsages::STORAGE, 256);
    let copy = CopyKernel::new(ctx.device(), ctx.queue()).unwrap();
    // u32::MAX vec4s: more invocations than the kernel's u32 count can hold.
    let e = copy.bind(&a, &a, 68_719_476_735).err().expect("refused");
    assert!(matches!(e, Error::Unsupported(_)), "{e}");
}
