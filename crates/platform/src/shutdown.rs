//! Graceful shutdown: SIGTERM or SIGINT cancel one token that every task of a
//! service watches.

use std::future::Future;

pub use tokio_util::sync::CancellationToken;

/// What a service's `serve` stops on: a future that resolves when it is
/// time to stop (SIGTERM in the binary, whatever a test likes).
pub trait Shutdown: Future<Output = ()> {}

impl<F: Future<Output = ()>> Shutdown for F {}

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C).
pub async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
    }
}

/// A token cancelled when the process is asked to stop.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let child = token.clone();
    tokio::spawn(async move {
        signal().await;
        child.cancel();
    });
    token
}
