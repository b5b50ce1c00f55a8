use std::time::Duration;

use platform::ConfigError;
use platform::config::{self, AppEnv, CallSettings, Endpoints, ServiceAddr};

use crate::auth::JwtSettings;

/// The gateway's settings, all from the environment (or `.env`).
#[derive(Debug, Clone)]
pub struct Config {
    /// `API_GATEWAY_ADDR` (default `:8080`).
    pub listen: ServiceAddr,
    /// `INVENTORY_ADDR`, `ORDER_ADDR`, `USER_ADDR`, ...
    pub endpoints: Endpoints,
    /// `GRPC_CONNECT_TIMEOUT_MS`, `GRPC_REQUEST_TIMEOUT_MS`.
    pub calls: CallSettings,
    /// `JWT_SECRET`, `JWT_ISSUER`, `JWT_TTL_SECONDS`.
    pub jwt: JwtSettings,
    /// `RATE_LIMIT_LOGIN_PER_MINUTE` per client IP (0 turns it off).
    pub login_per_minute: u32,
    /// `RATE_LIMIT_ORDERS_PER_MINUTE` per client IP (0 turns it off).
    pub orders_per_minute: u32,
    /// `TRUST_PROXY_HEADERS`: take the client IP from the last
    /// `X-Forwarded-For` address (only behind a proxy that sets or appends it).
    pub trust_proxy_headers: bool,
    /// `CIRCUIT_BREAKER_FAILURES`: consecutive unreachable answers that open
    /// a downstream's breaker.
    pub breaker_failures: u32,
    /// `CIRCUIT_BREAKER_COOLDOWN_MS`: how long an open breaker answers 503
    /// without calling.
    pub breaker_cooldown: Duration,
    /// `HTTP_MAX_BODY_BYTES`: larger request bodies get 413.
    pub max_body_bytes: usize,
    /// `HTTP_WORKERS`: actix worker threads (0: one per core).
    pub workers: usize,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let app_env = AppEnv::from_env()?;
        let breaker_failures: u32 = config::parse_or("CIRCUIT_BREAKER_FAILURES", 5)?;
        if breaker_failures == 0 {
            return Err(ConfigError::invalid(
                "CIRCUIT_BREAKER_FAILURES",
                "0",
                "must be at least 1",
            ));
        }
        let max_body_bytes: usize = config::parse_or("HTTP_MAX_BODY_BYTES", 64 * 1024)?;
        if max_body_bytes < 1024 {
            return Err(ConfigError::invalid(
                "HTTP_MAX_BODY_BYTES",
                &max_body_bytes.to_string(),
                "must be at least 1024",
            ));
        }
        Ok(Config {
            listen: ServiceAddr::from_env("API_GATEWAY_ADDR", 8080)?,
            endpoints: Endpoints::from_env()?,
            calls: CallSettings::from_env()?,
            jwt: JwtSettings::from_env(app_env)?,
            login_per_minute: config::parse_or("RATE_LIMIT_LOGIN_PER_MINUTE", 10)?,
            orders_per_minute: config::parse_or("RATE_LIMIT_ORDERS_PER_MINUTE", 60)?,
            trust_proxy_headers: config::bool_or("TRUST_PROXY_HEADERS", false)?,
            breaker_failures,
            breaker_cooldown: config::millis_or(
                "CIRCUIT_BREAKER_COOLDOWN_MS",
                Duration::from_secs(5),
            )?,
            max_body_bytes,
            workers: config::parse_or("HTTP_WORKERS", 0)?,
        })
    }
}
