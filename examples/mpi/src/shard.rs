//! One rank: its column shard on its own wgpu context, and the MPI steps that every op
//! shares (the combine step of the statistics, the checks' gather).

use std::cell::Cell;
use std::ops::Range;

use mpi::collective::SystemOperation;
use mpi::datatype::PartitionMut;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Count;
use wgpu_softmax::{
    block_on, stats_from_reductions, stats_max_terms, stats_sum_terms, Context, ContextOptions,
    HostInputs, Options, Shape,
};

use crate::matrix::Matrix;

/// The rank that gathers the shards' results and checks them.
pub const ROOT: i32 = 0;

/// One process's part of the work.
pub struct Shard {
    pub world: SimpleCommunicator,
    pub rank: usize,
    pub matrix: Matrix,
    /// This rank's columns of every row.
    pub columns: Range<usize>,
    /// This rank's shard of the logits: `[rows, columns.len()]`, row-major.
    pub x: Vec<f32>,
    /// This rank's own context (its own `wgpu::Device`), as a GPU of its own would be.
    pub ctx: Context,
    /// Bytes this rank handed to MPI for combine steps: the algorithm's traffic.
    pub sent_combine: Cell<u64>,
    /// Bytes this rank handed to MPI for the checks' gathers (not part of the algorithm).
    pub sent_check: Cell<u64>,
}

impl Shard {
    pub fn new(world: SimpleCommunicator, matrix: Matrix) -> Result<Self, String> {
        let rank = usize::try_from(world.rank()).map_err(|e| e.to_string())?;
        let columns = matrix.columns(rank);
        let x = matrix.slice(columns.clone());
        let ctx = block_on(Context::new(ContextOptions::default()))
            .map_err(|e| format!("rank {rank}: no context: {e}"))?;
        Ok(Self {
            world,
            rank,
            matrix,
            columns,
            x,
            ctx,
            sent_combine: Cell::new(0),
            sent_check: Cell::new(0),
        })
    }

    pub fn is_root(&self) -> bool {
        self.world.rank() == ROOT
    }

    /// The shape of this rank's shard.
    pub fn shape(&self) -> Shape {
        Shape::new(self.matrix.rows, self.columns.len())
    }

    /// The op on this rank's shard with the given row inputs (host path).
    pub fn run(&self, options: &Options, inputs: HostInputs<'_>) -> Result<Vec<f32>, String> {
        let mut y = vec![0.0f32; self.x.len()];
        block_on(self.ctx.run(&self.x, &mut y, self.shape(), options, inputs))
            .map_err(|e| format!("rank {}: {e}", self.rank))?;
        Ok(y)
    }

    /// This shard's per-row `(max, log-sum-exp)` of `x / T`, as the library writes them.
    pub fn local_stats(&self, options: &Options) -> Result<Vec<[f32; 2]>, String> {
        let mut stats = vec![[0.0f32; 2]; self.matrix.rows];
        self.run(options, HostInputs::default().with_stats_out(&mut stats))?;
        Ok(stats)
    }

    /// The combine step over MPI: the statistics of the whole rows, the same bits on
    /// every rank. Two all-reduces of the library's terms, a max (f32) and a sum (f64):
    /// 12 bytes per row from each rank, whatever the vocabulary size.
    pub fn all_reduce_stats(&self, local: &[[f32; 2]]) -> Result<Vec<[f32; 2]>, String> {
        let rows = local.len();
        let local_max = stats_max_terms(local);
        let mut max = vec![0.0f32; rows];
        self.world
            .all_reduce_into(&local_max[..], &mut max[..], SystemOperation::max());
        let local_sum = stats_sum_terms(local, &max).map_err(|e| e.to_string())?;
        let mut sum = vec![0.0f64; rows];
        self.world
            .all_reduce_into(&local_sum[..], &mut sum[..], SystemOperation::sum());
        self.count(&self.sent_combine, rows * (4 + 8));
        stats_from_reductions(&max, &sum).map_err(|e| e.to_string())
    }

    /// The element-wise sum of every rank's `local`, on every rank (one all-reduce,
    /// counted as the algorithm's traffic).
    pub fn all_reduce_sum(&self, local: &[f32]) -> Vec<f32> {
        let mut sum = vec![0.0f32; local.len()];
        self.world
            .all_reduce_into(local, &mut sum[..], SystemOperation::sum());
        self.count(&self.sent_combine, std::mem::size_of_val(local));
        sum
    }

    /// Every rank's `part` (all of one length), rank-major, on every rank (one
    /// all-gather, counted as the algorithm's traffic).
    pub fn all_gather<T: Equivalence + Copy + Default>(&self, part: &[T]) -> Vec<T> {
        let mut all = vec![T::default(); part.len() * self.matrix.ranks];
        self.world.all_gather_into(part, &mut all[..]);
        self.count(&self.sent_combine, std::mem::size_of_val(part));
        all
    }

    /// For the checks only: the shards' `[rows, width]` results gathered on the root
    /// into the whole `[rows, cols]` matrix (`None` on the other ranks).
    pub fn gather_columns(&self, part: &[f32]) -> Result<Option<Vec<f32>>, String> {
        self.count(&self.sent_check, std::mem::size_of_val(part));
        let root = self.world.process_at_rank(ROOT);
        if !self.is_root() {
            root.gather_varcount_into(part);
            return Ok(None);
        }
        let (rows, cols, ranks) = (self.matrix.rows, self.matrix.cols, self.matrix.ranks);
        let widths: Vec<usize> = (0..ranks).map(|r| self.matrix.columns(r).len()).collect();
        let counts = widths
            .iter()
            .map(|w| Count::try_from(w * rows))
            .collect::<Result<Vec<Count>, _>>()
            .map_err(|_| "a shard too large for one MPI count".to_string())?;
        let displs: Vec<Count> = counts
            .iter()
            .scan(0, |at, &n| {
                let first = *at;
                *at += n;
                Some(first)
            })
            .collect();
        // Rank-major: rank 0's rows, then rank 1's, ...
        let mut by_rank = vec![0.0f32; rows * cols];
        root.gather_varcount_into_root(
            part,
            &mut PartitionMut::new(&mut by_rank[..], &counts[..], &displs[..]),
        );
        let mut whole = vec![0.0f32; rows * cols];
        let mut at = 0;
        for (r, width) in widths.iter().enumerate() {
            let first = self.matrix.columns(r).start;
            for row in 0..rows {
                let dst = row * cols + first;
                whole[dst..dst + width].copy_from_slice(&by_rank[at..at + width]);
                at += width;
            }
        }
        Ok(Some(whole))
    }

    /// Whether every rank's check passed: the root's verdict, broadcast.
    pub fn verdict(&self, ok: bool) -> bool {
        let mut flag = u8::from(ok);
        self.world.process_at_rank(ROOT).broadcast_into(&mut flag);
        flag == 1
    }

    fn count(&self, counter: &Cell<u64>, bytes: usize) {
        counter.set(counter.get() + bytes as u64);
    }
}
