//! Prints the objects the operator would apply for an `EcommerceStack`, as
//! YAML documents: `cargo run -p operator --bin render -- stack.yaml` (or
//! `-` for standard input).

use std::io::{Read, Write};

use anyhow::Context;
use operator::EcommerceStack;

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .context("usage: render <EcommerceStack YAML file, or - for standard input>")?;
    let mut text = String::new();
    if path == "-" {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    }
    let stack: EcommerceStack = serde_yaml::from_str(&text).context("not an EcommerceStack")?;
    let rendered = operator::render::render(&stack).map_err(anyhow::Error::msg)?;
    std::io::stdout().write_all(rendered.as_bytes())?;
    Ok(())
}
