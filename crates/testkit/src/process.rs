use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// A TCP port that was free a moment ago on 127.0.0.1, never the same one
/// twice in this test process (the kernel may hand a just-released port out
/// again, and a stack asks for several at once).
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

/// The path of a workspace binary, next to the running test's own directory
/// (`target/<profile>/<name>`). `make test` builds every binary first.
pub fn bin_path(name: &str) -> PathBuf {
    if let Ok(dir) = std::env::var("SERVICE_BIN_DIR") {
        return Path::new(&dir).join(name);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/debug/deps/<test> -> target/debug/<name>
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run `cargo build --workspace --bins` (make test does)",
        path.display()
    );
    path
}

/// A real service binary running in its own process group, with its output in
/// a log file. Dropping it kills the whole group.
pub struct ServiceProcess {
    pub name: String,
    child: Option<Child>,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log_path: PathBuf,
    /// Where its `GET /metrics` answers (`METRICS_PORT`).
    pub metrics_addr: String,
    _dir: tempfile::TempDir,
}

impl ServiceProcess {
    /// Starts `bin` (a workspace binary name) with exactly `env` on top of a
    /// clean environment (PATH and HOME kept), in an empty working directory
    /// so that no `.env` file is read by accident.
    pub fn spawn(bin: &str, env: Vec<(String, String)>) -> ServiceProcess {
        Self::spawn_with_args(bin, &[], env)
    }

    pub fn spawn_with_args(
        bin: &str,
        args: &[&str],
        mut env: Vec<(String, String)>,
    ) -> ServiceProcess {
        // Each process's metrics on a port of its own (kept across restarts).
        let metrics_port = match env.iter().find(|(k, _)| k == "METRICS_PORT") {
            Some((_, port)) => port.parse().expect("METRICS_PORT is a port"),
            None => {
                let port = free_port();
                env.push(("METRICS_PORT".into(), port.to_string()));
                port
            }
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let log_path = dir.path().join(format!("{bin}.log"));
        let mut process = ServiceProcess {
            name: bin.to_owned(),
            child: None,
            program: bin_path(bin),
            args: args.iter().map(|a| a.to_string()).collect(),
            env,
            log_path,
            metrics_addr: format!("127.0.0.1:{metrics_port}"),
            _dir: dir,
        };
        process.start();
        process
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("log file");
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", std::env::var("HOME").unwrap_or_default())
            .env("RUST_BACKTRACE", "1")
            .current_dir(self._dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .process_group(0);
        if std::env::var("RUST_LOG").is_err() {
            command.env("RUST_LOG", "info");
        }
        for (k, v) in &self.env {
            command.env(k, v);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program.display()));
        self.child = Some(child);
    }

    /// Starts the binary again, with the same arguments and environment, after
    /// it stopped or was killed.
    pub fn restart(&mut self) {
        assert!(!self.is_running(), "{} is still running", self.name);
        self.start();
    }

    /// Like [`Self::restart`] with some variables changed (e.g. a fault point
    /// removed).
    pub fn restart_with(&mut self, changes: &[(&str, Option<&str>)]) {
        for (key, value) in changes {
            self.env.retain(|(k, _)| k != key);
            if let Some(v) = value {
                self.env.push((key.to_string(), v.to_string()));
            }
        }
        self.restart();
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The exit status, if the process has exited.
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    fn signal_group(&self, signal: Signal) {
        if let Some(pid) = self.pid() {
            let _ = killpg(Pid::from_raw(pid as i32), signal);
        }
    }

    /// Sends SIGTERM and waits (up to `timeout`) for the exit status.
    pub async fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.signal_group(Signal::SIGTERM);
        self.wait_exit(timeout).await
    }

    /// Waits for the process to exit by itself (e.g. after a fault point).
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit_status() {
                return status;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{} did not exit within {timeout:?}\n{}",
                    self.name,
                    self.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// kill -9 of the whole process group, and reaps it.
    pub fn kill(&mut self) {
        self.signal_group(Signal::SIGKILL);
        if let Some(child) = self.child.as_mut() {
            let _ = child.wait();
        }
    }

    /// Freezes the process (SIGSTOP): it keeps its sockets but answers nothing.
    pub fn freeze(&self) {
        self.signal_group(Signal::SIGSTOP);
    }

    /// Resumes a frozen process (SIGCONT).
    pub fn thaw(&self) {
        self.signal_group(Signal::SIGCONT);
    }

    /// Everything the process wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        let start = all.len().saturating_sub(lines);
        format!(
            "--- last lines of {} ---\n{}",
            self.name,
            all[start..].join("\n")
        )
    }

    /// Waits until the gRPC health service at `addr` (host:port) answers
    /// SERVING, failing early when the process exits.
    pub async fn wait_grpc_healthy(&mut self, addr: &str, timeout: Duration) {
        use tonic_health::pb::health_check_response::ServingStatus;
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
        let deadline = tokio::time::Instant::now() + timeout;
        let uri = format!("http://{addr}");
        loop {
            if let Some(status) = self.try_exit_status() {
                panic!(
                    "{} exited early with {status}\n{}",
                    self.name,
                    self.log_tail(60)
                );
            }
            if let Ok(channel) = tonic::transport::Endpoint::from_shared(uri.clone())
                .unwrap()
                .connect_timeout(Duration::from_millis(500))
                .timeout(Duration::from_secs(1))
                .connect()
                .await
            {
                let mut client = HealthClient::new(channel);
                let response = client
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await;
                if response.is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32) {
                    return;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{} not healthy at {addr} within {timeout:?}\n{}",
                    self.name,
                    self.log_tail(60)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `GET path` on the HTTP server at `addr` answers 200.
    pub async fn wait_http_ok(&mut self, addr: &str, path: &str, timeout: Duration) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit_status() {
                panic!(
                    "{} exited early with {status}\n{}",
                    self.name,
                    self.log_tail(60)
                );
            }
            if let Ok(Ok(mut stream)) =
                tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr))
                    .await
            {
                let request =
                    format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
                if stream.write_all(request.as_bytes()).await.is_ok() {
                    let mut buf = Vec::new();
                    let _ =
                        tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut buf))
                            .await;
                    if buf.starts_with(b"HTTP/1.1 200") {
                        return;
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{} did not answer 200 on {path} within {timeout:?}\n{}",
                    self.name,
                    self.log_tail(60)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var("TESTKIT_SHOW_LOGS").is_ok() {
            eprintln!("{}", self.log_tail(80));
        }
        // A frozen process must be thawed to die of SIGKILL promptly on some
        // kernels; SIGKILL works on stopped processes on Linux, but be explicit.
        self.signal_group(Signal::SIGCONT);
        self.kill();
    }
}
