// An f16 or bf16 mask (MASK_DTYPE) whose rows start on 8-byte boundaries (see
// row_inputs.wgsl), read four elements (two words) at a time.

@group(0) @binding(7) var<storage, read_write> mask: array<vec2<u32>>;

fn mask_value(at: u32) -> f32 {
    let w = mask[at >> 2u];
    return decode_at(w[(at >> 1u) & 1u], at, MASK_DTYPE == 2u);
}

// Mask elements at .. at + 3 (at a multiple of 4).
fn mask_value4(at: u32) -> vec4<f32> {
    let w = mask[at >> 2u];
    let bf16 = MASK_DTYPE == 2u;
    return vec4<f32>(decode_pair(w.x, bf16), decode_pair(w.y, bf16));
}
