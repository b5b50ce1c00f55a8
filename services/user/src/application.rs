//! The User use cases: register, authenticate, read a profile, and create
//! the first admin. Each returns a typed error the gRPC adapter maps once.

use std::future::Future;

use sea_orm::DbErr;
use secrecy::SecretString;
use tokio::sync::OwnedSemaphorePermit;
use uuid::Uuid;

use platform::metrics::Labels;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::config::AdminSettings;
use crate::domain::{
    Account, Caller, Email, Invalid, Registration, Role, UniqueField, User, Username,
};
use crate::metrics::Metrics;

/// The users, as the use cases need them (PostgreSQL in
/// `infrastructure::store`).
pub trait UserRepository: Clone + Send + Sync + 'static {
    /// Stores a new user; a taken username or email is [`InsertError::Duplicate`].
    fn insert(&self, new: NewUser<'_>) -> impl Future<Output = Result<User, InsertError>> + Send;
    /// Stores the user unless one with its username exists; whether it did.
    fn insert_if_absent(
        &self,
        new: NewUser<'_>,
    ) -> impl Future<Output = Result<bool, DbErr>> + Send;
    /// The fields of `username` / `email` that some user already has.
    fn taken_fields(
        &self,
        username: &Username,
        email: &Email,
    ) -> impl Future<Output = Result<Vec<UniqueField>, DbErr>> + Send;
    fn find_by_username(
        &self,
        username: &str,
    ) -> impl Future<Output = Result<Option<User>, DbErr>> + Send;
    /// The account a login names, by username or email.
    fn find_account(
        &self,
        login: &str,
    ) -> impl Future<Output = Result<Option<Account>, DbErr>> + Send;
    fn find_by_id(&self, id: Uuid) -> impl Future<Output = Result<Option<User>, DbErr>> + Send;
}

/// Password hashing (bcrypt in `infrastructure::password`), bounded in how
/// many hashes run at once.
pub trait PasswordHashing: Clone + Send + Sync + 'static {
    /// A turn to hash a registration's password, or `None` when all are
    /// taken (the caller answers busy at once).
    fn registration_slot(&self) -> Option<OwnedSemaphorePermit>;
    fn hash(&self, password: &str) -> impl Future<Output = Result<SecretString, HashError>> + Send;
    /// Whether `password` matches `hash`; with no hash, a verification of
    /// the same cost that fails (an unknown user costs what a wrong password
    /// does).
    fn verify(
        &self,
        password: &str,
        hash: Option<&SecretString>,
    ) -> impl Future<Output = bool> + Send;
}

#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(pub String);

#[derive(Debug, thiserror::Error)]
pub enum InsertError {
    #[error("{} is already taken", .0.name())]
    Duplicate(UniqueField),
    #[error(transparent)]
    Database(#[from] DbErr),
}

/// A user about to be stored.
pub struct NewUser<'a> {
    pub username: &'a Username,
    pub email: &'a Email,
    pub password_hash: SecretString,
    pub role: Role,
}

/// The one answer to a failed login, whatever failed.
pub const INVALID_CREDENTIALS: &str = "invalid username or password";

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("{}", describe_taken(.0))]
    AlreadyExists(Vec<UniqueField>),
    #[error("{INVALID_CREDENTIALS}")]
    InvalidCredentials,
    #[error("user {0} not found")]
    NotFound(Uuid),
    #[error(transparent)]
    Hashing(#[from] HashError),
    #[error("too many registrations at once, try again")]
    Busy,
    #[error("database error: {0}")]
    Database(#[from] DbErr),
}

fn describe_taken(fields: &[UniqueField]) -> String {
    fields
        .iter()
        .map(|f| format!("{} is already taken", f.name()))
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<InsertError> for UserError {
    fn from(error: InsertError) -> Self {
        match error {
            InsertError::Duplicate(field) => UserError::AlreadyExists(vec![field]),
            InsertError::Database(e) => UserError::Database(e),
        }
    }
}

/// What the start-up admin bootstrap found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminBootstrap {
    Created(User),
    /// A user with that username exists; it was left exactly as it is.
    AlreadyPresent(User),
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(
        "ADMIN_EMAIL {0:?} already belongs to another user; choose another ADMIN_EMAIL or ADMIN_USERNAME"
    )]
    EmailTaken(String),
    #[error(transparent)]
    Hashing(#[from] HashError),
    #[error("database error: {0}")]
    Database(#[from] DbErr),
}

#[derive(Clone)]
pub struct Users<S, H> {
    store: S,
    hasher: H,
    metrics: Metrics,
    /// The admin's username and email (lowercased), which no registration
    /// may take, whether the admin exists yet or not.
    reserved: Option<(String, String)>,
}

impl<S: UserRepository, H: PasswordHashing> Users<S, H> {
    pub fn new(store: S, hasher: H, metrics: Metrics) -> Self {
        Users {
            store,
            hasher,
            metrics,
            reserved: None,
        }
    }

    /// Reserves the admin's username and email for the admin.
    pub fn reserving(mut self, admin: Option<&AdminSettings>) -> Self {
        self.reserved = admin.map(|a| {
            (
                a.username.as_str().to_lowercase(),
                a.email.as_str().to_lowercase(),
            )
        });
        self
    }

    fn reserved_fields(&self, registration: &Registration) -> Vec<UniqueField> {
        let Some((username, email)) = &self.reserved else {
            return Vec::new();
        };
        let mut taken = Vec::new();
        if registration.username.as_str().to_lowercase() == *username {
            taken.push(UniqueField::Username);
        }
        if registration.email.as_str().to_lowercase() == *email {
            taken.push(UniqueField::Email);
        }
        taken
    }

    /// Registers a customer: registration can never choose a role.
    pub async fn register(
        &self,
        username: &str,
        email: &str,
        password: &str,
    ) -> Result<User, UserError> {
        let result = self.try_register(username, email, password).await;
        let outcome = match &result {
            Ok(_) => "created",
            Err(UserError::AlreadyExists(_)) => "taken",
            Err(UserError::Invalid(_)) => "invalid",
            Err(UserError::Busy) => "busy",
            Err(_) => "failed",
        };
        self.count(&self.metrics.registrations, outcome);
        result
    }

    async fn try_register(
        &self,
        username: &str,
        email: &str,
        password: &str,
    ) -> Result<User, UserError> {
        let registration = Registration::parse(username, email, password)?;
        let _turn = self.hasher.registration_slot().ok_or(UserError::Busy)?;
        // Hashed before the uniqueness check: "already taken" costs the same
        // bcrypt run as a registration, so its timing does not tell which
        // names and emails exist.
        let password_hash = self.hasher.hash(registration.password.expose()).await?;
        // Names both fields when both are taken; a racing registration is
        // still caught by the unique indexes.
        let mut taken = self
            .store
            .taken_fields(&registration.username, &registration.email)
            .await?;
        for field in self.reserved_fields(&registration) {
            if !taken.contains(&field) {
                taken.push(field);
            }
        }
        if !taken.is_empty() {
            return Err(UserError::AlreadyExists(taken));
        }
        let user = self
            .store
            .insert(NewUser {
                username: &registration.username,
                email: &registration.email,
                password_hash,
                role: Role::Customer,
            })
            .await?;
        tracing::info!(user_id = %user.id, "user registered");
        Ok(user)
    }

    /// Checks a username (or email) and password. An unknown user and a
    /// wrong password fail alike, after the same bcrypt work.
    pub async fn authenticate(&self, login: &str, password: &str) -> Result<User, UserError> {
        let result = self.try_authenticate(login, password).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(UserError::InvalidCredentials) => "refused",
            Err(UserError::Invalid(_)) => "invalid",
            Err(_) => "failed",
        };
        self.count(&self.metrics.logins, outcome);
        result
    }

    fn count(&self, family: &Family<Labels, Counter>, outcome: &'static str) {
        family.get_or_create(&vec![("outcome", outcome)]).inc();
    }

    async fn try_authenticate(&self, login: &str, password: &str) -> Result<User, UserError> {
        let login = login.trim();
        let mut missing = Vec::new();
        if login.is_empty() {
            missing.push(("username", "is required"));
        }
        if password.is_empty() {
            missing.push(("password", "is required"));
        }
        if !missing.is_empty() {
            return Err(Invalid(
                missing
                    .into_iter()
                    .map(|(f, d)| crate::domain::FieldError {
                        field: f.into(),
                        description: d.into(),
                    })
                    .collect(),
            )
            .into());
        }
        // No username or email holds a control character, and PostgreSQL
        // refuses a NUL in a query: such a login is an unknown user.
        let account = if login.contains(char::is_control) {
            None
        } else {
            self.store.find_account(login).await?
        };
        let hash = account.as_ref().map(|a| &a.password_hash);
        let verified = self.hasher.verify(password, hash).await;
        match account {
            Some(account) if verified => Ok(account.user),
            _ => Err(UserError::InvalidCredentials),
        }
    }

    /// A customer reads only their own profile; another user's is NOT_FOUND,
    /// exactly like a missing one, so ids cannot be probed.
    pub async fn get_user(&self, caller: Caller, user_id: Uuid) -> Result<User, UserError> {
        if !crate::domain::may_read(&caller, user_id) {
            return Err(UserError::NotFound(user_id));
        }
        self.store
            .find_by_id(user_id)
            .await?
            .ok_or(UserError::NotFound(user_id))
    }

    /// Creates the first admin when no user has its username; never changes
    /// an existing user. Safe with several replicas starting at once.
    pub async fn bootstrap_admin(
        &self,
        admin: &AdminSettings,
    ) -> Result<AdminBootstrap, BootstrapError> {
        if let Some(existing) = self.store.find_by_username(admin.username.as_str()).await? {
            return Ok(AdminBootstrap::AlreadyPresent(existing));
        }
        let password_hash = self.hasher.hash(admin.password.expose()).await?;
        let inserted = self
            .store
            .insert_if_absent(NewUser {
                username: &admin.username,
                email: &admin.email,
                password_hash,
                role: Role::Admin,
            })
            .await?;
        match self.store.find_by_username(admin.username.as_str()).await? {
            Some(user) if inserted => Ok(AdminBootstrap::Created(user)),
            // Another replica created it meanwhile.
            Some(user) => Ok(AdminBootstrap::AlreadyPresent(user)),
            None => Err(BootstrapError::EmailTaken(admin.email.as_str().to_owned())),
        }
    }
}
