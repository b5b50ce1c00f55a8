use std::collections::BTreeMap;
use std::time::Duration;

use testkit::{PgServer, ServiceProcess, TestDb, TestNats, free_port};

/// The services of the platform, in start order.
pub const SERVICES: [&str; 6] = [
    "user",
    "inventory",
    "producer",
    "order",
    "consumer",
    "gateway",
];

/// The variable holding each service's address.
pub fn addr_var(service: &str) -> &'static str {
    match service {
        "gateway" => "API_GATEWAY_ADDR",
        "inventory" => "INVENTORY_ADDR",
        "order" => "ORDER_ADDR",
        "user" => "USER_ADDR",
        "producer" => "PRODUCER_ADDR",
        "consumer" => "CONSUMER_ADDR",
        other => panic!("unknown service {other}"),
    }
}

/// What to start and how.
pub struct StackOptions {
    /// Services to start (default: all six).
    pub services: Vec<&'static str>,
    pub pg: PgServer,
    /// NATS server URL (default: the machine's, or `TEST_NATS_URL`).
    pub nats_url: Option<String>,
    /// Variables for every service.
    pub env: Vec<(String, String)>,
    /// Variables for one service only, e.g. ("consumer", "FAULT_POINTS", ...).
    pub service_env: Vec<(&'static str, String, String)>,
    pub startup_timeout: Duration,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            services: SERVICES.to_vec(),
            pg: PgServer::from_env(),
            nats_url: None,
            env: Vec::new(),
            service_env: Vec::new(),
            startup_timeout: Duration::from_secs(60),
        }
    }
}

impl StackOptions {
    /// The services the order flow needs (no gateway, no user service).
    pub const FLOW: [&'static str; 4] = ["inventory", "producer", "order", "consumer"];

    /// `services` with quick retries, so that tests do not wait on long
    /// backoffs, and a short ack wait, so that a message held by a stopped or
    /// dead Consumer comes back soon.
    pub fn quick_recovery(services: &[&'static str]) -> Self {
        StackOptions::only(services)
            .with_service_env("consumer", "CONSUMER_RETRY_MAX_MS", "1000")
            .with_service_env("consumer", "CONSUMER_ACK_WAIT_MS", "7000")
            .with_service_env("order", "OUTBOX_RETRY_MAX_MS", "1000")
    }

    pub fn only(services: &[&'static str]) -> Self {
        StackOptions {
            services: services.to_vec(),
            ..Default::default()
        }
    }

    pub fn with_env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn with_service_env(mut self, service: &'static str, key: &str, value: &str) -> Self {
        self.service_env.push((service, key.into(), value.into()));
        self
    }
}

/// The admin account every test stack is created with.
pub const ADMIN_USERNAME: &str = "admin";
pub const ADMIN_PASSWORD: &str = "admin-password-123";
pub const ADMIN_EMAIL: &str = "admin@example.com";
/// An `INTERNAL_AUTH_TOKEN` for tests that turn the internal calls' check on.
pub const INTERNAL_AUTH_TOKEN: &str = "internal-token-of-the-test-stack-0123456789";
/// The gateway's default `JWT_ISSUER`.
pub const JWT_ISSUER: &str = "ecommerce-gateway";
/// The gateway's `JWT_SECRET` in a stack.
pub const JWT_SECRET: &str = "test-secret-that-is-long-enough-0123456789";

/// Real service binaries wired together, each test with its own databases,
/// stream and subjects.
pub struct Stack {
    pub addrs: BTreeMap<&'static str, String>,
    pub processes: BTreeMap<&'static str, ServiceProcess>,
    pub dbs: BTreeMap<&'static str, TestDb>,
    pub nats: TestNats,
    env: BTreeMap<&'static str, Vec<(String, String)>>,
}

impl Stack {
    pub async fn start(options: StackOptions) -> Stack {
        let nats = match &options.nats_url {
            Some(url) => TestNats::on(url.clone()),
            None => TestNats::new(),
        };
        let mut dbs = BTreeMap::new();
        for service in ["inventory", "order", "user"] {
            dbs.insert(service, TestDb::create_on(options.pg.clone()).await);
        }
        let addrs: BTreeMap<&'static str, String> = SERVICES
            .iter()
            .map(|s| (*s, format!("127.0.0.1:{}", free_port())))
            .collect();

        let mut common: Vec<(String, String)> = vec![
            ("APP_ENV".into(), "development".into()),
            ("JWT_SECRET".into(), JWT_SECRET.into()),
            ("ADMIN_USERNAME".into(), ADMIN_USERNAME.into()),
            ("ADMIN_EMAIL".into(), ADMIN_EMAIL.into()),
            ("ADMIN_PASSWORD".into(), ADMIN_PASSWORD.into()),
            ("GRPC_REQUEST_TIMEOUT_MS".into(), "3000".into()),
            ("DB_CONNECT_WAIT_MS".into(), "20000".into()),
            ("NATS_CONNECT_WAIT_MS".into(), "20000".into()),
            // Generous limits so tests do not trip them by accident.
            ("RATE_LIMIT_LOGIN_PER_MINUTE".into(), "100000".into()),
            ("RATE_LIMIT_ORDERS_PER_MINUTE".into(), "100000".into()),
        ];
        common.extend(options.pg.service_env());
        common.extend(nats.service_env());
        for (service, db) in &dbs {
            common.push((
                format!("{}_DB_NAME", service.to_uppercase()),
                db.name.clone(),
            ));
        }
        for (service, addr) in &addrs {
            common.push((addr_var(service).into(), addr.clone()));
        }
        common.extend(options.env.iter().cloned());

        let mut env = BTreeMap::new();
        for service in SERVICES {
            let mut vars = common.clone();
            for (s, k, v) in &options.service_env {
                if *s == service {
                    vars.retain(|(key, _)| key != k);
                    vars.push((k.clone(), v.clone()));
                }
            }
            env.insert(service, vars);
        }

        let mut stack = Stack {
            addrs,
            processes: BTreeMap::new(),
            dbs,
            nats,
            env,
        };
        for service in &options.services {
            stack.spawn(service);
        }
        for service in &options.services {
            stack.wait_ready(service, options.startup_timeout).await;
        }
        stack
    }

    fn spawn(&mut self, service: &'static str) {
        let process = ServiceProcess::spawn(service, self.env[service].clone());
        self.processes.insert(service, process);
    }

    /// Waits until `service` reports healthy.
    pub async fn wait_ready(&mut self, service: &str, timeout: Duration) {
        let addr = self.addrs[service].clone();
        let process = self.processes.get_mut(service).expect("service started");
        if service == "gateway" {
            process.wait_http_ok(&addr, "/healthz", timeout).await;
        } else {
            process.wait_grpc_healthy(&addr, timeout).await;
        }
    }

    /// Stops every running service with SIGTERM, the gateway first so that
    /// nothing calls a service that is gone; how each one exited.
    pub async fn terminate_all(&mut self) -> Vec<(&'static str, std::process::ExitStatus)> {
        let mut exits = Vec::new();
        for service in SERVICES.iter().rev().copied() {
            if let Some(process) = self.processes.get_mut(service) {
                exits.push((service, process.terminate(Duration::from_secs(15)).await));
            }
        }
        exits
    }

    pub fn process(&mut self, service: &str) -> &mut ServiceProcess {
        self.processes
            .get_mut(service)
            .unwrap_or_else(|| panic!("{service} is not part of this stack"))
    }

    /// Where `service`'s `GET /metrics` answers.
    pub fn metrics_addr(&self, service: &str) -> &str {
        &self.processes[service].metrics_addr
    }

    pub fn addr(&self, service: &str) -> &str {
        &self.addrs[service]
    }

    /// `http://127.0.0.1:<port>` of the gateway.
    pub fn gateway_url(&self) -> String {
        format!("http://{}", self.addrs["gateway"])
    }

    /// `http://host:port` to dial a gRPC service.
    pub fn grpc_uri(&self, service: &str) -> String {
        format!("http://{}", self.addrs[service])
    }

    /// A channel to a service of the stack.
    pub async fn channel(&self, service: &str) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(self.grpc_uri(service))
            .unwrap()
            .timeout(Duration::from_secs(10))
            .connect_lazy()
    }

    /// kill -9 of one service.
    pub fn kill(&mut self, service: &str) {
        self.process(service).kill();
    }

    /// Starts a service again (same ports, databases and settings) and waits
    /// until it is healthy.
    pub async fn restart(&mut self, service: &str, timeout: Duration) {
        let process = self.process(service);
        if process.is_running() {
            process.kill();
        }
        process.restart();
        self.wait_ready(service, timeout).await;
    }

    /// Like [`Self::restart`] with variables changed for this start.
    pub async fn restart_with(
        &mut self,
        service: &str,
        changes: &[(&str, Option<&str>)],
        timeout: Duration,
    ) {
        let process = self.process(service);
        if process.is_running() {
            process.kill();
        }
        process.restart_with(changes);
        self.wait_ready(service, timeout).await;
    }

    /// The environment `service` was started with.
    pub fn env_of(&self, service: &str) -> &[(String, String)] {
        &self.env[service]
    }

    /// Starts another replica of a gRPC `service` (same databases, stream and
    /// settings, its own port) and waits until it is healthy. Returns the
    /// process, killed when dropped, and its `host:port`.
    pub async fn start_replica(
        &self,
        service: &'static str,
        timeout: Duration,
    ) -> (ServiceProcess, String) {
        let addr = format!("127.0.0.1:{}", free_port());
        let var = addr_var(service);
        let mut env = self.env[service].clone();
        env.retain(|(k, _)| k != var);
        env.push((var.to_owned(), addr.clone()));
        let mut process = ServiceProcess::spawn(service, env);
        process.wait_grpc_healthy(&addr, timeout).await;
        (process, addr)
    }
}
