//! A cached Python virtualenv with a given `retalk` from PyPI, for tests
//! that check us against the real Python package: its files, its library,
//! its CLI and its relay.
//!
//! The venv lives in the cargo target directory (`target/pyenv-001` for
//! `retalk==0.0.1`), is built once (a file lock keeps parallel tests from
//! building it twice) and reused while it imports the right version. When
//! it cannot be built (no `python3`, PyPI unreachable) the calling test
//! fails with the reason: these tests are never skipped silently.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

fn imports(python: &Path, version: &str) -> bool {
    let check = format!(
        "import importlib.metadata as m, retalk, vodozemac; \
         assert m.version('retalk') == '{version}'"
    );
    Command::new(python)
        .args(["-c", &check])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The venv's `python` with `retalk==version` installed.
pub fn python_with_retalk(version: &str) -> PathBuf {
    let tag: String = version.chars().filter(|c| c.is_ascii_digit()).collect();
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
    if imports(&python, version) {
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
            &format!("retalk=={version}"),
        ])
        .output()
        .unwrap();
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&venv);
        panic!(
            "could not install retalk=={version} from PyPI into {}.\n\
             These interop tests need PyPI once (the venv is cached afterwards); \
             check the network or pip's configuration.\n{}",
            venv.display(),
            describe(&out)
        );
    }
    assert!(
        imports(&python, version),
        "retalk=={version} installed into {} but does not import",
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
