//! Push delivery benchmark (not a test; issue 11): prints numbers.
//!
//! ```text
//! cargo bench -p retalk-relay --bench push -- [--part all|latency|parked]
//!     [--pairs 1,100] [--wait-messages 3000] [--poll-messages 300]
//!     [--gap-ms 20] [--backend sqlite|memory]
//!     [--waiters 10000] [--idle 10] [--parked-backend sqlite|memory]
//! ```
//!
//! Latency percentiles are nearest-rank over all samples of a row.
//!
//! **Latency** (`--part latency`): send-to-application latency, from just
//! before the sender's `Client::send` to the moment the receiver's
//! `Client::follow` handler sees the message. Real clients (SQLite
//! identity folders, on /dev/shm when there is one, since the client
//! fsyncs each commit) over real HTTP on loopback to the `retalk-relay`
//! binary of this checkout (SQLite file in a temporary folder on disk by
//! default). Every agent follows its own mailbox, as an agent in a loop
//! does: the sender's driver takes the acks. For 1 and N pairs at once,
//! with `Follow::default()` (long-poll, `wait` 25 s) and with the same
//! driver made to poll every 2 s (`Follow { wait: 0.0, .. }`:
//! `wait_for_mail(0.0)` answers at once, so the driver sleeps its poll
//! interval between reads, as against a Python relay). Each pair's sender
//! sends, waits until its message was seen, pauses a random 0..gap and
//! sends the next: with `wait`, gaps of 0-20 ms (`--gap-ms`; back to back,
//! which with many pairs measures a saturated machine) and, for more than
//! one pair, also 0-2 s; when polling, 0-2 s, so sends fall at random
//! points of the poll cycle. Messages per pair: `--wait-messages` spread
//! over the pairs (10 to 300 each) back to back, `--poll-messages` spread
//! over the pairs paced (10 to 30 each with `wait`, 3 to 10 polling). The
//! first message of each pair (key claim, new Olm session) is a warm-up,
//! shown apart. Each row also shows messages/s, the CPU the relay and the
//! agents used (in % of all cores) and the load average.
//!
//! **Parked** (`--part parked`): the `retalk-relay` binary with
//! `--waiters` (10,000) connections, each holding a pre-signed
//! `read_messages` with `wait` 25 s from its own identity (the relay is
//! started with `--max-wait 25` and `--max-connections` 2 × waiters + 100,
//! as it holds at most half its connections parked); the relay's
//! resident memory before and with them parked, its CPU time (utime +
//! stime of /proc/PID/stat) over `--idle` seconds of idleness, then a
//! message to one parked identity (how fast its read is answered, and that
//! the others stay parked), then SIGTERM (every parked read answered `[]`,
//! and how fast the relay exits).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use common::{load_average, read_answer, start_relay, status_kib, this_relay, User, AUDIENCE};
use rand::{Rng, RngCore};
use retalk_proto::client::{Follow, Followed};
use retalk_proto::wire::{Args, Wait};
use retalk_proto::{Client, ClientError, UserId};
use retalk_store_sqlite::SqliteStore;
use retalk_transport_http::{HttpTransport, SystemClock};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Semaphore};

struct Options {
    part: String,
    pairs: Vec<usize>,
    wait_messages: usize,
    poll_messages: usize,
    gap: Duration,
    backend: String,
    waiters: usize,
    idle: f64,
    parked_backend: String,
}

fn options() -> Options {
    let mut o = Options {
        part: "all".into(),
        pairs: vec![1, 100],
        wait_messages: 3000,
        poll_messages: 300,
        gap: Duration::from_millis(20),
        backend: "sqlite".into(),
        waiters: 10_000,
        idle: 10.0,
        parked_backend: "sqlite".into(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--part" => o.part = value,
            "--pairs" => {
                o.pairs = value
                    .split(',')
                    .map(|n| n.trim().parse().expect("--pairs N,M"))
                    .collect()
            }
            "--wait-messages" => o.wait_messages = value.parse().expect("--wait-messages N"),
            "--poll-messages" => o.poll_messages = value.parse().expect("--poll-messages N"),
            "--gap-ms" => o.gap = Duration::from_millis(value.parse().expect("--gap-ms N")),
            "--backend" => o.backend = value,
            "--waiters" => o.waiters = value.parse().expect("--waiters N"),
            "--idle" => o.idle = value.parse().expect("--idle SECONDS"),
            "--parked-backend" => o.parked_backend = value,
            _ => {
                i += 1; // `--bench` and other harness flags
                continue;
            }
        }
        i += 2;
    }
    o
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Nearest-rank percentile of sorted samples.
fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn main() {
    let o = options();
    println!(
        "retalk push benchmark: {} cores, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    if o.part == "all" || o.part == "latency" {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(latency(&o));
    }
    if o.part == "all" || o.part == "parked" {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(parked(&o));
    }
}

// ---------------------------------------------------------------- latency

type Agent = Client<SqliteStore, HttpTransport, SystemClock>;

struct Pair {
    sender: Arc<Agent>,
    receiver: Arc<Agent>,
}

/// What one run measured.
#[derive(Default)]
struct Latencies {
    samples: Vec<Duration>,
    lost: usize,
    send_errors: usize,
    problems: usize,
    unreachable: usize,
    wall: Duration,
    /// CPU seconds of the relay and of this process (the agents) meanwhile.
    cpu: f64,
}

impl Latencies {
    fn row(&mut self, pairs: usize, mode: &str) {
        self.samples.sort();
        let s = &self.samples;
        let wall = self.wall.as_secs_f64();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        println!(
            "{pairs:>5}  {mode:<26} {:>5} {:>9.2} {:>9.2} {:>9.2} {:>7.1} {:>7.0} {:>5.0} % {:>5}   {}",
            s.len(),
            ms(pct(s, 0.50)),
            ms(pct(s, 0.99)),
            ms(s.last().copied().unwrap_or_default()),
            wall,
            s.len() as f64 / wall,
            self.cpu / wall / cores * 100.0,
            load_average().split(' ').next().unwrap_or(""),
            self.trouble()
        );
    }

    fn trouble(&self) -> String {
        let mut t = Vec::new();
        for (n, what) in [
            (self.lost, "not seen within 60 s"),
            (self.send_errors, "send errors"),
            (self.problems, "problems"),
            (self.unreachable, "unreachable"),
        ] {
            if n > 0 {
                t.push(format!("{n} {what}"));
            }
        }
        if t.is_empty() {
            "ok".into()
        } else {
            t.join(", ")
        }
    }
}

async fn latency(o: &Options) {
    let dirs = retalk_testkit::bench::Dirs::new().unwrap();
    let (agents_dir, where_agents) = match &dirs.tmpfs {
        Some(d) => (d.path(), "tmpfs (/dev/shm)"),
        None => (dirs.disk.path(), "disk (no /dev/shm here)"),
    };
    let relay_db = dirs.disk.path().join("relay.db");
    let (mut relay, addr) = start_relay(
        this_relay(),
        &[
            "--backend",
            &o.backend,
            "--db",
            relay_db.to_str().unwrap(),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--ip-rate-limit",
            "0",
            "--max-connections",
            "4096",
        ],
    );
    let url = format!("http://{addr}");
    let most = o.pairs.iter().copied().max().unwrap_or(1);
    println!("\n== (a) send-to-application latency ==");
    println!(
        "relay: this checkout's retalk-relay binary, {} backend{}, on {url}",
        o.backend,
        if o.backend == "sqlite" {
            format!(" (file on disk, {})", relay_db.display())
        } else {
            String::new()
        }
    );
    println!(
        "agents: {} pairs of clients in this process, SQLite identity folders on {where_agents}, \
         real HTTP on loopback; every agent runs Client::follow",
        most
    );
    let t = Instant::now();
    let pairs = make_pairs(most, agents_dir, &url).await;
    println!(
        "(created and published {} agents in {:.1} s)",
        2 * most,
        t.elapsed().as_secs_f64()
    );

    let wait = Follow::default();
    let poll = Follow {
        wait: 0.0,
        ..Follow::default()
    };
    println!(
        "wait: {wait:?}\npoll: {poll:?} (the same driver: wait_for_mail(0) answers at once, \
         so it sleeps `poll` between reads)"
    );
    println!(
        "\n{:>5}  {:<26} {:>5} {:>9} {:>9} {:>9} {:>7} {:>7} {:>7} {:>5}   errors",
        "pairs", "mode", "n", "p50 ms", "p99 ms", "max ms", "wall s", "msg/s", "CPU", "load"
    );
    let relay_pid = relay.id();
    let mut run_id = 0;
    let mut results: Vec<(usize, &str, Duration, Duration)> = Vec::new();
    let back_to_back = format!("wait, gaps 0-{} ms", o.gap.as_millis());
    for &n in &o.pairs {
        let active = &pairs[..n];
        let mut modes = vec![
            ("wait, first message", &wait, 1, o.gap),
            (
                back_to_back.as_str(),
                &wait,
                o.wait_messages.div_ceil(n).clamp(10, 300),
                o.gap,
            ),
        ];
        if n > 1 {
            // Back to back, many pairs saturate the 2 cores: also paced
            // as the polling runs are, one message per pair a second.
            modes.push((
                "wait, gaps 0-2 s",
                &wait,
                o.poll_messages.div_ceil(n).clamp(10, 30),
                Duration::from_secs(2),
            ));
        }
        modes.push((
            "poll 2 s, gaps 0-2 s",
            &poll,
            o.poll_messages.div_ceil(n).clamp(3, 10),
            Duration::from_secs_f64(poll.poll),
        ));
        for (mode, follow, per_pair, gap) in modes {
            run_id += 1;
            let before = cpu_ticks(relay_pid) + cpu_ticks(std::process::id());
            let mut l = run(active, follow, per_pair, gap, run_id).await;
            l.cpu = (cpu_ticks(relay_pid) + cpu_ticks(std::process::id()) - before) as f64
                / clock_ticks_per_second();
            l.row(n, mode);
            results.push((n, mode, pct(&l.samples, 0.50), pct(&l.samples, 0.99)));
        }
    }
    println!(
        "\nCPU: the relay and the agents (this process) together, in % of all cores; \
         load: the 1-minute load average after the run (other work on the machine counts)."
    );
    println!("ratio poll/wait (same run):");
    for &n in &o.pairs {
        let of = |m: &str| results.iter().find(|r| r.0 == n && r.1 == m);
        let Some(p) = of("poll 2 s, gaps 0-2 s") else {
            continue;
        };
        for m in [back_to_back.as_str(), "wait, gaps 0-2 s"] {
            if let Some(w) = of(m) {
                println!(
                    "  {n:>3} pair(s), poll / {m:<18}: p50 {:>6.0}x   p99 {:>6.0}x",
                    p.2.as_secs_f64() / w.2.as_secs_f64(),
                    p.3.as_secs_f64() / w.3.as_secs_f64()
                );
            }
        }
    }
    println!("goal with wait: p50 < 5 ms, p99 < 50 ms:");
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    for r in results.iter().filter(|r| r.1.starts_with("wait, gaps")) {
        println!(
            "  {:>3} pair(s), {:<18}: p50 {:.2} ms {}, p99 {:.2} ms {}",
            r.0,
            r.1,
            ms(r.2),
            met(r.2 < Duration::from_millis(5)),
            ms(r.3),
            met(r.3 < Duration::from_millis(50))
        );
    }
    println!(
        "relay peak RSS {:.1} MiB",
        status_kib(relay.id(), "VmHWM:") as f64 / 1024.0
    );
    drop(pairs);
    common::stop(&mut relay);
}

async fn make_pairs(n: usize, dir: &Path, url: &str) -> Vec<Pair> {
    let agent = |name: String| -> Arc<Agent> {
        let store = SqliteStore::open(dir.join(&name)).unwrap();
        let transport = HttpTransport::new(url).unwrap();
        Arc::new(Client::create(store, transport, SystemClock, "bench-secret", &name).unwrap())
    };
    let pairs: Vec<Pair> = (0..n)
        .map(|i| Pair {
            sender: agent(format!("s{i}")),
            receiver: agent(format!("r{i}")),
        })
        .collect();
    let mut tasks = Vec::new();
    for p in &pairs {
        p.sender
            .add_contact("receiver", p.receiver.user_id().clone(), None)
            .unwrap();
        p.receiver
            .add_contact("sender", p.sender.user_id().clone(), None)
            .unwrap();
        for a in [p.sender.clone(), p.receiver.clone()] {
            tasks.push(tokio::spawn(async move { a.publish(10, false).await }));
        }
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    pairs
}

/// Every agent of `pairs` follows with `follow`; each sender sends
/// `per_pair` messages to its receiver, one at a time, and the latencies
/// the receivers' handlers saw are collected.
async fn run(
    pairs: &[Pair],
    follow: &Follow,
    per_pair: usize,
    gap: Duration,
    run_id: u64,
) -> Latencies {
    let epoch = Instant::now();
    let (stop, stopped) = watch::channel(false);
    let problems = Arc::new(AtomicUsize::new(0));
    let unreachable = Arc::new(AtomicUsize::new(0));
    // Each driver maintains first thing; the sends start after that.
    let ready = Arc::new(AtomicUsize::new(0));
    let mut followers = Vec::new();
    let mut senders = Vec::new();
    for p in pairs {
        let (seen, mut deliveries) = mpsc::unbounded_channel::<(usize, Duration)>();
        for (agent, seen) in [(p.sender.clone(), None), (p.receiver.clone(), Some(seen))] {
            let mut stopped = stopped.clone();
            let follow = follow.clone();
            let (problems, unreachable, ready) =
                (problems.clone(), unreachable.clone(), ready.clone());
            followers.push(tokio::spawn(async move {
                let until = async move {
                    let _ = stopped.wait_for(|s| *s).await;
                };
                agent
                    .follow(&follow, until, move |event| {
                        match event {
                            Followed::Message(m) => {
                                let at = epoch.elapsed();
                                // "RUN SEQ NANOS": when it was sent.
                                let mut f = m.text.split(' ').map(|x| x.parse::<u128>().ok());
                                if let (Some(Some(run)), Some(Some(seq)), Some(Some(sent))) =
                                    (f.next(), f.next(), f.next())
                                {
                                    if let (Some(seen), true) = (&seen, run == u128::from(run_id)) {
                                        let sent = Duration::from_nanos(sent as u64);
                                        let _ = seen.send((seq as usize, at.saturating_sub(sent)));
                                    }
                                }
                            }
                            Followed::Problem(_) => {
                                problems.fetch_add(1, Ordering::Relaxed);
                            }
                            Followed::Unreachable { .. } => {
                                unreachable.fetch_add(1, Ordering::Relaxed);
                            }
                            Followed::Maintained(_) | Followed::MaintainFailed(_) => {
                                ready.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => {}
                        }
                        Ok::<_, ClientError>(())
                    })
                    .await
            }));
        }
        let sender = p.sender.clone();
        let to: UserId = p.receiver.user_id().clone();
        let ready = ready.clone();
        let agents = 2 * pairs.len();
        senders.push(tokio::spawn(async move {
            let t = Instant::now();
            while ready.load(Ordering::Relaxed) < agents && t.elapsed() < Duration::from_secs(20) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let mut out = Latencies::default();
            for seq in 0..per_pair {
                let pause = rand::thread_rng().gen_range(0.0..=gap.as_secs_f64());
                tokio::time::sleep(Duration::from_secs_f64(pause)).await;
                let sent = epoch.elapsed();
                let text = format!("{run_id} {seq} {}", sent.as_nanos());
                if sender.send(&to, &text).await.is_err() {
                    out.send_errors += 1;
                }
                loop {
                    match tokio::time::timeout(Duration::from_secs(60), deliveries.recv()).await {
                        Ok(Some((s, latency))) if s == seq => {
                            out.samples.push(latency);
                            break;
                        }
                        Ok(Some(_)) => continue, // a copy of an earlier one
                        _ => {
                            out.lost += 1;
                            break;
                        }
                    }
                }
            }
            out
        }));
    }
    let started = Instant::now();
    let mut all = Latencies::default();
    for s in senders {
        let l = s.await.unwrap();
        all.samples.extend(l.samples);
        all.lost += l.lost;
        all.send_errors += l.send_errors;
    }
    all.wall = started.elapsed();
    let _ = stop.send(true);
    for f in followers {
        f.await.unwrap().unwrap();
    }
    all.problems = problems.load(Ordering::Relaxed);
    all.unreachable = unreachable.load(Ordering::Relaxed);
    all
}

// ----------------------------------------------------------------- parked

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at 3.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| {
        f.get(n - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(14) + field(15)
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The soft limit on open files of this process.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The kernel's count of connections dropped because a listener's accept
/// queue was full (TcpExt ListenOverflows, all listeners of the host).
fn listen_overflows() -> u64 {
    let netstat = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut lines = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "ListenOverflows")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The answer a parked connection got, and when.
struct Answered {
    index: usize,
    at: Instant,
    status: u16,
    body: Vec<u8>,
}

async fn parked(o: &Options) {
    let n = o.waiters;
    println!("\n== (b) the relay with {n} parked long-polls ==");
    if let Some(limit) = open_files_limit() {
        assert!(
            limit as usize > n + 200,
            "open-file limit {limit} is too low for {n} connections: raise `ulimit -n`"
        );
    }
    let tick = clock_ticks_per_second();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("parked.db");
    // The relay holds at most half of --max-connections reads at once.
    let max_connections = (2 * n + 100).to_string();
    let (mut relay, addr) = start_relay(
        this_relay(),
        &[
            "--backend",
            &o.parked_backend,
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
            &max_connections,
            "--max-wait",
            "25",
        ],
    );
    let pid = relay.id();
    println!(
        "relay: this checkout's retalk-relay, {} backend, --max-wait 25 --max-connections {max_connections}, pid {pid}",
        o.parked_backend
    );

    // Identities and pre-signed reads, before any connection opens.
    let t = Instant::now();
    let mut users: Vec<User> = (0..n).map(|_| User::new()).collect();
    let mut writer = User::new();
    let target = n / 2;
    let reads: Vec<Vec<u8>> = users
        .iter()
        .map(|u| {
            u.http(&Args::ReadMessages {
                peer: None,
                peek: false,
                wait: Wait::new(25.0),
            })
        })
        .collect();
    println!(
        "(made {n} identities and signed their reads in {:.1} s; none published keys but #{target}, the recipient below)",
        t.elapsed().as_secs_f64()
    );
    // The recipient and the writer publish keys (a send needs a known
    // recipient); the 9,999 others are unknown to the relay.
    let mut side = TcpStream::connect(addr).await.unwrap();
    side.set_nodelay(true).unwrap();
    let mut side_buf = Vec::new();
    for req in [users[target].publish(), writer.publish()] {
        side.write_all(&req).await.unwrap();
        let (status, body) = read_answer(&mut side, &mut side_buf).await;
        assert_eq!(status, 200, "publish: {}", String::from_utf8_lossy(&body));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = status_kib(pid, "VmRSS:");
    let threads = status_kib(pid, "Threads:");

    // Open the connections, 256 connects at a time, and write the reads.
    let (answers, mut answered) = mpsc::unbounded_channel::<Answered>();
    let written = Arc::new(AtomicUsize::new(0));
    let connecting = Arc::new(Semaphore::new(256));
    let reads = Arc::new(reads);
    let (relay_cpu0, own_cpu0) = (cpu_ticks(pid), cpu_ticks(std::process::id()));
    let overflows0 = listen_overflows();
    let first = Instant::now();
    for index in 0..n {
        let (answers, written, connecting, reads) = (
            answers.clone(),
            written.clone(),
            connecting.clone(),
            reads.clone(),
        );
        tokio::spawn(async move {
            let permit = connecting.acquire_owned().await.unwrap();
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            stream.write_all(&reads[index]).await.unwrap();
            drop(permit);
            written.fetch_add(1, Ordering::Relaxed);
            let mut buf = Vec::new();
            let (status, body) = read_answer(&mut stream, &mut buf).await;
            let _ = answers.send(Answered {
                index,
                at: Instant::now(),
                status,
                body,
            });
            // Keep the connection open until the relay goes.
            let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut [0u8; 1]).await;
        });
    }
    drop(answers);
    while written.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let all_written = first.elapsed();
    // Parked once the relay has nothing left to do: its CPU time stops
    // moving (checked every 250 ms).
    let mut last = cpu_ticks(pid);
    let mut still = 0;
    while still < 2 && first.elapsed() < Duration::from_secs(8) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = cpu_ticks(pid);
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }
    let settled = first.elapsed();
    let parking_cpu = (cpu_ticks(pid) - relay_cpu0) as f64 / tick;
    let own_cpu = (cpu_ticks(std::process::id()) - own_cpu0) as f64 / tick;
    let overflows = listen_overflows().saturating_sub(overflows0);
    let mut early = Vec::new();
    while let Ok(a) = answered.try_recv() {
        early.push(a);
    }
    let rss_parked = status_kib(pid, "VmRSS:");
    let threads_parked = status_kib(pid, "Threads:");
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    println!(
        "{n} reads written over {n} connections in {:.2} s; relay CPU still after {:.2} s \
         (relay used {parking_cpu:.2} s of CPU to take them, this bench {own_cpu:.2} s; \
         {overflows} connects overflowed the accept queue and were retried by the kernel); \
         answered early (not parked): {}{}",
        all_written.as_secs_f64(),
        settled.as_secs_f64(),
        early.len(),
        early
            .first()
            .map(|a| format!(
                " (first: #{} {} {})",
                a.index,
                a.status,
                String::from_utf8_lossy(&a.body)
            ))
            .unwrap_or_default()
    );

    // Idle: nothing happens until the waits run out (25 s after the
    // first was written); leave 4 s for the rest.
    let left = 25.0 - first.elapsed().as_secs_f64() - 4.0;
    let idle = o.idle.min(left);
    if idle < o.idle {
        println!(
            "(idle window shortened to {idle:.1} s: the first waits end 25 s after they began)"
        );
    }
    let (c0, w0) = (cpu_ticks(pid), Instant::now());
    tokio::time::sleep(Duration::from_secs_f64(idle.max(0.5))).await;
    let (c1, wall) = (cpu_ticks(pid), w0.elapsed());
    let rss_idle = status_kib(pid, "VmRSS:");
    let cpu = (c1 - c0) as f64 / tick;

    // One message to one parked identity.
    let mut raw = [0u8; 200];
    rand::thread_rng().fill_bytes(&mut raw);
    let body = base64::engine::general_purpose::STANDARD.encode(raw);
    let send = writer.http(&Args::SendMessage {
        to: users[target].id.to_string(),
        mtype: 1,
        body: body.clone(),
    });
    let c_wake = cpu_ticks(pid);
    let t0 = Instant::now();
    side.write_all(&send).await.unwrap();
    let (status, answer) = read_answer(&mut side, &mut side_buf).await;
    let send_answered = t0.elapsed();
    assert_eq!(status, 200, "send: {}", String::from_utf8_lossy(&answer));
    let mut others_woken = 0;
    let woken = loop {
        let a = tokio::time::timeout(Duration::from_secs(5), answered.recv())
            .await
            .expect("the recipient's parked read was not answered within 5 s")
            .unwrap();
        if a.index == target {
            break a;
        }
        others_woken += 1;
    };
    let wake = woken.at.duration_since(t0);
    assert_eq!(woken.status, 200);
    let delivered = String::from_utf8_lossy(&woken.body).contains(&body);
    tokio::time::sleep(Duration::from_millis(500)).await;
    while answered.try_recv().is_ok() {
        others_woken += 1;
    }
    let wake_cpu = (cpu_ticks(pid) - c_wake) as f64 / tick;
    let still_parked = n - 1 - others_woken - early.len();
    let since_first = first.elapsed();

    // SIGTERM with the others parked.
    let t_term = Instant::now();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let mut on_term = 0;
    let mut empty = 0;
    let mut last_answer = Duration::ZERO;
    while on_term < still_parked {
        match tokio::time::timeout(Duration::from_secs(5), answered.recv()).await {
            Ok(Some(a)) => {
                on_term += 1;
                if a.status == 200 && a.body.as_slice() == b"[]" {
                    empty += 1;
                }
                last_answer = a.at.duration_since(t_term);
            }
            _ => break,
        }
    }
    let status = relay.wait().unwrap();
    let exited = t_term.elapsed();

    println!("\n{:<52} {:>12}", "relay", "");
    println!(
        "{:<52} {:>9.1} MiB   ({threads} threads)",
        "resident memory before parking (VmRSS)",
        mib(rss_before)
    );
    println!(
        "{:<52} {:>9.1} MiB   ({:.1} KiB per parked read; {fds} open fds, {threads_parked} threads)",
        format!("resident memory with {n} parked"),
        mib(rss_parked),
        (rss_parked.saturating_sub(rss_before)) as f64 / n as f64
    );
    println!(
        "{:<52} {:>9.1} MiB",
        format!("resident memory after {idle:.1} s idle"),
        mib(rss_idle)
    );
    println!(
        "{:<52} {:>9.2} s     ({:.2} % of one core over {:.1} s; {} ticks of 1/{tick:.0} s)",
        "CPU (utime+stime) while idle with all parked",
        cpu,
        cpu / wall.as_secs_f64() * 100.0,
        wall.as_secs_f64(),
        c1 - c0
    );
    println!(
        "{:<52} {:>9.2} ms",
        "send_message to one parked identity: send answered",
        ms(send_answered)
    );
    println!(
        "{:<52} {:>9.2} ms    (message in the answer: {delivered}; relay CPU {wake_cpu:.2} s)",
        "  its parked read answered, after the send began", // same t0
        ms(wake)
    );
    println!(
        "{:<52} {:>9}       ({} answered; {:.1} s after the first read was written)",
        "  the others, still parked 0.5 s later",
        still_parked,
        others_woken,
        since_first.as_secs_f64()
    );
    println!(
        "{:<52} {:>9.1} ms    ({on_term} answered, {empty} of them 200 [])",
        "SIGTERM: last parked read answered after",
        ms(last_answer)
    );
    println!(
        "{:<52} {:>9.1} ms    ({status})",
        "SIGTERM: relay exited after",
        ms(exited)
    );
    println!(
        "goals: < 100 MiB with {n} parked: {}; no measurable CPU while idle: {}",
        if rss_parked.max(rss_idle) < 100 * 1024 {
            "met"
        } else {
            "NOT met"
        },
        if c1 == c0 {
            "met (0 ticks)".to_string()
        } else {
            format!("{} ticks", c1 - c0)
        }
    );
}
