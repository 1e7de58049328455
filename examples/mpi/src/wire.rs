//! Bytes on the wire: what each rank hands to MPI per row, against gathering whole rows.

use mpi::traits::*;

use crate::sample::TOP_K;
use crate::shard::{Shard, ROOT};

/// Per row, the bytes one rank hands to the collectives for each op (a sampling call
/// is one draw of every row: one step).
pub const PER_ROW: &[(&str, u64)] = &[
    (
        "softmax, log-softmax: statistics (max f32 + sum f64)",
        4 + 8,
    ),
    (
        "cross-entropy, loss and gradient: statistics + the row's loss (f32)",
        4 + 8 + 4,
    ),
    (
        "sampling, greedy or seeded: the shard's winner (logit f32 + id u32)",
        4 + 4,
    ),
    (
        "sampling, seeded top-k (k=50): k largest logits (f32) + the winner",
        4 * TOP_K as u64 + 4 + 4,
    ),
];

/// The shapes of the issue: batch-4 decode over a 256K vocabulary, and 64 rows of a
/// 128K vocabulary.
pub const SHAPES: [(u64, u64); 2] = [(4, 262_144), (64, 128_256)];

/// Prints, for `ranks` shards of each shape, what each rank sends per op against what it
/// sends when its whole slice of each row is gathered (the widest slice, f32).
pub fn print_table(ranks: u64) {
    println!("bytes each rank hands to MPI, computed from the shapes (ranks={ranks}):");
    println!("| shape | what | per row | per call | whole rows gathered instead | ratio |");
    println!("|---|---|---|---|---|---|");
    for (rows, cols) in SHAPES {
        let slice_row = cols.div_ceil(ranks) * 4;
        for (what, per_row) in PER_ROW {
            println!(
                "| {rows} x {cols} | {what} | {per_row} B | {} B | {} B ({slice_row} B per row) | {:.0}x |",
                per_row * rows,
                slice_row * rows,
                slice_row as f64 / *per_row as f64
            );
        }
    }
}

/// Gathers every rank's byte counters and prints them on the root.
pub fn print_sent(shard: &Shard) {
    let mine = [shard.sent_combine.get(), shard.sent_check.get()];
    let root = shard.world.process_at_rank(ROOT);
    if !shard.is_root() {
        root.gather_into(&mine[..]);
        return;
    }
    let mut all = vec![0u64; 2 * shard.matrix.ranks];
    root.gather_into_root(&mine[..], &mut all[..]);
    let column = |k: usize| {
        all.chunks(2)
            .map(|c| c[k].to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    println!(
        "bytes sent in this run, per rank, all ops: combine={} (the algorithm) check_gather={} (checks only)",
        column(0),
        column(1)
    );
}
