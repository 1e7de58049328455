// An f32 mask whose rows start on 16-byte boundaries (see row_inputs.wgsl), read four
// elements at a time: one vector load instead of four scalar ones.

@group(0) @binding(7) var<storage, read_write> mask: array<vec4<u32>>;

fn mask_value(at: u32) -> f32 {
    return bitcast<f32>(mask[at >> 2u][at & 3u]);
}

// Mask elements at .. at + 3 (at a multiple of 4).
fn mask_value4(at: u32) -> vec4<f32> {
    return bitcast<vec4<f32>>(mask[at >> 2u]);
}
