// Row inputs, compiled in when an op has any of them (see softmax_common.wgsl). They
// take three more storage bindings, so kernels without them compile
// row_inputs_none.wgsl instead and stay within WebGPU's default of 8 per stage.
//
// Bindings (group 0):
//   7 mask          storage  [mask_rows, cols] of f32, f16 or bf16 (MASK_DTYPE): row r
//                            adds mask row r % mask_rows; declared by mask_words.wgsl
//                            (any layout) or, where mask rows start on four-element
//                            boundaries, mask_vec4.wgsl or mask_vec4_half.wgsl (the
//                            variant's MASK_* flag picks one)
//   8 lengths       storage  u32 per row: columns at or past it are masked out
//   9 temperatures  storage  f32 per row: multiplies the scalar temperature
// Each is a 16-byte dummy when its flag is off.

#if MASK_VEC4_HALF
#import mask_vec4_half
#elif MASK_VEC4
#import mask_vec4
#else
#import mask_words
#endif

const ROW_INPUTS: bool = true;

override HAS_MASK: bool = false;
override HAS_LENGTHS: bool = false;
override HAS_TEMPERATURES: bool = false;
// How the mask is stored: 0 f32, 1 f16, 2 bf16 (16-bit values two to a word, see
// half.wgsl).
override MASK_DTYPE: u32 = 0u;

@group(0) @binding(8) var<storage, read_write> lengths: array<u32>;
@group(0) @binding(9) var<storage, read_write> temperatures: array<f32>;

fn row_length(r: u32) -> u32 {
    if HAS_LENGTHS {
        return lengths[params.lengths_first + r];
    }
    return params.cols;
}

// 1 / T_r for row r's temperature, or 0 when it is not a finite number > 0.
fn row_temperature_scale(r: u32) -> f32 {
    if HAS_TEMPERATURES {
        let t = temperatures[params.temps_first + r];
        let bits = bitcast<u32>(t);
        let finite = (bits & EXP_MASK) != EXP_MASK;
        let positive = bits != 0u && (bits & 0x80000000u) == 0u;
        return select(0.0, 1.0 / t, finite && positive);
    }
    return 1.0;
}

// Index in `mask` of the current row's mask row, and the row's T (which scales the mask
// into the kernels' unscaled units); set by begin_row_inputs.
var<private> row_mask_base: u32;
var<private> row_t: f32;

fn begin_row_inputs() {
    row_mask_base = params.mask_first + (row_global % params.mask_rows) * params.cols;
    row_t = 1.0 / row_inv_t;
}

fn mask_index(col: u32) -> u32 {
    return row_mask_base + col;
}

// x + T * mask: x / T + mask in the kernels' unscaled units. A mask entry of -inf
// masks its column out whatever x holds there (NaN and +inf included), as lengths and
// the causal mask do; the test is on the bits, since WGSL lets compilers assume floats
// are finite.
fn apply_mask1(col: u32, x: f32) -> f32 {
    if HAS_MASK {
        let m = mask_value(mask_index(col));
        let masked_out = bitcast<u32>(m) == NEG_INF_BITS;
        return select(x + m * row_t, f32_neg_inf(), masked_out);
    }
    return x;
}

fn apply_mask4(col: u32, v: vec4<f32>) -> vec4<f32> {
    if HAS_MASK {
        let m = mask_value4(mask_index(col));
        let masked_out = bitcast<vec4<u32>>(m) == vec4<u32>(NEG_INF_BITS);
        return select(v + m * row_t, vec4<f32>(f32_neg_inf()), masked_out);
    }
    return v;
}
