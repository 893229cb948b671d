//! `retalk-relay`: run a relay.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use retalk_relay::errors::{self, StartError};
use retalk_relay::store::redact_url;
use retalk_relay::{open_storage, Backend, Config, ConfigError, RelayServer};

/// The default log filter: warnings, except the connection pool's own
/// per-attempt lines during a database outage (the relay logs each outage
/// once per burst itself, see `watched.rs`).
const DEFAULT_LOG: &str = "warn,deadpool=error";

fn main() -> ExitCode {
    let env: HashMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let config = match Config::from_args_env(std::env::args_os(), &env) {
        Ok(c) => c,
        Err(ConfigError::Cli(e)) => e.exit(),
        Err(e) => {
            eprintln!("retalk-relay: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG)),
        )
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal, not in a log file.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(64)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("retalk-relay: {}", StartError::Runtime(e));
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(config));
    // Dropping the runtime waits for store calls still running, so the
    // store is closed cleanly before exit.
    drop(runtime);
    match result {
        Ok(()) => {
            eprintln!("{}", errors::STOPPED);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("retalk-relay: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), StartError> {
    let storage = open_storage(&config).await?;
    let server = RelayServer::start(&config, storage).await?;
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", errors::listening_line(&server.local_addr()));
        let _ = writeln!(out, "{}", errors::audiences_line(server.audiences()));
        let _ = writeln!(
            out,
            "{}",
            match (config.backend, &config.database_url) {
                (Backend::Postgres, Some(url)) => errors::backend_line(
                    config.backend.name(),
                    std::path::Path::new(&redact_url(url)),
                    true
                ),
                _ => errors::backend_line(
                    config.backend.name(),
                    &config.db,
                    config.backend != Backend::Memory
                ),
            }
        );
        let _ = out.flush();
    }
    stop_signal().await;
    eprintln!("{}", errors::SHUTTING_DOWN);
    server.shutdown().await;
    Ok(())
}

/// SIGINT (Ctrl-C) or SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
