use platform::config::{AppEnv, DbSettings, NatsSettings, ServiceAddr};

/// The Inventory service's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// `INVENTORY_ADDR` (default `:50051`).
    pub listen: ServiceAddr,
    /// `APP_ENV` (default production).
    pub app_env: AppEnv,
    /// `DB_*`, database `INVENTORY_DB_NAME` (default `<DB_NAME>_inventory`).
    pub db: DbSettings,
    /// `NATS_*`: where product changes are announced (best effort).
    pub nats: NatsSettings,
}

impl Config {
    pub fn from_env() -> Result<Self, platform::ConfigError> {
        let app_env = AppEnv::from_env()?;
        Ok(Config {
            listen: ServiceAddr::from_env("INVENTORY_ADDR", 50051)?,
            app_env,
            db: DbSettings::from_env("inventory", app_env)?,
            nats: NatsSettings::from_env()?,
        })
    }
}
