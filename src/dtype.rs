//! Storage element types: f32, and the 16-bit f16 and bf16 (arithmetic is f32 in every
//! case).
//!
//! On the GPU, 16-bit values are read and written as pairs in `u32` words, decoded and
//! encoded by bit operations (`shaders/common/half.wgsl`), so neither needs
//! `Features::SHADER_F16`. On the host they are the `half` crate's [`half::f16`] and
//! [`half::bf16`], which convert by the same rules as the shaders: round to nearest,
//! ties to even, overflow to infinity, NaN kept NaN (a test below checks every f16 and
//! bf16 against the shaders' rules).

/// How the elements of a matrix (or a mask) are stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dtype {
    /// IEEE binary32.
    #[default]
    F32,
    /// IEEE binary16: 10 mantissa bits, largest finite value 65504.
    F16,
    /// bfloat16: the upper half of an f32 (7 mantissa bits, f32's range).
    Bf16,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> u64 {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::Bf16 => 2,
        }
    }

    /// Whether elements are 16-bit (read and written in pairs of a `u32`).
    pub fn is_half(self) -> bool {
        self.size() == 2
    }

    /// The name NumPy-style tools use: `float32`, `float16`, `bfloat16`.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "float32",
            Dtype::F16 => "float16",
            Dtype::Bf16 => "bfloat16",
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
}

/// A host element type: `f32`, [`half::f16`] or [`half::bf16`].
pub trait Element: bytemuck::Pod + Send + Sync + sealed::Sealed {
    /// How it is stored.
    const DTYPE: Dtype;
    /// `x` rounded to this type.
    fn from_f32(x: f32) -> Self;
    /// The value as an f32 (exact).
    fn to_f32(self) -> f32;
}

impl Element for f32 {
    const DTYPE: Dtype = Dtype::F32;
    fn from_f32(x: f32) -> Self {
        x
    }
    fn to_f32(self) -> f32 {
        self
    }
}

impl Element for half::f16 {
    const DTYPE: Dtype = Dtype::F16;
    fn from_f32(x: f32) -> Self {
        half::f16::from_f32(x)
    }
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
}

impl Element for half::bf16 {
    const DTYPE: Dtype = Dtype::Bf16;
    fn from_f32(x: f32) -> Self {
        half::bf16::from_f32(x)
    }
    fn to_f32(self) -> f32 {
        half::bf16::to_f32(self)
    }
}

#[cfg(test)]
mod tests {
    use half::{bf16, f16};

    // The shaders' encoders (`shaders/common/half.wgsl`) round to nearest, ties to even,
    // overflow past the midpoint above the largest finite value to infinity, and keep
    // NaN NaN. The host types must follow the same rules, or host-side references and
    // GPU outputs would disagree in the last bit.

    #[test]
    fn f16_rounds_to_nearest_even_and_overflows_past_the_midpoint() {
        let bits = |x: f32| f16::from_f32(x).to_bits();
        assert_eq!(bits(65504.0), 0x7bff);
        assert_eq!(bits(65519.0), 0x7bff);
        assert_eq!(bits(65520.0), 0x7c00);
        assert_eq!(bits(-1e9), 0xfc00);
        assert_eq!(bits(f32::NEG_INFINITY), 0xfc00);
        // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1).
        assert_eq!(bits(1.0 + 2f32.powi(-11)), 0x3c00);
        assert_eq!(bits(1.0 + 3.0 * 2f32.powi(-11)), 0x3c02);
        // Subnormals: 2^-24 is the smallest; half of it ties to 0.
        assert_eq!(bits(2f32.powi(-24)), 1);
        assert_eq!(bits(2f32.powi(-25)), 0);
        assert_eq!(bits(1.5 * 2f32.powi(-24)), 2);
        assert_eq!(bits(2f32.powi(-14) * (1.0 - 2f32.powi(-12))), 0x400);
        assert!(f16::from_f32(f32::NAN).is_nan());
    }

    #[test]
    fn bf16_rounds_to_nearest_even_and_keeps_nan() {
        let bits = |x: f32| bf16::from_f32(x).to_bits();
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1).
        assert_eq!(bits(1.0 + 2f32.powi(-8)), 0x3f80);
        assert_eq!(bits(1.0 + 3.0 * 2f32.powi(-8)), 0x3f82);
        assert_eq!(bits(f32::MAX), 0x7f80);
        assert_eq!(bits(-f32::MAX), 0xff80);
        assert!(bf16::from_f32(f32::NAN).is_nan());
    }

    #[test]
    fn every_16_bit_value_round_trips_through_f32() {
        for bits in 0..=u16::MAX {
            let h = f16::from_bits(bits);
            let b = bf16::from_bits(bits);
            if h.is_nan() {
                assert!(f16::from_f32(h.to_f32()).is_nan());
            } else {
                assert_eq!(f16::from_f32(h.to_f32()).to_bits(), bits, "{bits:#06x}");
            }
            if b.is_nan() {
                assert!(bf16::from_f32(b.to_f32()).is_nan());
            } else {
                assert_eq!(bf16::from_f32(b.to_f32()).to_bits(), bits, "{bits:#06x}");
                // bf16 is the upper half of an f32.
                assert_eq!(b.to_f32().to_bits(), u32::from(bits) << 16);
            }
        }
    }
}
