//! The operator's controller process.

use anyhow::Context as _;
use operator::runner::{Settings, run, shutdown_signal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=info".into()),
        )
        .json()
        .init();
    let settings = Settings::from_env().context("reading the operator's settings")?;
    run(settings, shutdown_signal()).await
}
