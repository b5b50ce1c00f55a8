//! Configuration from the environment or an optional `.env` file.
//!
//! Every setting has a name (the environment variable), a default that works on
//! a developer machine where that is safe, and a parser; a missing or malformed
//! value stops the service at start-up with a message naming the variable.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::settings::{self as set, Env, Setting};

/// A configuration error that names the offending variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is required but not set{hint}")]
    Missing { name: String, hint: String },
    #[error("{name}={value:?} is invalid: {reason}")]
    Invalid {
        name: String,
        value: String,
        reason: String,
    },
}

impl ConfigError {
    pub fn invalid(name: &str, value: &str, reason: impl fmt::Display) -> Self {
        ConfigError::Invalid {
            name: name.to_owned(),
            value: value.to_owned(),
            reason: reason.to_string(),
        }
    }
}

/// Loads `.env` from the working directory when present. A missing file is fine
/// (the seed failed without one); a malformed one is an error.
pub fn load_dotenv() -> Result<(), ConfigError> {
    match dotenvy::dotenv() {
        Ok(_) => Ok(()),
        Err(e) if e.not_found() => Ok(()),
        Err(e) => Err(ConfigError::invalid(".env", "", e)),
    }
}

/// `APP_ENV`: development relaxes the rules for secrets; production (the
/// default) requires every secret to be set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnv {
    Development,
    Production,
}

impl AppEnv {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        match env.string(&set::APP_ENV).trim() {
            "production" | "prod" => Ok(AppEnv::Production),
            "development" | "dev" => Ok(AppEnv::Development),
            other => Err(ConfigError::invalid(
                "APP_ENV",
                other,
                "expected development or production",
            )),
        }
    }

    pub fn is_development(self) -> bool {
        self == AppEnv::Development
    }
}

/// A `host:port` address as the seed writes them (`:50051`, `inventory:50051`).
/// The service named by it listens on the port (all interfaces when the host is
/// empty); the others dial it (loopback when the host is empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAddr {
    pub host: Option<String>,
    pub port: u16,
}

impl FromStr for ServiceAddr {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let raw = raw.trim();
        let raw = raw
            .strip_prefix("http://")
            .or_else(|| raw.strip_prefix("https://"))
            .unwrap_or(raw);
        let (host, port) = raw
            .rsplit_once(':')
            .ok_or_else(|| "expected host:port, e.g. :50051 or inventory:50051".to_owned())?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("port {port:?} is not a number from 0 to 65535"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.contains(char::is_whitespace) || host.contains('/') {
            return Err(format!("host {host:?} is not a valid host name"));
        }
        Ok(ServiceAddr {
            host: (!host.is_empty()).then(|| host.to_owned()),
            port,
        })
    }
}

impl fmt::Display for ServiceAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Some(h) if h.contains(':') => write!(f, "[{h}]:{}", self.port),
            Some(h) => write!(f, "{h}:{}", self.port),
            None => write!(f, ":{}", self.port),
        }
    }
}

impl ServiceAddr {
    /// Reads one of the `<SERVICE>_ADDR` settings.
    pub fn from_env(env: &Env, setting: &Setting) -> Result<Self, ConfigError> {
        env.parse(setting)
    }

    /// Where to listen: all interfaces for an empty host, otherwise the host's
    /// address (a name is resolved; one that does not resolve means all).
    pub fn listen_addr(&self) -> SocketAddr {
        let ip = match &self.host {
            None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Some(h) => match h.parse::<IpAddr>() {
                Ok(ip) => ip,
                // A DNS name (the in-cluster service name) is where others dial;
                // the process itself listens on every interface.
                Err(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            },
        };
        SocketAddr::new(ip, self.port)
    }

    /// The `http://host:port` URI others dial (loopback for an empty host).
    pub fn dial_uri(&self) -> String {
        let host = match &self.host {
            None => "127.0.0.1".to_owned(),
            Some(h) if h == "0.0.0.0" => "127.0.0.1".to_owned(),
            Some(h) if h.contains(':') => format!("[{h}]"),
            Some(h) => h.clone(),
        };
        format!("http://{host}:{}", self.port)
    }

    /// The dial address resolved to a socket address (for TCP probes).
    pub fn dial_socket_addr(&self) -> Option<SocketAddr> {
        let uri = self.dial_uri();
        let hostport = uri.trim_start_matches("http://");
        hostport.to_socket_addrs().ok()?.next()
    }
}

/// PostgreSQL connection settings (`DB_*`). Each service has its own database,
/// `<SERVICE>_DB_NAME`, defaulting to `<DB_NAME>_<service>`.
#[derive(Clone)]
pub struct DbSettings {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: SecretString,
    pub database: String,
    pub max_connections: u32,
    /// `DB_SSLMODE` (default `prefer`, as libpq's): `disable`, `prefer`,
    /// `require`, `verify-ca` or `verify-full`. A database on the same host
    /// or pod network may turn TLS off to save its cost per round trip.
    pub ssl_mode: String,
}

impl fmt::Debug for DbSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &"[redacted]")
            .field("database", &self.database)
            .field("max_connections", &self.max_connections)
            .field("ssl_mode", &self.ssl_mode)
            .finish()
    }
}

impl DbSettings {
    /// Reads the `DB_*` variables, the database being `database` (the
    /// service's `<SERVICE>_DB_NAME`, e.g. [`set::ORDER_DB_NAME`]).
    pub fn from_env(env: &Env, database: &Setting, app_env: AppEnv) -> Result<Self, ConfigError> {
        let service = database
            .name
            .strip_suffix("_DB_NAME")
            .expect("a <SERVICE>_DB_NAME setting")
            .to_ascii_lowercase();
        let base = env.string(&set::DB_NAME);
        let database_name = env
            .get(database)
            .unwrap_or_else(|| format!("{base}_{service}"));
        validate_identifier(database.name, &database_name)?;
        let password = match env.raw(&set::DB_PASSWORD) {
            Some(p) => p,
            // Local PostgreSQL uses trust auth; a deployment must say.
            None if app_env.is_development() => String::new(),
            None => {
                return Err(ConfigError::Missing {
                    name: set::DB_PASSWORD.name.into(),
                    hint: " (set it, or set it empty for trust authentication)".into(),
                });
            }
        };
        let ssl_mode = env.string(&set::DB_SSLMODE);
        if ![
            "disable",
            "allow",
            "prefer",
            "require",
            "verify-ca",
            "verify-full",
        ]
        .contains(&ssl_mode.as_str())
        {
            return Err(ConfigError::invalid(
                set::DB_SSLMODE.name,
                &ssl_mode,
                "use disable, allow, prefer, require, verify-ca or verify-full",
            ));
        }
        Ok(DbSettings {
            ssl_mode,
            host: env.string(&set::DB_HOST),
            port: env.parse(&set::DB_PORT)?,
            user: env.string(&set::DB_USER),
            password: SecretString::from(password),
            database: database_name,
            max_connections: env.parse(&set::DB_MAX_CONNECTIONS)?,
        })
    }

    /// The connection URL of `database` on this server.
    pub fn url_for(&self, database: &str) -> String {
        let password = self.password.expose_secret();
        let auth = if password.is_empty() {
            percent_encode(&self.user)
        } else {
            format!(
                "{}:{}",
                percent_encode(&self.user),
                percent_encode(password)
            )
        };
        format!(
            "postgres://{auth}@{}:{}/{}?sslmode={}",
            self.host,
            self.port,
            percent_encode(database),
            self.ssl_mode
        )
    }

    pub fn url(&self) -> String {
        self.url_for(&self.database)
    }
}

/// Database names end up in SQL identifiers; keep them plain.
fn validate_identifier(name: &str, value: &str) -> Result<(), ConfigError> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            name,
            value,
            "use 1 to 63 letters, digits, '_' or '-'",
        ))
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// NATS settings: the server, the order event stream and its subjects.
#[derive(Debug, Clone)]
pub struct NatsSettings {
    /// `NATS_ADDR`, e.g. `nats://127.0.0.1:4222`.
    pub addr: String,
    /// `NATS_STREAM`: the JetStream stream of order events.
    pub stream: String,
    /// `NATS_SUBJECT_PREFIX`: events go to `<prefix>.created` and
    /// `<prefix>.cancelled`.
    pub subject_prefix: String,
    /// `NATS_DLQ_STREAM`: the dead-letter stream, subject `<prefix>_dead.>`.
    pub dead_letter_stream: String,
}

impl NatsSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let addr = env.string(&set::NATS_ADDR);
        let stream = env.string(&set::NATS_STREAM);
        let subject_prefix = env.string(&set::NATS_SUBJECT_PREFIX);
        let dead_letter_stream = env
            .get(&set::NATS_DLQ_STREAM)
            .unwrap_or_else(|| format!("{stream}_DLQ"));
        for (name, value) in [
            (set::NATS_STREAM.name, &stream),
            (set::NATS_DLQ_STREAM.name, &dead_letter_stream),
        ] {
            if value.is_empty()
                || !value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(ConfigError::invalid(
                    name,
                    value,
                    "use letters, digits, '_' or '-'",
                ));
            }
        }
        if subject_prefix.is_empty()
            || subject_prefix.starts_with('.')
            || subject_prefix.ends_with('.')
            || subject_prefix.contains("..")
            || subject_prefix
                .chars()
                .any(|c| c.is_whitespace() || c == '*' || c == '>')
        {
            return Err(ConfigError::invalid(
                set::NATS_SUBJECT_PREFIX.name,
                &subject_prefix,
                "use dot-separated tokens without wildcards, e.g. order",
            ));
        }
        Ok(NatsSettings {
            addr,
            stream,
            subject_prefix,
            dead_letter_stream,
        })
    }

    pub fn created_subject(&self) -> String {
        format!("{}.created", self.subject_prefix)
    }

    pub fn cancelled_subject(&self) -> String {
        format!("{}.cancelled", self.subject_prefix)
    }

    /// The dead-letter subject for an event kind ("created", "cancelled", ...).
    pub fn dead_letter_subject(&self, kind: &str) -> String {
        format!("{}_dead.{kind}", self.subject_prefix)
    }

    pub fn dead_letter_subjects(&self) -> String {
        format!("{}_dead.>", self.subject_prefix)
    }

    /// Where Inventory announces product changes (plain NATS, no stream):
    /// `<prefix>_products.changed`, each message the changed ids, one per
    /// line. The gateways' product caches listen.
    pub fn product_changes_subject(&self) -> String {
        format!("{}_products.changed", self.subject_prefix)
    }
}

/// The seed's service addresses, with its ports.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub gateway: ServiceAddr,
    pub inventory: ServiceAddr,
    pub order: ServiceAddr,
    pub user: ServiceAddr,
    pub producer: ServiceAddr,
    pub consumer: ServiceAddr,
}

impl Endpoints {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Endpoints {
            gateway: ServiceAddr::from_env(env, &set::API_GATEWAY_ADDR)?,
            inventory: ServiceAddr::from_env(env, &set::INVENTORY_ADDR)?,
            order: ServiceAddr::from_env(env, &set::ORDER_ADDR)?,
            user: ServiceAddr::from_env(env, &set::USER_ADDR)?,
            producer: ServiceAddr::from_env(env, &set::PRODUCER_ADDR)?,
            consumer: ServiceAddr::from_env(env, &set::CONSUMER_ADDR)?,
        })
    }
}

/// Settings of every outgoing gRPC call.
#[derive(Debug, Clone, Copy)]
pub struct CallSettings {
    /// `GRPC_CONNECT_TIMEOUT_MS`
    pub connect_timeout: Duration,
    /// `GRPC_REQUEST_TIMEOUT_MS`: the deadline of every call.
    pub request_timeout: Duration,
}

impl CallSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(CallSettings {
            connect_timeout: env.millis(&set::GRPC_CONNECT_TIMEOUT_MS)?,
            request_timeout: env.millis(&set::GRPC_REQUEST_TIMEOUT_MS)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_addr_forms() {
        let a: ServiceAddr = ":50051".parse().unwrap();
        assert_eq!(a.host, None);
        assert_eq!(a.listen_addr().to_string(), "0.0.0.0:50051");
        assert_eq!(a.dial_uri(), "http://127.0.0.1:50051");

        let b: ServiceAddr = "inventory:50051".parse().unwrap();
        assert_eq!(b.dial_uri(), "http://inventory:50051");
        assert_eq!(b.listen_addr().to_string(), "0.0.0.0:50051");

        let c: ServiceAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(c.listen_addr().to_string(), "127.0.0.1:9");

        assert!("50051".parse::<ServiceAddr>().is_err());
        assert!(":port".parse::<ServiceAddr>().is_err());
        assert!(":70000".parse::<ServiceAddr>().is_err());
    }

    #[test]
    fn db_url_encodes_credentials() {
        let s = DbSettings {
            host: "db".into(),
            port: 5432,
            user: "app".into(),
            password: SecretString::from("p@ss word".to_owned()),
            database: "shop".into(),
            max_connections: 5,
            ssl_mode: "require".into(),
        };
        assert_eq!(
            s.url(),
            "postgres://app:p%40ss%20word@db:5432/shop?sslmode=require"
        );
        assert!(!format!("{s:?}").contains("p@ss"));
    }
}

#[cfg(test)]
mod env_tests {
    use super::*;

    #[test]
    fn malformed_values_name_the_variable() {
        let env = Env::of([("DB_PORT", "fifty"), ("INVENTORY_ADDR", "nowhere")]);
        let err =
            DbSettings::from_env(&env, &set::INVENTORY_DB_NAME, AppEnv::Development).unwrap_err();
        assert!(err.to_string().contains("DB_PORT"), "{err}");
        let err = Endpoints::from_env(&env).unwrap_err();
        assert!(err.to_string().contains("INVENTORY_ADDR"), "{err}");
    }

    #[test]
    fn production_needs_a_database_password() {
        let err = DbSettings::from_env(
            &Env::of::<&str, &str>([]),
            &set::ORDER_DB_NAME,
            AppEnv::Production,
        )
        .unwrap_err();
        assert!(err.to_string().contains("DB_PASSWORD"), "{err}");
        // Explicitly empty is a choice (trust authentication), not an omission.
        let env = Env::of([("DB_PASSWORD", "")]);
        assert!(DbSettings::from_env(&env, &set::ORDER_DB_NAME, AppEnv::Production).is_ok());
    }

    #[test]
    fn per_service_database_names() {
        let user = |env: &Env| DbSettings::from_env(env, &set::USER_DB_NAME, AppEnv::Development);
        let none = Env::of::<&str, &str>([]);
        let s = DbSettings::from_env(&none, &set::ORDER_DB_NAME, AppEnv::Development).unwrap();
        assert_eq!(s.database, "ecommerce_order");
        assert_eq!(
            user(&Env::of([("DB_NAME", "shop")])).unwrap().database,
            "shop_user"
        );
        let env = Env::of([("DB_NAME", "shop"), ("USER_DB_NAME", "accounts")]);
        assert_eq!(user(&env).unwrap().database, "accounts");
        assert!(user(&Env::of([("USER_DB_NAME", "drop table;")])).is_err());
    }

    #[test]
    fn seed_defaults() {
        let none = Env::of::<&str, &str>([]);
        let e = Endpoints::from_env(&none).unwrap();
        assert_eq!(e.gateway.port, 8080);
        assert_eq!(e.inventory.port, 50051);
        assert_eq!(e.order.port, 50052);
        assert_eq!(e.user.port, 50053);
        assert_eq!(e.producer.port, 50054);
        assert_eq!(AppEnv::from_env(&none).unwrap(), AppEnv::Production);
        let nats = NatsSettings::from_env(&none).unwrap();
        assert_eq!(nats.addr, "nats://127.0.0.1:4222");
        assert_eq!(nats.created_subject(), "order.created");
        assert_eq!(nats.cancelled_subject(), "order.cancelled");
        assert_eq!(nats.dead_letter_stream, "ORDER_EVENTS_DLQ");
    }

    #[test]
    fn subject_prefix_rejects_wildcards() {
        let err =
            NatsSettings::from_env(&Env::of([("NATS_SUBJECT_PREFIX", "order.*")])).unwrap_err();
        assert!(err.to_string().contains("NATS_SUBJECT_PREFIX"));
    }

    #[test]
    fn app_env_values() {
        assert!(
            AppEnv::from_env(&Env::of([("APP_ENV", "development")]))
                .unwrap()
                .is_development()
        );
        let err = AppEnv::from_env(&Env::of([("APP_ENV", "staging")])).unwrap_err();
        assert!(err.to_string().contains("APP_ENV"));
    }
}
