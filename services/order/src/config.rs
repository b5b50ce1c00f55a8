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
}

impl RelaySettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        let settings = RelaySettings {
            enabled: bool_or("OUTBOX_RELAY_ENABLED", true)?,
            poll_interval: millis_or("OUTBOX_POLL_INTERVAL_MS", Duration::from_millis(500))?,
            batch_size: parse_or("OUTBOX_BATCH_SIZE", 50)?,
            retry_min: millis_or("OUTBOX_RETRY_MIN_MS", Duration::from_millis(100))?,
            retry_max: millis_or("OUTBOX_RETRY_MAX_MS", Duration::from_secs(5))?,
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
        Ok(settings)
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let app_env = AppEnv::from_env()?;
        Ok(Config {
            listen: ServiceAddr::from_env("ORDER_ADDR", 50052)?,
            inventory: ServiceAddr::from_env("INVENTORY_ADDR", 50051)?,
            producer: ServiceAddr::from_env("PRODUCER_ADDR", 50054)?,
            app_env,
            db: DbSettings::from_env("order", app_env)?,
            calls: CallSettings::from_env()?,
            relay: RelaySettings::from_env()?,
        })
    }
}
