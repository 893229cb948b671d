//! Load benchmark (not a test): the `retalk-relay` binary on loopback,
//! driven over N keep-alive connections with pre-signed requests, so the
//! numbers measure the relay, not the signer.
//!
//! ```text
//! cargo bench -p retalk-relay --bench load -- [--backend sqlite|memory]
//!     [--connections 32] [--requests 40000] [--users 64] [--queue 0]
//! ```
//!
//! Prints, per tool, requests/s and p50/p99 latency; the relay's peak RSS
//! (VmHWM of the child process); and this machine's single-core Ed25519
//! verifications/s, the bound on signed requests per core.
//!
//! `--queue N` then stores N more messages that nobody reads (signed and
//! sent in tenths), printing the relay's resident memory after each tenth:
//! it must stay flat however much mail waits on disk.
//!
//! Both backends run the `retalk-relay` binary as a child process;
//! `memory` measures the HTTP edge and the protocol without storage costs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use rand::RngCore;
use retalk_proto::auth::Dialect;
use retalk_proto::wire::{Args, SignedRequest};
use retalk_proto::UserId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const AUDIENCE: &str = "http://relay.bench.invalid";

struct Options {
    backend: String,
    connections: usize,
    requests: usize,
    users: usize,
    queue: usize,
}

fn options() -> Options {
    let mut o = Options {
        backend: "sqlite".into(),
        connections: 32,
        requests: 40_000,
        users: 64,
        queue: 0,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--backend" => o.backend = value,
            "--connections" => o.connections = value.parse().expect("--connections N"),
            "--requests" => o.requests = value.parse().expect("--requests N"),
            "--users" => o.users = value.parse().expect("--users N"),
            "--queue" => o.queue = value.parse().expect("--queue N"),
            _ => {
                i += 1; // `--bench` and other harness flags
                continue;
            }
        }
        i += 2;
    }
    o
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

struct User {
    account: vodozemac::olm::Account,
    id: UserId,
}

impl User {
    fn new() -> Self {
        let account = vodozemac::olm::Account::new();
        let id = UserId::from_keys(
            &account.curve25519_key().to_base64(),
            &account.ed25519_key().to_base64(),
        );
        Self { account, id }
    }

    /// A complete HTTP request, signed now.
    fn http(&self, args: &Args) -> Vec<u8> {
        let body = SignedRequest::sign(&self.account, args, AUDIENCE, now()).to_body(Dialect::V001);
        let mut req = format!(
            "POST / HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(&body);
        req
    }
}

/// Single-core Ed25519 verifications per second, over a request-sized text.
fn ed25519_per_second() -> f64 {
    let account = vodozemac::olm::Account::new();
    let text = format!(
        "count_keys|{AUDIENCE}|{}|1800000000|{}|{}",
        "a".repeat(32),
        "b".repeat(32),
        "c".repeat(64)
    );
    let sig = account.sign(text.as_bytes());
    let key = account.ed25519_key();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(1) {
        for _ in 0..100 {
            key.verify(text.as_bytes(), &sig).unwrap();
        }
        n += 100;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn start_relay(backend: &str, db: &std::path::Path) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_retalk-relay"))
        .args(["--backend", backend, "--db", db.to_str().unwrap()])
        .args(["--host", "127.0.0.1", "--port", "0", "--audience", AUDIENCE])
        .args(["--ip-rate-limit", "0", "--max-connections", "1024"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the relay");
    let line = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    let addr = line
        .strip_prefix("retalk-relay listening on http://")
        .expect(&line)
        .parse()
        .unwrap();
    (child, addr)
}

/// Signed `send_message` requests number `range`, each from one user to
/// the next with an Olm-sized random body.
fn sends(users: &[User], range: std::ops::Range<usize>) -> Vec<Vec<u8>> {
    let mut rng = rand::thread_rng();
    range
        .map(|i| {
            let mut raw = [0u8; 200];
            rng.fill_bytes(&mut raw);
            let to = users[(i + 1) % users.len()].id.to_string();
            let body = base64::engine::general_purpose::STANDARD.encode(raw);
            users[i % users.len()].http(&Args::SendMessage { to, mtype: 1, body })
        })
        .collect()
}

fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

/// A memory figure of `/proc/<pid>/status`, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Reads one response; returns its status.
async fn read_answer(stream: &mut TcpStream, buf: &mut Vec<u8>) -> u16 {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).unwrap();
            let status: u16 = head[9..12].parse().unwrap();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                read_more(stream, buf).await;
            }
            buf.drain(..end + 4 + len);
            return status;
        }
        read_more(stream, buf).await;
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) {
    let mut chunk = [0u8; 16 * 1024];
    let n = stream.read(&mut chunk).await.unwrap();
    assert!(n > 0, "the relay closed a connection");
    buf.extend_from_slice(&chunk[..n]);
}

struct Run {
    per_second: f64,
    p50: Duration,
    p99: Duration,
    failures: usize,
}

/// Sends every request once over `connections` keep-alive connections.
async fn drive(addr: SocketAddr, requests: Arc<Vec<Vec<u8>>>, connections: usize) -> Run {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (requests, next) = (requests.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let mut buf = Vec::new();
            let mut latencies = Vec::new();
            let mut failures = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(req) = requests.get(i) else { break };
                let t = Instant::now();
                stream.write_all(req).await.unwrap();
                if read_answer(&mut stream, &mut buf).await != 200 {
                    failures += 1;
                }
                latencies.push(t.elapsed());
            }
            (latencies, failures)
        }));
    }
    let mut all = Vec::new();
    let mut failures = 0;
    for t in tasks {
        let (l, f) = t.await.unwrap();
        all.extend(l);
        failures += f;
    }
    let elapsed = start.elapsed();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Run {
        per_second: all.len() as f64 / elapsed.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
        failures,
    }
}

fn report(name: &str, r: &Run) {
    println!(
        "{name:<14} {:>9.0} req/s   p50 {:>7.2} ms   p99 {:>7.2} ms   non-200: {}",
        r.per_second,
        r.p50.as_secs_f64() * 1e3,
        r.p99.as_secs_f64() * 1e3,
        r.failures
    );
}

fn main() {
    let o = options();
    println!(
        "retalk-relay load: backend {}, {} connections, {} requests per tool, {} users, {} cores",
        o.backend,
        o.connections,
        o.requests,
        o.users,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average before the run: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let verify = ed25519_per_second();
    println!("ed25519 verify (1 core) {verify:>9.0} /s   (bound on signed requests per core)");

    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = start_relay(&o.backend, &dir.path().join("bench.db"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let mut users: Vec<User> = (0..o.users).map(|_| User::new()).collect();
    let publishes: Vec<Vec<u8>> = users
        .iter_mut()
        .map(|u| {
            u.account.generate_fallback_key();
            let fallback = u
                .account
                .fallback_key()
                .into_iter()
                .map(|(k, v)| (k.to_base64(), v.to_base64()))
                .next();
            u.http(&Args::PublishKeys {
                identity_key: u.account.curve25519_key().to_base64(),
                signing_key: u.account.ed25519_key().to_base64(),
                one_time_keys: vec![],
                fallback_key: fallback,
            })
        })
        .collect();
    let run = rt.block_on(drive(addr, Arc::new(publishes), 4));
    assert_eq!(run.failures, 0, "publishing failed");

    // count_keys: the signed-request floor (verify + nonce + one read).
    let t = Instant::now();
    let reqs: Vec<Vec<u8>> = (0..o.requests)
        .map(|i| users[i % users.len()].http(&Args::CountKeys))
        .collect();
    println!(
        "(signed {} count_keys requests in {:.1} s)",
        o.requests,
        t.elapsed().as_secs_f64()
    );
    let count = rt.block_on(drive(addr, Arc::new(reqs), o.connections));
    report("count_keys", &count);

    // send_message: verify + nonce + a stored message (Olm-sized body).
    let reqs = sends(&users, 0..o.requests);
    let send = rt.block_on(drive(addr, Arc::new(reqs), o.connections));
    report("send_message", &send);

    if o.queue > 0 {
        let pid = child.id();
        println!(
            "queueing {} messages nobody reads; relay RSS before: {:.1} MiB",
            o.queue,
            status_kib(pid, "VmRSS:") as f64 / 1024.0
        );
        let tenth = o.queue.div_ceil(10);
        let mut queued = 0;
        while queued < o.queue {
            let n = tenth.min(o.queue - queued);
            let reqs = sends(&users, queued..queued + n);
            let run = rt.block_on(drive(addr, Arc::new(reqs), o.connections));
            assert_eq!(run.failures, 0, "queueing failed");
            queued += n;
            let mib = |field| status_kib(pid, field) as f64 / 1024.0;
            println!(
                "  {queued:>9} queued   relay RSS {:>6.1} MiB (heap {:>5.1}, mapped files {:>5.1})   {:>6.0} send_message/s",
                mib("VmRSS:"),
                mib("RssAnon:"),
                mib("RssFile:") + mib("RssShmem:"),
                run.per_second
            );
        }
    }

    let rss = peak_rss_kib(child.id());
    println!(
        "relay peak RSS {:.1} MiB (VmHWM of the relay process)",
        rss as f64 / 1024.0
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    println!(
        "targets: count_keys >= 10000/s {}, send_message >= 5000/s {}",
        if count.per_second >= 10_000.0 {
            "met"
        } else {
            "NOT met"
        },
        if send.per_second >= 5_000.0 {
            "met"
        } else {
            "NOT met"
        }
    );
}
