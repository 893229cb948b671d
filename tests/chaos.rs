//! Chaos: two agents exchange messages through the relay while the relay
//! process is SIGKILLed and restarted several times and one agent's process
//! is SIGKILLed and restarted. At the end every message whose `send`
//! returned was delivered to the other application exactly once, no
//! message was delivered twice, and both outboxes are empty.
//!
//! The relay and the agents are this test binary itself, re-run in another
//! role (`CHAOS_ROLE`), so each is a real OS process that can be killed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use retalk::proto::client::{ClientConfig, ClientError, Store};
use retalk::relay::{open_store, Backend, Config};
use retalk::{Client, HttpTransport, RelayServer, SledStore, SqliteStore, SystemClock, UserId};

const MESSAGES: usize = 1500;
const DEADLINE: Duration = Duration::from_secs(150);

// ---------- roles ----------

fn role() -> Option<String> {
    std::env::var("CHAOS_ROLE").ok()
}

fn arg(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} not set"))
}

/// The relay role: serve until killed.
fn run_relay() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let backend = if arg("CHAOS_BACKEND") == "sled" {
            Backend::Sled
        } else {
            Backend::Sqlite
        };
        let config = Config {
            backend,
            db: PathBuf::from(arg("CHAOS_DB")),
            port: arg("CHAOS_PORT").parse().unwrap(),
            ..Config::local()
        };
        let server = RelayServer::start(&config, open_store(config.backend, &config.db).unwrap())
            .await
            .unwrap();
        println!("ready {}", server.url());
        std::future::pending::<()>().await;
    });
}

/// Appends a line and makes it durable.
fn append(path: &Path, line: &str) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    writeln!(f, "{line}").unwrap();
    f.sync_data().unwrap();
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|s| s.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The agent role: send `MESSAGES` numbered messages to the peer, receive
/// the peer's, keep logs, maintain; exit when everything is delivered.
fn run_agent() {
    let dir = PathBuf::from(arg("CHAOS_DIR"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match arg("CHAOS_BACKEND").as_str() {
        "sled" => rt.block_on(agent(SledStore::open(dir.join("id")).unwrap(), &dir)),
        _ => rt.block_on(agent(SqliteStore::open(dir.join("id")).unwrap(), &dir)),
    }
}

async fn agent<S: Store>(store: S, dir: &Path) {
    let me = arg("CHAOS_NAME");
    let transport = HttpTransport::builder(arg("CHAOS_URL"))
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let config = ClientConfig {
        resend_after: 1.0,
        max_backoff: 2.0,
        reseal_every: 3,
        ..ClientConfig::default()
    };
    let client = match Client::open(store, transport, SystemClock, "chaos-secret") {
        Ok(c) => c,
        Err(ClientError::NoIdentity) => unreachable!("identities are created by the test"),
        Err(e) => panic!("{e}"),
    }
    .with_config(config);
    let peer: UserId = arg("CHAOS_PEER").parse().unwrap();
    let intents = dir.join("intents.log"); // "i" before send
    let sent = dir.join("sent.log"); // "i" once send returned (committed)
    let received = dir.join("received.log"); // "text" per delivered message
    let confirmed: HashSet<usize> = lines(&sent).iter().map(|l| l.parse().unwrap()).collect();
    let started: HashSet<usize> = lines(&intents).iter().map(|l| l.parse().unwrap()).collect();
    let mut seen_ids: HashSet<String> = lines(&dir.join("received.ids")).into_iter().collect();
    let mut next = (0..MESSAGES)
        .find(|i| !started.contains(i))
        .unwrap_or(MESSAGES);
    let _ = confirmed;
    let mut last_maintain = Instant::now();
    let mut got_all_since: Option<Instant> = None;
    loop {
        if next < MESSAGES {
            append(&intents, &next.to_string());
            match client.send(&peer, &format!("{me}-{next}")).await {
                Ok(_) | Err(ClientError::NotDelivered { .. }) => {
                    append(&sent, &next.to_string());
                    next += 1;
                }
                // Nothing was committed (the relay was down before the
                // message was sealed): the same number again.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    // A fresh intent line for the same number is harmless.
                }
            }
        }
        match client.fetch().await {
            Ok(inbox) => {
                for p in inbox.problems {
                    append(
                        &dir.join("problems.log"),
                        &format!("{}: {}", p.from, p.reason),
                    );
                }
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
        client
            .take_messages(usize::MAX, |m| {
                // The application's own exactly-once: log each envelope id once.
                if !seen_ids.contains(&m.id) {
                    append(&received, &m.text);
                    append(&dir.join("received.ids"), &m.id);
                    seen_ids.insert(m.id.clone());
                }
                Ok::<_, retalk::ClientError>(())
            })
            .unwrap();
        if last_maintain.elapsed() > Duration::from_millis(700) || next >= MESSAGES {
            last_maintain = Instant::now();
            let _ = client.maintain().await;
        }
        let peer_done = lines(&received).len() >= MESSAGES;
        let outbox_empty = client.store().outbox().unwrap().is_empty();
        if next >= MESSAGES && outbox_empty && peer_done {
            // Linger so the peer gets our acks, then stop.
            let since = *got_all_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(3) {
                println!("done");
                return;
            }
        }
        if next >= MESSAGES {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

// ---------- the test ----------

struct Proc {
    child: Child,
}

impl Proc {
    fn spawn(envs: &[(&str, String)]) -> Proc {
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.args([
            "--exact",
            "chaos_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        for (k, v) in envs {
            c.env(k, v);
        }
        Proc {
            child: c.spawn().unwrap(),
        }
    }

    /// Waits for a line containing `word` (the test harness may print its
    /// own text before it on the same line).
    fn wait_line(&mut self, word: &str) {
        let mut reader = BufReader::new(self.child.stdout.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                reader.read_line(&mut line).unwrap() > 0,
                "child exited before printing {word}"
            );
            if line.contains(word) {
                // Keep draining in the background so the child never blocks.
                std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
                return;
            }
        }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    fn finished(&mut self) -> Option<bool> {
        self.child.try_wait().unwrap().map(|s| s.success())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The entry point of the child roles (does nothing in a normal run).
#[test]
fn chaos_child() {
    match role().as_deref() {
        Some("relay") => run_relay(),
        Some("agent") => run_agent(),
        _ => {}
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn create_identity(backend: &str, dir: &Path, name: &str) -> UserId {
    let info = match backend {
        "sled" => retalk::proto::client::create_identity(
            &SledStore::open(dir.join("id")).unwrap(),
            "chaos-secret",
            name,
        ),
        _ => retalk::proto::client::create_identity(
            &SqliteStore::open(dir.join("id")).unwrap(),
            "chaos-secret",
            name,
        ),
    };
    info.unwrap().user_id
}

fn outbox_len(backend: &str, dir: &Path) -> usize {
    match backend {
        "sled" => SledStore::open(dir.join("id"))
            .unwrap()
            .outbox()
            .unwrap()
            .len(),
        _ => SqliteStore::open(dir.join("id"))
            .unwrap()
            .outbox()
            .unwrap()
            .len(),
    }
}

fn chaos(backend: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let relay_env = vec![
        ("CHAOS_ROLE", "relay".to_owned()),
        ("CHAOS_BACKEND", backend.to_owned()),
        (
            "CHAOS_DB",
            tmp.path()
                .join(if backend == "sled" {
                    "relay.sled"
                } else {
                    "server.db"
                })
                .display()
                .to_string(),
        ),
        ("CHAOS_PORT", port.to_string()),
    ];
    let mut relay = Proc::spawn(&relay_env);
    relay.wait_line("ready");

    let dirs: Vec<PathBuf> = ["a", "b"].iter().map(|n| tmp.path().join(n)).collect();
    for d in &dirs {
        std::fs::create_dir_all(d).unwrap();
    }
    let ids = [
        create_identity(backend, &dirs[0], "a"),
        create_identity(backend, &dirs[1], "b"),
    ];
    let agent_env = |i: usize| {
        vec![
            ("CHAOS_ROLE", "agent".to_owned()),
            ("CHAOS_BACKEND", backend.to_owned()),
            ("CHAOS_DIR", dirs[i].display().to_string()),
            ("CHAOS_NAME", ["a", "b"][i].to_owned()),
            ("CHAOS_URL", url.clone()),
            ("CHAOS_PEER", ids[1 - i].to_string()),
        ]
    };
    let mut agents = [Proc::spawn(&agent_env(0)), Proc::spawn(&agent_env(1))];

    let start = Instant::now();
    let progress = |d: &Path| lines(&d.join("received.log")).len();
    // Kill the relay 4 times and agent a 3 times while traffic flows.
    for round in 0..4 {
        let target = (round + 1) * MESSAGES / 6;
        while progress(&dirs[0]) + progress(&dirs[1]) < target && start.elapsed() < DEADLINE {
            std::thread::sleep(Duration::from_millis(50));
        }
        relay.kill9();
        std::thread::sleep(Duration::from_millis(300));
        relay = Proc::spawn(&relay_env);
        relay.wait_line("ready");
        if round < 3 {
            agents[0].kill9();
            agents[0] = Proc::spawn(&agent_env(0));
        }
    }
    // Let them finish.
    loop {
        let done: Vec<_> = agents.iter_mut().map(|a| a.finished()).collect();
        if done.iter().all(|d| d.is_some()) {
            assert!(done.iter().all(|d| *d == Some(true)), "an agent failed");
            break;
        }
        if start.elapsed() > DEADLINE {
            for a in agents.iter_mut() {
                a.kill9();
            }
            panic!(
                "not delivered in time: a got {}, b got {}; outboxes {} and {}; problems a {:?} b {:?}",
                progress(&dirs[0]),
                progress(&dirs[1]),
                outbox_len(backend, &dirs[0]),
                outbox_len(backend, &dirs[1]),
                lines(&dirs[0].join("problems.log")),
                lines(&dirs[1].join("problems.log")),
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    for (i, d) in dirs.iter().enumerate() {
        let peer = &dirs[1 - i];
        let peer_name = ["b", "a"][i];
        let got = lines(&d.join("received.log"));
        let mut counts: HashMap<String, usize> = HashMap::new();
        for t in &got {
            *counts.entry(t.clone()).or_default() += 1;
        }
        let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "delivered twice: {twice:?}");
        let confirmed: HashSet<String> = lines(&peer.join("sent.log"))
            .iter()
            .map(|n| format!("{peer_name}-{n}"))
            .collect();
        let missing: Vec<_> = confirmed
            .iter()
            .filter(|t| !counts.contains_key(*t))
            .collect();
        assert!(missing.is_empty(), "lost: {missing:?}");
        assert_eq!(
            outbox_len(backend, d),
            0,
            "outbox of {} not empty",
            ["a", "b"][i]
        );
    }
    eprintln!(
        "chaos ({backend}): {} + {} messages delivered exactly once in {:.1}s through 4 relay kills and 3 agent kills",
        progress(&dirs[0]),
        progress(&dirs[1]),
        start.elapsed().as_secs_f64()
    );
}

#[test]
fn chaos_sqlite() {
    if role().is_some() {
        return;
    }
    chaos("sqlite");
}

#[test]
fn chaos_sled() {
    if role().is_some() {
        return;
    }
    chaos("sled");
}
