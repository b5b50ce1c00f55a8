//! Prints the `EcommerceStack` CRD as YAML: `cargo run -p operator --bin crdgen > k8s/crd.yaml`.

fn main() {
    print!("{}", operator::crd_yaml());
}
