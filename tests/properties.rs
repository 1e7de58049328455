//! Properties of the GPU softmax that hold for any input, checked with proptest.

mod common;

use common::{ctx, softmax};
use proptest::prelude::*;
use wgpu_softmax::internals::reference::ROW_SUM_F32;
use wgpu_softmax::{Options, Shape};

/// A `[rows, cols]` matrix of multiples of 1/64 in [-16, 16]: exactly representable
/// after any integer shift below 2^16, so shifted rows are the same rows to the bit.
fn matrix() -> impl Strategy<Value = (usize, usize, Vec<f32>)> {
    (1usize..6, prop_oneof![1usize..40, 40usize..700]).prop_flat_map(|(rows, cols)| {
        (
            Just(rows),
            Just(cols),
            prop::collection::vec((-1024i32..1024).prop_map(|v| v as f32 / 64.0), rows * cols),
        )
    })
}

fn run(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    softmax(ctx(), x, Shape::new(rows, cols), &Options::softmax()).expect("softmax")
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 48,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn rows_sum_to_one_and_outputs_lie_in_0_1((rows, cols, x) in matrix()) {
        let y = run(&x, rows, cols);
        for row in y.chunks(cols) {
            let sum: f64 = row.iter().map(|&v| f64::from(v)).sum();
            prop_assert!((sum - 1.0).abs() <= ROW_SUM_F32, "sum {}", sum);
            prop_assert!(row.iter().all(|v| (0.0..=1.0).contains(v)));
        }
    }

    #[test]
    fn shifting_a_row_by_a_representable_constant_changes_nothing(
        (rows, cols, x) in matrix(),
        shift in -30000i32..30000,
    ) {
        let shifted: Vec<f32> = x.iter().map(|v| v + shift as f32).collect();
        let a = run(&x, rows, cols);
        let b = run(&shifted, rows, cols);
        prop_assert_eq!(a, b);
    }

    #[test]
    fn order_is_preserved((rows, cols, x) in matrix()) {
        let y = run(&x, rows, cols);
        for (xr, yr) in x.chunks(cols).zip(y.chunks(cols)) {
            for i in 0..cols {
                for j in 0..cols {
                    if xr[i] < xr[j] {
                        prop_assert!(yr[i] <= yr[j], "x {} < {} but y {} > {}", xr[i], xr[j], yr[i], yr[j]);
                    }
                }
            }
        }
    }

    #[test]
    fn a_row_gives_the_same_result_alone_as_inside_a_batch((rows, cols, x) in matrix()) {
        let batch = run(&x, rows, cols);
        for (r, row) in x.chunks(cols).enumerate() {
            let alone = run(row, 1, cols);
            prop_assert_eq!(&alone[..], &batch[r * cols..(r + 1) * cols]);
        }
    }

    #[test]
    fn two_runs_are_bit_identical((rows, cols, x) in matrix()) {
        let a: Vec<u32> = run(&x, rows, cols).iter().map(|v| v.to_bits()).collect();
        let b: Vec<u32> = run(&x, rows, cols).iter().map(|v| v.to_bits()).collect();
        prop_assert_eq!(a, b);
    }
}
