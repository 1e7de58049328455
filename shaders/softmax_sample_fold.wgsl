// Kernel softmax_sample_fold: folds the parts' results of a split row's last sweep (see
// common/sample_split.wgsl), in part order, and moves the row to its next phase; after
// the draw, writes the row's id and log-probability.
//
// Dispatch: as softmax_sample_part; the first invocation of part 0's workgroup folds
// (the others return).

#import sample_split

// The state with its search begun from `cut` (up to the row's max key), or, if that
// search has nothing to do, the phases after it begun.
fn begin_search(st_in: RowState, phase: u32, cut: Found) -> RowState {
    var st = st_in;
    st.phase = phase;
    st.search = Search(cut, order_key(st.m), 0u);
    if phase == PHASE_TOP_K && (!top_k_active() || greedy_draw() || search_done(st.search)) {
        st.phase = PHASE_TOP_P;
    }
    if st.phase == PHASE_TOP_P {
        // What top-k kept, cut to the smallest head holding p of its mass.
        st.goal = params.top_p * st.search.lo.mass;
        if !top_p_active() || greedy_draw() || search_done(st.search) {
            st.phase = PHASE_DRAW;
        }
    }
    return st;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn softmax_sample_fold(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wg.y;
    if row >= params.rows || params.part_base + wg.x != 0u || lid != 0u {
        return;
    }
    var st = load_state(row);
    if st.phase == PHASE_DONE {
        return;
    }
    begin_row(row);
    if st.phase == PHASE_STATS {
        var t = stats_empty();
        for (var p = 0u; p < params.parts; p++) {
            let q = partials[part_slot(row, p)];
            t = merge(t, Stats(bitcast<f32>(q.x), bitcast<f32>(q.y), q.z));
        }
        t.bad |= row_bad;
        if t.bad != 0u || t.s == 0.0 {
            write_no_token(row, t.bad);
            st.phase = PHASE_DONE;
        } else {
            st.m = t.m;
            st.s = t.s;
            // Survivors have keys above the cut: at first every unmasked entry (the key
            // below FIRST_KEY; the count an upper bound, the mass the row's sum).
            st = begin_search(st, PHASE_TOP_K, Found(FIRST_KEY - 1u, params.cols, t.s));
        }
    } else if st.phase == PHASE_DRAW {
        var pick = no_pick();
        for (var p = 0u; p < params.parts; p++) {
            let q = partials[part_slot(row, p)];
            pick = better(pick, Pick(bitcast<f32>(q.x), q.y, bitcast<f32>(q.z)));
        }
        write_pick(row, pick, st.m, st.s);
        st.phase = PHASE_DONE;
    } else {
        var at = Measure(vec4<u32>(0u), vec4<f32>(0.0));
        for (var p = 0u; p < params.parts; p++) {
            let slot = part_slot(row, p);
            at.count += partials[slot];
            at.mass += bitcast<vec4<f32>>(partials[slot + 1u]);
        }
        if st.phase == PHASE_TOP_K {
            st.search = search_step(st.search, at, params.top_k, 0.0, false);
            if search_done(st.search) {
                st = begin_search(st, PHASE_TOP_P, st.search.lo);
            }
        } else {
            st.search = search_step(st.search, at, 0u, st.goal, true);
            if search_done(st.search) {
                st.phase = PHASE_DRAW;
            }
        }
    }
    store_state(row, st);
}
