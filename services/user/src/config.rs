use platform::ConfigError;
use platform::config::{AppEnv, DbSettings, ServiceAddr, var};
use secrecy::SecretString;

use crate::domain::{Email, Password, Username};

/// bcrypt's work factor: at least 12, whatever the setting says.
pub const MIN_BCRYPT_COST: u32 = 12;
const MAX_BCRYPT_COST: u32 = 31;

/// The User service's settings.
#[derive(Debug)]
pub struct Config {
    /// `USER_ADDR` (default `:50053`).
    pub listen: ServiceAddr,
    /// `APP_ENV` (default production).
    pub app_env: AppEnv,
    /// `DB_*`, database `USER_DB_NAME` (default `<DB_NAME>_user`).
    pub db: DbSettings,
    /// `BCRYPT_COST` (default and minimum 12).
    pub bcrypt_cost: u32,
    /// `USER_MAX_CONCURRENT_HASHES` (default: one per core, at least 2):
    /// registrations hashing at once (more are refused at once with
    /// RESOURCE_EXHAUSTED), and as many logins verifying.
    pub max_concurrent_hashes: usize,
    /// `ADMIN_USERNAME`, `ADMIN_EMAIL`, `ADMIN_PASSWORD`: all three or none.
    pub admin: Option<AdminSettings>,
}

/// The first admin, created at start-up when no user has this username.
pub struct AdminSettings {
    pub username: Username,
    pub email: Email,
    pub password: Password,
}

impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSettings")
            .field("username", &self.username)
            .field("email", &self.email)
            .field("password", &"[redacted]")
            .finish()
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let app_env = AppEnv::from_env()?;
        Ok(Config {
            listen: ServiceAddr::from_env("USER_ADDR", 50053)?,
            app_env,
            db: DbSettings::from_env("user", app_env)?,
            bcrypt_cost: bcrypt_cost_from_env()?,
            max_concurrent_hashes: max_concurrent_hashes_from_env()?,
            admin: admin_from_env()?,
        })
    }
}

fn max_concurrent_hashes_from_env() -> Result<usize, ConfigError> {
    let n: usize = platform::config::parse_or(
        "USER_MAX_CONCURRENT_HASHES",
        crate::infrastructure::password::default_concurrency(),
    )?;
    if n == 0 {
        return Err(ConfigError::invalid(
            "USER_MAX_CONCURRENT_HASHES",
            "0",
            "must be at least 1",
        ));
    }
    Ok(n)
}

fn bcrypt_cost_from_env() -> Result<u32, ConfigError> {
    let cost: u32 = platform::config::parse_or("BCRYPT_COST", MIN_BCRYPT_COST)?;
    if !(MIN_BCRYPT_COST..=MAX_BCRYPT_COST).contains(&cost) {
        return Err(ConfigError::invalid(
            "BCRYPT_COST",
            &cost.to_string(),
            format!("must be from {MIN_BCRYPT_COST} to {MAX_BCRYPT_COST}"),
        ));
    }
    Ok(cost)
}

fn admin_from_env() -> Result<Option<AdminSettings>, ConfigError> {
    let username = var("ADMIN_USERNAME");
    let email = var("ADMIN_EMAIL");
    // Read as is: a password may begin or end with spaces.
    let password = std::env::var("ADMIN_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty())
        .map(SecretString::from);
    let (username, email, password) = match (username, email, password) {
        (None, None, None) => return Ok(None),
        (Some(u), Some(e), Some(p)) => (u, e, p),
        (u, e, p) => {
            let missing = [
                ("ADMIN_USERNAME", u.is_none()),
                ("ADMIN_EMAIL", e.is_none()),
                ("ADMIN_PASSWORD", p.is_none()),
            ]
            .into_iter()
            .find(|(_, missing)| *missing)
            .map(|(name, _)| name)
            .unwrap_or("ADMIN_PASSWORD");
            return Err(ConfigError::Missing {
                name: missing.into(),
                hint: " (ADMIN_USERNAME, ADMIN_EMAIL and ADMIN_PASSWORD are set together or not at all)"
                    .into(),
            });
        }
    };
    use secrecy::ExposeSecret;
    Ok(Some(AdminSettings {
        username: Username::parse(username.trim())
            .map_err(|e| ConfigError::invalid("ADMIN_USERNAME", &username, e))?,
        email: Email::parse(&email).map_err(|e| ConfigError::invalid("ADMIN_EMAIL", &email, e))?,
        password: Password::parse(password.expose_secret())
            .map_err(|e| ConfigError::invalid("ADMIN_PASSWORD", "[redacted]", e))?,
    }))
}
