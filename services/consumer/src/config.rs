use std::time::Duration;

use platform::ConfigError;
use platform::batch::BatchSettings;
use platform::config::{AppEnv, CallSettings, NatsSettings, ServiceAddr};
use platform::settings::{self as set, DefaultValue, Env, Setting};

platform::declare_settings! {
    NATS_CONSUMER_NAME = DefaultValue::Value("order-events"),
        "the durable every replica binds (they share the work)";
    CONSUMER_ACK_WAIT_MS = DefaultValue::Value("30000"),
        "how long the server waits for an ack before redelivering; must exceed twice `GRPC_REQUEST_TIMEOUT_MS`; progress is reported every third of it while a message is in hand, so only a dead or frozen process loses its messages to a redelivery";
    CONSUMER_MAX_ACK_PENDING = DefaultValue::Value("1024"),
        "unacknowledged messages the server hands out, across replicas: at least `CONSUMER_CONCURRENCY` x replicas, or some replicas hold fewer messages than they could handle";
    CONSUMER_CONCURRENCY = DefaultValue::Value("256"),
        "messages one replica handles at once (it pulls only as many); their ApplyOrder and RecordOutcome calls travel together in batches, so more at once costs fewer round trips and commits each";
    CONSUMER_BATCH_MAX = DefaultValue::Value("256"),
        "the most ApplyOrder/RecordOutcome calls one batch carries (at most 1000, what Inventory and Order accept in one call); a batch they refuse as a whole goes again call by call";
    CONSUMER_BATCH_LINGER_MS = DefaultValue::Value("10"),
        "how long an ApplyOrders batch that is not full waits for more events (0: none, at most 1000): when events come one by one, a few milliseconds more to confirm an order make batches of several, each one transaction in Inventory";
    CONSUMER_MAX_PERMANENT_ATTEMPTS = DefaultValue::Value("3"),
        "attempts of a message that fails permanently before it is dead-lettered (and its order rejected)";
    CONSUMER_MAX_TRANSIENT_ATTEMPTS = DefaultValue::Value("10"),
        "transient failures in a row before a message is handed back (NAK with a delay of `CONSUMER_RETRY_MAX_MS`), freeing its slot";
    CONSUMER_RETRY_BASE_MS = DefaultValue::Value("200"), "the first delay of the capped doubling backoff between attempts (and between binds after NATS errors)";
    CONSUMER_RETRY_MAX_MS = DefaultValue::Value("5000"),
        "the cap of the doubling retry delay (less than `CONSUMER_ACK_WAIT_MS`)";
    CONSUMER_FETCH_WAIT_MS = DefaultValue::Value("2000"),
        "how long one pull request waits; a request lost in a NATS restart is noticed within it + 5 s";
    CONSUMER_LAG_INTERVAL_MS = DefaultValue::Value("2000"),
        "how often the pending counts are read (the lag gauge)";
}

/// Every variable the Consumer reads.
pub const SETTINGS: &[&[&Setting]] = &[
    &[
        &set::CONSUMER_ADDR,
        &set::INVENTORY_ADDR,
        &set::ORDER_ADDR,
        &NATS_CONSUMER_NAME,
        &CONSUMER_ACK_WAIT_MS,
        &CONSUMER_MAX_ACK_PENDING,
        &CONSUMER_CONCURRENCY,
        &CONSUMER_BATCH_MAX,
        &CONSUMER_BATCH_LINGER_MS,
        &CONSUMER_MAX_PERMANENT_ATTEMPTS,
        &CONSUMER_MAX_TRANSIENT_ATTEMPTS,
        &CONSUMER_RETRY_BASE_MS,
        &CONSUMER_RETRY_MAX_MS,
        &CONSUMER_FETCH_WAIT_MS,
        &CONSUMER_LAG_INTERVAL_MS,
    ],
    set::COMMON,
    set::NATS,
    set::CALLS,
];

/// The Consumer's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// [`set::CONSUMER_ADDR`]
    pub listen: ServiceAddr,
    /// [`set::INVENTORY_ADDR`]
    pub inventory: ServiceAddr,
    /// [`set::ORDER_ADDR`]
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
    /// [`NATS_CONSUMER_NAME`]
    pub durable_name: String,
    /// [`CONSUMER_ACK_WAIT_MS`]
    pub ack_wait: Duration,
    /// [`CONSUMER_MAX_ACK_PENDING`]
    pub max_ack_pending: i64,
    /// [`CONSUMER_CONCURRENCY`]
    pub concurrency: usize,
    /// [`CONSUMER_BATCH_MAX`]
    pub batch: BatchSettings,
    /// [`CONSUMER_MAX_PERMANENT_ATTEMPTS`]
    pub max_permanent_attempts: u32,
    /// [`CONSUMER_MAX_TRANSIENT_ATTEMPTS`]
    pub max_transient_attempts: u32,
    /// [`CONSUMER_RETRY_BASE_MS`]
    pub retry_base: Duration,
    /// [`CONSUMER_RETRY_MAX_MS`]
    pub retry_max: Duration,
    /// [`CONSUMER_FETCH_WAIT_MS`]
    pub fetch_wait: Duration,
    /// [`CONSUMER_LAG_INTERVAL_MS`]
    pub lag_interval: Duration,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let app_env = AppEnv::from_env(env)?;
        let calls = CallSettings::from_env(env)?;
        Ok(Config {
            app_env,
            listen: ServiceAddr::from_env(env, &set::CONSUMER_ADDR)?,
            inventory: ServiceAddr::from_env(env, &set::INVENTORY_ADDR)?,
            order: ServiceAddr::from_env(env, &set::ORDER_ADDR)?,
            nats: NatsSettings::from_env(env)?,
            consumer: ConsumerSettings::from_env(env, &calls)?,
            calls,
        })
    }
}

impl ConsumerSettings {
    pub fn from_env(env: &Env, calls: &CallSettings) -> Result<Self, ConfigError> {
        let durable_name = env.string(&NATS_CONSUMER_NAME);
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
        let ack_wait = env.millis(&CONSUMER_ACK_WAIT_MS)?;
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
        let max_ack_pending: i64 = env.at_least(&CONSUMER_MAX_ACK_PENDING, 1)?;
        let concurrency: usize = env.at_least(&CONSUMER_CONCURRENCY, 1)?;
        let max_batch: usize = env.at_least(&CONSUMER_BATCH_MAX, 1)?;
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
            linger: env.millis_at_most(&CONSUMER_BATCH_LINGER_MS, platform::batch::MAX_LINGER)?,
        };
        let max_permanent_attempts: u32 = env.at_least(&CONSUMER_MAX_PERMANENT_ATTEMPTS, 1)?;
        let max_transient_attempts: u32 = env.at_least(&CONSUMER_MAX_TRANSIENT_ATTEMPTS, 1)?;
        let retry_base = env.positive_millis(&CONSUMER_RETRY_BASE_MS)?;
        let retry_max = env.positive_millis(&CONSUMER_RETRY_MAX_MS)?;
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
            fetch_wait: env.positive_millis(&CONSUMER_FETCH_WAIT_MS)?,
            lag_interval: env.positive_millis(&CONSUMER_LAG_INTERVAL_MS)?,
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

impl platform::cli::ServiceConfig for Config {
    fn listen(&self) -> &ServiceAddr {
        &self.listen
    }
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
            batch: platform::batch::BatchSettings::eager(8, 2),
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
    fn the_batch_linger_defaults_to_10_ms_and_is_bounded() {
        let linger = |value: Option<&str>| {
            let env = Env::of(value.map(|v| ("CONSUMER_BATCH_LINGER_MS", v)));
            let calls = CallSettings::from_env(&env).unwrap();
            ConsumerSettings::from_env(&env, &calls).map(|s| s.batch.linger)
        };
        assert_eq!(linger(None).unwrap(), Duration::from_millis(10));
        assert_eq!(linger(Some("0")).unwrap(), Duration::ZERO);
        assert_eq!(linger(Some("1000")).unwrap(), Duration::from_secs(1));
        let error = linger(Some("1001")).unwrap_err().to_string();
        assert!(error.contains("CONSUMER_BATCH_LINGER_MS"), "{error}");
    }

    #[test]
    fn progress_is_reported_well_within_the_ack_wait() {
        assert_eq!(settings().progress_interval(), Duration::from_secs(10));
    }
}
