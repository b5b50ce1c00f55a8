use std::time::Duration;

use platform::ConfigError;
use platform::config::{AppEnv, CallSettings, DbSettings, ServiceAddr};
use platform::settings::{self as set, DefaultValue, Env, Setting};

platform::declare_settings! {
    PRICE_CACHE_TTL_MS = DefaultValue::Value("100"),
        "the longest a product's price and stock, read from Inventory, price new orders (0: each order reads them; at most 1000); a new price or a deletion is missed that long, a shortage is read again before an order is refused, and Inventory checks the stock when it applies the order";
    OUTBOX_RELAY_ENABLED = DefaultValue::Value("true"),
        "run the relay in this process (each record is claimed by one relay at a time, so several may)";
    OUTBOX_POLL_INTERVAL_MS = DefaultValue::Value("500"),
        "how often the relay looks for records other replicas wrote (its own wake it, after `OUTBOX_RELAY_LINGER_MS`)";
    OUTBOX_BATCH_SIZE = DefaultValue::Value("250"), "records claimed per pass (1..=1000)";
    OUTBOX_RELAY_LINGER_MS = DefaultValue::Value("10"),
        "how long the relay, woken by a new record, waits before it claims (0: not at all, at most 1000), so that the records written meanwhile go out in the same pass; the order's answer does not wait for it";
    OUTBOX_RETRY_MIN_MS = DefaultValue::Value("100"), "the first delay of the capped exponential backoff (with jitter) after a failed pass; retried forever";
    OUTBOX_RETRY_MAX_MS = DefaultValue::Value("5000"), "the largest delay between failed passes";
    OUTBOX_CLAIM_LEASE_MS = DefaultValue::Derived("three `GRPC_REQUEST_TIMEOUT_MS`, from `15000` to `60000`"),
        "how long a pass holds the records it claimed; it starts no Producer call that could end after it, so a record is published again (by another relay, after this one died) only after the lease, well inside the stream's 120 s duplicate window; at most 60000 and more than twice `GRPC_REQUEST_TIMEOUT_MS`";
    OUTBOX_RETENTION_SECONDS = DefaultValue::Value("86400"),
        "sent records are deleted this long after they were sent";
    ORDER_SWEEP_INTERVAL_MS = DefaultValue::Value("30000"), "how often the sweeper looks for orders left PENDING";
    ORDER_PENDING_REPUBLISH_AFTER_MS = DefaultValue::Value("120000"),
        "a PENDING order whose event went out this long ago is published again (the event may have been lost); one whose event can never be published is rejected";
    ORDER_PENDING_TIMEOUT_MS = DefaultValue::Value("600000"),
        "a PENDING order this old is rejected, and any stock Inventory took for it is returned (more than `ORDER_PENDING_REPUBLISH_AFTER_MS`)";
}

/// The longest `PRICE_CACHE_TTL_MS`: the bound a product change in the
/// gateways' cache is held to.
const MAX_PRICE_CACHE_TTL: Duration = Duration::from_secs(1);

/// Every variable the Order service reads.
pub const SETTINGS: &[&[&Setting]] = &[
    &[
        &set::ORDER_ADDR,
        &set::ORDER_DB_NAME,
        &set::INVENTORY_ADDR,
        &set::PRODUCER_ADDR,
        &PRICE_CACHE_TTL_MS,
        &OUTBOX_RELAY_ENABLED,
        &OUTBOX_POLL_INTERVAL_MS,
        &OUTBOX_BATCH_SIZE,
        &OUTBOX_RELAY_LINGER_MS,
        &OUTBOX_RETRY_MIN_MS,
        &OUTBOX_RETRY_MAX_MS,
        &OUTBOX_CLAIM_LEASE_MS,
        &OUTBOX_RETENTION_SECONDS,
        &ORDER_SWEEP_INTERVAL_MS,
        &ORDER_PENDING_REPUBLISH_AFTER_MS,
        &ORDER_PENDING_TIMEOUT_MS,
    ],
    set::COMMON,
    set::DATABASE,
    set::CALLS,
];

/// The Order service's settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: ServiceAddr,
    pub inventory: ServiceAddr,
    pub producer: ServiceAddr,
    pub app_env: AppEnv,
    pub db: DbSettings,
    /// `GRPC_*`: the deadline of every outgoing call.
    pub calls: CallSettings,
    /// [`PRICE_CACHE_TTL_MS`]
    pub price_cache_ttl: Duration,
    pub relay: RelaySettings,
    pub sweeper: SweeperSettings,
}

/// The outbox relay's settings (`OUTBOX_*`).
#[derive(Debug, Clone, Copy)]
pub struct RelaySettings {
    /// [`OUTBOX_RELAY_ENABLED`]
    pub enabled: bool,
    /// [`OUTBOX_POLL_INTERVAL_MS`]
    pub poll_interval: Duration,
    /// [`OUTBOX_BATCH_SIZE`]
    pub batch_size: u64,
    /// [`OUTBOX_RELAY_LINGER_MS`]
    pub linger: Duration,
    /// [`OUTBOX_RETRY_MIN_MS`]
    pub retry_min: Duration,
    /// [`OUTBOX_RETRY_MAX_MS`]
    pub retry_max: Duration,
    /// [`OUTBOX_CLAIM_LEASE_MS`]
    pub claim_lease: Duration,
    /// `GRPC_REQUEST_TIMEOUT_MS`: the longest one Producer call can take.
    pub publish_timeout: Duration,
    /// [`OUTBOX_RETENTION_SECONDS`]
    pub retention: Duration,
}

impl RelaySettings {
    pub fn from_env(env: &Env, calls: &CallSettings) -> Result<Self, ConfigError> {
        let default_lease =
            (calls.request_timeout * 3).clamp(Duration::from_secs(15), Duration::from_secs(60));
        let settings = RelaySettings {
            enabled: env.bool(&OUTBOX_RELAY_ENABLED)?,
            poll_interval: env.millis(&OUTBOX_POLL_INTERVAL_MS)?,
            batch_size: env.parse(&OUTBOX_BATCH_SIZE)?,
            linger: env.millis_at_most(&OUTBOX_RELAY_LINGER_MS, platform::batch::MAX_LINGER)?,
            retry_min: env.millis(&OUTBOX_RETRY_MIN_MS)?,
            retry_max: env.millis(&OUTBOX_RETRY_MAX_MS)?,
            claim_lease: Duration::from_millis(
                env.parse_or(&OUTBOX_CLAIM_LEASE_MS, default_lease.as_millis() as u64)?,
            ),
            publish_timeout: calls.request_timeout,
            retention: Duration::from_secs(env.parse(&OUTBOX_RETENTION_SECONDS)?),
        };
        let invalid = |name: &str, value: String, reason: &str| {
            Err(ConfigError::invalid(name, &value, reason))
        };
        if settings.poll_interval.is_zero() {
            return invalid("OUTBOX_POLL_INTERVAL_MS", "0".into(), "must be at least 1");
        }
        if !(1..=1000).contains(&settings.batch_size) {
            return invalid(
                "OUTBOX_BATCH_SIZE",
                settings.batch_size.to_string(),
                "must be between 1 and 1000",
            );
        }
        if settings.retry_min.is_zero() {
            return invalid("OUTBOX_RETRY_MIN_MS", "0".into(), "must be at least 1");
        }
        if settings.retry_max < settings.retry_min {
            return invalid(
                "OUTBOX_RETRY_MAX_MS",
                settings.retry_max.as_millis().to_string(),
                "must not be less than OUTBOX_RETRY_MIN_MS",
            );
        }
        if settings.claim_lease > Duration::from_secs(60)
            || settings.claim_lease <= settings.publish_timeout * 2
        {
            return invalid(
                "OUTBOX_CLAIM_LEASE_MS",
                settings.claim_lease.as_millis().to_string(),
                &format!(
                    "must be at most 60000 and more than twice GRPC_REQUEST_TIMEOUT_MS ({} ms)",
                    settings.publish_timeout.as_millis()
                ),
            );
        }
        if settings.retention.is_zero() {
            return invalid("OUTBOX_RETENTION_SECONDS", "0".into(), "must be at least 1");
        }
        Ok(settings)
    }
}

/// The sweeper of orders left PENDING (`ORDER_PENDING_*`).
#[derive(Debug, Clone, Copy)]
pub struct SweeperSettings {
    /// [`ORDER_SWEEP_INTERVAL_MS`]
    pub interval: Duration,
    /// [`ORDER_PENDING_REPUBLISH_AFTER_MS`]
    pub republish_after: Duration,
    /// [`ORDER_PENDING_TIMEOUT_MS`]
    pub timeout: Duration,
}

impl SweeperSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let settings = SweeperSettings {
            interval: env.millis(&ORDER_SWEEP_INTERVAL_MS)?,
            republish_after: env.millis(&ORDER_PENDING_REPUBLISH_AFTER_MS)?,
            timeout: env.millis(&ORDER_PENDING_TIMEOUT_MS)?,
        };
        if settings.interval.is_zero() {
            return Err(ConfigError::invalid(
                "ORDER_SWEEP_INTERVAL_MS",
                "0",
                "must be at least 1",
            ));
        }
        if settings.republish_after.is_zero() {
            return Err(ConfigError::invalid(
                "ORDER_PENDING_REPUBLISH_AFTER_MS",
                "0",
                "must be at least 1",
            ));
        }
        if settings.timeout <= settings.republish_after {
            return Err(ConfigError::invalid(
                "ORDER_PENDING_TIMEOUT_MS",
                &settings.timeout.as_millis().to_string(),
                "must be more than ORDER_PENDING_REPUBLISH_AFTER_MS",
            ));
        }
        Ok(settings)
    }
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let app_env = AppEnv::from_env(env)?;
        let calls = CallSettings::from_env(env)?;
        Ok(Config {
            listen: ServiceAddr::from_env(env, &set::ORDER_ADDR)?,
            inventory: ServiceAddr::from_env(env, &set::INVENTORY_ADDR)?,
            producer: ServiceAddr::from_env(env, &set::PRODUCER_ADDR)?,
            app_env,
            db: DbSettings::from_env(env, &set::ORDER_DB_NAME, app_env)?,
            price_cache_ttl: env.millis_at_most(&PRICE_CACHE_TTL_MS, MAX_PRICE_CACHE_TTL)?,
            relay: RelaySettings::from_env(env, &calls)?,
            sweeper: SweeperSettings::from_env(env)?,
            calls,
        })
    }
}

impl platform::cli::ServiceConfig for Config {
    fn listen(&self) -> &ServiceAddr {
        &self.listen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_price_cache_ttl_defaults_to_100_ms_and_is_at_most_1_s() {
        let ttl = |value: Option<&str>| {
            let mut vars = vec![("APP_ENV", "development")];
            vars.extend(value.map(|v| ("PRICE_CACHE_TTL_MS", v)));
            Config::from_env(&Env::of(vars)).map(|c| c.price_cache_ttl)
        };
        assert_eq!(ttl(None).unwrap(), Duration::from_millis(100));
        assert_eq!(ttl(Some("0")).unwrap(), Duration::ZERO);
        assert_eq!(ttl(Some("1000")).unwrap(), Duration::from_secs(1));
        let error = ttl(Some("1001")).unwrap_err().to_string();
        assert!(error.contains("PRICE_CACHE_TTL_MS"), "{error}");
    }

    #[test]
    fn the_relay_linger_defaults_to_10_ms_and_is_bounded() {
        let linger = |value: Option<&str>| {
            let env = Env::of(value.map(|v| ("OUTBOX_RELAY_LINGER_MS", v)));
            let calls = CallSettings::from_env(&env).unwrap();
            RelaySettings::from_env(&env, &calls).map(|s| s.linger)
        };
        assert_eq!(linger(None).unwrap(), Duration::from_millis(10));
        assert_eq!(linger(Some("0")).unwrap(), Duration::ZERO);
        assert_eq!(linger(Some("1000")).unwrap(), Duration::from_secs(1));
        let error = linger(Some("1001")).unwrap_err().to_string();
        assert!(error.contains("OUTBOX_RELAY_LINGER_MS"), "{error}");
    }
}
