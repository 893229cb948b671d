//! 0.3.0-style users for the group and invite tests: each has its own
//! `RETALK_HOME`, is selected by `RETALK_USER`, unlocked by
//! `RETALK_PASSPHRASE` and pointed at a loopback relay by `RETALK_RELAY`;
//! the caller's environment is cleared.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use retalk_testkit::python::{describe, venv_bin};
use serde_json::Value;

/// One identity driven through a `retalk` program (Python 0.3.0's or ours).
#[derive(Clone)]
pub struct Agent {
    pub program: PathBuf,
    pub path: String,
    pub home: PathBuf,
    pub name: String,
    pub relay: String,
    pub python: bool,
    /// The user id, once `init` ran.
    pub id: String,
}

impl Agent {
    fn new(program: &Path, path: String, root: &Path, name: &str, relay: &str) -> Agent {
        let home = root.join(format!("{name}-home"));
        std::fs::create_dir_all(&home).unwrap();
        std::fs::write(
            home.join("config.json"),
            format!("{}\n", serde_json::json!({ "relay": relay })),
        )
        .unwrap();
        Agent {
            program: program.to_path_buf(),
            path,
            home,
            name: name.into(),
            relay: relay.into(),
            python: false,
            id: String::new(),
        }
    }

    /// A Python 0.3.0 user (`python` from `python_with_retalk("0.3.0")`),
    /// initialised.
    pub fn python(python: &Path, root: &Path, name: &str, relay: &str) -> Agent {
        let bin = venv_bin(python);
        let path = format!("{}:/usr/bin:/bin", bin.display());
        let mut a = Agent::new(&bin.join("retalk"), path, root, name, relay);
        a.python = true;
        a.init();
        a
    }

    /// A user of our binary, initialised.
    pub fn ours(root: &Path, name: &str, relay: &str) -> Agent {
        let mut a = Agent::new(
            Path::new(env!("CARGO_BIN_EXE_retalk")),
            "/usr/bin:/bin".into(),
            root,
            name,
            relay,
        );
        a.init();
        a
    }

    /// Our binary on this (Python) user's folder, as a user who switches
    /// would run it.
    pub fn ours_on_same_folder(&self) -> Agent {
        Agent {
            program: env!("CARGO_BIN_EXE_retalk").into(),
            path: "/usr/bin:/bin".into(),
            python: false,
            ..self.clone()
        }
    }

    fn init(&mut self) {
        self.id = self.ok(&["init"]).trim().to_owned();
        assert_eq!(self.id.len(), 32, "{}", self.id);
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.program);
        c.args(args)
            .current_dir(&self.home)
            .env_clear()
            .env("PATH", &self.path)
            .env("HOME", &self.home)
            .env("PYTHONUTF8", "1")
            .env("RETALK_HOME", &self.home)
            .env("RETALK_USER", &self.name)
            .env("RETALK_PASSPHRASE", format!("passphrase of {}", self.name))
            .env("RETALK_RELAY", &self.relay)
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
            "{} {args:?} failed:\n{}",
            self.name,
            describe(&out)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and requires exit status `code`; returns (stdout, stderr).
    pub fn fails(&self, args: &[&str], code: i32) -> (String, String) {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{} {args:?}:\n{}",
            self.name,
            describe(&out)
        );
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }

    /// Saves `other` as a contact under its name.
    pub fn add(&self, other: &Agent) {
        self.ok(&["add", &other.id, "--peer", &other.name]);
    }

    /// `receive --all`: every JSON line.
    pub fn receive(&self) -> Vec<Value> {
        lines(&self.ok(&["receive", "--all"]))
    }

    /// `group list --json`.
    pub fn groups(&self) -> Vec<Value> {
        lines(&self.ok(&["group", "list", "--json"]))
    }

    /// The sorted member ids of the group `name` as `group list --json`
    /// shows them (Python lists itself in adopted rosters; ours never).
    pub fn members(&self, name: &str) -> Vec<String> {
        let g = self
            .groups()
            .into_iter()
            .find(|g| g["name"] == name)
            .unwrap_or_else(|| panic!("{} has no group {name}", self.name));
        let mut m: Vec<String> = g["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .filter(|m| *m != self.id)
            .collect();
        m.sort();
        m
    }
}

/// Every line of `out` as JSON.
pub fn lines(out: &str) -> Vec<Value> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The sorted ids of `agents`.
pub fn ids(agents: &[&Agent]) -> Vec<String> {
    let mut v: Vec<String> = agents.iter().map(|a| a.id.clone()).collect();
    v.sort();
    v
}
