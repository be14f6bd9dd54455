//! Records the git commit the binary was built from, for `/api/v1/version`.
use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=HEARTH_GIT_COMMIT={commit}");
    // In a worktree `.git` is a file and HEAD lives in the worktree's own git dir, refs
    // in the common one; watching a path that does not exist would rerun this script,
    // and rebuild the daemon, on every build.
    let git_dir = |flag: &str| {
        Command::new("git")
            .args(["rev-parse", "--path-format=absolute", flag])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
    };
    match (git_dir("--git-dir"), git_dir("--git-common-dir")) {
        (Some(own), Some(common)) => {
            println!("cargo:rerun-if-changed={own}/HEAD");
            println!("cargo:rerun-if-changed={common}/refs/heads");
            // A missing path counts as changed: watch packed-refs only once git made it.
            if std::path::Path::new(&format!("{common}/packed-refs")).exists() {
                println!("cargo:rerun-if-changed={common}/packed-refs");
            }
        }
        _ => {
            println!("cargo:rerun-if-changed=../.git/HEAD");
            println!("cargo:rerun-if-changed=../.git/refs/heads");
        }
    }
    // Relative relocations packed (DT_RELR, glibc 2.36+, GNU ld 2.38+): the loader
    // reads a few KiB instead of 0.9 MiB of `.rela.dyn` at every start, which idle
    // RSS counts (README, Performance).
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu")
    {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    startup_order();
}

/// Start-up code first in `.text`: the functions an idle daemon has run, listed in
/// `startup.order` by `scripts/startup-order`, are laid next to each other. The kernel
/// maps 64 KiB of file pages around each page fault, so the same code scattered over
/// the whole text made nearly all of it resident (README, Performance). Release builds
/// on x86_64 Linux only, where rustc links with its own lld (the option is lld's); the
/// linker skips names it does not find, so a stale list costs locality, not the build.
fn startup_order() {
    println!("cargo:rerun-if-changed=startup.order");
    let env = |key: &str| std::env::var(key).unwrap_or_default();
    let lld_by_default = env("TARGET") == "x86_64-unknown-linux-gnu";
    // Someone who links with another linker says so in RUSTFLAGS.
    let flags = env("CARGO_ENCODED_RUSTFLAGS");
    let other_linker = flags.contains("linker-features=-lld")
        || flags.contains("link-self-contained=-linker")
        || flags
            .split('\x1f')
            .any(|f| f.starts_with("linker=") || f.starts_with("-Clinker="));
    let order = std::path::Path::new(&env("CARGO_MANIFEST_DIR")).join("startup.order");
    if env("PROFILE") == "release" && lld_by_default && !other_linker && order.exists() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}
