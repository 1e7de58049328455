//! Issue 19, 2(a): softmax and log-softmax of a vocabulary split by columns across ranks.
//!
//! Each rank computes its shard's statistics, the ranks all-reduce them (12 bytes per
//! row each), and each rank normalises its shard with the combined statistics. Only the
//! checks gather whole rows.

use wgpu_softmax::internals::reference::{softmax_f64, Tolerance};
use wgpu_softmax::{HostInputs, MaskedRows, Options};

use crate::check::Agreement;
use crate::shard::Shard;

/// The ops checked: softmax as PyTorch's defaults have it, and log-softmax with a
/// temperature and fully masked rows giving `-inf` rather than NaN.
pub fn ops() -> [(&'static str, Options); 2] {
    [
        ("softmax", Options::softmax()),
        (
            "log-softmax",
            Options::log_softmax()
                .with_temperature(1.5)
                .with_masked_rows(MaskedRows::Zero),
        ),
    ]
}

/// This rank's slice of the op's output, normalised by the statistics of whole rows, and
/// those statistics (the same on every rank).
pub fn sharded(shard: &Shard, options: &Options) -> Result<(Vec<f32>, Vec<[f32; 2]>), String> {
    let local = shard.local_stats(options)?;
    let combined = shard.all_reduce_stats(&local)?;
    let y = shard.run(options, HostInputs::default().with_stats_given(&combined))?;
    Ok((y, combined))
}

/// Runs every op sharded and, on the root, checks the gathered result against the op
/// on the unsplit matrix (on the root's context) and against the f64 reference.
pub fn check(shard: &Shard) -> Result<Vec<Agreement>, String> {
    let mut agreements = Vec::new();
    for (name, options) in ops() {
        let (y, combined) = sharded(shard, &options)?;
        let Some(gathered) = shard.gather_columns(&y)? else {
            continue;
        };
        let (rows, cols) = (shard.matrix.rows, shard.matrix.cols);
        let x = shard.matrix.slice(0..cols);
        let mut unsplit = vec![0.0f32; x.len()];
        let mut unsplit_stats = vec![[0.0f32; 2]; rows];
        let inputs = HostInputs::default().with_stats_out(&mut unsplit_stats);
        let shape = wgpu_softmax::Shape::new(rows, cols);
        wgpu_softmax::block_on(shard.ctx.run(&x, &mut unsplit, shape, &options, inputs))
            .map_err(|e| format!("unsplit {name}: {e}"))?;
        let reference = softmax_f64(&x, cols, &options);
        let agreement = Agreement::compare(
            name,
            (shard.matrix.ranks, cols),
            &gathered,
            &unsplit,
            &reference,
            Tolerance::for_op(options.op),
        )
        .with_stats(&combined, &unsplit_stats);
        agreements.push(agreement);
    }
    Ok(agreements)
}
