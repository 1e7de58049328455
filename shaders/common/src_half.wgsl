// The input matrix stored as f16 or bf16 (SRC_BF16), two elements per u32 word (see
// half.wgsl). The binding starts on a 4-byte boundary, so element `at` is in word
// at / 2.
//   1 src   storage  array<u32>
//   2 src4  storage  the same as array<vec2<u32>>, four elements each (a dummy when
//                    VEC4 is off)

override SRC_BF16: bool = false;

@group(0) @binding(1) var<storage, read_write> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> src4: array<vec2<u32>>;

fn read_src1(at: u32) -> f32 {
    return decode_at(src[at >> 1u], at, SRC_BF16);
}

fn read_src4(at4: u32) -> vec4<f32> {
    let w = src4[at4];
    return vec4<f32>(decode_pair(w.x, SRC_BF16), decode_pair(w.y, SRC_BF16));
}
