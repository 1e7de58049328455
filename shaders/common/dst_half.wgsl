// The output matrix stored as f16 or bf16 (DST_BF16), two elements per u32 word (see
// half.wgsl).
//   3 dst   storage  array<atomic<u32>>
//   4 dst4  storage  the same as array<vec2<u32>>, four elements each (a dummy when
//                    VEC4 is off)
//
// A vec4 store covers two whole words, which belong to one row and one invocation. A
// single element shares its word with a neighbour that another invocation may be
// writing at the same moment (the next column of a strided sweep, the next row's first
// column when rows have an odd stride) or that lies outside the output (padding between
// rows, the element before an odd offset), so it is stored by atomically clearing and
// then setting its half: the neighbour is never touched.

override DST_BF16: bool = false;

@group(0) @binding(3) var<storage, read_write> dst: array<atomic<u32>>;
@group(0) @binding(4) var<storage, read_write> dst4: array<vec2<u32>>;

fn write_dst1(at: u32, v: f32) {
    let shift = (at & 1u) * 16u;
    let h = encode_pair(vec2<f32>(v), DST_BF16) & 0xffffu;
    atomicAnd(&dst[at >> 1u], ~(0xffffu << shift));
    atomicOr(&dst[at >> 1u], h << shift);
}

fn write_dst4(at4: u32, v: vec4<f32>) {
    dst4[at4] = vec2<u32>(encode_pair(v.xy, DST_BF16), encode_pair(v.zw, DST_BF16));
}

fn read_dst1(at: u32) -> f32 {
    return decode_at(atomicLoad(&dst[at >> 1u]), at, DST_BF16);
}

fn read_dst4(at4: u32) -> vec4<f32> {
    let w = dst4[at4];
    return vec4<f32>(decode_pair(w.x, DST_BF16), decode_pair(w.y, DST_BF16));
}
