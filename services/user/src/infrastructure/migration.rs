//! The User schema. Migrations run at start-up and by `user migrate`, under
//! an advisory lock (see `platform::db::migrate`).

use sea_orm_migration::prelude::*;

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(platform::db::SqlMigration {
            name: "m20261124_000001_create_users",
            up: UP,
            down: DOWN,
        })]
    }
}

/// The unique indexes whose violations name the colliding field.
pub const USERNAME_INDEX: &str = "users_username_lower_key";
pub const EMAIL_INDEX: &str = "users_email_lower_key";

const UP: &str = r#"
CREATE TABLE users (
    id            uuid PRIMARY KEY,
    username      varchar(32) NOT NULL,
    email         varchar(254) NOT NULL,
    password_hash text NOT NULL,
    role          text NOT NULL DEFAULT 'customer' CHECK (role IN ('customer', 'admin')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
-- Unique without regard to case; a concurrent duplicate fails here.
CREATE UNIQUE INDEX users_username_lower_key ON users (lower(username));
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));
"#;

const DOWN: &str = "DROP TABLE users;";
