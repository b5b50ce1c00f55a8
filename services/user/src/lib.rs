//! The User service: registration, authentication and profiles.
//!
//! Roles are `customer` (every registration) and `admin` (only the first
//! admin from `ADMIN_USERNAME` / `ADMIN_EMAIL` / `ADMIN_PASSWORD`, created at
//! start-up when absent and never overwritten). Passwords are hashed with
//! bcrypt (cost `BCRYPT_COST`, at least 12); the hash never leaves the
//! service.

pub mod application;
pub mod config;
pub mod domain;
pub mod infrastructure;
pub mod metrics;

use anyhow::Result;

use platform::cli::Command;
use platform::service::GrpcService;
use platform::shutdown::Shutdown;
use proto::user::v1::user_service_server::UserServiceServer;
use tokio::net::TcpListener;

pub use config::Config;
pub use infrastructure::migration::Migrator;

use application::{AdminBootstrap, BootstrapError, Users};
use infrastructure::password::PasswordHasher;

/// Entry point of the binary.
pub async fn run(command: Command) -> anyhow::Result<()> {
    platform::cli::dispatch(command, Config::from_env, migrate, serve).await
}

/// Migrates, creates the first admin if configured and absent, then serves
/// gRPC on `listener` until `shutdown`.
pub async fn serve(config: Config, listener: TcpListener, shutdown: impl Shutdown) -> Result<()> {
    platform::db::migrate_at_start::<Migrator>(&config.db).await?;
    let db = platform::db::connect(&config.db).await?;
    let hasher = PasswordHasher::new(config.bcrypt_cost, config.max_concurrent_hashes).await?;
    let store = infrastructure::store::UserStore::new(db.clone());
    let users =
        Users::new(store, hasher, metrics::Metrics::register()).reserving(config.admin.as_ref());

    // A customer who took the admin's name or email before the ADMIN_*
    // settings were given leaves no admin; the service still serves (exiting
    // would only restart it into the same conflict) and says what to change.
    if let Some(admin) = &config.admin {
        match users.bootstrap_admin(admin).await {
            Ok(AdminBootstrap::Created(user)) => {
                tracing::info!(user_id = %user.id, username = %user.username, "first admin created")
            }
            Ok(AdminBootstrap::AlreadyPresent(user)) if user.role != domain::Role::Admin => {
                tracing::error!(user_id = %user.id, username = %user.username,
                    "no admin: ADMIN_USERNAME belongs to an existing customer, left unchanged; choose another ADMIN_USERNAME (and ADMIN_EMAIL)")
            }
            Ok(AdminBootstrap::AlreadyPresent(user)) => {
                tracing::info!(user_id = %user.id, "admin already present; left unchanged")
            }
            Err(error @ BootstrapError::EmailTaken(_)) => {
                tracing::error!("no admin: {error}")
            }
            Err(error) => return Err(error.into()),
        }
    }

    let service = infrastructure::grpc::UserGrpc::new(users);
    let server = GrpcService::new("user", UserServiceServer::new(service)).await;
    server.readiness().add_database(db);
    server.serve(listener, shutdown).await
}

/// `migrate`: applies the database's migrations.
pub async fn migrate(config: Config) -> anyhow::Result<()> {
    platform::db::migrate::<Migrator>(&config.db).await
}
