//! Every shader variant the planner can ask for, composed and validated by naga with no
//! GPU; and the facts Rust and WGSL both state, read back from the compiled modules
//! (reflection): the params block's fields and offsets, the bindings, and the constants
//! the planner and the loop-bound argument rely on.

use std::collections::BTreeMap;

use naga::valid::{Capabilities, ValidationFlags, Validator};
use wgpu_softmax::internals::plan::{
    GROUP_BLOCK, LOAD_GROUP, MAX_CACHE_VEC4, MAX_SHARED_WORKGROUP,
};
use wgpu_softmax::internals::{binding_layout, Params, Shader, Variant};
use wgpu_softmax::wgpu;

fn module(v: &Variant) -> naga::Module {
    let source = v.source().unwrap_or_else(|e| panic!("{v:?}: {e}"));
    naga::front::wgsl::parse_str(&source)
        .unwrap_or_else(|e| panic!("{v:?}: {}", e.emit_to_string(&source)))
}

fn validate(v: &Variant, m: &naga::Module) {
    let caps = if v.shader.needs_subgroups() {
        Capabilities::SUBGROUP
    } else {
        Capabilities::empty()
    };
    Validator::new(ValidationFlags::all(), caps)
        .validate(m)
        .unwrap_or_else(|e| panic!("{v:?}: {e:?}"));
}

#[test]
fn every_variant_composes_and_validates() {
    let all = Variant::all();
    // 4 caching shaders x 19 slot counts + 4 others (the cross-entropy among them),
    // each x 2 x 2 x 4; the sampler's three (one row per workgroup, and a split row's
    // part sweep and fold) x 2 x 4 (their outputs are their own).
    assert_eq!(all.len(), (4 * 19 + 4) * 16 + 3 * 8);
    for v in &all {
        let m = module(v);
        validate(v, &m);
        let entry = m
            .entry_points
            .iter()
            .find(|e| e.name == v.shader.entry_point());
        assert!(entry.is_some(), "{v:?}: no entry point");
    }
    assert!(all.iter().any(|v| v.cache_slots == MAX_CACHE_VEC4 as u32));
}

/// The value of a `u32` module constant named `name`.
fn constant(m: &naga::Module, name: &str) -> Option<u32> {
    let c = m
        .constants
        .iter()
        .find(|(_, c)| c.name.as_deref() == Some(name))?
        .1;
    match m.global_expressions[c.init] {
        naga::Expression::Literal(naga::Literal::U32(v)) => Some(v),
        ref other => panic!("{name} is {other:?}"),
    }
}

#[test]
fn the_params_block_has_the_rust_structs_fields_at_its_offsets() {
    let rust: Vec<(String, u32)> = Params::FIELDS
        .iter()
        .map(|&(n, o)| (n.to_string(), o as u32))
        .collect();
    for shader in Shader::ALL {
        let m = module(&Variant::plain(shader));
        let mut layouter = naga::proc::Layouter::default();
        layouter.update(m.to_ctx()).expect("layout");
        let (handle, ty) = m
            .types
            .iter()
            .find(|(_, t)| t.name.as_deref() == Some("Params"))
            .expect("a Params struct");
        let naga::TypeInner::Struct { members, .. } = &ty.inner else {
            panic!("Params is not a struct")
        };
        let wgsl: Vec<(String, u32)> = members
            .iter()
            .map(|f| (f.name.clone().unwrap_or_default(), f.offset))
            .collect();
        assert_eq!(wgsl, rust, "{shader:?}: Params fields and offsets");
        assert_eq!(
            layouter[handle].size as usize,
            std::mem::size_of::<Params>(),
            "{shader:?}: Params size"
        );
    }
}

#[test]
fn every_variant_declares_exactly_the_bindings_the_rust_layout_builds() {
    for v in Variant::all().iter().filter(|v| v.cache_slots <= 4) {
        let m = module(v);
        let wgsl: BTreeMap<u32, &'static str> = m
            .global_variables
            .iter()
            .filter_map(|(_, g)| {
                let b = g.binding.as_ref()?;
                assert_eq!(b.group, 0, "{v:?}");
                let kind = match g.space {
                    naga::AddressSpace::Uniform => "uniform",
                    naga::AddressSpace::Storage { access }
                        if access
                            .contains(naga::StorageAccess::LOAD | naga::StorageAccess::STORE) =>
                    {
                        "storage read_write"
                    }
                    other => panic!("{v:?}: binding {} in {other:?}", b.binding),
                };
                Some((b.binding, kind))
            })
            .collect();
        let rust: BTreeMap<u32, &'static str> =
            binding_layout(v.row_inputs.is_some(), v.shader.extra_bindings())
                .iter()
                .map(|e| {
                    let kind = match e.ty {
                        wgpu::BindingType::Buffer {
                            ty: wgpu::BufferBindingType::Uniform,
                            ..
                        } => "uniform",
                        wgpu::BindingType::Buffer {
                            ty: wgpu::BufferBindingType::Storage { read_only: false },
                            ..
                        } => "storage read_write",
                        ref other => panic!("{other:?}"),
                    };
                    (e.binding, kind)
                })
                .collect();
        assert_eq!(wgsl, rust, "{v:?}");
    }
}

#[test]
fn constants_written_on_both_sides_agree() {
    for shader in Shader::ALL {
        let m = module(&Variant::plain(shader));
        assert_eq!(constant(&m, "GROUP"), Some(LOAD_GROUP), "{shader:?} GROUP");
        assert_eq!(constant(&m, "BLOCK"), Some(GROUP_BLOCK), "{shader:?} BLOCK");
        if let Some(max) = constant(&m, "MAX_WORKGROUP") {
            assert_eq!(max, MAX_SHARED_WORKGROUP, "{shader:?} MAX_WORKGROUP");
        }
    }
    // The workgroup-memory trees are sized for the largest shared workgroup.
    let m = module(&Variant::plain(Shader::WorkgroupShared));
    assert_eq!(constant(&m, "MAX_WORKGROUP"), Some(MAX_SHARED_WORKGROUP));
    for slots in [0, 1, 12, 64] {
        let v = Variant {
            cache_slots: slots,
            ..Variant::plain(Shader::ThreadRow)
        };
        assert_eq!(constant(&module(&v), "CACHE_SLOTS"), Some(slots));
    }
}
