//! Prints the `EcommerceStack` CRD as YAML: `cargo run -p operator --bin crdgen > k8s/crd.yaml`.

use std::io::Write;

fn main() -> std::io::Result<()> {
    // write_all, not print!: a closed pipe (`| head`) is an error, not a panic.
    std::io::stdout().write_all(operator::crd_yaml().as_bytes())
}
