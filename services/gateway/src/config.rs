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
    /// `TRUSTED_PROXIES`: the proxies (comma-separated CIDRs) whose
    /// `X-Forwarded-For` tells the client's address. `TRUST_PROXY_HEADERS=true`
    /// (older) trusts every peer.
    pub trusted_proxies: TrustedProxies,
    /// `RATE_LIMIT_REGISTER_PER_MINUTE` per client IP (0 turns it off).
    pub register_per_minute: u32,
    /// `RATE_LIMIT_LOGIN_PER_ACCOUNT_PER_MINUTE`: login attempts per account
    /// from all clients together (0 turns it off).
    pub login_per_account_per_minute: u32,
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
    /// `PRODUCT_CACHE_TTL_MS` (default 1000; 0 turns the cache off): the
    /// longest a product is answered from memory (`catalogue`).
    pub product_cache_ttl: Duration,
    /// `PRODUCT_CACHE_CAPACITY` (default 10000): the most products held.
    pub product_cache_capacity: usize,
    /// `NATS_ADDR`, `NATS_SUBJECT_PREFIX`: where product changes are heard.
    pub nats: platform::config::NatsSettings,
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
            trusted_proxies: TrustedProxies::from_env()?,
            register_per_minute: config::parse_or("RATE_LIMIT_REGISTER_PER_MINUTE", 10)?,
            login_per_account_per_minute: config::parse_or(
                "RATE_LIMIT_LOGIN_PER_ACCOUNT_PER_MINUTE",
                20,
            )?,
            breaker_failures,
            breaker_cooldown: config::millis_or(
                "CIRCUIT_BREAKER_COOLDOWN_MS",
                Duration::from_secs(5),
            )?,
            max_body_bytes,
            workers: config::parse_or("HTTP_WORKERS", 0)?,
            product_cache_ttl: config::millis_or("PRODUCT_CACHE_TTL_MS", Duration::from_secs(1))?,
            product_cache_capacity: config::parse_or("PRODUCT_CACHE_CAPACITY", 10_000)?,
            nats: platform::config::NatsSettings::from_env()?,
        })
    }
}

/// The networks of the proxies in front of the gateway.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<ipnet::IpNet>);

impl TrustedProxies {
    pub fn from_env() -> Result<Self, ConfigError> {
        if config::bool_or("TRUST_PROXY_HEADERS", false)? {
            return Ok(Self::parse("0.0.0.0/0,::/0").expect("valid networks"));
        }
        let text = config::string_or("TRUSTED_PROXIES", "");
        Self::parse(&text).map_err(|bad| {
            ConfigError::invalid(
                "TRUSTED_PROXIES",
                &text,
                format!("{bad:?} is not an address or CIDR network"),
            )
        })
    }

    /// Comma-separated networks (`10.0.0.0/8`) or single addresses.
    pub fn parse(text: &str) -> Result<Self, String> {
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<ipnet::IpNet>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| s.to_owned())
            })
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }
}
