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
        let count = |row_inputs| {
            let v = Variant {
                row_inputs,
                ..Variant::plain(shader)
            };
            let module = naga::front::wgsl::parse_str(&v.source().unwrap()).unwrap();
            module
                .global_variables
                .iter()
                .filter(|(_, v)| v.binding.as_ref().is_some_and(|b| b.binding >= 7))
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
