use std::time::Duration;

use platform::ConfigError;
use platform::batch::BatchSettings;
use platform::config::{
    AppEnv, CallSettings, NatsSettings, ServiceAddr, millis_or, parse_or, string_or,
};

/// The Consumer's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// `CONSUMER_ADDR` (default `:50055`): gRPC health and `GET /metrics`.
    pub listen: ServiceAddr,
    /// `INVENTORY_ADDR` (default `:50051`).
    pub inventory: ServiceAddr,
    /// `ORDER_ADDR` (default `:50052`).
    pub order: ServiceAddr,
    /// `APP_ENV`: the Consumer holds no secret, but refuses a value it does
    /// not know like every service.
    pub app_env: AppEnv,
    pub nats: NatsSettings,
    pub calls: CallSettings,
    pub consumer: ConsumerSettings,
}

/// Batches to one receiver in flight at once: one being answered while the
/// next fills.
const BATCHES_IN_FLIGHT: usize = 2;

/// How the durable consumer reads and retries.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// `NATS_CONSUMER_NAME` (default `order-events`): the durable every
    /// replica binds, so that they share the work.
    pub durable_name: String,
    /// `CONSUMER_ACK_WAIT_MS` (default 30 s): how long the server waits for
    /// an ack before redelivering. Work in progress is reported every third of
    /// it, so only a process that stopped (crashed, frozen) loses its messages.
    pub ack_wait: Duration,
    /// `CONSUMER_MAX_ACK_PENDING` (default 256): unacknowledged messages the
    /// server hands out across all replicas.
    pub max_ack_pending: i64,
    /// `CONSUMER_CONCURRENCY` (default 64): messages one replica handles at
    /// once. Their ApplyOrder and RecordOutcome calls travel together in
    /// batches, so more at once costs fewer round trips and commits each.
    pub concurrency: usize,
    /// `CONSUMER_BATCH_MAX` (default 64): the most calls one batch to
    /// Inventory or Order carries.
    pub batch: BatchSettings,
    /// `CONSUMER_MAX_PERMANENT_ATTEMPTS` (default 3): attempts of a message
    /// that fails permanently before it is dead-lettered.
    pub max_permanent_attempts: u32,
    /// `CONSUMER_MAX_TRANSIENT_ATTEMPTS` (default 10): attempts in a row of a
    /// message that fails transiently before it is handed back to be
    /// redelivered after `CONSUMER_RETRY_MAX_MS`, freeing its slot.
    pub max_transient_attempts: u32,
    /// `CONSUMER_RETRY_BASE_MS` (default 200): the first retry delay.
    pub retry_base: Duration,
    /// `CONSUMER_RETRY_MAX_MS` (default 5000): the cap of the doubling delay.
    pub retry_max: Duration,
    /// `CONSUMER_FETCH_WAIT_MS` (default 2000): how long one pull request
    /// waits for messages; also bounds how long a lost pull request (NATS
    /// restarted) goes unnoticed.
    pub fetch_wait: Duration,
    /// `CONSUMER_LAG_INTERVAL_MS` (default 2000): how often the pending count
    /// is read for the lag gauge.
    pub lag_interval: Duration,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let app_env = AppEnv::from_env()?;
        let calls = CallSettings::from_env()?;
        Ok(Config {
            app_env,
            listen: ServiceAddr::from_env("CONSUMER_ADDR", 50055)?,
            inventory: ServiceAddr::from_env("INVENTORY_ADDR", 50051)?,
            order: ServiceAddr::from_env("ORDER_ADDR", 50052)?,
            nats: NatsSettings::from_env()?,
            consumer: ConsumerSettings::from_env(&calls)?,
            calls,
        })
    }
}

impl ConsumerSettings {
    pub fn from_env(calls: &CallSettings) -> Result<Self, ConfigError> {
        let durable_name = string_or("NATS_CONSUMER_NAME", "order-events");
        if !durable_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(ConfigError::invalid(
                "NATS_CONSUMER_NAME",
                &durable_name,
                "use letters, digits, '_' or '-'",
            ));
        }
        let ack_wait = millis_or("CONSUMER_ACK_WAIT_MS", Duration::from_secs(30))?;
        // One attempt is an ApplyOrder and a RecordOutcome, each bounded by the
        // request deadline; the ack wait must outlast it even without progress
        // reports.
        let longest_attempt = calls.request_timeout * 2;
        if ack_wait <= longest_attempt {
            return Err(ConfigError::invalid(
                "CONSUMER_ACK_WAIT_MS",
                &ack_wait.as_millis().to_string(),
                format!(
                    "must be more than twice GRPC_REQUEST_TIMEOUT_MS ({} ms)",
                    calls.request_timeout.as_millis()
                ),
            ));
        }
        let max_ack_pending: i64 = at_least("CONSUMER_MAX_ACK_PENDING", 256, 1)?;
        let concurrency: usize = at_least("CONSUMER_CONCURRENCY", 64, 1)?;
        let max_batch: usize = at_least("CONSUMER_BATCH_MAX", 64, 1)?;
        if max_batch > platform::batch::MAX_BATCH_CALLS {
            return Err(ConfigError::invalid(
                "CONSUMER_BATCH_MAX",
                &max_batch.to_string(),
                format!("must be at most {}", platform::batch::MAX_BATCH_CALLS),
            ));
        }
        let batch = BatchSettings {
            max_batch,
            max_in_flight: BATCHES_IN_FLIGHT,
        };
        let max_permanent_attempts: u32 = at_least("CONSUMER_MAX_PERMANENT_ATTEMPTS", 3, 1)?;
        let max_transient_attempts: u32 = at_least("CONSUMER_MAX_TRANSIENT_ATTEMPTS", 10, 1)?;
        let retry_base = positive_millis("CONSUMER_RETRY_BASE_MS", Duration::from_millis(200))?;
        let retry_max = positive_millis("CONSUMER_RETRY_MAX_MS", Duration::from_secs(5))?;
        if retry_max < retry_base {
            return Err(ConfigError::invalid(
                "CONSUMER_RETRY_MAX_MS",
                &retry_max.as_millis().to_string(),
                "must not be less than CONSUMER_RETRY_BASE_MS",
            ));
        }
        if retry_max >= ack_wait {
            return Err(ConfigError::invalid(
                "CONSUMER_RETRY_MAX_MS",
                &retry_max.as_millis().to_string(),
                "must be less than CONSUMER_ACK_WAIT_MS",
            ));
        }
        Ok(ConsumerSettings {
            durable_name,
            ack_wait,
            max_ack_pending,
            concurrency,
            batch,
            max_permanent_attempts,
            max_transient_attempts,
            retry_base,
            retry_max,
            fetch_wait: positive_millis("CONSUMER_FETCH_WAIT_MS", Duration::from_secs(2))?,
            lag_interval: positive_millis("CONSUMER_LAG_INTERVAL_MS", Duration::from_secs(2))?,
        })
    }

    /// The delay before retry number `retry` (1-based): doubling from the
    /// base, capped.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1).min(20));
        self.retry_base.saturating_mul(factor).min(self.retry_max)
    }

    /// How often work in progress is reported to the server.
    pub fn progress_interval(&self) -> Duration {
        self.ack_wait / 3
    }
}

fn at_least<T>(name: &str, default: T, min: T) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    T::Err: std::fmt::Display,
{
    let value = parse_or(name, default)?;
    if value < min {
        return Err(ConfigError::invalid(
            name,
            &value.to_string(),
            format!("must be at least {min}"),
        ));
    }
    Ok(value)
}

fn positive_millis(name: &str, default: Duration) -> Result<Duration, ConfigError> {
    let value = millis_or(name, default)?;
    if value.is_zero() {
        return Err(ConfigError::invalid(name, "0", "must be more than 0"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ConsumerSettings {
        ConsumerSettings {
            durable_name: "order-events".into(),
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 256,
            concurrency: 8,
            batch: platform::batch::BatchSettings {
                max_batch: 8,
                max_in_flight: 2,
            },
            max_permanent_attempts: 3,
            max_transient_attempts: 10,
            retry_base: Duration::from_millis(200),
            retry_max: Duration::from_secs(5),
            fetch_wait: Duration::from_secs(2),
            lag_interval: Duration::from_secs(2),
        }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let s = settings();
        assert_eq!(s.backoff(1), Duration::from_millis(200));
        assert_eq!(s.backoff(2), Duration::from_millis(400));
        assert_eq!(s.backoff(3), Duration::from_millis(800));
        assert_eq!(s.backoff(6), Duration::from_secs(5));
        assert_eq!(s.backoff(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn progress_is_reported_well_within_the_ack_wait() {
        assert_eq!(settings().progress_interval(), Duration::from_secs(10));
    }
}
