//! The build script of the six services (each Cargo.toml's `build =`): how a
//! release binary for x86_64 Linux, linked by LLD (the target's default
//! linker), is laid out, so that a running service keeps fewer of its pages
//! resident (BENCHMARKS.md, "Code laid out by use"). `LINK_ORDER=0` leaves
//! both out.
//! - `<service>.txt`, the functions the service runs (`make link-order`),
//!   placed side by side at the front of the code: the kernel maps a
//!   binary's pages 64 KB around each one touched, so code the service runs
//!   among code it never runs costs memory. Names the binary lacks are
//!   skipped.
//! - Relative relocations packed (DT_RELR): the loader reads a few kilobytes
//!   instead of 0.4 MB of them at every start. It needs glibc 2.36 where the
//!   binary runs (Debian 12, the images' base), so only a build on such a
//!   glibc gets it.
use std::{env, path::PathBuf, process::Command};

fn main() {
    let var = |name| env::var(name).unwrap_or_default();
    let list = PathBuf::from(var("CARGO_MANIFEST_DIR")).join(format!(
        "../../tools/link-order/{}.txt",
        var("CARGO_PKG_NAME")
    ));
    println!("cargo:rerun-if-changed={}", list.display());
    println!("cargo:rerun-if-env-changed=LINK_ORDER");
    // Flags that pick another linker (-C linker, linker-flavor, linker-features,
    // link-self-contained) may leave LLD's options unknown to it.
    let rustflags = var("CARGO_ENCODED_RUSTFLAGS");
    if var("PROFILE") != "release"
        || var("TARGET") != "x86_64-unknown-linux-gnu"
        || var("LINK_ORDER") == "0"
        || rustflags.contains("linker")
        || rustflags.contains("link-self-contained")
    {
        return;
    }
    let linker = |args: &[&str]| {
        for arg in args {
            println!("cargo:rustc-link-arg-bins=-Xlinker");
            println!("cargo:rustc-link-arg-bins={arg}");
        }
    };
    if glibc_version().is_some_and(|v| v >= (2, 36)) {
        linker(&["-z", "pack-relative-relocs"]);
    }
    if let Ok(list) = list.canonicalize() {
        let list = list.to_str().expect("a UTF-8 path");
        linker(&["--no-warn-symbol-ordering", "--symbol-ordering-file", list]);
    }
}

/// The build machine's glibc, from `getconf GNU_LIBC_VERSION` ("glibc 2.36").
fn glibc_version() -> Option<(u32, u32)> {
    let out = Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let mut numbers = text.trim().strip_prefix("glibc ")?.split('.');
    Some((numbers.next()?.parse().ok()?, numbers.next()?.parse().ok()?))
}
