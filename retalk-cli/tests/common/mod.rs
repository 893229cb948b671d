//! Running the `retalk` binary against relays on loopback.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod agent030;

use std::path::{Path, PathBuf};

use retalk_relay::{open_store, Backend, Config, RelayServer};
#[allow(unused_imports)] // each test file uses a part
pub use retalk_testkit::python::{
    describe, free_port, signal, wait_exit, Cli, PythonRelay, SECRET,
};

/// Our relay, in-process on an SQLite file, serving real HTTP.
pub struct OurRelay {
    pub runtime: tokio::runtime::Runtime,
    pub server: Option<RelayServer>,
    pub url: String,
    pub db: PathBuf,
}

impl OurRelay {
    pub fn start(dir: &Path) -> OurRelay {
        Self::start_on(dir, 0)
    }

    /// On a given port (0: a free one).
    pub fn start_on(dir: &Path, port: u16) -> OurRelay {
        Self::start_with(dir, |c| c.port = port)
    }

    /// With settings changed by `tune` (as the relay's flags would).
    pub fn start_with(dir: &Path, tune: impl FnOnce(&mut Config)) -> OurRelay {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let db = dir.join("server.db");
        let mut config = Config {
            backend: Backend::Sqlite,
            db: db.clone(),
            port: 0,
            ..Config::local()
        };
        tune(&mut config);
        let server = runtime.block_on(async {
            RelayServer::start(&config, open_store(config.backend, &config.db).unwrap())
                .await
                .unwrap()
        });
        let url = server.url().to_owned();
        OurRelay {
            runtime,
            server: Some(server),
            url,
            db,
        }
    }

    /// Runs SQL on the relay's database, as an operator with sqlite3 would.
    pub fn sql(&self, sql: &str) {
        rusqlite::Connection::open(&self.db)
            .unwrap()
            .execute_batch(sql)
            .unwrap();
    }

    pub fn count(&self, table: &str) -> i64 {
        rusqlite::Connection::open(&self.db)
            .unwrap()
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }
}

impl Drop for OurRelay {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.runtime.block_on(server.shutdown());
        }
    }
}

/// Our `retalk` binary as a [`Cli`] user: `Cli::ours(home)`.
pub trait Ours {
    fn ours(home: &Path) -> Cli;
}

impl Ours for Cli {
    fn ours(home: &Path) -> Cli {
        Cli::new(Path::new(env!("CARGO_BIN_EXE_retalk")), home)
    }
}

/// `retalk init DIR --name NAME --server URL`; returns the new user id.
pub fn init(cli: &Cli, dir: &str, name: &str, url: &str) -> String {
    cli.ok(&["init", dir, "--name", name, "--server", url])
        .trim()
        .to_owned()
}
