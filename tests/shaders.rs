//! Every WGSL kernel parses and validates with naga on the CPU: a shader error fails on
//! any machine, GPU or not.

use naga::valid::{Capabilities, ValidationFlags, Validator};
use wgpu_softmax::{entry_point, kernel_source, RowKernel, COPY_VEC4_SOURCE};

fn validate(name: &str, source: &str, caps: Capabilities) -> Result<(), String> {
    let module = naga::front::wgsl::parse_str(source)
        .map_err(|e| format!("{name}: {}", e.emit_to_string(source)))?;
    Validator::new(ValidationFlags::all(), caps)
        .validate(&module)
        .map_err(|e| format!("{name}: {}", e.emit_to_string(source)))?;
    Ok(())
}

#[test]
fn every_softmax_kernel_validates_with_the_capabilities_it_declares() {
    for kernel in RowKernel::ALL {
        let caps = if kernel.needs_subgroups() {
            Capabilities::SUBGROUP
        } else {
            Capabilities::empty()
        };
        validate(entry_point(kernel), &kernel_source(kernel), caps).unwrap();
    }
}

#[test]
fn the_portable_kernels_need_no_subgroup_capability_and_the_subgroup_kernel_does() {
    let sub = RowKernel::WorkgroupSubgroup;
    assert!(validate(entry_point(sub), &kernel_source(sub), Capabilities::empty()).is_err());
}

#[test]
fn the_copy_kernel_validates() {
    validate("copy_vec4", COPY_VEC4_SOURCE, Capabilities::empty()).unwrap();
}

#[test]
fn each_shader_file_is_named_for_its_entry_point() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    for kernel in RowKernel::ALL {
        let file = dir.join(format!("{}.wgsl", entry_point(kernel)));
        assert!(file.exists(), "{} is missing", file.display());
    }
}
