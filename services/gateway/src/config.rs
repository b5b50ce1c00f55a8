use std::time::Duration;

use platform::ConfigError;
use platform::config::{AppEnv, CallSettings, Endpoints, ServiceAddr};
use platform::settings::{self as set, DefaultValue, Env, Setting};

platform::declare_settings! {
    JWT_SECRET = DefaultValue::Unset,
        "HS256 key, at least 32 bytes; required (`APP_ENV=development`: a random one per process)";
    JWT_ISSUER = DefaultValue::Value("ecommerce-gateway"), "`iss` written and required";
    JWT_TTL_SECONDS = DefaultValue::Value("3600"), "token lifetime";
    RATE_LIMIT_LOGIN_PER_MINUTE = DefaultValue::Value("10"), "`POST /users/login` per client IP, an IPv6 client by its /64 (0: off)";
    RATE_LIMIT_LOGIN_PER_ACCOUNT_PER_MINUTE = DefaultValue::Value("20"),
        "`POST /users/login` per account (username or email, any case) from all clients together (0: off)";
    RATE_LIMIT_REGISTER_PER_MINUTE = DefaultValue::Value("10"), "`POST /users/register` per client IP (0: off)";
    RATE_LIMIT_ORDERS_PER_MINUTE = DefaultValue::Value("60"), "`POST /orders` per client IP, an IPv6 client by its /64 (0: off)";
    TRUSTED_PROXIES = DefaultValue::Value(""),
        "comma-separated networks (`10.0.0.0/8`) or addresses of the proxies in front (an ingress): from a trusted peer, the client is the right-most `X-Forwarded-For` address that is not itself a trusted proxy (`Forwarded` is ignored); from any other peer, the peer";
    TRUST_PROXY_HEADERS = DefaultValue::Value("false"),
        "older form: `true` trusts every peer as a proxy";
    CIRCUIT_BREAKER_FAILURES = DefaultValue::Value("5"),
        "consecutive unreachable/too-slow answers that open a service's breaker";
    CIRCUIT_BREAKER_COOLDOWN_MS = DefaultValue::Value("5000"),
        "how long an open breaker answers 503 without calling";
    HTTP_MAX_BODY_BYTES = DefaultValue::Value("65536"), "larger bodies get 413 (at least 1024)";
    HTTP_WORKERS = DefaultValue::Value("0"), "actix worker threads (0: one per core)";
    PRODUCT_CACHE_TTL_MS = DefaultValue::Value("1000"),
        "the longest a product is answered from memory by `GET /products/{id}` (0: the cache is off); Inventory's change announcements usually drop an entry sooner";
    PRODUCT_CACHE_CAPACITY = DefaultValue::Value("10000"), "the most products the cache holds";
}

/// Every variable the gateway reads.
pub const SETTINGS: &[&[&Setting]] = &[
    &[
        &set::API_GATEWAY_ADDR,
        &set::INVENTORY_ADDR,
        &set::ORDER_ADDR,
        &set::USER_ADDR,
        &set::PRODUCER_ADDR,
        &set::CONSUMER_ADDR,
        &JWT_SECRET,
        &JWT_ISSUER,
        &JWT_TTL_SECONDS,
        &RATE_LIMIT_LOGIN_PER_MINUTE,
        &RATE_LIMIT_LOGIN_PER_ACCOUNT_PER_MINUTE,
        &RATE_LIMIT_REGISTER_PER_MINUTE,
        &RATE_LIMIT_ORDERS_PER_MINUTE,
        &TRUSTED_PROXIES,
        &TRUST_PROXY_HEADERS,
        &CIRCUIT_BREAKER_FAILURES,
        &CIRCUIT_BREAKER_COOLDOWN_MS,
        &HTTP_MAX_BODY_BYTES,
        &HTTP_WORKERS,
        &PRODUCT_CACHE_TTL_MS,
        &PRODUCT_CACHE_CAPACITY,
    ],
    set::COMMON,
    set::CALLS,
    set::NATS,
];

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
    /// [`RATE_LIMIT_LOGIN_PER_MINUTE`]
    pub login_per_minute: u32,
    /// [`RATE_LIMIT_ORDERS_PER_MINUTE`]
    pub orders_per_minute: u32,
    /// [`TRUSTED_PROXIES`]
    pub trusted_proxies: TrustedProxies,
    /// [`RATE_LIMIT_REGISTER_PER_MINUTE`]
    pub register_per_minute: u32,
    /// [`RATE_LIMIT_LOGIN_PER_ACCOUNT_PER_MINUTE`]
    pub login_per_account_per_minute: u32,
    /// [`CIRCUIT_BREAKER_FAILURES`]
    pub breaker_failures: u32,
    /// [`CIRCUIT_BREAKER_COOLDOWN_MS`]
    pub breaker_cooldown: Duration,
    /// [`HTTP_MAX_BODY_BYTES`]
    pub max_body_bytes: usize,
    /// [`HTTP_WORKERS`]
    pub workers: usize,
    /// [`PRODUCT_CACHE_TTL_MS`]
    pub product_cache_ttl: Duration,
    /// [`PRODUCT_CACHE_CAPACITY`]
    pub product_cache_capacity: usize,
    /// `NATS_ADDR`, `NATS_SUBJECT_PREFIX`: where product changes are heard.
    pub nats: platform::config::NatsSettings,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let app_env = AppEnv::from_env(env)?;
        Ok(Config {
            listen: ServiceAddr::from_env(env, &set::API_GATEWAY_ADDR)?,
            endpoints: Endpoints::from_env(env)?,
            calls: CallSettings::from_env(env)?,
            jwt: JwtSettings::from_env(env, app_env)?,
            login_per_minute: env.parse(&RATE_LIMIT_LOGIN_PER_MINUTE)?,
            orders_per_minute: env.parse(&RATE_LIMIT_ORDERS_PER_MINUTE)?,
            trusted_proxies: TrustedProxies::from_env(env)?,
            register_per_minute: env.parse(&RATE_LIMIT_REGISTER_PER_MINUTE)?,
            login_per_account_per_minute: env.parse(&RATE_LIMIT_LOGIN_PER_ACCOUNT_PER_MINUTE)?,
            breaker_failures: env.at_least(&CIRCUIT_BREAKER_FAILURES, 1)?,
            breaker_cooldown: env.millis(&CIRCUIT_BREAKER_COOLDOWN_MS)?,
            max_body_bytes: env.at_least(&HTTP_MAX_BODY_BYTES, 1024)?,
            workers: env.parse(&HTTP_WORKERS)?,
            product_cache_ttl: env.millis(&PRODUCT_CACHE_TTL_MS)?,
            product_cache_capacity: env.parse(&PRODUCT_CACHE_CAPACITY)?,
            nats: platform::config::NatsSettings::from_env(env)?,
        })
    }
}

/// The networks of the proxies in front of the gateway.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<ipnet::IpNet>);

impl TrustedProxies {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        if env.bool(&TRUST_PROXY_HEADERS)? {
            return Ok(Self::parse("0.0.0.0/0,::/0").expect("valid networks"));
        }
        let text = env.string(&TRUSTED_PROXIES);
        Self::parse(&text).map_err(|bad| {
            ConfigError::invalid(
                TRUSTED_PROXIES.name,
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

impl platform::cli::ServiceConfig for Config {
    fn listen(&self) -> &ServiceAddr {
        &self.listen
    }
}
