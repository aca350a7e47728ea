//! Builds the guest plugins in `plugins/` for `wasm32-wasip2` and exposes
//! their paths to tests and benchmarks as constants (the pattern of
//! wasmtime's `crates/test-programs/artifacts`).

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let root = manifest_dir
        .parent()
        .expect("tests/ lives in the workspace root")
        .to_owned();
    let plugins = root.join("plugins");
    let target_dir = root.join("target").join("wasm-plugins");

    for watched in [
        plugins.join("Cargo.toml"),
        plugins.join("Cargo.lock"),
        root.join("wit"),
        root.join("sdk/src"),
        root.join("sdk/Cargo.toml"),
    ] {
        println!("cargo:rerun-if-changed={}", watched.display());
    }
    let mut crates = Vec::new();
    for entry in std::fs::read_dir(&plugins)
        .expect("reading plugins/")
        .flatten()
    {
        let dir = entry.path();
        let manifest = dir.join("Cargo.toml");
        if manifest.is_file() {
            println!("cargo:rerun-if-changed={}", manifest.display());
            println!("cargo:rerun-if-changed={}", dir.join("src").display());
            // Shared libraries (no `cdylib`) are built as dependencies only.
            let text = std::fs::read_to_string(&manifest).expect("reading a plugin Cargo.toml");
            if !text.contains("cdylib") {
                continue;
            }
            crates.push(
                dir.file_name()
                    .expect("crate dir name")
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    crates.sort();

    ensure_target();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(&plugins)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            TARGET,
            "--target-dir",
        ])
        .arg(&target_dir)
        // The outer build's flags are for the host target, not for guests.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_PROFILE_RELEASE_DEBUG");
    let status = build
        .status()
        .expect("running cargo to build the guest plugins");
    assert!(
        status.success(),
        "building the guest plugins in {} failed",
        plugins.display()
    );

    let out = target_dir.join(TARGET).join("release");
    let mut consts = String::new();
    for name in &crates {
        let file = out.join(format!("{}.wasm", name.replace('-', "_")));
        assert!(
            file.is_file(),
            "expected {} after the build",
            file.display()
        );
        consts.push_str(&format!(
            "/// `plugins/{name}` built for {TARGET}.\npub const {}: &str = {:?};\n",
            name.replace('-', "_").to_uppercase(),
            file.display().to_string()
        ));
    }
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out_dir.join("artifacts.rs"), consts).expect("writing artifacts.rs");
}

/// Installs the wasm target through rustup when it is missing, so a fresh
/// clone builds with nothing but the pinned toolchain.
fn ensure_target() {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .expect("running rustc --print sysroot");
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_owned();
    if Path::new(&sysroot)
        .join("lib/rustlib")
        .join(TARGET)
        .is_dir()
    {
        return;
    }
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status();
    match status {
        Ok(s) if s.success() => {}
        _ => panic!(
            "the {TARGET} target is missing and `rustup target add {TARGET}` failed; install it and rebuild"
        ),
    }
}
