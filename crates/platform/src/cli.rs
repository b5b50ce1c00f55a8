//! The command line every service binary shares: `<service> [serve]` runs the
//! service, `<service> migrate` applies its migrations and exits (for a
//! Kubernetes Job before a rollout).

use std::future::Future;
use std::process::ExitCode;

/// What the binary was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Serve,
    Migrate,
}

fn parse(service: &str, mut args: impl Iterator<Item = String>) -> Result<Command, String> {
    let command = match args.next().as_deref() {
        None | Some("serve") => Command::Serve,
        Some("migrate") => Command::Migrate,
        Some("-h") | Some("--help") | Some("help") => {
            return Err(format!(
                "usage: {service} [serve|migrate]\n  serve    run the service (default)\n  migrate  apply database migrations and exit\nConfiguration comes from the environment or a .env file; see docs/configuration.md."
            ));
        }
        Some(other) => return Err(format!("unknown command {other:?}; try {service} --help")),
    };
    if let Some(extra) = args.next() {
        return Err(format!(
            "unexpected argument {extra:?}; try {service} --help"
        ));
    }
    Ok(command)
}

/// What a service's stop signal is: SIGTERM or SIGINT, boxed so that every
/// service's `serve` can be handed it.
pub type StopSignal = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// A service's settings: where it listens.
pub trait ServiceConfig: Sized {
    fn listen(&self) -> &crate::config::ServiceAddr;
}

/// What every service's `run` does with the command: reads the settings,
/// then `migrate` runs `migrate`; `serve` binds the service's address and
/// serves until SIGTERM or SIGINT.
pub async fn dispatch<C, M, MF, S, SF>(
    command: Command,
    config: fn(&crate::settings::Env) -> Result<C, crate::ConfigError>,
    migrate: M,
    serve: S,
) -> anyhow::Result<()>
where
    C: ServiceConfig,
    M: FnOnce(C) -> MF,
    MF: Future<Output = anyhow::Result<()>>,
    S: FnOnce(C, tokio::net::TcpListener, StopSignal) -> SF,
    SF: Future<Output = anyhow::Result<()>>,
{
    let config = config(&crate::settings::Env::process())?;
    match command {
        Command::Migrate => migrate(config).await,
        Command::Serve => {
            let listener = crate::service::bind(config.listen()).await?;
            serve(config, listener, Box::pin(crate::shutdown::signal())).await
        }
    }
}

/// Runs a service binary: loads `.env`, sets up telemetry, dispatches the
/// command and turns any error into a message and exit code 1.
pub fn main<F, Fut>(service: &'static str, run: F) -> ExitCode
where
    F: FnOnce(Command) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    crate::heap::limit_arenas();
    let command = match parse(service, std::env::args().skip(1)) {
        Ok(command) => command,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = crate::config::load_dotenv() {
        eprintln!("{service}: configuration error: {e}");
        return ExitCode::from(1);
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    match worker_threads(&crate::settings::Env::process()) {
        Ok(threads) => {
            builder.worker_threads(threads);
        }
        Err(e) => {
            eprintln!("{service}: configuration error: {e}");
            return ExitCode::from(1);
        }
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{service}: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        let telemetry = match crate::telemetry::init(service) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{service}: cannot set up telemetry: {e:#}");
                return ExitCode::from(1);
            }
        };
        crate::fault::announce();
        if command == Command::Serve {
            // Only a serving process makes and takes internal calls: `migrate`
            // (a Job before a rollout) needs no token.
            let env = crate::settings::Env::process();
            if let Err(e) = crate::config::AppEnv::from_env(&env)
                .and_then(|app_env| crate::internal_auth::init_from_env(&env, app_env))
            {
                eprintln!("{service}: configuration error: {e}");
                return ExitCode::from(1);
            }
            match crate::metrics::bind(service).await {
                Ok(listener) => {
                    tokio::spawn(crate::metrics::serve(listener));
                }
                Err(e) => {
                    tracing::error!("{service} failed: {e:#}");
                    eprintln!("{service}: {e:#}");
                    return ExitCode::from(1);
                }
            }
        }
        let result = run(command).await;
        drop(telemetry);
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{service} failed: {e:#}");
                eprintln!("{service}: {e:#}");
                if e.downcast_ref::<crate::db::SchemaAhead>().is_some() {
                    ExitCode::from(crate::db::SCHEMA_AHEAD_EXIT_CODE)
                } else {
                    ExitCode::from(1)
                }
            }
        }
    })
}

/// [`TOKIO_WORKER_THREADS`](crate::settings::TOKIO_WORKER_THREADS), checked
/// here so that a bad value is a configuration error; unset (or empty), one
/// per core the process may use. Always handed to the builder: Tokio left
/// to itself reads the variable again and panics on what it cannot parse,
/// an empty value included.
fn worker_threads(env: &crate::settings::Env) -> Result<usize, crate::ConfigError> {
    let setting = &crate::settings::TOKIO_WORKER_THREADS;
    if env.get(setting).is_none() {
        return Ok(std::thread::available_parallelism().map_or(1, usize::from));
    }
    env.at_least(setting, 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Env;

    fn args(list: &[&str]) -> impl Iterator<Item = String> {
        list.iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn commands() {
        assert_eq!(parse("x", args(&[])).unwrap(), Command::Serve);
        assert_eq!(parse("x", args(&["serve"])).unwrap(), Command::Serve);
        assert_eq!(parse("x", args(&["migrate"])).unwrap(), Command::Migrate);
        assert!(parse("x", args(&["bogus"])).is_err());
        assert!(parse("x", args(&["migrate", "extra"])).is_err());
    }

    #[test]
    fn worker_threads_default_to_the_cores_and_reject_what_tokio_would_panic_on() {
        let threads = |value: &str| worker_threads(&Env::of([("TOKIO_WORKER_THREADS", value)]));
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(worker_threads(&Env::of::<&str, &str>([])).unwrap(), cores);
        assert_eq!(threads("").unwrap(), cores);
        assert_eq!(threads("1").unwrap(), 1);
        assert_eq!(threads(" 4 ").unwrap(), 4);
        for bad in ["0", "-1", "two"] {
            let error = threads(bad).unwrap_err().to_string();
            assert!(error.contains("TOKIO_WORKER_THREADS"), "{bad}: {error}");
        }
    }
}
