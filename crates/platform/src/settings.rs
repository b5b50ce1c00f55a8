//! Every environment variable a service reads, declared once: its name, its
//! default and what it means. Each service lists the settings it reads in
//! its `config::SETTINGS`; the settings tables of docs/configuration.md and
//! of the services' READMEs are rendered from those lists (a test in `e2e`
//! fails while they differ), and the charts, compose and the operator set no
//! variable that is not declared here or there.
//!
//! Values are read through one lookup, [`Env`]: the process environment in a
//! service, a fixed map in a test (no `set_var`).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::config::ConfigError;

/// One environment variable.
#[derive(Debug, PartialEq, Eq)]
pub struct Setting {
    pub name: &'static str,
    pub default: DefaultValue,
    /// What it means, for the documentation (one Markdown line).
    pub doc: &'static str,
}

/// A setting's value when the variable is unset (or empty).
#[derive(Debug, PartialEq, Eq)]
pub enum DefaultValue {
    /// This value, parsed like a set one.
    Value(&'static str),
    /// Computed from other settings or the machine; the text says how.
    Derived(&'static str),
    /// No value: the feature is off, or the setting is required (the doc
    /// says which).
    Unset,
}

impl Setting {
    /// The default as the documentation shows it.
    pub fn default_text(&self) -> String {
        match self.default {
            DefaultValue::Value("") => "empty".to_owned(),
            DefaultValue::Value(v) => format!("`{v}`"),
            DefaultValue::Derived(how) => how.to_owned(),
            DefaultValue::Unset => "unset".to_owned(),
        }
    }
}

/// Where settings are read from: the process environment (with `.env`
/// loaded), or a fixed map in tests.
#[derive(Debug, Clone, Default)]
pub struct Env {
    fixed: Option<BTreeMap<String, String>>,
}

impl Env {
    /// The process environment.
    pub fn process() -> Env {
        Env { fixed: None }
    }

    /// Exactly these variables (tests).
    pub fn of<K: Into<String>, V: Into<String>>(vars: impl IntoIterator<Item = (K, V)>) -> Env {
        Env {
            fixed: Some(
                vars.into_iter()
                    .map(|(k, v)| (k.into(), v.into()))
                    .collect(),
            ),
        }
    }

    /// The variable as set, even when empty; the one place a variable is
    /// looked up.
    pub fn raw(&self, setting: &Setting) -> Option<String> {
        match &self.fixed {
            Some(vars) => vars.get(setting.name).cloned(),
            None => std::env::var(setting.name).ok(),
        }
    }

    /// The value; empty or blank counts as unset.
    pub fn get(&self, setting: &Setting) -> Option<String> {
        self.raw(setting).filter(|v| !v.trim().is_empty())
    }

    /// The value, or the declared default value.
    pub fn string(&self, setting: &Setting) -> String {
        self.get(setting).unwrap_or_else(|| match setting.default {
            DefaultValue::Value(v) => v.to_owned(),
            _ => String::new(),
        })
    }

    /// The value parsed, or the declared default value parsed.
    pub fn parse<T>(&self, setting: &Setting) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        let raw = match (self.get(setting), &setting.default) {
            (Some(raw), _) => raw,
            (None, DefaultValue::Value(v)) => (*v).to_owned(),
            (None, _) => panic!(
                "{} has no default value: read it with parse_or or get",
                setting.name
            ),
        };
        raw.trim()
            .parse()
            .map_err(|e| ConfigError::invalid(setting.name, &raw, e))
    }

    /// The value parsed, or `default` (for a [`DefaultValue::Derived`] setting).
    pub fn parse_or<T>(&self, setting: &Setting, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.get(setting) {
            None => Ok(default),
            Some(raw) => raw
                .trim()
                .parse()
                .map_err(|e| ConfigError::invalid(setting.name, &raw, e)),
        }
    }

    /// A duration given in milliseconds.
    pub fn millis(&self, setting: &Setting) -> Result<Duration, ConfigError> {
        Ok(Duration::from_millis(self.parse(setting)?))
    }

    /// A duration in milliseconds that must not be zero.
    pub fn positive_millis(&self, setting: &Setting) -> Result<Duration, ConfigError> {
        let value = self.millis(setting)?;
        if value.is_zero() {
            return Err(ConfigError::invalid(
                setting.name,
                "0",
                "must be at least 1",
            ));
        }
        Ok(value)
    }

    /// A duration in milliseconds that must not exceed `max`.
    pub fn millis_at_most(
        &self,
        setting: &Setting,
        max: Duration,
    ) -> Result<Duration, ConfigError> {
        let value = self.millis(setting)?;
        if value > max {
            return Err(ConfigError::invalid(
                setting.name,
                &value.as_millis().to_string(),
                format!("must be at most {}", max.as_millis()),
            ));
        }
        Ok(value)
    }

    /// A number that must be at least `min`.
    pub fn at_least<T>(&self, setting: &Setting, min: T) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + fmt::Display,
        T::Err: fmt::Display,
    {
        let value: T = self.parse(setting)?;
        if value < min {
            return Err(ConfigError::invalid(
                setting.name,
                &value.to_string(),
                format!("must be at least {min}"),
            ));
        }
        Ok(value)
    }

    /// A boolean (`true/false/1/0/yes/no/on/off`).
    pub fn bool(&self, setting: &Setting) -> Result<bool, ConfigError> {
        let raw = self.string(setting);
        match raw.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(ConfigError::invalid(
                setting.name,
                &raw,
                "expected true or false",
            )),
        }
    }
}

/// A Markdown table of `settings` (variable, default, meaning), the form
/// the READMEs show.
pub fn markdown_table(settings: &[&Setting]) -> String {
    let mut out = String::from("| variable | default | meaning |\n|---|---|---|\n");
    for s in settings {
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            s.name,
            s.default_text(),
            s.doc
        ));
    }
    out
}

/// Every setting `groups` holds, each once, in order.
pub fn flatten(groups: &[&[&'static Setting]]) -> Vec<&'static Setting> {
    let mut all: Vec<&'static Setting> = Vec::new();
    for setting in groups.iter().flat_map(|g| g.iter()) {
        if !all.iter().any(|s| s.name == setting.name) {
            all.push(setting);
        }
    }
    all
}

/// Declares settings: `NAME = DefaultValue::Value("1"), "what it means";`, each
/// a `pub const NAME: Setting` named after its variable.
#[macro_export]
macro_rules! declare_settings {
    ($($(#[$attr:meta])* $ident:ident = $default:expr, $doc:expr;)*) => {
        $(
            $(#[$attr])*
            pub const $ident: $crate::settings::Setting = $crate::settings::Setting {
                name: stringify!($ident),
                default: $default,
                doc: $doc,
            };
        )*
    };
}

// The settings several services share (read by this crate).
declare_settings! {
    APP_ENV = DefaultValue::Value("production"),
        "`production` or `development`; development relaxes the rules for secrets (local only)";
    API_GATEWAY_ADDR = DefaultValue::Value(":8080"),
        "where the gateway listens (all interfaces when the host is empty)";
    INVENTORY_ADDR = DefaultValue::Value(":50051"),
        "where Inventory listens; the others dial it (loopback when the host is empty)";
    ORDER_ADDR = DefaultValue::Value(":50052"),
        "where Order listens; the others dial it";
    USER_ADDR = DefaultValue::Value(":50053"),
        "where User listens; the gateway dials it";
    PRODUCER_ADDR = DefaultValue::Value(":50054"),
        "where the Producer listens; Order's relay dials it";
    CONSUMER_ADDR = DefaultValue::Value(":50055"),
        "where the Consumer serves health and readiness";
    DB_HOST = DefaultValue::Value("127.0.0.1"), "PostgreSQL's host";
    DB_PORT = DefaultValue::Value("5432"), "PostgreSQL's port";
    DB_USER = DefaultValue::Value("postgres"), "PostgreSQL's user";
    DB_PASSWORD = DefaultValue::Unset,
        "PostgreSQL's password; required in production (may be set empty for trust authentication)";
    DB_NAME = DefaultValue::Value("ecommerce"), "the base of the per-service database names";
    DB_MAX_CONNECTIONS = DefaultValue::Value("10"), "the connection pool's size";
    DB_CONNECT_WAIT_MS = DefaultValue::Value("30000"), "how long start-up waits for PostgreSQL";
    DB_SSLMODE = DefaultValue::Value("prefer"),
        "TLS to PostgreSQL, as libpq's `sslmode` (`disable`, `allow`, `prefer`, `require`, `verify-ca`, `verify-full`); `make run` and `make bench` use `disable` on the loopback";
    NATS_ADDR = DefaultValue::Value("nats://127.0.0.1:4222"),
        "the NATS server: the order events (the Producer and the Consumer wait for it at start-up); product change announcements (Inventory and the gateway: best effort, they serve without NATS and keep reconnecting)";
    NATS_CONNECT_WAIT_MS = DefaultValue::Value("30000"), "how long start-up waits for NATS";
    NATS_STREAM = DefaultValue::Value("ORDER_EVENTS"),
        "the JetStream stream of order events (created when missing)";
    NATS_DLQ_STREAM = DefaultValue::Derived("`<NATS_STREAM>_DLQ`"),
        "the dead-letter stream, subjects `<prefix>_dead.*` (created when missing)";
    NATS_SUBJECT_PREFIX = DefaultValue::Value("order"),
        "events on `<prefix>.created` and `<prefix>.cancelled`; product changes on `<prefix>_products.changed` (plain NATS: Inventory announces each committed change, the gateways' product caches drop what it names)";
    GRPC_CONNECT_TIMEOUT_MS = DefaultValue::Value("2000"), "the connect timeout of every internal call";
    GRPC_REQUEST_TIMEOUT_MS = DefaultValue::Value("5000"),
        "the deadline of every internal call (the gateway then answers 503)";
    INTERNAL_AUTH_TOKEN = DefaultValue::Unset,
        "the token every internal gRPC call carries and every service checks (UNAUTHENTICATED without it; gRPC health stays open); required in production (at least 32 characters), unset in development turns the check off; `migrate` does not need it";
    METRICS_PORT = DefaultValue::Derived("gateway `9080`, inventory `9051`, order `9052`, user `9053`, producer `9054`, consumer `9055`"),
        "`GET /metrics` is served on this port only, never on the service's own";
    READINESS_INTERVAL_MS = DefaultValue::Value("2000"),
        "how often the readiness checks run ([docs/observability.md](observability.md#health-and-readiness))";
    OTEL_EXPORTER_OTLP_ENDPOINT = DefaultValue::Unset,
        "OTLP/gRPC trace export: unset, no export; the SDK reads its other `OTEL_*` variables ([docs/observability.md](observability.md#traces))";
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT = DefaultValue::Unset,
        "the same for traces only";
    OTEL_SERVICE_NAME = DefaultValue::Derived("the service's name"), "the traces' service name";
    LOG_FORMAT = DefaultValue::Value("text"),
        "`json` for structured logs ([docs/observability.md](observability.md#logs))";
    RUST_LOG = DefaultValue::Derived("`info` (libraries at `warn`)"), "which logs are written (`tracing` filter directives)";
    FAULT_POINTS = DefaultValue::Unset,
        "tests only: abort the process at a named point (crash tests); each service's README names its points";
    TOKIO_WORKER_THREADS = DefaultValue::Derived("one per core the process may use (its CPU limit in a container)"),
        "the async runtime's worker threads (the gateway's HTTP workers are `HTTP_WORKERS`); `make run`, `make bench` and compose set `1`: six services on one machine wake each other constantly, and one thread each spares the hand-overs between a service's threads ([BENCHMARKS.md](../BENCHMARKS.md))";
}

/// `<SERVICE>_DB_NAME`: each service's own database.
pub const INVENTORY_DB_NAME: Setting = Setting {
    name: "INVENTORY_DB_NAME",
    default: DefaultValue::Derived("`<DB_NAME>_inventory`"),
    doc: "Inventory's database (created when missing)",
};
pub const ORDER_DB_NAME: Setting = Setting {
    name: "ORDER_DB_NAME",
    default: DefaultValue::Derived("`<DB_NAME>_order`"),
    doc: "Order's database (created when missing)",
};
pub const USER_DB_NAME: Setting = Setting {
    name: "USER_DB_NAME",
    default: DefaultValue::Derived("`<DB_NAME>_user`"),
    doc: "User's database (created when missing)",
};

/// What every service reads through this crate, whatever it does.
pub const COMMON: &[&Setting] = &[
    &APP_ENV,
    &INTERNAL_AUTH_TOKEN,
    &METRICS_PORT,
    &READINESS_INTERVAL_MS,
    &OTEL_EXPORTER_OTLP_ENDPOINT,
    &OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    &OTEL_SERVICE_NAME,
    &LOG_FORMAT,
    &RUST_LOG,
    &FAULT_POINTS,
    &TOKIO_WORKER_THREADS,
];

/// A PostgreSQL user's (with its own `<SERVICE>_DB_NAME`).
pub const DATABASE: &[&Setting] = &[
    &DB_HOST,
    &DB_PORT,
    &DB_USER,
    &DB_PASSWORD,
    &DB_NAME,
    &DB_MAX_CONNECTIONS,
    &DB_CONNECT_WAIT_MS,
    &DB_SSLMODE,
];

/// A NATS user's.
pub const NATS: &[&Setting] = &[
    &NATS_ADDR,
    &NATS_CONNECT_WAIT_MS,
    &NATS_STREAM,
    &NATS_DLQ_STREAM,
    &NATS_SUBJECT_PREFIX,
];

/// A caller of other services'.
pub const CALLS: &[&Setting] = &[&GRPC_CONNECT_TIMEOUT_MS, &GRPC_REQUEST_TIMEOUT_MS];

/// Where each service listens and the others dial it.
pub const ADDRESSES: &[&Setting] = &[
    &API_GATEWAY_ADDR,
    &INVENTORY_ADDR,
    &ORDER_ADDR,
    &USER_ADDR,
    &PRODUCER_ADDR,
    &CONSUMER_ADDR,
];

/// Each database user's own database.
pub const DATABASE_NAMES: &[&Setting] = &[&INVENTORY_DB_NAME, &ORDER_DB_NAME, &USER_DB_NAME];

/// Every shared setting, in groups, in the order docs/configuration.md
/// shows them ([`flatten`] them for the list).
pub const SHARED: &[&[&Setting]] = &[ADDRESSES, DATABASE, DATABASE_NAMES, NATS, CALLS, COMMON];

#[cfg(test)]
mod tests {
    use super::*;

    declare_settings! {
        SOME_LIMIT = DefaultValue::Value("10"), "a limit";
        SOME_FLAG = DefaultValue::Value("false"), "a flag";
        SOME_WAIT_MS = DefaultValue::Value("250"), "a wait";
    }

    #[test]
    fn unset_and_empty_take_the_declared_default() {
        let env = Env::of([("SOME_LIMIT", " ")]);
        assert_eq!(env.parse::<u32>(&SOME_LIMIT).unwrap(), 10);
        assert!(!env.bool(&SOME_FLAG).unwrap());
        assert_eq!(
            env.millis(&SOME_WAIT_MS).unwrap(),
            Duration::from_millis(250)
        );
    }

    #[test]
    fn malformed_values_name_the_variable() {
        let env = Env::of([("SOME_LIMIT", "ten"), ("SOME_FLAG", "maybe")]);
        let err = env.parse::<u32>(&SOME_LIMIT).unwrap_err().to_string();
        assert!(err.contains("SOME_LIMIT") && err.contains("ten"), "{err}");
        let err = env.bool(&SOME_FLAG).unwrap_err().to_string();
        assert!(err.contains("SOME_FLAG"), "{err}");
        let env = Env::of([("SOME_LIMIT", "3"), ("SOME_WAIT_MS", "0")]);
        assert!(env.at_least::<u32>(&SOME_LIMIT, 5).is_err());
        assert!(env.positive_millis(&SOME_WAIT_MS).is_err());
    }

    #[test]
    fn every_shared_setting_is_in_one_group_only() {
        let listed: usize = SHARED.iter().map(|group| group.len()).sum();
        assert_eq!(
            flatten(SHARED).len(),
            listed,
            "a shared setting is in two groups"
        );
    }
}
