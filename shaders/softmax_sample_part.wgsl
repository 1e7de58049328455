// Kernel softmax_sample_part: one sweep of softmax_sample's over one part of a split
// row (see common/sample_split.wgsl): the part's statistics, its measures at the
// search's pivots, or its best candidate, as the row's phase asks.
//
// Dispatch: workgroup (x, y) takes part params.part_base + x of row y; part p covers
// columns [p * part_cols, min((p + 1) * part_cols, cols)).

#import sample_split

var<workgroup> state_wg: RowState;

@compute @workgroup_size(WORKGROUP_SIZE)
fn softmax_sample_part(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wg.y;
    let part = params.part_base + wg.x;
    if row >= params.rows || part >= params.parts {
        return;
    }
    // Read once, shared as a uniform value: the branches below hold barriers.
    if lid == 0u {
        state_wg = load_state(row);
    }
    let st = workgroupUniformLoad(&state_wg);
    if st.phase == PHASE_DONE {
        return;
    }
    begin_row(row);
    let cols = part_columns(part);
    let c0 = cols.x;
    let c1 = cols.y;
    let slot = part_slot(row, part);
    if st.phase == PHASE_STATS {
        let t = workgroup_totals(range_stats(row, c0, c1, lid, WORKGROUP_SIZE), 0.0, 0u, lid).st;
        if lid == 0u {
            partials[slot] = vec4<u32>(bitcast<u32>(t.m), bitcast<u32>(t.s), t.bad, 0u);
        }
    } else if st.phase == PHASE_DRAW {
        let threshold = st.search.lo.key + 1u;
        let pick = workgroup_pick(pick_range(row, c0, c1, threshold, st.m, greedy_draw(), lid), lid);
        if lid == 0u {
            partials[slot] = vec4<u32>(bitcast<u32>(pick.score), pick.col, bitcast<u32>(pick.x), 0u);
        }
    } else {
        // A search sweep (top-k sums the mass too when top-p follows).
        let with_mass = st.phase == PHASE_TOP_P || top_p_active();
        let own = measure_range(row, c0, c1, search_pivots(st.search), st.m, with_mass, lid);
        let at = workgroup_sum_measure(own, lid);
        if lid == 0u {
            partials[slot] = at.count;
            partials[slot + 1u] = bitcast<vec4<u32>>(at.mass);
        }
    }
}
