//! The skeleton every gRPC service is built on: its API beside the gRPC health
//! service, `/healthz` and `/readyz` on the same port, readiness checks of its
//! dependencies run in the background, trace context taken from each call,
//! the metrics and internal-token layers, and a graceful stop (NOT_SERVING
//! first, then in-flight calls drained) on the listener it is given.
//!
//! A service's `serve(config, listener, shutdown)` builds its parts, adds its
//! dependencies' checks to [`GrpcService::readiness`] and ends with
//! [`GrpcService::serve`]; `run` binds the configured address, tests bind
//! `127.0.0.1:0`.

use std::convert::Infallible;
use std::future::Future;

use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::codegen::http::Request;
use tonic::server::NamedService;
use tonic::service::Routes;
use tower::Service;

use crate::config::ServiceAddr;
use crate::readiness::Readiness;
use crate::shutdown::CancellationToken;

/// One service's gRPC server, built up before it serves.
pub struct GrpcService {
    name: &'static str,
    routes: Routes,
    readiness: Readiness,
}

impl GrpcService {
    /// A server for `api` (reported SERVING under its gRPC name and under
    /// `""` once every readiness check passes).
    pub async fn new<S>(name: &'static str, api: S) -> Self
    where
        S: Service<Request<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        let (reporter, health) = tonic_health::server::health_reporter();
        let readiness = Readiness::new(reporter, &[S::NAME]).await;
        GrpcService {
            name,
            routes: Routes::new(health).add_service(api),
            readiness,
        }
    }

    /// A server with no API of its own, only health and readiness (the
    /// Consumer: its work comes from the stream, not from calls).
    pub async fn health_only(name: &'static str) -> Self {
        let (reporter, health) = tonic_health::server::health_reporter();
        GrpcService {
            name,
            routes: Routes::new(health),
            readiness: Readiness::new(reporter, &[]).await,
        }
    }

    /// Where the service adds the checks of its dependencies.
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// Serves on `listener` until `shutdown`; then NOT_SERVING, in-flight
    /// calls drained, the background checks stopped.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let checks = CancellationToken::new();
        let _stop_checks = checks.clone().drop_guard();
        self.readiness.start(checks).await?;
        let name = self.name;
        match listener.local_addr() {
            Ok(addr) => tracing::info!(%addr, "{name} listening"),
            Err(_) => tracing::info!("{name} listening"),
        }
        crate::grpc::serve_ready(self.routes, listener, &self.readiness, shutdown).await?;
        tracing::info!("{name} stopped");
        Ok(())
    }
}

/// Binds the address a service listens on (its `<SERVICE>_ADDR`).
pub async fn bind(addr: &ServiceAddr) -> anyhow::Result<TcpListener> {
    let listen = addr.listen_addr();
    TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))
}
