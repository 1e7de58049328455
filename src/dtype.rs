//! Storage element types: f32, and the 16-bit f16 and bf16 (arithmetic is f32 in every
//! case).
//!
//! On the GPU, 16-bit values are read and written as pairs in `u32` words, decoded and
//! encoded by bit operations (`shaders/common/half.wgsl`), so neither needs
//! `Features::SHADER_F16`. The host types [`F16`] and [`Bf16`] hold the raw bits and
//! convert by the same rules as the shaders: round to nearest, ties to even, overflow
//! to infinity, NaN kept NaN.

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

/// An IEEE binary16 value, as its bits.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, bytemuck::Pod, bytemuck::Zeroable)]
pub struct F16(pub u16);

/// A bfloat16 value, as its bits.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Bf16(pub u16);

impl F16 {
    /// `x` rounded to the nearest f16 (ties to even); beyond 65504 (past the rounding
    /// midpoint 65520) it is infinity, and NaN stays NaN.
    pub fn from_f32(x: f32) -> Self {
        let bits = x.to_bits();
        let sign = ((bits >> 16) & 0x8000) as u16;
        let a = bits & 0x7fff_ffff;
        let h = if a > 0x7f80_0000 {
            0x7e00
        } else if a >= 0x477f_f000 {
            // At least 65520, the midpoint above 65504: infinity.
            0x7c00
        } else if a >= 0x3880_0000 {
            // Normal f16: rebias the exponent (127 - 15) and round off 13 mantissa bits.
            let rounded = a + 0x0fff + ((a >> 13) & 1);
            ((rounded - 0x3800_0000) >> 13) as u16
        } else {
            // Subnormal f16 (or zero): a multiple of 2^-24. Scaling by 2^24 is exact, and
            // rounding half to even gives 0x400, the smallest normal, where it rounds up.
            let scaled = f32::from_bits(a) * 16_777_216.0;
            scaled.round_ties_even() as u16
        };
        F16(sign | h)
    }

    /// The value as an f32 (exact).
    pub fn to_f32(self) -> f32 {
        let h = u32::from(self.0);
        let sign = (h & 0x8000) << 16;
        let em = h & 0x7fff;
        if em >= 0x7c00 {
            f32::from_bits(sign | 0x7f80_0000 | ((em & 0x3ff) << 13))
        } else if em >= 0x400 {
            f32::from_bits(sign | ((em << 13) + 0x3800_0000))
        } else {
            let v = em as f32 * 5.960_464_5e-8;
            if sign != 0 {
                -v
            } else {
                v
            }
        }
    }
}

impl Bf16 {
    /// `x` rounded to the nearest bf16 (ties to even, overflow to infinity); NaN stays
    /// NaN.
    pub fn from_f32(x: f32) -> Self {
        let bits = x.to_bits();
        if bits & 0x7fff_ffff > 0x7f80_0000 {
            return Bf16(((bits >> 16) | 0x40) as u16);
        }
        Bf16(((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16)
    }

    /// The value as an f32 (exact).
    pub fn to_f32(self) -> f32 {
        f32::from_bits(u32::from(self.0) << 16)
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for super::F16 {}
    impl Sealed for super::Bf16 {}
}

/// A host element type of the typed host API: `f32`, [`F16`] or [`Bf16`].
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

impl Element for F16 {
    const DTYPE: Dtype = Dtype::F16;
    fn from_f32(x: f32) -> Self {
        F16::from_f32(x)
    }
    fn to_f32(self) -> f32 {
        F16::to_f32(self)
    }
}

impl Element for Bf16 {
    const DTYPE: Dtype = Dtype::Bf16;
    fn from_f32(x: f32) -> Self {
        Bf16::from_f32(x)
    }
    fn to_f32(self) -> f32 {
        Bf16::to_f32(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_f16_round_trips_through_f32() {
        for bits in 0..=u16::MAX {
            let h = F16(bits);
            let back = F16::from_f32(h.to_f32());
            if h.to_f32().is_nan() {
                assert!(back.to_f32().is_nan(), "{bits:#06x}");
            } else {
                assert_eq!(back, h, "{bits:#06x}");
            }
        }
    }

    #[test]
    fn f16_rounds_to_nearest_even_and_overflows_past_the_midpoint() {
        assert_eq!(F16::from_f32(65504.0).0, 0x7bff);
        assert_eq!(F16::from_f32(65519.0).0, 0x7bff);
        assert_eq!(F16::from_f32(65520.0).0, 0x7c00);
        assert_eq!(F16::from_f32(-1e9).0, 0xfc00);
        assert_eq!(F16::from_f32(f32::NEG_INFINITY).0, 0xfc00);
        // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1).
        assert_eq!(F16::from_f32(1.0 + 2f32.powi(-11)).0, 0x3c00);
        assert_eq!(F16::from_f32(1.0 + 3.0 * 2f32.powi(-11)).0, 0x3c02);
        // Subnormals: 2^-24 is the smallest; half of it ties to 0.
        assert_eq!(F16::from_f32(2f32.powi(-24)).0, 1);
        assert_eq!(F16::from_f32(2f32.powi(-25)).0, 0);
        assert_eq!(F16::from_f32(1.5 * 2f32.powi(-24)).0, 2);
        assert_eq!(
            F16::from_f32(2f32.powi(-14) * (1.0 - 2f32.powi(-12))).0,
            0x400
        );
    }

    #[test]
    fn conversions_match_the_half_crate() {
        let mut x = 1.234_567e-9f32;
        while x < 1e6 {
            for v in [x, -x, x * 1.000_123] {
                assert_eq!(F16::from_f32(v).0, half::f16::from_f32(v).to_bits(), "{v}");
                assert_eq!(
                    Bf16::from_f32(v).0,
                    half::bf16::from_f32(v).to_bits(),
                    "{v}"
                );
            }
            x *= 1.0173;
        }
        for bits in 0..=u16::MAX {
            let (ours, theirs) = (Bf16(bits).to_f32(), half::bf16::from_bits(bits).to_f32());
            // NaN payloads aside (half sets the quiet bit), the values are the same.
            assert!(ours.to_bits() == theirs.to_bits() || ours.is_nan() && theirs.is_nan());
            let (ours, theirs) = (F16(bits).to_f32(), half::f16::from_bits(bits).to_f32());
            assert!(ours.to_bits() == theirs.to_bits() || ours.is_nan() && theirs.is_nan());
        }
    }
}
