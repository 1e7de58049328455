//! Every WGSL kernel parses and validates with naga on the CPU: a shader error fails on
//! any machine, GPU or not.

use naga::valid::{Capabilities, ValidationFlags, Validator};
use wgpu_softmax::internals::{MaskRead, Shader, Variant, COPY_VEC4_SOURCE};

fn validate(name: &str, source: &str, caps: Capabilities) -> Result<(), String> {
    let module = naga::front::wgsl::parse_str(source)
        .map_err(|e| format!("{name}: {}", e.emit_to_string(source)))?;
    Validator::new(ValidationFlags::all(), caps)
        .validate(&module)
        .map_err(|e| format!("{name}: {}", e.emit_to_string(source)))?;
    Ok(())
}

#[test]
fn every_softmax_shader_validates_with_the_capabilities_it_declares() {
    for shader in Shader::ALL {
        let caps = if shader.needs_subgroups() {
            Capabilities::SUBGROUP
        } else {
            Capabilities::empty()
        };
        // Every variant of the shader: input and output widths, row inputs and mask
        // reads, cache slots (f16 and bf16 share their text: an override tells them
        // apart).
        let variants: Vec<Variant> = Variant::all()
            .into_iter()
            .filter(|v| v.shader == shader)
            .collect();
        assert!(!variants.is_empty(), "{shader:?} has no variant");
        for v in variants {
            let source = v.source().unwrap_or_else(|e| panic!("{v:?}: {e}"));
            validate(&format!("{v:?}"), &source, caps).unwrap();
        }
    }
}

#[test]
fn only_the_row_input_variant_declares_bindings_7_to_9() {
    for shader in Shader::ALL {
        let in_7_to_9 = |b: u32| (7..=9).contains(&b);
        let count = |row_inputs| {
            let v = Variant {
                row_inputs,
                ..Variant::plain(shader)
            };
            let module = naga::front::wgsl::parse_str(&v.source().unwrap()).unwrap();
            module
                .global_variables
                .iter()
                .filter(|(_, v)| v.binding.as_ref().is_some_and(|b| in_7_to_9(b.binding)))
                .count()
        };
        assert_eq!(count(None), 0, "{shader:?}");
        for read in [MaskRead::Words, MaskRead::Vec4F32, MaskRead::Vec4Half] {
            assert_eq!(count(Some(read)), 3, "{shader:?} {read:?}");
        }
    }
}

#[test]
fn the_subgroup_shaders_do_need_the_subgroup_capability() {
    for shader in Shader::ALL.into_iter().filter(|s| s.needs_subgroups()) {
        let e = validate(
            shader.entry_point(),
            &Variant::plain(shader).source().unwrap(),
            Capabilities::empty(),
        );
        assert!(e.is_err(), "{shader:?}");
    }
}

#[test]
fn the_copy_kernel_validates() {
    validate("copy_vec4", COPY_VEC4_SOURCE, Capabilities::empty()).unwrap();
}

#[test]
fn each_shader_file_is_named_for_its_entry_point() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    for shader in Shader::ALL {
        let file = dir.join(format!("{}.wgsl", shader.entry_point()));
        assert!(file.exists(), "{} is missing", file.display());
    }
}

/// The f32 constants of a module that the browser evaluates at compile time: every
/// `Literal::F32` in its global and function expressions, and every `bitcast<f32>` of a
/// `u32` constant or literal (which naga leaves unevaluated), with where it is.
fn f32_constants(module: &naga::Module) -> Vec<(String, f32)> {
    let u32_of =
        |arena: &naga::Arena<naga::Expression>, e: naga::Handle<naga::Expression>| match arena[e] {
            naga::Expression::Literal(naga::Literal::U32(bits)) => Some(bits),
            naga::Expression::Constant(c) => {
                match module.global_expressions[module.constants[c].init] {
                    naga::Expression::Literal(naga::Literal::U32(bits)) => Some(bits),
                    _ => None,
                }
            }
            _ => None,
        };
    let mut found = Vec::new();
    let mut scan = |what: &str, arena: &naga::Arena<naga::Expression>| {
        for (_, e) in arena.iter() {
            match *e {
                naga::Expression::Literal(naga::Literal::F32(v)) => {
                    found.push((what.to_string(), v));
                }
                naga::Expression::As {
                    expr,
                    kind: naga::ScalarKind::Float,
                    convert: None,
                } => {
                    if let Some(bits) = u32_of(arena, expr) {
                        found.push((format!("{what} (a bitcast)"), f32::from_bits(bits)));
                    }
                }
                _ => {}
            }
        }
    };
    scan("module scope", &module.global_expressions);
    for (_, f) in module.functions.iter() {
        scan(f.name.as_deref().unwrap_or("?"), &f.expressions);
    }
    for ep in &module.entry_points {
        scan(&ep.name, &ep.function.expressions);
    }
    found
}

/// The float literals written in `source` whose magnitude exceeds f32::MAX.
fn literals_beyond_f32(source: &str) -> Vec<String> {
    source
        .split(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-')))
        .map(|t| t.trim_start_matches(['-', '+']).trim_end_matches('f'))
        .filter(|t| t.starts_with(|c: char| c.is_ascii_digit()) && t.contains(['e', 'E']))
        .filter(|t| {
            t.parse::<f64>()
                .is_ok_and(|v| v.abs() > f64::from(f32::MAX))
        })
        .map(str::to_owned)
        .collect()
}

/// Chromium's WGSL compiler (Tint) refuses a constant expression whose value is not a
/// finite f32 ("value -inf cannot be represented as 'f32'", for
/// `bitcast<f32>(NEG_INF_BITS)`), and a literal beyond f32::MAX even where it rounds
/// to it ("value -340282346999999984391321947108527833088.0 cannot be represented as
/// 'f32'", for `-3.40282347e38`). naga accepts both, so this checks for them: no
/// variant may fold to a non-finite f32 constant or spell a literal beyond f32::MAX.
#[test]
fn no_shader_has_a_constant_the_browser_refuses() {
    let mut sources: Vec<(String, String)> = Variant::all()
        .into_iter()
        .map(|v| (format!("{v:?}"), v.source().unwrap()))
        .collect();
    sources.push(("copy_vec4".into(), COPY_VEC4_SOURCE.to_string()));
    for (name, source) in &sources {
        let module = naga::front::wgsl::parse_str(source).unwrap();
        for (where_, v) in f32_constants(&module) {
            assert!(v.is_finite(), "{name}: {where_} has the constant {v}");
        }
        let beyond = literals_beyond_f32(source);
        assert!(
            beyond.is_empty(),
            "{name}: literals beyond f32::MAX: {beyond:?}"
        );
    }
}

/// The check above does see both cases.
#[test]
fn the_browser_constant_check_sees_an_infinity_and_a_literal_beyond_f32_max() {
    let inf = "const BITS: u32 = 0xff800000u;\n\
               fn f() -> f32 { return bitcast<f32>(BITS); }";
    let module = naga::front::wgsl::parse_str(inf).unwrap();
    assert!(f32_constants(&module).iter().any(|(_, v)| v.is_infinite()));
    assert_eq!(
        literals_beyond_f32("const LOWEST: f32 = -3.40282347e38;"),
        ["3.40282347e38"]
    );
    assert!(literals_beyond_f32("const LOWEST: f32 = -3.4028234663852886e38;").is_empty());
}
