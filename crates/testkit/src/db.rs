use sea_orm::{ConnectionTrait, Database, DatabaseConnection};

/// Where the test PostgreSQL server is: `TEST_PG_HOST`/`TEST_PG_PORT`/
/// `TEST_PG_USER` (defaults 127.0.0.1, 5432, postgres; trust auth), or a
/// private server's address.
#[derive(Debug, Clone)]
pub struct PgServer {
    pub host: String,
    pub port: u16,
    pub user: String,
}

impl PgServer {
    pub fn from_env() -> Self {
        PgServer {
            host: std::env::var("TEST_PG_HOST").unwrap_or_else(|_| "127.0.0.1".into()),
            port: std::env::var("TEST_PG_PORT")
                .ok()
                .and_then(|p| p.parse().ok())
                .unwrap_or(5432),
            user: std::env::var("TEST_PG_USER").unwrap_or_else(|_| "postgres".into()),
        }
    }

    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{}@{}:{}/{}",
            self.user, self.host, self.port, database
        )
    }

    /// The `DB_*` variables a service needs to reach this server.
    pub fn service_env(&self) -> Vec<(String, String)> {
        vec![
            ("DB_HOST".into(), self.host.clone()),
            ("DB_PORT".into(), self.port.to_string()),
            ("DB_USER".into(), self.user.clone()),
            ("DB_PASSWORD".into(), String::new()),
        ]
    }
}

/// A database of the test's own, created empty and dropped at the end.
pub struct TestDb {
    pub server: PgServer,
    pub name: String,
}

impl TestDb {
    /// Creates an empty database with a unique name on the default server.
    pub async fn create() -> TestDb {
        Self::create_on(PgServer::from_env()).await
    }

    pub async fn create_on(server: PgServer) -> TestDb {
        let name = crate::unique_name("t_");
        let admin = Database::connect(server.url("postgres"))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot reach test PostgreSQL at {}: {e}",
                    server.url("postgres")
                )
            });
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create test database");
        let _ = admin.close().await;
        TestDb { server, name }
    }

    pub fn url(&self) -> String {
        self.server.url(&self.name)
    }

    /// A fresh connection pool to this database.
    pub async fn connect(&self) -> DatabaseConnection {
        Database::connect(self.url())
            .await
            .expect("connect to test database")
    }

    /// `platform` settings pointing at this database.
    pub fn settings(&self) -> platform::config::DbSettings {
        platform::config::DbSettings {
            host: self.server.host.clone(),
            port: self.server.port,
            user: self.server.user.clone(),
            password: String::new().into(),
            database: self.name.clone(),
            max_connections: 10,
            // The test server is local: no TLS.
            ssl_mode: "disable".into(),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let url = self.server.url("postgres");
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        // Drop may run inside a runtime; do the async work on a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                if let Ok(admin) = Database::connect(url).await {
                    let _ = admin.execute_unprepared(&sql).await;
                    let _ = admin.close().await;
                }
            });
        })
        .join();
    }
}
