//! Running the `retalk` binary against relays on loopback.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use retalk_relay::{open_store, Backend, Config, RelayServer};

pub const SECRET: &str = "correct horse";

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
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let db = dir.join("server.db");
        let config = Config {
            backend: Backend::Sqlite,
            db: db.clone(),
            port,
            ..Config::local()
        };
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

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on `port`.
pub fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The Python relay (`retalk-server` of a venv) on a free port.
pub struct PythonRelay {
    pub child: Child,
    pub url: String,
}

impl PythonRelay {
    pub fn start(python: &Path, dir: &Path) -> PythonRelay {
        let port = free_port();
        let child = Command::new(retalk_testkit::python::venv_bin(python).join("retalk-server"))
            .current_dir(dir)
            .env("SERVER_DB", dir.join("py-server.db"))
            .env("SERVER_HOST", "127.0.0.1")
            .env("SERVER_PORT", port.to_string())
            .env("RETALK_SERVER_DB", dir.join("py-server.db"))
            .env("RETALK_SERVER_HOST", "127.0.0.1")
            .env("RETALK_SERVER_PORT", port.to_string())
            .env_remove("SERVER_AUDIENCE")
            .env_remove("RETALK_SERVER_AUDIENCE")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(port);
        PythonRelay {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for PythonRelay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A command-line user: runs a `retalk` binary (ours or Python's) in a
/// sandbox: its own XDG data home, no inherited retalk variables.
pub struct Cli {
    pub exe: PathBuf,
    pub home: PathBuf,
    pub secret: String,
}

impl Cli {
    pub fn ours(home: &Path) -> Cli {
        Cli {
            exe: PathBuf::from(env!("CARGO_BIN_EXE_retalk")),
            home: home.to_path_buf(),
            secret: SECRET.into(),
        }
    }

    pub fn python(python: &Path, home: &Path) -> Cli {
        Cli {
            exe: retalk_testkit::python::venv_bin(python).join("retalk"),
            home: home.to_path_buf(),
            secret: SECRET.into(),
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.exe);
        c.args(args)
            .current_dir(&self.home)
            .env("XDG_DATA_HOME", self.home.join("xdg"))
            .env("HOME", &self.home)
            .env("PICKLE_SECRET", &self.secret)
            .env_remove("STORE")
            .env_remove("SERVER_URL")
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs and requires success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "retalk {args:?} failed:\n{}",
            retalk_testkit::python::describe(&out)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and requires exit status `code`; returns stderr.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "retalk {args:?}:\n{}",
            retalk_testkit::python::describe(&out)
        );
        String::from_utf8(out.stderr).unwrap()
    }
}
