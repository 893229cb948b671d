//! The multi-node test: three `retalk-relay` binaries on one PostgreSQL
//! database (a private cluster this test starts), three of our clients
//! and the real Python 0.0.1 and 0.3.0 clients spread over them, each of
//! the five writing to each of the four others (3,000 messages in all).
//! A third of the way in, one node is SIGKILLed and restarted on the same
//! port; its clients see connection errors and recover through their
//! outbox. Meanwhile three raw clients drain a key owner's one-time keys
//! through the three nodes (across the kill, with a re-upload of the same
//! ids while the node is down).
//!
//! At the end: every message reached its recipient's application exactly
//! once (each (recipient, sender, text) seen once, nothing missing, nothing
//! extra), every outbox is empty (ours, and the Python users' `outbox`
//! tables), and no one-time key was handed out twice (each claimed id
//! answered once, every answered id claimed in the database, `(owner,
//! key_id)` never twice there).
//!
//! The killed node serves only our clients. The Python libraries are not
//! written to ride out a relay failing under them: their `receive` marks
//! a message processed and then sends its ack, and an error there discards
//! what it had decrypted (later copies are taken for duplicates), and a
//! failed `send` leaves a ciphertext in the outbox from a ratchet step it
//! never saved. So they use the nodes that stay up, while their mail to and
//! from the killed node's users crosses nodes through the database.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{relay_command, Peer, RelayProcess};
use retalk_proto::client::{ClientConfig, ClientError, Problem, Store};
use retalk_proto::wire::Args;
use retalk_proto::{Client, UserId};
use retalk_store_sqlite::SqliteStore;
use retalk_testkit::postgres::Cluster;
use retalk_testkit::python::python_with_retalk;
use retalk_transport_http::{HttpTransport, SystemClock, Transport};
use serde_json::{json, Value};

/// Messages from each user to each other user.
const PER_PAIR: usize = 150;
/// The five users, in the order that decides who writes first in a pair
/// (the earlier one): a pair then holds one Olm session, which the Python
/// 0.0.1 store (one session per peer) needs. Python 0.0.1 opens with
/// everyone; each user's node is in [`NODE_OF`].
const NAMES: [&str; 5] = ["py001", "r0", "py030", "r1", "r2"];
/// Node 2 is the one killed: it serves r1 and r2.
const NODE_OF: [usize; 5] = [0, 1, 1, 2, 2];
const KILLED: usize = 2;
/// The kill comes once this share (in %) of all messages has arrived.
const KILL_AT_PERCENT: usize = 35;
/// How long the killed node stays down.
const DOWN_FOR: Duration = Duration::from_millis(1500);
/// Unacknowledged messages are resent after this (both clients).
const RESEND_AFTER: f64 = 8.0;
/// One-time keys of the key owner drained by the claimers.
const STORM_KEYS: usize = 300;
const DEADLINE: Duration = Duration::from_secs(180);

type Agent = Client<SqliteStore, HttpTransport, SystemClock>;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn node_command(database: &str, port: u16, audiences: &[String]) -> Command {
    let mut cmd = relay_command();
    cmd.args(["--backend", "postgres", "--database-url", database])
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--audience", &audiences.join(",")]);
    cmd
}

/// Starts a node on `port`, retrying while the port is not free yet.
fn start_node(database: &str, port: u16, audiences: &[String]) -> RelayProcess {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(p) = RelayProcess::spawn(&mut node_command(database, port, audiences)) {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "node on port {port} does not start"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One query through `psql` on the test's database; its rows, `|`-separated.
fn psql(database: &str, query: &str) -> Vec<String> {
    let bin = retalk_testkit::postgres::bin_dir().expect("PostgreSQL binaries");
    let out = Command::new(bin.join("psql"))
        .arg(database)
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", query])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql {query}: {}",
        retalk_testkit::python::describe(&out)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The text user `from` sends to user `to` as its `k`-th message.
fn text(from: usize, to: usize, k: usize) -> String {
    format!("{}>{}#{k}", NAMES[from], NAMES[to])
}

/// What reached an application: (recipient index, sender id, text).
type Delivered = Mutex<Vec<(usize, String, String)>>;

// ---------- the Python users ----------

/// A Python user of either generation in one process: prints its id, reads
/// the users' order (`[[id, name], ...]`) on stdin, then sends `PER_PAIR`
/// numbered messages to each other user (to one that comes earlier in the
/// order only once it heard from it) while receiving, runs `maintain`
/// every second (resending what is unacknowledged after RESEND_AFTER), and
/// reports on stdout, one JSON object a line; until "stop" on stdin.
/// A send counts once its ciphertext is in the outbox table (the library
/// puts it there before the relay call): else the same number again.
const PY_USER: &str = r#"
import json, select, sqlite3, sys, time
from retalk.user import User
url, store, name = sys.argv[1:4]
per_pair, resend_after = int(sys.argv[4]), float(sys.argv[5])

def say(**kw):
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()

def outbox():
    c = sqlite3.connect(store)
    try:
        return c.execute("SELECT count(*) FROM outbox").fetchone()[0]
    finally:
        c.close()

u = User(url, "secret", name=name, store=store)
u.publish()
me = u.fingerprint() if hasattr(u, "fingerprint") else u.user_id()
say(id=me)
order = json.loads(sys.stdin.readline())
rank = [i for i, _ in order].index(me)
peers = [(i, n, r) for r, (i, n) in enumerate(order) if i != me]
nxt = {i: 0 for i, _, _ in peers}
heard = set()
last_maintain, rr = 0.0, 0
while True:
    if select.select([sys.stdin], [], [], 0)[0]:
        line = sys.stdin.readline()
        if line.strip() in ("stop", ""):
            break
    sent = 0
    for _ in range(len(peers)):
        pid, pname, prank = peers[rr % len(peers)]
        rr += 1
        if nxt[pid] >= per_pair or (prank < rank and pid not in heard):
            continue
        before = outbox()
        try:
            u.send(pid, f"{name}>{pname}#{nxt[pid]}")
        except Exception as e:
            say(error=f"send: {e!r}")
        if outbox() > before:
            nxt[pid] += 1
            sent += 1
        else:
            time.sleep(0.1)
            break
        if sent >= 4:
            break
    try:
        got = u.receive()
    except Exception as e:
        say(error=f"receive: {e!r}")
        got = []
        time.sleep(0.1)
    for m in got:
        if isinstance(m, dict):
            frm, txt = m["from"], m.get("text")
        else:
            frm, txt = m[0], m[2]
        heard.add(frm)
        say(got=[frm, txt])
    all_sent = all(n >= per_pair for n in nxt.values())
    if time.time() - last_maintain > 1.0:
        last_maintain = time.time()
        try:
            u.maintain(resend_after=resend_after)
        except Exception as e:
            say(error=f"maintain: {e!r}")
        say(outbox=outbox(), sent_all=all_sent)
    if all_sent and not got:
        time.sleep(0.1)
say(bye=True)
"#;

#[derive(Debug, Default)]
struct PyStatus {
    /// The last report after a maintain: (outbox rows, all sent).
    report: Option<(u64, bool)>,
    errors: Vec<String>,
    said_bye: bool,
}

struct PyUser {
    python: PathBuf,
    store: PathBuf,
    child: Child,
    stdin: ChildStdin,
    id: String,
    status: Arc<Mutex<PyStatus>>,
    stderr: PathBuf,
}

impl PyUser {
    /// Starts user `index` on `url`; returns once it published and said
    /// its id. Its reports are read on a thread: deliveries go into
    /// `delivered` as recipient `index`.
    fn start(
        version: &str,
        index: usize,
        url: &str,
        dir: &Path,
        delivered: Arc<Delivered>,
    ) -> PyUser {
        let python = python_with_retalk(version);
        let name = NAMES[index];
        let store = dir.join(format!("{name}.db"));
        let stderr = dir.join(format!("{name}.stderr"));
        let mut child = Command::new(&python)
            .arg("-c")
            .arg(PY_USER)
            .arg(url)
            .arg(&store)
            .arg(name)
            .arg(PER_PAIR.to_string())
            .arg(RESEND_AFTER.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().map(Result::unwrap).unwrap_or_else(|| {
            panic!(
                "{name} exited before saying its id: {}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            )
        });
        let first: Value = serde_json::from_str(&first).unwrap();
        let id = first["id"].as_str().unwrap().to_owned();
        let status = Arc::new(Mutex::new(PyStatus::default()));
        let reports = status.clone();
        std::thread::spawn(move || {
            for line in lines {
                let Ok(line) = line else { return };
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|_| json!({"error": format!("not JSON: {line}")}));
                let mut s = reports.lock().unwrap();
                if let Some(got) = v.get("got") {
                    let from = got[0].as_str().unwrap_or("?").to_owned();
                    let text = got[1].as_str().unwrap_or("<no text>").to_owned();
                    delivered.lock().unwrap().push((index, from, text));
                } else if let Some(n) = v.get("outbox") {
                    s.report = Some((n.as_u64().unwrap(), v["sent_all"] == true));
                } else if let Some(e) = v.get("error") {
                    s.errors.push(e.to_string());
                } else if v.get("bye").is_some() {
                    s.said_bye = true;
                }
            }
        });
        PyUser {
            python,
            store,
            child,
            stdin,
            id,
            status,
            stderr,
        }
    }

    fn say(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// Done sending and nothing left unacknowledged.
    fn finished(&self) -> bool {
        self.status.lock().unwrap().report == Some((0, true))
    }

    fn stderr_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let start = s.len().saturating_sub(2000);
        s.get(start..).unwrap_or(&s).to_owned()
    }

    /// Says stop and waits for the process to exit.
    fn stop(&mut self) -> std::process::ExitStatus {
        self.say("stop");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "a Python user did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PyUser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------- our clients ----------

#[derive(Debug, Default)]
struct AgentLog {
    /// Requests that failed (a dead node's connection errors among them).
    errors: usize,
    last_error: Option<String>,
    problems: Vec<Problem>,
    /// Messages whose ciphertext changed in the outbox (re-encrypted),
    /// with how their first send ended: a second ciphertext of an
    /// envelope the relay may hold, which a Python receiver cannot tell
    /// from a new message.
    reencrypted: Vec<String>,
}

fn agent(dir: &Path, index: usize, url: &str) -> Agent {
    let transport = HttpTransport::builder(url)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let config = ClientConfig {
        resend_after: RESEND_AFTER,
        max_backoff: RESEND_AFTER,
        // A resealed copy is a new ciphertext that our receivers recognise
        // by its envelope id and the Python ones show again (see
        // `ClientConfig::reseal_every`); a slow Python receiver would see
        // one after four unacknowledged resends. Nothing here drops a ratchet
        // chain, which is what resealing repairs.
        reseal_every: u32::MAX,
        ..ClientConfig::default()
    };
    let store = SqliteStore::open(dir.join(NAMES[index])).unwrap();
    Client::create(store, transport, SystemClock, "secret", NAMES[index])
        .unwrap()
        .with_config(config)
}

/// Agent `me`: sends `PER_PAIR` numbered messages to each other user (to
/// an earlier one in the order only once it heard from it), fetches,
/// hands each message to the application (the log) and maintains, until
/// `stop`.
async fn run_agent(
    me: usize,
    client: &Agent,
    ids: &[UserId],
    delivered: &Delivered,
    all_sent: &AtomicBool,
    stop: &AtomicBool,
) -> AgentLog {
    let mut log = AgentLog::default();
    let peers: Vec<usize> = (0..ids.len()).filter(|&p| p != me).collect();
    let mut next = vec![0usize; ids.len()];
    let mut heard: HashSet<String> = HashSet::new();
    let mut last_maintain = Instant::now();
    let mut rr = 0;
    // Envelope id -> (text, how its first send ended, last ciphertext seen).
    let mut sent_log: HashMap<String, (String, String, String)> = HashMap::new();
    fn failed(log: &mut AgentLog, e: ClientError) {
        log.errors += 1;
        log.last_error = Some(e.to_string());
    }
    while !stop.load(Ordering::SeqCst) {
        let mut sent = 0;
        for _ in 0..peers.len() {
            let p = peers[rr % peers.len()];
            rr += 1;
            if next[p] >= PER_PAIR || (p < me && !heard.contains(ids[p].as_str())) {
                continue;
            }
            let text = text(me, p, next[p]);
            match client.send(&ids[p], &text).await {
                // Committed to the outbox: sent now or resent later.
                Ok(receipt) => {
                    sent_log.insert(receipt.id, (text, "ok".into(), String::new()));
                }
                Err(ClientError::NotDelivered { id, source }) => {
                    sent_log.insert(id, (text, source.to_string(), String::new()));
                    failed(&mut log, *source);
                }
                // Nothing committed: the same number again.
                Err(e) => {
                    failed(&mut log, e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    break;
                }
            }
            next[p] += 1;
            sent += 1;
            if sent >= 4 {
                break;
            }
        }
        let done_sending = peers.iter().all(|&p| next[p] >= PER_PAIR);
        all_sent.store(done_sending, Ordering::SeqCst);
        match client.fetch().await {
            Ok(inbox) => log.problems.extend(inbox.problems),
            Err(e) => {
                failed(&mut log, e);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let taken = client
            .take_messages(usize::MAX, |m| {
                heard.insert(m.from.to_string());
                delivered
                    .lock()
                    .unwrap()
                    .push((me, m.from.to_string(), m.text.clone()));
                Ok::<_, ClientError>(())
            })
            .unwrap();
        for e in client.store().outbox().unwrap() {
            if let Some((text, first, body)) = sent_log.get_mut(&e.envelope_id) {
                if !body.is_empty() && *body != e.body {
                    log.reencrypted.push(format!(
                        "{text} (first send: {first}; now attempt {}, last error {:?})",
                        e.attempts, e.last_error
                    ));
                }
                body.clone_from(&e.body);
            }
        }
        if last_maintain.elapsed() > Duration::from_secs(1) {
            last_maintain = Instant::now();
            if let Err(e) = client.maintain().await {
                failed(&mut log, e);
            }
        }
        if done_sending && taken == 0 {
            // Push delivery: a read held on our node, woken by a send
            // through any node.
            if let Err(e) = client.wait_for_mail(1.0).await {
                failed(&mut log, e);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    log
}

// ---------- one-time keys ----------

/// What the claimers saw.
#[derive(Debug, Default)]
struct Storm {
    /// Key ids answered to claims (one-time keys, not the fallback).
    handed: Vec<String>,
    /// Claims that got no answer (the killed node).
    unanswered: usize,
    /// Claims that ended in the fallback key (one per claimer at the end).
    fallbacks: usize,
    /// `one_time_keys_added` of the re-upload of every id.
    readded: Option<Value>,
}

fn storm_publish(owner: &Peer) -> Args {
    Args::PublishKeys {
        identity_key: owner.account.curve25519_key().to_base64(),
        signing_key: owner.account.ed25519_key().to_base64(),
        one_time_keys: (0..STORM_KEYS)
            .map(|i| (format!("key{i:05}"), format!("material{i:05}")))
            .collect(),
        fallback_key: Some(("fallback".into(), "fallback-material".into())),
    }
}

/// One claimer on `url`: claims `owner`'s keys until it gets the fallback.
async fn claimer(url: &str, owner: &UserId, storm: &Mutex<Storm>, stop: &AtomicBool) {
    let t = HttpTransport::builder(url)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let me = Peer::new();
    let claim = Args::ClaimKey {
        peer: owner.to_string(),
    };
    while !stop.load(Ordering::SeqCst) {
        match t.call(me.request(&claim, url)).await {
            Ok(k) => {
                let id = k["key_id"].as_str().unwrap().to_owned();
                let mut s = storm.lock().unwrap();
                if k["fallback"] == true {
                    s.fallbacks += 1;
                    return;
                }
                assert_eq!(
                    k["one_time_key"].as_str().unwrap(),
                    id.replace("key", "material"),
                    "{k}"
                );
                s.handed.push(id);
            }
            Err(_) => {
                storm.lock().unwrap().unanswered += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------- the test ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_deliver_every_message_once_through_a_node_kill() {
    let cluster = Cluster::shared();
    let db = cluster.create_database();
    let tmp = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let urls: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let mut nodes: Vec<RelayProcess> = ports.iter().map(|&p| start_node(&db, p, &urls)).collect();

    // The users: Python ones say their ids once published.
    let delivered: Arc<Delivered> = Arc::new(Mutex::new(Vec::new()));
    let mut py = [
        PyUser::start("0.0.1", 0, &urls[NODE_OF[0]], tmp.path(), delivered.clone()),
        PyUser::start("0.3.0", 2, &urls[NODE_OF[2]], tmp.path(), delivered.clone()),
    ];
    let agents: Vec<(usize, Agent)> = [1, 3, 4]
        .into_iter()
        .map(|i| (i, agent(tmp.path(), i, &urls[NODE_OF[i]])))
        .collect();
    for (_, a) in &agents {
        a.ensure_published().await.unwrap();
    }
    let ids: Vec<UserId> = (0..NAMES.len())
        .map(|i| match i {
            0 => UserId::parse(&py[0].id).unwrap(),
            2 => UserId::parse(&py[1].id).unwrap(),
            _ => agents
                .iter()
                .find(|(j, _)| *j == i)
                .unwrap()
                .1
                .user_id()
                .clone(),
        })
        .collect();
    let order = json!(ids
        .iter()
        .zip(NAMES)
        .map(|(id, n)| json!([id.as_str(), n]))
        .collect::<Vec<_>>())
    .to_string();
    for p in py.iter_mut() {
        p.say(&order);
    }

    // The key owner of the claim storm publishes through node 0.
    let owner = Peer::new();
    {
        let t = HttpTransport::new(&urls[0]).unwrap();
        let a = t
            .call(owner.request(&storm_publish(&owner), &urls[0]))
            .await
            .unwrap();
        assert_eq!(a["one_time_keys_added"], json!(STORM_KEYS), "{a}");
    }

    let total = NAMES.len() * (NAMES.len() - 1) * PER_PAIR;
    let started = Instant::now();
    let stop = AtomicBool::new(false);
    let storm_go = AtomicBool::new(false);
    let storm = Mutex::new(Storm::default());
    let sent_flags: Vec<AtomicBool> = agents.iter().map(|_| AtomicBool::new(false)).collect();
    let killed_at = AtomicUsize::new(usize::MAX);
    let timed_out = AtomicBool::new(false);

    let agent_runs = futures_join_all(
        agents
            .iter()
            .zip(&sent_flags)
            .map(|((i, a), flag)| run_agent(*i, a, &ids, &delivered, flag, &stop)),
    );
    let storm_run = async {
        while !storm_go.load(Ordering::SeqCst) && !stop.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        futures_join_all(urls.iter().map(|u| claimer(u, &owner.id, &storm, &stop))).await;
    };
    let orchestrate = async {
        let progress = || delivered.lock().unwrap().len();
        while progress() < total * KILL_AT_PERCENT / 100 && started.elapsed() < DEADLINE {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        storm_go.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        // SIGKILL.
        killed_at.store(progress(), Ordering::SeqCst);
        nodes[KILLED].child.kill().unwrap();
        nodes[KILLED].child.wait().unwrap();
        tokio::time::sleep(DOWN_FOR / 2).await;
        // The owner uploads the same ids again (a retried upload) while
        // the claims go on: claimed ids must stay claimed.
        {
            let t = HttpTransport::new(&urls[0]).unwrap();
            let a = t
                .call(owner.request(&storm_publish(&owner), &urls[0]))
                .await
                .unwrap();
            storm.lock().unwrap().readded = Some(a["one_time_keys_added"].clone());
        }
        tokio::time::sleep(DOWN_FOR / 2).await;
        let (db2, urls2, port) = (db.clone(), urls.clone(), ports[KILLED]);
        nodes[KILLED] = tokio::task::spawn_blocking(move || start_node(&db2, port, &urls2))
            .await
            .unwrap();
        // Until everything arrived and every outbox is empty.
        loop {
            let done = progress() >= total
                && sent_flags.iter().all(|f| f.load(Ordering::SeqCst))
                && agents
                    .iter()
                    .all(|(_, a)| a.store().outbox().unwrap().is_empty())
                && py.iter().all(PyUser::finished);
            if done {
                // Linger: a late duplicate would show up in the log.
                tokio::time::sleep(Duration::from_secs(2)).await;
                break;
            }
            if started.elapsed() > DEADLINE {
                timed_out.store(true, Ordering::SeqCst);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop.store(true, Ordering::SeqCst);
    };
    let (logs, (), ()) = tokio::join!(agent_runs, storm_run, orchestrate);
    let elapsed = started.elapsed();
    let exits: Vec<_> = py.iter_mut().map(PyUser::stop).collect();

    // ----- what reached the applications -----
    let delivered = delivered.lock().unwrap().clone();
    let mut seen: HashMap<(usize, String, String), usize> = HashMap::new();
    for d in &delivered {
        *seen.entry(d.clone()).or_default() += 1;
    }
    let mut expected: HashSet<(usize, String, String)> = HashSet::new();
    for (from, from_id) in ids.iter().enumerate() {
        for to in (0..NAMES.len()).filter(|&t| t != from) {
            for k in 0..PER_PAIR {
                expected.insert((to, from_id.to_string(), text(from, to, k)));
            }
        }
    }
    let describe = |d: &(usize, String, String)| {
        let from = ids
            .iter()
            .position(|i| i.as_str() == d.1)
            .map_or(d.1.as_str(), |i| NAMES[i]);
        format!("{} got {:?} from {from}", NAMES[d.0], d.2)
    };
    let missing: Vec<String> = expected
        .iter()
        .filter(|e| !seen.contains_key(*e))
        .map(describe)
        .collect();
    let twice: Vec<String> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(d, n)| format!("{} ({n} times)", describe(d)))
        .collect();
    let extra: Vec<String> = seen
        .keys()
        .filter(|d| !expected.contains(*d))
        .map(describe)
        .collect();
    let state = || {
        let agents_state: Vec<String> = agents
            .iter()
            .zip(&logs)
            .map(|((i, a), log)| {
                format!(
                    "{}: outbox {}, {} errors (last {:?}), problems {:?}, \
                     {} re-encrypted, e.g. {:#?}",
                    NAMES[*i],
                    a.store().outbox().unwrap().len(),
                    log.errors,
                    log.last_error,
                    log.problems,
                    log.reencrypted.len(),
                    log.reencrypted.iter().take(8).collect::<Vec<_>>(),
                )
            })
            .collect();
        let py_state: Vec<String> = py
            .iter()
            .map(|p| {
                format!(
                    "{:?}; stderr: {}",
                    p.status.lock().unwrap(),
                    p.stderr_tail()
                )
            })
            .collect();
        format!(
            "after {elapsed:?}, {} of {total} delivered (kill at {}):\n{}\n{}",
            delivered.len(),
            killed_at.load(Ordering::SeqCst),
            agents_state.join("\n"),
            py_state.join("\n")
        )
    };
    // ----- the kill hit the traffic, and its clients felt it -----
    let killed_at = killed_at.load(Ordering::SeqCst);
    assert!(
        killed_at > 0 && killed_at < total,
        "the node was killed mid-run ({killed_at} of {total} delivered then)"
    );
    let felt: usize = agents
        .iter()
        .zip(&logs)
        .filter(|((i, _), _)| NODE_OF[*i] == KILLED)
        .map(|(_, l)| l.errors)
        .sum();
    assert!(
        felt > 0,
        "the killed node's clients saw no error: {}",
        state()
    );

    // ----- outboxes -----
    for ((i, a), log) in agents.iter().zip(&logs) {
        assert_eq!(
            a.store().outbox().unwrap(),
            vec![],
            "{}'s outbox is not empty",
            NAMES[*i]
        );
        assert!(log.problems.is_empty(), "{}: {:?}", NAMES[*i], log.problems);
    }
    for (p, exit) in py.iter().zip(&exits) {
        assert!(exit.success(), "a Python user failed: {}", p.stderr_tail());
        let rows = common::sql(
            &p.python,
            &p.store,
            "SELECT count(*) FROM outbox",
            json!([]),
        );
        assert_eq!(rows, json!([[0]]), "{}'s outbox table", p.store.display());
        let status = p.status.lock().unwrap();
        assert!(status.said_bye);
        assert!(
            status.errors.is_empty(),
            "{}: {:?}",
            p.store.display(),
            status.errors
        );
    }

    // ----- one-time keys -----
    let storm = storm.into_inner().unwrap();
    // Every id was already there (claimed ones skipped, unclaimed ones
    // replaced): the re-upload added none.
    assert_eq!(storm.readded, Some(json!(0)), "re-upload: {storm:?}");
    let mut once = HashSet::new();
    let handed_twice: Vec<&String> = storm.handed.iter().filter(|k| !once.insert(*k)).collect();
    assert!(
        handed_twice.is_empty(),
        "one-time keys handed out twice: {handed_twice:?}"
    );
    assert_eq!(storm.fallbacks, 3, "each claimer ends on the fallback");
    let claimed: HashSet<String> = psql(
        &db,
        &format!(
            "SELECT key_id FROM otks WHERE owner = '{}' AND claimed <> 0",
            owner.id
        ),
    )
    .into_iter()
    .collect();
    let unclaimed = psql(
        &db,
        &format!(
            "SELECT count(*) FROM otks WHERE owner = '{}' AND claimed = 0",
            owner.id
        ),
    );
    assert_eq!(unclaimed, ["0"], "the storm drained every key");
    assert_eq!(claimed.len(), STORM_KEYS);
    assert!(
        once.iter().all(|k| claimed.contains(*k)),
        "an answered key is not marked claimed"
    );
    // A key claimed but not answered was lost with a request to the killed
    // node: never more of those than unanswered claims.
    assert!(
        STORM_KEYS - once.len() <= storm.unanswered,
        "{} keys claimed but never answered, only {} claims unanswered",
        STORM_KEYS - once.len(),
        storm.unanswered
    );
    let dup_rows = psql(
        &db,
        "SELECT owner, key_id, count(*) FROM otks GROUP BY owner, key_id HAVING count(*) > 1",
    );
    assert!(dup_rows.is_empty(), "(owner, key_id) twice: {dup_rows:?}");

    let sample = |v: &[String]| v.iter().take(10).cloned().collect::<Vec<_>>();
    assert!(
        twice.is_empty(),
        "{} delivered more than once, e.g. {:?}\n{}",
        twice.len(),
        sample(&twice),
        state()
    );
    assert!(
        missing.is_empty(),
        "{} never delivered, e.g. {:?}\n{}",
        missing.len(),
        sample(&missing),
        state()
    );
    assert!(extra.is_empty(), "unexpected deliveries: {extra:?}");
    assert_eq!(delivered.len(), total);
    assert!(
        !timed_out.load(Ordering::SeqCst),
        "everything delivered, but outboxes not empty in time: {}",
        state()
    );

    eprintln!(
        "multi-node: {total} messages, each delivered once over 3 nodes (node {KILLED} \
         SIGKILLed at {killed_at} delivered, {felt} errors seen by its clients) in {:.1}s; \
         {} keys claimed once each ({} claims unanswered)",
        elapsed.as_secs_f64(),
        once.len(),
        storm.unanswered
    );
    drop(nodes);
}

/// Runs futures concurrently on this task, in order of the outputs.
async fn futures_join_all<F: std::future::Future>(
    futs: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let futs: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    let mut futs: Vec<Option<std::pin::Pin<Box<F>>>> = futs.into_iter().map(Some).collect();
    std::future::poll_fn(move |cx| {
        let mut pending = false;
        for (slot, out) in futs.iter_mut().zip(outputs.iter_mut()) {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        *out = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(outputs.iter_mut().map(|o| o.take().unwrap()).collect())
        }
    })
    .await
}
