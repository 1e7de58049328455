//! Vocabulary-parallel softmax across processes over MPI (issue 19).
//!
//! `mpirun -n N wgpu-softmax-mpi [ROWS COLS]`: each rank owns a column slice of the same
//! seeded `[ROWS, COLS]` logit matrix (default 16 x 10007, so the slices differ in width)
//! on its own wgpu context. Per op, each rank computes its slice's per-row statistics with
//! the library, the ranks all-reduce them through the library's combine-step helpers
//! (`stats_max_terms`, `stats_sum_terms`, `stats_from_reductions`), and each rank
//! normalises its slice with the combined statistics. Rank 0 then gathers the slices,
//! for checking only, against the op on the unsplit matrix on its own context and
//! against the f64 reference, prints one `agree OP ...` line per op (or `DISAGREE`), and
//! the bytes each rank sent. The exit status is non-zero on any disagreement beyond the
//! numerics contract's tolerances.
//!
//! The ops of the issue: softmax and log-softmax in `softmax.rs`, cross-entropy (loss
//! and gradient) in `loss.rs`, greedy, seeded and seeded top-k sampling in `sample.rs`;
//! the bytes each sends per row in `wire::PER_ROW`.

mod check;
mod loss;
mod matrix;
mod sample;
mod shard;
mod softmax;
mod wire;

use std::process::ExitCode;

use mpi::traits::*;

use check::Agreement;
use matrix::Matrix;
use shard::Shard;

/// The ops, in order; every rank runs each (their collectives must match).
type Op = fn(&Shard) -> Result<Vec<Agreement>, String>;
const OPS: [Op; 3] = [softmax::check, loss::check, sample::check];

fn shape_from_args() -> Result<(usize, usize), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => Ok((16, 10_007)),
        [rows, cols] => {
            let parse = |s: &String| s.parse::<usize>().map_err(|e| format!("{s}: {e}"));
            let (rows, cols) = (parse(rows)?, parse(cols)?);
            if rows == 0 || cols == 0 {
                return Err("ROWS and COLS must be at least 1".into());
            }
            Ok((rows, cols))
        }
        _ => Err("usage: mpirun -n N wgpu-softmax-mpi [ROWS COLS]".into()),
    }
}

/// Runs every op; whether all agreed (the same answer on every rank).
fn run(shard: &Shard) -> Result<bool, String> {
    let ranks = shard.matrix.ranks;
    if shard.is_root() {
        let info = shard.ctx.adapter_info();
        println!(
            "{ranks} ranks, {} x {} logits, each rank's columns {:?}, adapter {} ({:?})",
            shard.matrix.rows,
            shard.matrix.cols,
            (0..ranks)
                .map(|r| shard.matrix.columns(r))
                .collect::<Vec<_>>(),
            info.name,
            info.backend
        );
    }
    let mut ok = true;
    for op in OPS {
        for agreement in op(shard)? {
            agreement.print();
            ok &= agreement.ok();
        }
    }
    wire::print_sent(shard);
    if shard.is_root() {
        wire::print_table(ranks as u64);
    }
    Ok(shard.verdict(ok))
}

fn main() -> ExitCode {
    let Some(universe) = mpi::initialize() else {
        eprintln!("error: MPI could not be initialised");
        return ExitCode::FAILURE;
    };
    let world = universe.world();
    let rank = world.rank();
    let result = shape_from_args().and_then(|(rows, cols)| {
        let ranks = usize::try_from(world.size()).map_err(|e| e.to_string())?;
        if cols < ranks {
            return Err(format!("{cols} columns cannot be split over {ranks} ranks"));
        }
        let shard = Shard::new(universe.world(), Matrix { rows, cols, ranks })?;
        run(&shard)
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            if rank == shard::ROOT {
                eprintln!("error: the sharded results disagree with the unsplit ones");
            }
            ExitCode::FAILURE
        }
        // A rank that fails cannot leave the others waiting in a collective.
        Err(e) => {
            eprintln!("error: rank {rank}: {e}");
            world.abort(1)
        }
    }
}
