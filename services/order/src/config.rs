use std::time::Duration;

use platform::ConfigError;
use platform::config::{
    AppEnv, CallSettings, DbSettings, ServiceAddr, bool_or, millis_or, parse_or,
};

/// The Order service's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// `ORDER_ADDR` (default `:50052`).
    pub listen: ServiceAddr,
    /// `INVENTORY_ADDR` (default `:50051`).
    pub inventory: ServiceAddr,
    /// `PRODUCER_ADDR` (default `:50054`).
    pub producer: ServiceAddr,
    pub app_env: AppEnv,
    /// `DB_*`, database `ORDER_DB_NAME` (default `<DB_NAME>_order`).
    pub db: DbSettings,
    /// `GRPC_*`: the deadline of every outgoing call.
    pub calls: CallSettings,
    pub relay: RelaySettings,
    pub sweeper: SweeperSettings,
}

/// The outbox relay's settings (`OUTBOX_*`).
#[derive(Debug, Clone, Copy)]
pub struct RelaySettings {
    /// `OUTBOX_RELAY_ENABLED` (default true).
    pub enabled: bool,
    /// `OUTBOX_POLL_INTERVAL_MS` (default 500): how often the relay looks
    /// for records other replicas wrote (its own wake it at once).
    pub poll_interval: Duration,
    /// `OUTBOX_BATCH_SIZE` (default 50): records locked per pass.
    pub batch_size: u64,
    /// `OUTBOX_RETRY_MIN_MS` (default 100) and `OUTBOX_RETRY_MAX_MS` (default
    /// 5000): the first and the largest delay between failed passes.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// `OUTBOX_CLAIM_LEASE_MS` (default three request timeouts, at least
    /// 15000 and at most 60000): how long a pass holds the
    /// records it claimed. It starts no Producer call that could end after
    /// the lease, so a record is published again (by another relay, after
    /// this one died) only after the lease, well inside the stream's 120 s
    /// duplicate window. At most 60 s, and more than twice
    /// `GRPC_REQUEST_TIMEOUT_MS`.
    pub claim_lease: Duration,
    /// `GRPC_REQUEST_TIMEOUT_MS`: the longest one Producer call can take.
    pub publish_timeout: Duration,
    /// `OUTBOX_RETENTION_SECONDS` (default 86400): how long sent records are
    /// kept (for someone to look at) before they are deleted.
    pub retention: Duration,
}

impl RelaySettings {
    pub fn from_env(calls: &CallSettings) -> Result<Self, ConfigError> {
        let settings = RelaySettings {
            enabled: bool_or("OUTBOX_RELAY_ENABLED", true)?,
            poll_interval: millis_or("OUTBOX_POLL_INTERVAL_MS", Duration::from_millis(500))?,
            batch_size: parse_or("OUTBOX_BATCH_SIZE", 50)?,
            retry_min: millis_or("OUTBOX_RETRY_MIN_MS", Duration::from_millis(100))?,
            retry_max: millis_or("OUTBOX_RETRY_MAX_MS", Duration::from_secs(5))?,
            claim_lease: millis_or(
                "OUTBOX_CLAIM_LEASE_MS",
                (calls.request_timeout * 3).clamp(Duration::from_secs(15), Duration::from_secs(60)),
            )?,
            publish_timeout: calls.request_timeout,
            retention: Duration::from_secs(parse_or("OUTBOX_RETENTION_SECONDS", 86_400)?),
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
    /// `ORDER_SWEEP_INTERVAL_MS` (default 30000): how often it looks.
    pub interval: Duration,
    /// `ORDER_PENDING_REPUBLISH_AFTER_MS` (default 120000): a PENDING order
    /// whose event went out this long ago is published again (the event may
    /// have been lost); one whose event can never be published is rejected.
    pub republish_after: Duration,
    /// `ORDER_PENDING_TIMEOUT_MS` (default 600000): a PENDING order this old
    /// is rejected, and any stock Inventory took for it is returned.
    pub timeout: Duration,
}

impl SweeperSettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        let settings = SweeperSettings {
            interval: millis_or("ORDER_SWEEP_INTERVAL_MS", Duration::from_secs(30))?,
            republish_after: millis_or(
                "ORDER_PENDING_REPUBLISH_AFTER_MS",
                Duration::from_secs(120),
            )?,
            timeout: millis_or("ORDER_PENDING_TIMEOUT_MS", Duration::from_secs(600))?,
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
    pub fn from_env() -> Result<Self, ConfigError> {
        let app_env = AppEnv::from_env()?;
        let calls = CallSettings::from_env()?;
        Ok(Config {
            listen: ServiceAddr::from_env("ORDER_ADDR", 50052)?,
            inventory: ServiceAddr::from_env("INVENTORY_ADDR", 50051)?,
            producer: ServiceAddr::from_env("PRODUCER_ADDR", 50054)?,
            app_env,
            db: DbSettings::from_env("order", app_env)?,
            relay: RelaySettings::from_env(&calls)?,
            sweeper: SweeperSettings::from_env()?,
            calls,
        })
    }
}
