use platform::config::{NatsSettings, ServiceAddr};
use platform::settings::{self as set, Env, Setting};

/// Every variable the Producer reads (none of its own).
pub const SETTINGS: &[&[&Setting]] = &[&[&set::PRODUCER_ADDR], set::COMMON, set::NATS];

/// The Producer's settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: ServiceAddr,
    pub nats: NatsSettings,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, platform::ConfigError> {
        Ok(Config {
            listen: ServiceAddr::from_env(env, &set::PRODUCER_ADDR)?,
            nats: NatsSettings::from_env(env)?,
        })
    }
}

impl platform::cli::ServiceConfig for Config {
    fn listen(&self) -> &ServiceAddr {
        &self.listen
    }
}
