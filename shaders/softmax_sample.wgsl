// Kernel softmax_sample: draws one column per row from softmax(z), z the row's values with
// its inputs applied (temperature, mask, lengths, causal), after the top-k, top-p and
// min-p filters, and writes its index (and, with bit 1 of params.sample_flags, its
// log-probability under the unfiltered softmax). The row is never sorted.
//
// Dispatch: a 2-D grid of workgroups, one row each (row = wg.y * grid_x + wg.x). Per row,
// every invocation sweeps its strided share of the row:
//   1. once for the (max, sum of exp) statistics, as the softmax's first pass does;
//   2. top-k (1 < k < cols): the k-th largest value is found by searching the values'
//      order-preserving u32 keys: each sweep counts the entries above four pivots
//      spread over the key range still open, which cuts that range to a fifth or less,
//      and the search stops once no entry's key is left inside the range: at most 15
//      sweeps (for 2^32 keys), in practice about as many as it takes to separate the
//      k-th largest value from its neighbours;
//   3. top-p (p < 1): the same search on the mass above each pivot, from top-k's cut
//      (whose sweeps also summed the mass, so none is added for it);
//   4. once to draw: among the survivors (at or above both thresholds, and with
//      exp(z - max z) >= min_p), the column of the largest z + g, g a Gumbel variate
//      from the counter-based generator (Philox4x32-10, counter (column, row, step, 0),
//      key the 64-bit seed); greedy (bit 0 of sample_flags, or k = 1), the column of the
//      largest z. Ties go to the lowest column.
// Every reduction goes through workgroup memory and ends in workgroupUniformLoad, so the
// loops and branches that follow are uniform, as barriers require (naga checks this, and
// browsers' WGSL compilers more strictly still). Few long rows are split over several
// workgroups instead (softmax_sample_part.wgsl), with the same steps and results.

#import sample_common

// The search `s` run to its end over the whole row, one sweep per step.
fn search_row(row: u32, s_in: Search, k: u32, goal: f32, by_mass: bool, with_mass: bool, m: f32, lid: u32) -> Search {
    var s = s_in;
    loop {
        if search_done(s) {
            break;
        }
        let own = measure_range(row, 0u, params.cols, search_pivots(s), m, with_mass, lid);
        s = search_step(s, workgroup_sum_measure(own, lid), k, goal, by_mass);
    }
    return s;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn softmax_sample(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wg.y * params.grid_x + wg.x;
    if row >= params.rows {
        return;
    }
    begin_row(row);
    var own = row_stats(row, lid, WORKGROUP_SIZE);
    own.bad |= row_bad;
    let st = workgroup_totals(own, 0.0, 0u, lid).st;
    if st.bad != 0u || st.s == 0.0 {
        if lid == 0u {
            write_no_token(row, st.bad);
        }
        return;
    }
    let m = st.m;
    let greedy = greedy_draw();
    let max_key = order_key(m);
    // Survivors have keys above `cut.key`: at first every unmasked entry (the key below
    // FIRST_KEY; the count an upper bound, the mass the row's sum).
    let with_mass = top_p_active();
    var cut = Found(FIRST_KEY - 1u, params.cols, st.s);
    if !greedy && top_k_active() {
        let s = search_row(row, Search(cut, max_key, 0u), params.top_k, 0.0, false, with_mass, m, lid);
        cut = s.lo;
    }
    if !greedy && with_mass {
        // What top-k kept, cut to the smallest head holding p of its mass.
        let goal = params.top_p * cut.mass;
        let s = search_row(row, Search(cut, max_key, 0u), 0u, goal, true, true, m, lid);
        cut = s.lo;
    }
    let pick = workgroup_pick(pick_range(row, 0u, params.cols, cut.key + 1u, m, greedy, lid), lid);
    if lid == 0u {
        write_pick(row, pick, m, st.s);
    }
}
