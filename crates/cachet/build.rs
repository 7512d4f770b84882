//! Builds the observation interposer (`src/compiler/observe/interposer.c`) as a shared
//! object and leaves it in OUT_DIR, where `include_bytes!` embeds it in the binary: the
//! shipped cachet is one static file, and the server writes the object out at start.
//! The `cc` crate picks the C compiler and the target flags; we only ask for `-shared`.

use std::path::PathBuf;

fn main() {
    let source = PathBuf::from("src/compiler/observe/interposer.c");
    println!("cargo:rerun-if-changed={}", source.display());
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let object = out.join("cachet-observe.so");
    // A shared object for the dynamic loader, even when cachet itself is linked
    // statically (scripts/build-release sets crt-static, which makes cc add -static).
    let compiler = cc::Build::new()
        .cargo_metadata(false)
        .pic(true)
        .opt_level(2)
        .get_compiler();
    let mut command = std::process::Command::new(compiler.path());
    command
        .envs(compiler.get_envs())
        .args(compiler.args().iter().filter(|a| *a != "-static"))
        .args(["-shared", "-Wall", "-Wextra", "-o"])
        .arg(&object)
        .arg(&source)
        .arg("-ldl");
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler for the interposer: {e}"));
    assert!(
        status.success(),
        "building the interposer failed: {command:?}"
    );
}
