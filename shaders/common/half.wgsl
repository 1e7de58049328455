// 16-bit storage: f16 and bf16 values in pairs, element 2k in the low half of u32 word
// k and element 2k + 1 in the high half. Decoded to f32 and encoded back by bit
// operations, so no Features::SHADER_F16 is needed, and every backend rounds the same
// way: to nearest, ties to even, overflow to infinity, NaN kept NaN (as src/dtype.rs).

// The two halves of a word, low first.
fn halves(w: u32) -> vec2<u32> {
    return vec2<u32>(w & 0xffffu, w >> 16u);
}

fn f16_to_f32(h: vec2<u32>) -> vec2<f32> {
    let sign = (h & vec2<u32>(0x8000u)) << vec2<u32>(16u);
    let em = h & vec2<u32>(0x7fffu);
    // Normal: rebias the exponent (127 - 15) and widen the mantissa.
    let normal = bitcast<vec2<f32>>(sign | ((em << vec2<u32>(13u)) + vec2<u32>(0x38000000u)));
    // Subnormal (and zero): a multiple of 2^-24.
    let sub = bitcast<vec2<f32>>(sign | bitcast<vec2<u32>>(vec2<f32>(em) * 5.9604645e-8));
    // Infinity and NaN.
    let special = bitcast<vec2<f32>>(sign | vec2<u32>(EXP_MASK) | ((em & vec2<u32>(0x3ffu)) << vec2<u32>(13u)));
    return select(select(normal, sub, em < vec2<u32>(0x400u)), special, em >= vec2<u32>(0x7c00u));
}

fn f32_to_f16(v: vec2<f32>) -> vec2<u32> {
    let bits = bitcast<vec2<u32>>(v);
    let sign = (bits >> vec2<u32>(16u)) & vec2<u32>(0x8000u);
    let a = bits & vec2<u32>(0x7fffffffu);
    // Normal f16: round off 13 mantissa bits (ties to even), then rebias.
    let rounded = a + vec2<u32>(0x0fffu) + ((a >> vec2<u32>(13u)) & vec2<u32>(1u));
    let normal = (rounded - vec2<u32>(0x38000000u)) >> vec2<u32>(13u);
    // Subnormal f16: scaling by 2^24 is exact and round() ties to even; 0x400 (the
    // smallest normal) where it rounds up.
    let sub = vec2<u32>(round(bitcast<vec2<f32>>(min(a, vec2<u32>(0x38800000u))) * 16777216.0));
    // At least 65520 (the midpoint above 65504) is infinity; NaN stays NaN.
    let over = select(vec2<u32>(0x7c00u), vec2<u32>(0x7e00u), a > vec2<u32>(EXP_MASK));
    var h = select(normal, sub, a < vec2<u32>(0x38800000u));
    h = select(h, over, a >= vec2<u32>(0x477ff000u));
    return sign | h;
}

fn bf16_to_f32(h: vec2<u32>) -> vec2<f32> {
    return bitcast<vec2<f32>>(h << vec2<u32>(16u));
}

fn f32_to_bf16(v: vec2<f32>) -> vec2<u32> {
    let bits = bitcast<vec2<u32>>(v);
    let nan = (bits & vec2<u32>(0x7fffffffu)) > vec2<u32>(EXP_MASK);
    let rounded = (bits + vec2<u32>(0x7fffu) + ((bits >> vec2<u32>(16u)) & vec2<u32>(1u))) >> vec2<u32>(16u);
    return select(rounded, (bits >> vec2<u32>(16u)) | vec2<u32>(0x40u), nan);
}

// The two values of a word.
fn decode_pair(w: u32, bf16: bool) -> vec2<f32> {
    if bf16 {
        return bf16_to_f32(halves(w));
    }
    return f16_to_f32(halves(w));
}

// Two values as the halves of one word.
fn encode_pair(v: vec2<f32>, bf16: bool) -> u32 {
    var h: vec2<u32>;
    if bf16 {
        h = f32_to_bf16(v);
    } else {
        h = f32_to_f16(v);
    }
    return h.x | (h.y << 16u);
}

// Element `at` of a 16-bit array held in words.
fn decode_at(w: u32, at: u32, bf16: bool) -> f32 {
    return decode_pair(w, bf16)[at & 1u];
}
