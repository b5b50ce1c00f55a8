//! The build script of the six services (each Cargo.toml's `build =`): how a
//! release binary for x86_64 Linux, linked by LLD (its default linker), is
//! laid out, so that a running service keeps fewer of its pages resident
//! (BENCHMARKS.md, "Code laid out by use").
//! - `<service>.txt`, the functions the service runs (`make link-order`),
//!   placed side by side at the front of the code: the kernel maps a
//!   binary's pages 64 KB around each one touched, so code the service runs
//!   among code it never runs costs memory. Names the binary lacks are skipped.
//! - Relative relocations packed (DT_RELR, glibc 2.36): the loader reads a
//!   few kilobytes instead of 0.4 MB of them at every start.
use std::{env, path::PathBuf};

fn main() {
    let var = |name| env::var(name).expect("set by cargo");
    let list = PathBuf::from(var("CARGO_MANIFEST_DIR")).join(format!(
        "../../tools/link-order/{}.txt",
        var("CARGO_PKG_NAME")
    ));
    println!("cargo:rerun-if-changed={}", list.display());
    if var("PROFILE") != "release" || var("TARGET") != "x86_64-unknown-linux-gnu" {
        return;
    }
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    if let Ok(list) = list.canonicalize() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={},--no-warn-symbol-ordering",
            list.display()
        );
    }
}
