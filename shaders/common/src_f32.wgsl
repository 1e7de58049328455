// The input matrix stored as f32 (see softmax_common.wgsl for the bindings).
//   1 src   storage  array<f32>
//   2 src4  storage  the same as array<vec4<f32>> (a 16-byte dummy when VEC4 is off)

@group(0) @binding(1) var<storage, read_write> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> src4: array<vec4<f32>>;

// Element `at` of the input.
fn read_src1(at: u32) -> f32 {
    return src[at];
}

// Elements 4 * at4 .. 4 * at4 + 3 of the input.
fn read_src4(at4: u32) -> vec4<f32> {
    return src4[at4];
}
