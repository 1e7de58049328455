//! Softmax and log-softmax against the f64 reference, with the tolerances of the
//! numerics contract, on awkward shapes and values, with every kernel.

mod common;

use common::{check_host, ctx, kernels, normal_matrix, softmax, Rng};
use wgpu_softmax::internals::RowKernel;
use wgpu_softmax::{MaskedRows, Options, Shape};

const COLS: [usize; 27] = [
    1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 255, 256, 257, 1023, 1024, 1025, 2047,
    2049, 4097, 30576, 200001,
];

/// Rows for a column count: a few, fewer for long rows so each case stays small.
fn rows_for(cols: usize) -> usize {
    match cols {
        0..=64 => 33,
        65..=4097 => 5,
        _ => 2,
    }
}

#[test]
fn every_listed_row_length_matches_the_reference() {
    let ctx = ctx();
    for (i, &cols) in COLS.iter().enumerate() {
        let rows = rows_for(cols);
        let x = normal_matrix(i as u64, rows * cols, 3.0);
        check_host(ctx, &x, Shape::new(rows, cols), &Options::softmax());
    }
}

#[test]
fn every_listed_row_length_matches_the_reference_in_log_space() {
    let ctx = ctx();
    for (i, &cols) in COLS.iter().enumerate() {
        let rows = rows_for(cols);
        let x = normal_matrix(100 + i as u64, rows * cols, 3.0);
        check_host(ctx, &x, Shape::new(rows, cols), &Options::log_softmax());
    }
}

#[test]
fn every_kernel_handles_every_short_and_medium_row_length() {
    let ctx = ctx();
    for kernel in kernels(ctx) {
        // One invocation sums a whole row in sequence: meant for short rows only.
        let longest = if kernel == RowKernel::ThreadPerRow {
            257
        } else {
            4097
        };
        for &cols in COLS.iter().filter(|&&c| c <= longest) {
            let x = normal_matrix(cols as u64, 3 * cols, 2.0);
            for options in [Options::softmax(), Options::log_softmax()] {
                check_host(ctx, &x, Shape::new(3, cols), &options.with_kernel(kernel));
            }
        }
    }
}

#[test]
fn every_kernel_at_and_around_its_register_cache_sizes() {
    // Rows are cached in 1, 2, 4, ... slots per invocation (up to 16 on hardware, 32 or
    // 64 on software adapters), then swept: lengths at and either side of each step for
    // one invocation (thread-row), 8 or 32 (subgroups, software workgroups) and more.
    let ctx = ctx();
    let steps = [4usize, 64, 128, 512, 1024, 2048, 4096, 16384];
    for kernel in kernels(ctx) {
        for &step in &steps {
            for cols in [step - 4, step, step + 4, step + 1] {
                if cols == 0 {
                    continue;
                }
                let x = normal_matrix(cols as u64 + 7, 2 * cols, 3.0);
                let o = Options::softmax().with_kernel(kernel);
                check_host(ctx, &x, Shape::new(2, cols), &o);
            }
        }
        let x = normal_matrix(9, 2 * 4100, 3.0);
        check_host(
            ctx,
            &x,
            Shape::new(2, 4100),
            &Options::log_softmax().with_kernel(kernel),
        );
    }
}

#[test]
fn every_kernel_handles_long_rows() {
    // One invocation (or one subgroup) sweeping a whole long row: the blocked sum keeps
    // f32 rounding within the contract. (30577 columns, scalar, is about as long as one
    // invocation may sweep on Mesa's software adapters, which cap loop iterations.)
    let ctx = ctx();
    for kernel in kernels(ctx) {
        for cols in [30576, 30577] {
            let x = normal_matrix(cols as u64, 2 * cols, 3.0);
            check_host(
                ctx,
                &x,
                Shape::new(2, cols),
                &Options::softmax().with_kernel(kernel),
            );
        }
    }
}

#[test]
fn one_row() {
    let ctx = ctx();
    for cols in [1, 3, 1025, 200001] {
        let x = normal_matrix(7, cols, 5.0);
        check_host(ctx, &x, Shape::new(1, cols), &Options::softmax());
    }
}

#[test]
fn a_row_of_one_million_elements() {
    let ctx = ctx();
    for cols in [1_000_000, 1_000_001] {
        let x = normal_matrix(8, cols, 4.0);
        check_host(ctx, &x, Shape::new(1, cols), &Options::softmax());
    }
}

#[test]
fn forcing_a_kernel_past_the_loop_cap_of_a_software_adapter_is_refused() {
    let ctx = ctx();
    if ctx.caps().max_loop_iterations.is_none() {
        return;
    }
    let x = vec![0.0f32; 2 * 65535];
    let o = Options::softmax().with_kernel(RowKernel::ThreadPerRow);
    let e = softmax(ctx, &x, Shape::new(2, 65535), &o).unwrap_err();
    assert!(matches!(e, wgpu_softmax::Error::Unsupported(_)), "{e}");
}

#[test]
fn more_rows_than_one_grid_dimension_holds() {
    let ctx = ctx();
    for cols in [1, 2, 5, 33] {
        let x = normal_matrix(9, 65537 * cols, 3.0);
        check_host(ctx, &x, Shape::new(65537, cols), &Options::softmax());
    }
}

#[test]
fn more_rows_than_one_grid_dimension_holds_with_each_kernel() {
    let ctx = ctx();
    let cols = 3;
    let x = normal_matrix(10, 65537 * cols, 3.0);
    for kernel in kernels(ctx) {
        check_host(
            ctx,
            &x,
            Shape::new(65537, cols),
            &Options::softmax().with_kernel(kernel),
        );
    }
}

#[test]
fn the_worked_example() {
    let ctx = ctx();
    let y = check_host(ctx, &[7.0, 4.0, 0.0], Shape::new(1, 3), &Options::softmax());
    for (a, b) in y.iter().zip([0.95174, 0.04739, 0.00087]) {
        assert!((a - b).abs() < 1e-5, "{y:?}");
    }
}

/// Runs softmax and log-softmax of a matrix made by `make` with every kernel.
fn check_values(cols: usize, rows: usize, make: impl Fn(&mut Rng, usize, usize) -> f32) {
    let ctx = ctx();
    let mut rng = Rng::new(cols as u64 * 31 + rows as u64);
    let mut x = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        for c in 0..cols {
            x.push(make(&mut rng, r, c));
        }
    }
    for kernel in kernels(ctx) {
        for options in [Options::softmax(), Options::log_softmax()] {
            check_host(
                ctx,
                &x,
                Shape::new(rows, cols),
                &options.with_kernel(kernel),
            );
        }
    }
}

#[test]
fn uniform_values() {
    for cols in [7, 257, 4097] {
        check_values(cols, 4, |rng, _, _| rng.uniform(-10.0, 10.0));
    }
}

#[test]
fn large_offsets_cancel_exactly() {
    // Integers plus 1e7: adjacent f32 values are 1 apart there, so any error in the
    // max subtraction would show.
    for cols in [5, 100, 3000] {
        check_values(cols, 4, |rng, r, _| {
            1e7 + (r as f32) * 1000.0 + rng.below(20) as f32
        });
    }
}

#[test]
fn values_of_plus_minus_1e30() {
    for cols in [3, 64, 1025] {
        check_values(
            cols,
            4,
            |rng, _, _| if rng.below(2) == 0 { 1e30 } else { -1e30 },
        );
    }
}

#[test]
fn values_near_f32_max() {
    for cols in [2, 33, 513] {
        check_values(cols, 4, |rng, _, c| match (c + rng.below(3)) % 3 {
            0 => f32::MAX,
            1 => -f32::MAX,
            _ => f32::MAX * 0.999,
        });
    }
}

#[test]
fn constant_rows_are_uniform() {
    for cols in [1, 6, 1000, 30576] {
        check_values(cols, 2, |_, r, _| r as f32 * 3.5 - 2.0);
    }
}

#[test]
fn one_hot_rows() {
    for cols in [2, 40, 2049] {
        check_values(
            cols,
            3,
            |_, r, c| if c == (r * 7) % cols { 1.0 } else { 0.0 },
        );
    }
}

#[test]
fn partial_minus_infinity_entries_give_zero() {
    for cols in [4, 37, 1030] {
        check_values(cols, 5, |rng, _, _| {
            if rng.below(3) == 0 {
                f32::NEG_INFINITY
            } else {
                rng.normal(0.0, 2.0)
            }
        });
    }
}

#[test]
fn rows_of_only_minus_infinity_give_nan_or_zero() {
    let ctx = ctx();
    for cols in [1, 5, 64, 1000] {
        // Row 0 masked, row 1 normal, row 2 masked.
        let mut x = normal_matrix(3, 3 * cols, 1.0);
        x[..cols].fill(f32::NEG_INFINITY);
        x[2 * cols..].fill(f32::NEG_INFINITY);
        for kernel in kernels(ctx) {
            for base in [Options::softmax(), Options::log_softmax()] {
                for masked in [MaskedRows::Nan, MaskedRows::Zero] {
                    let o = base.with_kernel(kernel).with_masked_rows(masked);
                    check_host(ctx, &x, Shape::new(3, cols), &o);
                }
            }
        }
    }
}

#[test]
fn plus_infinity_or_nan_poisons_only_its_row() {
    let ctx = ctx();
    for cols in [1, 6, 100, 2000] {
        let mut x = normal_matrix(4, 4 * cols, 1.0);
        x[cols / 2] = f32::INFINITY;
        x[cols + cols / 3] = f32::NAN;
        x[2 * cols] = -f32::NAN;
        for kernel in kernels(ctx) {
            for o in [Options::softmax(), Options::log_softmax()] {
                let y = check_host(ctx, &x, Shape::new(4, cols), &o.with_kernel(kernel));
                assert!(y[..3 * cols].iter().all(|v| v.is_nan()));
                assert!(y[3 * cols..].iter().all(|v| !v.is_nan()));
            }
        }
    }
}

#[test]
fn temperatures_half_and_three() {
    let ctx = ctx();
    for cols in [3, 100, 5000] {
        let x = normal_matrix(5, 3 * cols, 4.0);
        for t in [0.5, 3.0] {
            for o in [Options::softmax(), Options::log_softmax()] {
                check_host(ctx, &x, Shape::new(3, cols), &o.with_temperature(t));
            }
        }
    }
}

#[test]
fn temperature_with_large_offsets() {
    for t in [0.5f32, 3.0] {
        let ctx = ctx();
        let mut rng = Rng::new(77);
        let x: Vec<f32> = (0..2 * 300).map(|_| 1e7 + rng.below(30) as f32).collect();
        check_host(
            ctx,
            &x,
            Shape::new(2, 300),
            &Options::softmax().with_temperature(t),
        );
    }
}

#[test]
fn the_adapter_is_on_the_backend_wgpu_backend_names() {
    let ctx = ctx();
    let Ok(wanted) = std::env::var("WGPU_BACKEND") else {
        return;
    };
    let backend = ctx.adapter_info().backend;
    let ok = match wanted.to_ascii_lowercase().as_str() {
        "vulkan" | "vk" => backend == wgpu_softmax::wgpu::Backend::Vulkan,
        "gl" | "gles" | "opengl" => backend == wgpu_softmax::wgpu::Backend::Gl,
        _ => true,
    };
    assert!(
        ok,
        "WGPU_BACKEND={wanted} but the adapter is on {backend:?}"
    );
}

#[test]
fn the_readme_examples_print_what_the_readme_says() {
    let ctx = ctx();
    let x = [7.0, 4.0, 0.0];
    let close =
        |got: &[f32], want: [f32; 3]| got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-5);
    let y = softmax(ctx, &x, Shape::new(1, 3), &Options::softmax()).unwrap();
    assert!(close(&y, [0.951747, 0.047385, 0.000868]), "{y:?}");
    let hot = softmax(
        ctx,
        &x,
        Shape::new(1, 3),
        &Options::softmax().with_temperature(3.0),
    )
    .unwrap();
    assert!(close(&hot, [0.68266, 0.25114, 0.06620]), "{hot:?}");
    let log = softmax(ctx, &x, Shape::new(1, 3), &Options::log_softmax()).unwrap();
    assert!(close(&log, [-0.04946, -3.04946, -7.04946]), "{log:?}");
}
