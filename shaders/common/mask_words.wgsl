// The mask as u32 words (see row_inputs.wgsl): one f32, or two 16-bit values, per word.
// Any offset and row length.

@group(0) @binding(7) var<storage, read_write> mask: array<u32>;

// Mask element `at`.
fn mask_value(at: u32) -> f32 {
    if MASK_DTYPE == 0u {
        return bitcast<f32>(mask[at]);
    }
    return decode_at(mask[at >> 1u], at, MASK_DTYPE == 2u);
}

// Mask elements at .. at + 3.
fn mask_value4(at: u32) -> vec4<f32> {
    return vec4<f32>(mask_value(at), mask_value(at + 1u), mask_value(at + 2u), mask_value(at + 3u));
}
