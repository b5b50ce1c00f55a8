use platform::config::{AppEnv, DbSettings, NatsSettings, ServiceAddr};
use platform::settings::{self as set, Env, Setting};

/// Every variable Inventory reads (its own: none but the fault points its
/// README names).
pub const SETTINGS: &[&[&Setting]] = &[
    &[&set::INVENTORY_ADDR, &set::INVENTORY_DB_NAME],
    set::COMMON,
    set::DATABASE,
    set::NATS,
];

/// The Inventory service's settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: ServiceAddr,
    pub app_env: AppEnv,
    pub db: DbSettings,
    /// Where product changes are announced (best effort).
    pub nats: NatsSettings,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, platform::ConfigError> {
        let app_env = AppEnv::from_env(env)?;
        Ok(Config {
            listen: ServiceAddr::from_env(env, &set::INVENTORY_ADDR)?,
            app_env,
            db: DbSettings::from_env(env, &set::INVENTORY_DB_NAME, app_env)?,
            nats: NatsSettings::from_env(env)?,
        })
    }
}

impl platform::cli::ServiceConfig for Config {
    fn listen(&self) -> &ServiceAddr {
        &self.listen
    }
}
