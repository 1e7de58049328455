//! The examples, run as a user runs them. `cargo test` builds a package's examples
//! before it runs its tests, so the binaries are there. (The command-line tool has its
//! own tests, in `cli/tests/cli.rs`.)

use std::path::{Path, PathBuf};
use std::process::Command;

/// `target/<profile>/examples/<name>`, found from this test's own path
/// (`target/<profile>/deps/examples-<hash>`).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lies in target/<profile>/deps");
    let binary = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    // `cargo test` builds examples first, but `cargo test --test examples` alone does not.
    assert!(
        binary.exists(),
        "{} is not built: run `cargo build --example {name}` (same profile) first",
        binary.display()
    );
    binary
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_sharded_example_matches_the_unsplit_softmax() {
    let out = Command::new(example("sharded"))
        .output()
        .expect("the sharded example starts");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(stdout.contains("matches the unsplit softmax"), "{stdout}");
}
