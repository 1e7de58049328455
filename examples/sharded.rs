//! A vocabulary sharded across two devices, softmaxed exactly: each shard computes its
//! rows' `(max, log-sum-exp)`, the statistics are combined per row with
//! `combine_stats`, and each shard normalises with the combined ones. The result is
//! checked against the softmax of the unsplit matrix.
//!
//! `cargo run --release --example sharded` (two contexts on the best adapter stand in for
//! two devices; each has its own `wgpu::Device`).

use std::process::ExitCode;

use wgpu_softmax::internals::reference::{first_mismatch, softmax_f64, Tolerance};
use wgpu_softmax::{block_on, combine_stats, Context, ContextOptions, HostInputs, Options, Shape};

/// The host path on one context: the output, or the error as text.
fn softmax(
    ctx: &Context,
    x: &[f32],
    shape: Shape,
    options: &Options,
    inputs: HostInputs<'_>,
) -> Result<Vec<f32>, String> {
    let mut y = vec![0.0f32; x.len()];
    block_on(ctx.run(x, &mut y, shape, options, inputs)).map_err(|e| e.to_string())?;
    Ok(y)
}

fn run() -> Result<(), String> {
    let (rows, cols, split) = (8, 50_000, 20_000);
    // Seeded logits, with a row whose maximum lies in the second shard.
    let mut x: Vec<f32> = (0..rows * cols)
        .map(|i| ((i as u64 * 2_654_435_761) % 10_007) as f32 / 1000.0 - 5.0)
        .collect();
    x[3 * cols + 42_000] = 30.0;
    let shard = |r: std::ops::Range<usize>| -> Vec<f32> {
        x.chunks(cols)
            .flat_map(|row| row[r.clone()].to_vec())
            .collect()
    };
    let (left, right) = (shard(0..split), shard(split..cols));
    let (left_shape, right_shape) = (Shape::new(rows, split), Shape::new(rows, cols - split));
    let options = Options::softmax();
    let context = || block_on(Context::new(ContextOptions::default())).map_err(|e| e.to_string());
    let (first, second) = (context()?, context()?);

    // 1. Each shard's statistics (its softmax by its own statistics is not used).
    let (mut left_stats, mut right_stats) = (vec![[0.0f32; 2]; rows], vec![[0.0f32; 2]; rows]);
    let inputs = HostInputs::default().with_stats_out(&mut left_stats);
    softmax(&first, &left, left_shape, &options, inputs)?;
    let inputs = HostInputs::default().with_stats_out(&mut right_stats);
    softmax(&second, &right, right_shape, &options, inputs)?;
    // 2. Combined per row: what would travel between machines is 8 bytes per row.
    let combined: Vec<[f32; 2]> = left_stats
        .iter()
        .zip(&right_stats)
        .map(|(a, b)| combine_stats(*a, *b))
        .collect();
    // 3. Each shard normalised with the combined statistics.
    let given = || HostInputs::default().with_stats_given(&combined);
    let y_left = softmax(&first, &left, left_shape, &options, given())?;
    let y_right = softmax(&second, &right, right_shape, &options, given())?;

    let y: Vec<f32> = y_left
        .chunks(split)
        .zip(y_right.chunks(cols - split))
        .flat_map(|(a, b)| a.iter().chain(b).copied().collect::<Vec<_>>())
        .collect();
    let want = softmax_f64(&x, cols, &options);
    println!("{rows} rows of {cols} columns, split at column {split} across two contexts");
    match first_mismatch(&y, &want, Tolerance::for_op(options.op)) {
        None => {
            println!("matches the unsplit softmax within 1e-6 + 1e-5 * |r|: ok");
            Ok(())
        }
        Some((i, got, r)) => Err(format!("element {i} is {got}, the unsplit softmax {r}")),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
