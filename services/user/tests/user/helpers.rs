use sea_orm::{ConnectionTrait, DatabaseConnection};
use testkit::TestDb;
use user::application::UserError;
use user::config::{AdminSettings, MIN_BCRYPT_COST};
use user::domain::{Email, Password, Username};
use user::infrastructure::password::PasswordHasher;
use user::infrastructure::store::UserStore;
use user::metrics::Metrics;

pub const PASSWORD: &str = "correct horse battery";

/// The use cases over PostgreSQL and bcrypt.
pub type Users = user::application::Users<UserStore, PasswordHasher>;

/// The use cases on a migrated database of the test's own, hashing at the
/// production cost.
pub struct App {
    // Declared first: the pool closes before the database is dropped.
    pub users: Users,
    pub conn: DatabaseConnection,
    pub hasher: PasswordHasher,
    _db: TestDb,
}

pub async fn app() -> App {
    let db = TestDb::create().await;
    platform::db::migrate::<user::Migrator>(&db.settings())
        .await
        .expect("migrations");
    let conn = platform::db::connect(&db.settings())
        .await
        .expect("connect");
    // Room for the concurrency tests' registrations; the flood test makes a
    // hasher of its own with less.
    let hasher = PasswordHasher::new(MIN_BCRYPT_COST, 16)
        .await
        .expect("hasher");
    App {
        users: Users::new(
            UserStore::new(conn.clone()),
            hasher.clone(),
            Metrics::default(),
        ),
        conn,
        hasher,
        _db: db,
    }
}

impl App {
    /// Another instance of the service on the same database (a replica).
    pub fn replica(&self) -> Users {
        Users::new(
            UserStore::new(self.conn.clone()),
            self.hasher.clone(),
            Metrics::default(),
        )
    }

    /// Opens several pooled connections at once so that concurrent calls
    /// really overlap in the database.
    pub async fn warm_pool(&self) {
        let sleeps = (0..8).map(|_| self.conn.execute_unprepared("SELECT pg_sleep(0.2)"));
        for result in futures::future::join_all(sleeps).await {
            result.expect("warm the pool");
        }
    }
}

pub fn admin_settings(username: &str, email: &str, password: &str) -> AdminSettings {
    AdminSettings {
        username: Username::parse(username).unwrap(),
        email: Email::parse(email).unwrap(),
        password: Password::parse(password).unwrap(),
    }
}

/// The field names of an INVALID_ARGUMENT error.
pub fn invalid_fields(error: UserError) -> Vec<String> {
    match error {
        UserError::Invalid(invalid) => invalid.0.into_iter().map(|e| e.field).collect(),
        other => panic!("expected invalid input, got {other:?}"),
    }
}
