//! A cached Python virtualenv with a given `retalk` from PyPI, for tests
//! that check us against the real Python package: its files, its library,
//! its CLI and its relay.
//!
//! The venv lives in the cargo target directory (`target/pyenv-001` for
//! `retalk==0.0.1`), is built once (a file lock keeps parallel tests from
//! building it twice) and reused while it imports the right version. When
//! it cannot be built (no `python3`, PyPI unreachable) the calling test
//! fails with the reason: these tests are never skipped silently.
//!
//! Also here, for the interop tests of every crate: the Python relay on a
//! free port ([`PythonRelay`]) and a sandboxed command-line user ([`Cli`])
//! running the Python `retalk` or ours; and signalling a child process and
//! waiting for it to exit ([`signal`], [`wait_exit`]).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use fs4::fs_std::FileExt;

/// The cargo target directory: the venvs are cached there, so `cargo
/// clean` drops them and a fresh checkout builds them once.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    // This crate lives one level below the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .join("target")
}

/// A command's outcome, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "exit status {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn imports(python: &Path, check: &str) -> bool {
    Command::new(python)
        .args(["-c", check])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The venv's `python` with `retalk==version` installed.
pub fn python_with_retalk(version: &str) -> PathBuf {
    let tag: String = version.chars().filter(|c| c.is_ascii_digit()).collect();
    let check = format!(
        "import importlib.metadata as m, retalk, vodozemac; \
         assert m.version('retalk') == '{version}'"
    );
    venv_with(&tag, &format!("retalk=={version}"), &check)
}

/// The official MCP Python SDK version the MCP server is tested with.
pub const MCP_VERSION: &str = "2.3.0";

/// The venv's `python` with the official MCP Python SDK (`mcp` from PyPI,
/// [`MCP_VERSION`]): a real MCP client for `retalk mcp`'s tests.
pub fn python_with_mcp() -> PathBuf {
    let check =
        format!("import importlib.metadata as m, mcp; assert m.version('mcp') == '{MCP_VERSION}'");
    venv_with("mcp", &format!("mcp=={MCP_VERSION}"), &check)
}

/// The venv `target/pyenv-{tag}` with `requirement` installed from PyPI,
/// built once (under a file lock) and reused while `check` runs in it.
fn venv_with(tag: &str, requirement: &str, check: &str) -> PathBuf {
    let target = target_dir();
    std::fs::create_dir_all(&target).unwrap();
    let venv = target.join(format!("pyenv-{tag}"));
    let python = venv.join("bin").join("python");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(target.join(format!("pyenv-{tag}.lock")))
        .unwrap();
    FileExt::lock_exclusive(&lock).unwrap();
    if imports(&python, check) {
        return python;
    }
    let _ = std::fs::remove_dir_all(&venv);
    let system_python = std::env::var("RETALK_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&system_python)
        .args(["-m", "venv"])
        .arg(&venv)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run `{system_python} -m venv` to build the Python test venv: {e}")
        });
    assert!(
        out.status.success(),
        "`{system_python} -m venv {}` failed:\n{}",
        venv.display(),
        describe(&out)
    );
    let out = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--quiet",
            requirement,
        ])
        .output()
        .unwrap();
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&venv);
        panic!(
            "could not install {requirement} from PyPI into {}.\n\
             These tests need PyPI once (the venv is cached afterwards); \
             check the network or pip's configuration.\n{}",
            venv.display(),
            describe(&out)
        );
    }
    assert!(
        imports(&python, check),
        "{requirement} installed into {} but does not import",
        venv.display()
    );
    python
}

/// The venv's `bin/` folder (its `retalk` and `retalk-server` commands).
pub fn venv_bin(python: &Path) -> PathBuf {
    python.parent().unwrap_or(Path::new(".")).to_path_buf()
}

/// Runs a Python script (given as text) with arguments; panics with its
/// output unless it succeeds; returns its stdout.
pub fn run_python(python: &Path, script: &str, args: &[&Path]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("script.py");
    std::fs::write(&file, script).unwrap();
    let out = Command::new(python)
        .arg(&file)
        .args(args)
        // Nothing of the caller's environment steers the package.
        .env_remove("SERVER_DB")
        .env_remove("SERVER_PORT")
        .env_remove("SERVER_AUDIENCE")
        .env_remove("RETALK_SERVER_DB")
        .env_remove("RETALK_SERVER_AUDIENCE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the Python script failed:\n{}",
        describe(&out)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on `port` (at most `within`).
pub fn wait_for_port(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The Python relay (`retalk-server` of a venv) on a free port, its
/// database in `dir`; killed on drop.
pub struct PythonRelay {
    pub child: Child,
    pub url: String,
}

impl PythonRelay {
    pub fn start(python: &Path, dir: &Path) -> PythonRelay {
        let port = free_port();
        let db = dir.join("py-server.db");
        // Both generations' variable names; no audience from the caller.
        let child = Command::new(venv_bin(python).join("retalk-server"))
            .current_dir(dir)
            .env("SERVER_DB", &db)
            .env("SERVER_HOST", "127.0.0.1")
            .env("SERVER_PORT", port.to_string())
            .env("RETALK_SERVER_DB", &db)
            .env("RETALK_SERVER_HOST", "127.0.0.1")
            .env("RETALK_SERVER_PORT", port.to_string())
            .env_remove("SERVER_AUDIENCE")
            .env_remove("RETALK_SERVER_AUDIENCE")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(port, Duration::from_secs(30));
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

/// The `PICKLE_SECRET` a [`Cli`] user unlocks its identities with.
pub const SECRET: &str = "correct horse";

/// A command-line user: runs a `retalk` binary (ours or Python's 0.0.1) in
/// a sandbox: its own XDG data home, no inherited `STORE` or `SERVER_URL`
/// (unless set again in `env`).
pub struct Cli {
    pub exe: PathBuf,
    pub home: PathBuf,
    pub secret: String,
    /// Variables set last, over the sandbox's.
    pub env: Vec<(String, String)>,
}

impl Cli {
    pub fn new(exe: &Path, home: &Path) -> Cli {
        Cli {
            exe: exe.to_path_buf(),
            home: home.to_path_buf(),
            secret: SECRET.into(),
            env: Vec::new(),
        }
    }

    /// The venv's Python `retalk`.
    pub fn python(python: &Path, home: &Path) -> Cli {
        Cli::new(&venv_bin(python).join("retalk"), home)
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
            .envs(self.env.iter().map(|(k, v)| (k, v)))
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
            describe(&out)
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
            describe(&out)
        );
        String::from_utf8(out.stderr).unwrap()
    }
}

/// Sends `sig` (as `kill` spells it: `-TERM`, `-INT`) to `child`.
pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "kill {sig} {}", child.id());
}

/// Waits until `child` exits, at most `within`; returns its status.
pub fn wait_exit(child: &mut Child, within: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            start.elapsed() < within,
            "process {} did not stop within {within:?}",
            child.id()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
