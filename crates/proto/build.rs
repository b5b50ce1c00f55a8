//! Compiles every contract under `proto/` at build time. protoc comes from
//! `protoc-bin-vendored` unless `PROTOC` names another one.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded.
        unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "ecommerce/common/v1/common.proto",
        "ecommerce/inventory/v1/inventory.proto",
        "ecommerce/order/v1/order.proto",
        "ecommerce/user/v1/user.proto",
        "ecommerce/producer/v1/producer.proto",
        "ecommerce/events/v1/events.proto",
    ];
    let paths: Vec<PathBuf> = files.iter().map(|f| root.join(f)).collect();
    for path in &paths {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&paths, &[root])?;
    Ok(())
}
