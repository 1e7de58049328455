//! Matrices past the device's limits: rows longer than one storage binding, matrices
//! larger than one binding, and streaming through a small GPU memory budget.

mod common;

use common::{check_host, check_output, ctx, normal_matrix, read_back, upload};
use wgpu_softmax::wgpu;
use wgpu_softmax::{
    block_on, Context, ContextOptions, Dtype, HostInputs, MatrixView, Options, RowInputs, Sampling,
    Shape,
};

#[test]
fn a_single_row_of_40_million_elements() {
    // 160 MB: longer than the 128 MiB storage binding of the software adapters, so the
    // row is split into column windows.
    let ctx = ctx();
    let cols = 40_000_000;
    let x = normal_matrix(40, cols, 3.0);
    check_host(ctx, &x, Shape::new(1, cols), &Options::softmax());
}

#[test]
fn a_single_row_of_40_million_elements_is_drawn_from() {
    // Longer than one binding: the draw is split into parts, bound a window of parts at
    // a time.
    let ctx = ctx();
    let cols = 40_000_000;
    let x = normal_matrix(44, cols, 3.0);
    let shape = Shape::new(1, cols);
    let softmax = Options::softmax();
    let plan = ctx.sample_plan(shape, Dtype::F32, &softmax).expect("plan");
    let windows = plan.chunks.len();
    assert!(plan.split.is_some(), "{plan:?}");
    if ctx.caps().max_storage_binding_size < cols as u64 * 4 {
        assert!(windows > 1, "{plan:?}");
    }
    let draw = |s: &Sampling| {
        let mut ids = [0u32; 1];
        block_on(ctx.sample(
            &x,
            &mut ids,
            None,
            shape,
            &softmax,
            s,
            HostInputs::default(),
        ))
        .expect("sample");
        ids[0] as usize
    };
    let max = x.iter().copied().fold(f32::MIN, f32::max);
    assert_eq!(
        draw(&Sampling::greedy()),
        x.iter().position(|&v| v == max).unwrap()
    );
    // Top-k 5: one of the five largest (normal values: no ties among them).
    let mut sorted = x.clone();
    let fifth = *sorted.select_nth_unstable_by(4, |a, b| b.total_cmp(a)).1;
    let id = draw(&Sampling::new(45).with_top_k(5));
    assert!(
        x[id] >= fifth,
        "drew {id}: {} below the 5th largest {fifth}",
        x[id]
    );
    eprintln!("{cols} columns: {:?}, {windows} window(s)", plan.split);
}

#[test]
fn four_rows_of_two_million() {
    let ctx = ctx();
    let x = normal_matrix(41, 4 * 2_000_000, 3.0);
    check_host(ctx, &x, Shape::new(4, 2_000_000), &Options::softmax());
    check_host(ctx, &x, Shape::new(4, 2_000_000), &Options::log_softmax());
}

#[test]
fn a_resident_matrix_just_over_one_binding() {
    let ctx = ctx();
    let limit = ctx.caps().max_storage_binding_size;
    let cols = 32768;
    let rows = (limit / (cols as u64 * 4)) as usize + 8;
    let shape = Shape::new(rows, cols);
    let x = normal_matrix(42, rows * cols, 3.0);
    let bytes = (x.len() * 4) as u64;
    assert!(bytes > limit);
    let input = upload(ctx, &x);
    let output = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: bytes,
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_DST
            | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    ctx.encode(
        &mut encoder,
        MatrixView::new(&input),
        MatrixView::new(&output),
        shape,
        &Options::softmax(),
        &RowInputs::NONE,
    )
    .unwrap();
    ctx.queue().submit([encoder.finish()]);
    let y: Vec<f32> = read_back(ctx, &output);
    check_output(&y, &x, shape, &Options::softmax());
}

#[test]
fn streaming_through_a_4_mib_budget_holds_four_1_mib_buffers_at_most() {
    let options = ContextOptions::default().with_host_chunk_bytes(1 << 20);
    let small = block_on(Context::new(options)).expect("context");
    // 24 MiB of input, far over the budget.
    let (rows, cols) = (96, 65536);
    let x = normal_matrix(43, rows * cols, 3.0);
    check_host(&small, &x, Shape::new(rows, cols), &Options::softmax());
    assert!(
        small.staging_bytes() <= 4 << 20,
        "{}",
        small.staging_bytes()
    );
}
