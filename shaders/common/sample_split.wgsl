// What the two kernels of a split draw share (softmax_sample_part.wgsl sweeps the parts
// of a row, softmax_sample_fold.wgsl folds what they found): the row's state and where
// each part leaves its result.
//
// The scratch binding 5 (`partials`, u32 words in these kernels) holds, per row of the
// dispatch, SCRATCH_STRIDE vec4s: the row's state (3), then two per part. Its bytes are
// zeroed before the first dispatch, so every row starts in PHASE_STATS. Each part
// dispatch does the phase's sweep over its part and leaves its result in its slot; the
// fold dispatch that follows folds the slots, in part order (so the result does not
// depend on which workgroup ran first), and moves the row to its next phase. A row's
// phases: its statistics, the top-k search's sweeps, the top-p search's sweeps, the
// draw, done. Dispatches after a row is done return at once: the host records as many
// as the worst case needs.

#import sample_common

const PHASE_STATS: u32 = 0u;
const PHASE_TOP_K: u32 = 1u;
const PHASE_TOP_P: u32 = 2u;
const PHASE_DRAW: u32 = 3u;
const PHASE_DONE: u32 = 4u;

// A row's state between dispatches: its phase, statistics (max m, sum s) and search
// (whose lo.key is the cut once the searches are over), and top-p's goal mass.
struct RowState {
    phase: u32,
    m: f32,
    s: f32,
    search: Search,
    goal: f32,
}

// vec4s of scratch per row: 3 of state and 2 per part, rounded up to 256 bytes (every
// storage offset alignment divides it: each chunk's rows start there).
fn scratch_stride() -> u32 {
    return (3u + 2u * params.parts + 15u) & ~15u;
}

// The scratch slot (2 vec4s) of part `part` of row `row`.
fn part_slot(row: u32, part: u32) -> u32 {
    return row * scratch_stride() + 3u + 2u * part;
}

fn load_state(row: u32) -> RowState {
    let at = row * scratch_stride();
    let a = partials[at];
    let b = partials[at + 1u];
    let c = partials[at + 2u];
    return RowState(
        a.x,
        bitcast<f32>(a.y),
        bitcast<f32>(a.z),
        Search(Found(a.w, b.x, bitcast<f32>(b.y)), b.z, b.w),
        bitcast<f32>(c.x),
    );
}

fn store_state(row: u32, st: RowState) {
    let at = row * scratch_stride();
    let f = st.search;
    partials[at] = vec4<u32>(st.phase, bitcast<u32>(st.m), bitcast<u32>(st.s), f.lo.key);
    partials[at + 1u] = vec4<u32>(f.lo.count, bitcast<u32>(f.lo.mass), f.hi, f.hi_count);
    partials[at + 2u] = vec4<u32>(bitcast<u32>(st.goal), 0u, 0u, 0u);
}
