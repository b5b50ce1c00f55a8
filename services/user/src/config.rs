use platform::ConfigError;
use platform::config::{AppEnv, DbSettings, ServiceAddr};
use platform::settings::{self as set, DefaultValue, Env, Setting};
use secrecy::SecretString;

use crate::domain::{Email, Password, Username};

/// bcrypt's work factor: at least 12, whatever the setting says.
pub const MIN_BCRYPT_COST: u32 = 12;
const MAX_BCRYPT_COST: u32 = 31;

platform::declare_settings! {
    BCRYPT_COST = DefaultValue::Value("12"), "bcrypt work factor, 12 to 31 (lower is refused)";
    USER_MAX_CONCURRENT_HASHES = DefaultValue::Derived("one per core, at least 2"),
        "registrations hashing at once (more answer RESOURCE_EXHAUSTED at once, 503 at the gateway), and as many login verifications (which wait their turn, apart)";
    ADMIN_USERNAME = DefaultValue::Unset,
        "the first admin, created at start-up when absent and never overwritten: `ADMIN_USERNAME`, `ADMIN_EMAIL` and `ADMIN_PASSWORD` all three or none (a partial setting stops start-up)";
    ADMIN_EMAIL = DefaultValue::Unset, "the first admin's email";
    ADMIN_PASSWORD = DefaultValue::Unset, "the first admin's password (read as is: spaces count)";
}

/// Every variable the User service reads.
pub const SETTINGS: &[&[&Setting]] = &[
    &[
        &set::USER_ADDR,
        &set::USER_DB_NAME,
        &BCRYPT_COST,
        &USER_MAX_CONCURRENT_HASHES,
        &ADMIN_USERNAME,
        &ADMIN_EMAIL,
        &ADMIN_PASSWORD,
    ],
    set::COMMON,
    set::DATABASE,
];

/// The User service's settings.
#[derive(Debug)]
pub struct Config {
    pub listen: ServiceAddr,
    pub app_env: AppEnv,
    pub db: DbSettings,
    /// [`BCRYPT_COST`]
    pub bcrypt_cost: u32,
    /// [`USER_MAX_CONCURRENT_HASHES`]
    pub max_concurrent_hashes: usize,
    /// [`ADMIN_USERNAME`], [`ADMIN_EMAIL`], [`ADMIN_PASSWORD`]
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
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let app_env = AppEnv::from_env(env)?;
        Ok(Config {
            listen: ServiceAddr::from_env(env, &set::USER_ADDR)?,
            app_env,
            db: DbSettings::from_env(env, &set::USER_DB_NAME, app_env)?,
            bcrypt_cost: bcrypt_cost_from_env(env)?,
            max_concurrent_hashes: max_concurrent_hashes_from_env(env)?,
            admin: admin_from_env(env)?,
        })
    }
}

fn max_concurrent_hashes_from_env(env: &Env) -> Result<usize, ConfigError> {
    let n: usize = env.parse_or(
        &USER_MAX_CONCURRENT_HASHES,
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

fn bcrypt_cost_from_env(env: &Env) -> Result<u32, ConfigError> {
    let cost: u32 = env.parse(&BCRYPT_COST)?;
    if !(MIN_BCRYPT_COST..=MAX_BCRYPT_COST).contains(&cost) {
        return Err(ConfigError::invalid(
            "BCRYPT_COST",
            &cost.to_string(),
            format!("must be from {MIN_BCRYPT_COST} to {MAX_BCRYPT_COST}"),
        ));
    }
    Ok(cost)
}

fn admin_from_env(env: &Env) -> Result<Option<AdminSettings>, ConfigError> {
    let username = env.get(&ADMIN_USERNAME);
    let email = env.get(&ADMIN_EMAIL);
    // Read as is: a password may begin or end with spaces.
    let password = env
        .raw(&ADMIN_PASSWORD)
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

impl platform::cli::ServiceConfig for Config {
    fn listen(&self) -> &ServiceAddr {
        &self.listen
    }
}
