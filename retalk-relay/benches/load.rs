//! Load benchmark (not a test): the `retalk-relay` binary on loopback,
//! driven over N keep-alive connections with pre-signed requests, so the
//! numbers measure the relay, not the signer.
//!
//! ```text
//! cargo bench -p retalk-relay --bench load -- [--backend sqlite|memory]
//!     [--connections 32] [--requests 40000] [--users 64] [--queue 0]
//!     [--relay-binary PATH [--after-binary PATH] [--rounds 2]]
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
//!
//! `--relay-binary PATH` compares another build of the relay (say, from
//! before a change) with this checkout's, A/B in one run: PATH, this one,
//! PATH, this one, ... (`--rounds` pairs), each a fresh process on a fresh
//! database with freshly signed requests, then a table of both with the
//! ratio after/before (`--after-binary` puts another build in place of
//! this checkout's). Interleaving spreads the drift of a shared machine
//! over both sides. A baseline from commit `cf7094c` (before push
//! delivery):
//!
//! ```text
//! git worktree add /tmp/retalk-before cf7094c   # or: git archive cf7094c | tar -x -C DIR
//! (cd /tmp/retalk-before && CARGO_TARGET_DIR=/tmp/retalk-before-target \
//!     cargo build --release -p retalk-relay)
//! cargo bench -p retalk-relay --bench load -- --backend sqlite \
//!     --relay-binary /tmp/retalk-before-target/release/retalk-relay
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use common::{load_average, read_answer, start_relay, status_kib, this_relay, User, AUDIENCE};
use rand::RngCore;
use retalk_proto::wire::Args;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

struct Options {
    backend: String,
    connections: usize,
    requests: usize,
    users: usize,
    queue: usize,
    /// A second relay binary (e.g. an older build) to compare with.
    baseline: Option<PathBuf>,
    /// The build compared with the baseline; this checkout's by default.
    after: Option<PathBuf>,
    rounds: usize,
}

fn options() -> Options {
    let mut o = Options {
        backend: "sqlite".into(),
        connections: 32,
        requests: 40_000,
        users: 64,
        queue: 0,
        baseline: None,
        after: None,
        rounds: 2,
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
            "--relay-binary" => o.baseline = Some(PathBuf::from(value)),
            "--after-binary" => o.after = Some(PathBuf::from(value)),
            "--rounds" => o.rounds = value.parse().expect("--rounds N"),
            _ => {
                i += 1; // `--bench` and other harness flags
                continue;
            }
        }
        i += 2;
    }
    o
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
                if read_answer(&mut stream, &mut buf).await.0 != 200 {
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

/// One relay process from start to SIGTERM: publish, `count_keys`,
/// `send_message`, then the optional queue.
struct Measured {
    count: Run,
    send: Run,
    peak_rss_kib: u64,
}

fn measure(binary: &Path, o: &Options, rt: &tokio::runtime::Runtime) -> Measured {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bench.db");
    let (mut child, addr) = start_relay(
        binary,
        &[
            "--backend",
            &o.backend,
            "--db",
            db.to_str().unwrap(),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--audience",
            AUDIENCE,
            "--ip-rate-limit",
            "0",
            "--max-connections",
            "1024",
        ],
    );

    let mut users: Vec<User> = (0..o.users).map(|_| User::new()).collect();
    let publishes: Vec<Vec<u8>> = users.iter_mut().map(User::publish).collect();
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

    let peak_rss_kib = status_kib(child.id(), "VmHWM:");
    println!(
        "relay peak RSS {:.1} MiB (VmHWM of the relay process)",
        peak_rss_kib as f64 / 1024.0
    );
    common::stop(&mut child);
    Measured {
        count,
        send,
        peak_rss_kib,
    }
}

/// One figure of a run, for the A/B table.
type Figure = fn(&Measured) -> f64;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `--relay-binary`: the baseline and this checkout's relay in turns
/// (baseline, this, baseline, this, ...), then both side by side.
fn compare(baseline: &Path, o: &Options, rt: &tokio::runtime::Runtime) {
    let ours = o.after.as_deref().unwrap_or(this_relay());
    println!("A/B: before = {}", baseline.display());
    println!("     after  = {}", ours.display());
    let mut before = Vec::new();
    let mut after = Vec::new();
    for round in 1..=o.rounds {
        for (label, binary, runs) in [
            ("before", baseline, &mut before),
            ("after", ours, &mut after),
        ] {
            println!(
                "\n--- round {round}/{}: {label} (load average {}) ---",
                o.rounds,
                load_average()
            );
            runs.push(measure(binary, o, rt));
        }
    }
    let precise = |x: f64| {
        if x < 100.0 {
            format!("{x:.2}")
        } else {
            format!("{x:.0}")
        }
    };
    let figure = |runs: &[Measured], f: Figure| {
        let all: Vec<f64> = runs.iter().map(f).collect();
        let text = all
            .iter()
            .map(|&x| precise(x))
            .collect::<Vec<_>>()
            .join(" ");
        (median(all), text)
    };
    println!(
        "\nA/B summary, {} backend, {} connections, {} rounds (median of rounds; each round listed)",
        o.backend, o.connections, o.rounds
    );
    println!(
        "{:<22} {:>10} {:>10} {:>12}   rounds: before | after",
        "", "before", "after", "after/before"
    );
    let rows: [(&str, Figure); 5] = [
        ("count_keys req/s", |m| m.count.per_second),
        ("count_keys p50 ms", |m| m.count.p50.as_secs_f64() * 1e3),
        ("send_message req/s", |m| m.send.per_second),
        ("send_message p50 ms", |m| m.send.p50.as_secs_f64() * 1e3),
        ("peak RSS MiB", |m| m.peak_rss_kib as f64 / 1024.0),
    ];
    for (name, f) in rows {
        let (b, bt) = figure(&before, f);
        let (a, at) = figure(&after, f);
        println!(
            "{name:<22} {:>10} {:>10} {:>12.3}   {bt} | {at}",
            precise(b),
            precise(a),
            a / b
        );
    }
    let failures: usize = before
        .iter()
        .chain(&after)
        .map(|m| m.count.failures + m.send.failures)
        .sum();
    println!("non-200 answers over all runs: {failures}");
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
    println!("load average before the run: {}", load_average());
    let verify = ed25519_per_second();
    println!("ed25519 verify (1 core) {verify:>9.0} /s   (bound on signed requests per core)");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    if let Some(baseline) = &o.baseline {
        compare(baseline, &o, &rt);
        return;
    }
    let m = measure(this_relay(), &o, &rt);
    println!(
        "targets: count_keys >= 10000/s {}, send_message >= 5000/s {}",
        if m.count.per_second >= 10_000.0 {
            "met"
        } else {
            "NOT met"
        },
        if m.send.per_second >= 5_000.0 {
            "met"
        } else {
            "NOT met"
        }
    );
}
