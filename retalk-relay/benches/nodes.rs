//! Relay throughput by storage layout, printed in one run: signed
//! `count_keys` and durable `send_message` per second for one node on
//! SQLite, one node on PostgreSQL, and two nodes on one PostgreSQL (the
//! load spread over both). Each node is the `retalk-relay` binary; the
//! PostgreSQL server is a private cluster this bench starts with its
//! default durability (every commit flushed), as SQLite's relay fsyncs.
//!
//! cargo bench -p retalk-relay --bench nodes -- [--connections 32] [--requests 20000]
//!
//! Requests are signed before the clock starts and sent over keep-alive
//! connections; the load generator shares the machine's cores with the
//! relays and the database, so the numbers are for comparing layouts on
//! one machine, not a capacity figure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::process::Child;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{read_answer, start_relay, this_relay, User, AUDIENCE};
use rand::RngCore;
use retalk_proto::wire::Args;
use retalk_testkit::postgres::{Cluster, Durability};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A relay binary on `store` (its backend flags); killed when dropped.
struct Node(Child, SocketAddr);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_node(store: &[&str]) -> Node {
    let mut args = store.to_vec();
    args.extend(["--host", "127.0.0.1", "--port", "0", "--audience", AUDIENCE]);
    args.extend(["--ip-rate-limit", "0", "--max-connections", "1024"]);
    let (child, addr) = start_relay(this_relay(), &args);
    Node(child, addr)
}

/// Sends every request (spread over `connections` connections, round
/// robin over the nodes) and returns requests per second; all must be 200.
async fn blast(nodes: &[SocketAddr], requests: Vec<Vec<u8>>, connections: usize) -> f64 {
    let mut lanes: Vec<Vec<Vec<u8>>> = vec![Vec::new(); connections];
    for (i, r) in requests.into_iter().enumerate() {
        lanes[i % connections].push(r);
    }
    let total: usize = lanes.iter().map(Vec::len).sum();
    let started = Instant::now();
    let tasks: Vec<_> = lanes
        .into_iter()
        .enumerate()
        .map(|(i, lane)| {
            let addr = nodes[i % nodes.len()];
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                stream.set_nodelay(true).unwrap();
                let mut buf = Vec::new();
                for req in lane {
                    stream.write_all(&req).await.unwrap();
                    let (status, _) = read_answer(&mut stream, &mut buf).await;
                    assert_eq!(status, 200, "a request failed");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    total as f64 / started.elapsed().as_secs_f64()
}

/// (count_keys/s, send_message/s) against `nodes`.
async fn measure(nodes: &[SocketAddr], connections: usize, requests: usize) -> (f64, f64) {
    let mut users: Vec<User> = (0..64).map(|_| User::new()).collect();
    let publishes: Vec<Vec<u8>> = users.iter_mut().map(User::publish).collect();
    blast(nodes, publishes, 8).await;
    let counts: Vec<Vec<u8>> = (0..requests)
        .map(|i| users[i % users.len()].http(&Args::CountKeys))
        .collect();
    let mut rng = rand::thread_rng();
    let sends: Vec<Vec<u8>> = (0..requests)
        .map(|i| {
            let mut raw = [0u8; 200];
            rng.fill_bytes(&mut raw);
            users[i % users.len()].http(&Args::SendMessage {
                to: users[(i + 1) % users.len()].id.to_string(),
                mtype: 1,
                body: base64::engine::general_purpose::STANDARD.encode(raw),
            })
        })
        .collect();
    let count_rate = blast(nodes, counts, connections).await;
    let send_rate = blast(nodes, sends, connections).await;
    (count_rate, send_rate)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map_or(default, |v| v.parse().expect("a number"))
    };
    let connections = flag("--connections", 32);
    let requests = flag("--requests", 20_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "retalk-relay nodes: {connections} connections, {requests} requests per tool, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut rows = Vec::new();

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bench.db");
    let sqlite = start_node(&["--backend", "sqlite", "--db", db.to_str().unwrap()]);
    rows.push((
        "1 node, SQLite",
        runtime.block_on(measure(&[sqlite.1], connections, requests)),
    ));
    drop(sqlite);

    let cluster = Cluster::start_with(Durability::Durable);
    let url = cluster.create_database();
    let pg = start_node(&["--backend", "postgres", "--database-url", &url]);
    rows.push((
        "1 node, PostgreSQL",
        runtime.block_on(measure(&[pg.1], connections, requests)),
    ));
    drop(pg);

    let url = cluster.create_database();
    let a = start_node(&["--backend", "postgres", "--database-url", &url]);
    let b = start_node(&["--backend", "postgres", "--database-url", &url]);
    rows.push((
        "2 nodes, one PostgreSQL",
        runtime.block_on(measure(&[a.1, b.1], connections, requests)),
    ));
    drop((a, b));
    std::thread::sleep(Duration::from_millis(100));

    println!("{:<26} {:>16} {:>18}", "", "count_keys/s", "send_message/s");
    for (name, (count, send)) in rows {
        println!("{name:<26} {count:>16.0} {send:>18.0}");
    }
}
