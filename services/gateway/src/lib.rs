//! The API gateway: the REST API over the gRPC services.
//!
//! - `http`: the actix-web app, handlers, DTOs and the OpenAPI document;
//! - `auth`: JWTs and the verified caller;
//! - `problem`: the one mapping of every failure to problem+json;
//! - `clients`: the gRPC clients, each behind a `breaker`;
//! - `catalogue`: the product cache, kept in step by Inventory's announcements;
//! - `limiter`: per-client rate limits on login and order creation.

// A `Problem` is built at most once per failed request, and is the error
// type of every handler; boxing it would only add an allocation.
#![allow(clippy::result_large_err)]

pub mod auth;
pub mod breaker;
pub mod catalogue;
pub mod clients;
pub mod config;
pub mod http;
pub mod limiter;
pub mod problem;

use anyhow::Result;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use actix_web::{HttpServer, web};
use platform::cli::Command;
use platform::shutdown::Shutdown;
use tokio::net::TcpListener;

pub use config::Config;

use crate::auth::JwtKeys;
use crate::clients::Downstreams;
use crate::http::{ApiDocument, Shared};
use crate::limiter::RateLimiter;

/// Entry point of the binary.
pub async fn run(command: Command) -> anyhow::Result<()> {
    platform::cli::dispatch(command, Config::from_env, migrate, serve).await
}

/// What the workers share; each builds its app from it.
pub fn state(config: &Config) -> anyhow::Result<Arc<Shared>> {
    Ok(Arc::new(Shared {
        downstreams: Downstreams::new(
            &config.endpoints,
            config.calls,
            config.breaker_failures,
            config.breaker_cooldown,
        )?,
        login_limiter: RateLimiter::per_minute(config.login_per_minute),
        account_login_limiter: RateLimiter::per_minute(config.login_per_account_per_minute),
        register_limiter: RateLimiter::per_minute(config.register_per_minute),
        order_limiter: RateLimiter::per_minute(config.orders_per_minute),
        trusted_proxies: config.trusted_proxies.clone(),
        products: Arc::new(catalogue::ProductCache::new(
            config.product_cache_ttl,
            config.product_cache_capacity,
        )),
        readiness_timeout: config.calls.request_timeout.min(Duration::from_secs(2)),
    }))
}

/// Serves the API on `listener` until `shutdown`, then lets in-flight
/// requests finish.
pub async fn serve(config: Config, listener: TcpListener, shutdown: impl Shutdown) -> Result<()> {
    let addr = listener.local_addr()?;
    let listener = listener.into_std()?;
    http::observe::register_metrics();
    let shared = state(&config)?;
    if shared.products.enabled() {
        catalogue::follow_changes(config.nats.clone(), shared.products.clone()).await?;
    }
    let keys = web::Data::new(JwtKeys::new(&config.jwt));
    let document = web::Data::new(ApiDocument::new(&http::openapi())?);
    let max_body_bytes = config.max_body_bytes;

    let mut server = HttpServer::new(move || {
        http::app(
            shared.clone(),
            keys.clone(),
            document.clone(),
            max_body_bytes,
        )
    })
    .disable_signals()
    // actix keeps the OS default (Nagle's algorithm) unless told.
    .tcp_nodelay(true)
    .shutdown_timeout(10);
    if config.workers > 0 {
        server = server.workers(config.workers);
    }
    let server = server.listen(listener)?.run();
    let handle = server.handle();
    let mut server = Box::pin(server);
    // The first poll starts the HTTP workers and returns once each has built
    // its app (actix-server 2: `Accept::start` waits for them): the start-up
    // is over, and the memory its temporaries took (the OpenAPI document, the
    // routers) can go back to the system.
    if let Poll::Ready(result) =
        std::future::poll_fn(|cx| Poll::Ready(server.as_mut().poll(cx))).await
    {
        return result.map_err(Into::into);
    }
    platform::heap::release_freed();
    tracing::info!(%addr, "gateway listening");
    tokio::select! {
        result = &mut server => result?,
        () = shutdown => {
            tracing::info!("draining in-flight requests");
            // The server future handles the stop command: poll both.
            let ((), result) = tokio::join!(handle.stop(true), &mut server);
            result?;
        }
    }
    tracing::info!("gateway stopped");
    Ok(())
}

/// `migrate`: the gateway has no database.
pub async fn migrate(_config: Config) -> anyhow::Result<()> {
    tracing::info!("the gateway has no database: nothing to migrate");
    Ok(())
}
