//! A private PostgreSQL cluster for tests and benchmarks, started by the
//! test itself: `initdb` in a temporary directory, the server on a free
//! loopback port, stopped (and the directory removed) when the [`Cluster`]
//! is dropped — or, for the cluster shared by a whole test binary
//! ([`Cluster::shared`]), when that process exits.
//!
//! No test assumes a running database. The server binaries are found on
//! `PATH` or under `/usr/lib/postgresql/*/bin` (Debian's layout; `.ci/run`
//! installs the `postgresql` package when `initdb` is missing). PostgreSQL
//! refuses to run as root, so as root every server command runs as the
//! `postgres` user (via `runuser`) on a directory handed to that user.
//!
//! Why a watchdog: a static (the shared cluster) is never dropped, and a
//! test that panics with `panic = abort` drops nothing either. Every
//! cluster therefore gets a small shell process that polls for its owner
//! (this test process) and, once it is gone, stops the server and removes
//! its directory. A cluster dropped normally stops at once.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Server settings for a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `fsync` off: for correctness tests, where a crash of the machine is
    /// not what is tested and speed matters.
    Fast,
    /// The server's defaults (every commit flushed): for benchmarks that
    /// compare against the fsynced SQLite relay.
    Durable,
}

/// A running private PostgreSQL server.
pub struct Cluster {
    bin: PathBuf,
    /// Holds `data/` (the cluster), the socket and the server's log.
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
    watchdog: Option<Child>,
    next_db: AtomicU32,
    durability: Durability,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("dir", &self.dir)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// Where `initdb`, `pg_ctl`, `createdb` live: the directory of the real
/// `initdb` (on `PATH` it may be a symlink into Debian's versioned
/// directory, which alone holds all of them), else the newest
/// `/usr/lib/postgresql/*/bin`.
pub fn bin_dir() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("initdb"))
            .find(|p| p.is_file())
    });
    if let Some(dir) = on_path
        .and_then(|p| std::fs::canonicalize(p).ok())
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .filter(|d| d.join("pg_ctl").is_file() && d.join("createdb").is_file())
    {
        return Some(dir);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").is_file())
        .collect();
    found.sort();
    found.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

impl Cluster {
    /// Starts a fresh cluster (fsync off).
    pub fn start() -> Cluster {
        Self::start_with(Durability::Fast)
    }

    /// Starts a fresh cluster with the given durability. Panics with the
    /// reason when PostgreSQL is missing or does not start: a test that
    /// needs a database fails, never skips.
    pub fn start_with(durability: Durability) -> Cluster {
        let bin = bin_dir().expect(
            "PostgreSQL server binaries not found (initdb on PATH or under \
             /usr/lib/postgresql/*/bin); install the `postgresql` package",
        );
        let dir = tempfile::Builder::new()
            .prefix("retalk-pg-")
            .tempdir()
            .expect("temporary directory")
            .keep();
        let as_postgres = is_root();
        if as_postgres {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(ok, "could not hand {} to the postgres user", dir.display());
        }
        let mut cluster = Cluster {
            bin,
            port: free_port(),
            dir,
            as_postgres,
            watchdog: None,
            next_db: AtomicU32::new(0),
            durability,
        };
        cluster.watchdog = Some(cluster.spawn_watchdog());
        let data = cluster.data_dir();
        let out = cluster
            .server_cmd("initdb")
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
            .arg("-D")
            .arg(&data)
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            crate::python::describe(&out)
        );
        cluster.start_server();
        cluster
    }

    /// One cluster for the whole test binary, started on first use and
    /// stopped when the process exits (by its watchdog). Tests take a fresh
    /// database each ([`create_database`](Self::create_database)).
    pub fn shared() -> &'static Cluster {
        static SHARED: OnceLock<Cluster> = OnceLock::new();
        SHARED.get_or_init(Cluster::start)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The server's log file (for a failing test's message).
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A server-side command (`initdb`, `pg_ctl`), as the `postgres` user
    /// when we are root.
    fn server_cmd(&self, name: &str) -> Command {
        let program = self.bin.join(name);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        cmd.stdin(Stdio::null());
        cmd
    }

    fn spawn_watchdog(&self) -> Child {
        let pg_ctl = self.bin.join("pg_ctl");
        let stop = if self.as_postgres {
            format!(
                "runuser -u postgres -- '{}' -D '{}' -m immediate stop",
                pg_ctl.display(),
                self.data_dir().display()
            )
        } else {
            format!(
                "'{}' -D '{}' -m immediate stop",
                pg_ctl.display(),
                self.data_dir().display()
            )
        };
        let script = format!(
            "while kill -0 {owner} 2>/dev/null; do sleep 1; done; \
             {stop} >/dev/null 2>&1; rm -rf '{dir}'",
            owner = std::process::id(),
            dir = self.dir.display()
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the cluster's watchdog")
    }

    /// Starts the server (again, after [`stop_server`](Self::stop_server))
    /// on the same port and data, and waits until it accepts connections.
    pub fn start_server(&self) {
        let fsync = match self.durability {
            Durability::Fast => "-c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            Durability::Durable => "",
        };
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{dir}' \
             -c max_connections=300 {fsync}",
            port = self.port,
            dir = self.dir.display(),
        );
        let out = self
            .server_cmd("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_file())
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .output()
            .expect("run pg_ctl start");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n--- server log ---\n{}",
            crate::python::describe(&out),
            std::fs::read_to_string(self.log_file()).unwrap_or_default()
        );
    }

    /// Stops the server (fast shutdown: connections are cut, committed
    /// data kept). Databases and data stay for a later start.
    pub fn stop_server(&self) {
        let _ = self
            .server_cmd("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "fast", "-w", "-t", "60", "stop"])
            .output();
    }

    /// The URL of database `name` on this cluster.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates a new, empty database and returns its URL.
    pub fn create_database(&self) -> String {
        let n = self.next_db.fetch_add(1, Ordering::Relaxed);
        let name = format!("retalk_{n}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new(self.bin.join("createdb"))
                .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
                .arg(self.port.to_string())
                .arg(&name)
                .stdin(Stdio::null())
                .output()
                .expect("run createdb");
            if out.status.success() {
                return self.url(&name);
            }
            // CREATE DATABASE copies template1 and refuses while another
            // copy is running: retry a moment later.
            let busy = String::from_utf8_lossy(&out.stderr).contains("being accessed");
            assert!(
                busy && Instant::now() < deadline,
                "createdb failed: {}",
                crate::python::describe(&out)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The data directory's parent (for inspection in a failing test).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .server_cmd("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}
