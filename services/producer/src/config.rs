use platform::config::{NatsSettings, ServiceAddr};

/// The Producer's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// `PRODUCER_ADDR` (default `:50054`).
    pub listen: ServiceAddr,
    pub nats: NatsSettings,
}

impl Config {
    pub fn from_env() -> Result<Self, platform::ConfigError> {
        Ok(Config {
            listen: ServiceAddr::from_env("PRODUCER_ADDR", 50054)?,
            nats: NatsSettings::from_env()?,
        })
    }
}
