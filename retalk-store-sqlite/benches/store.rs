//! Throughput of the SQLite stores next to the in-memory ones, in one run:
//! `cargo bench -p retalk-store-sqlite --bench store`.
//!
//! First the disk's raw fsync rate (write + fdatasync of a small file for
//! 1 s): the ceiling of durable commits, so the other numbers can be read
//! against it. Then each operation for a short time budget (or a maximum
//! count) on a database in a temp dir, single-threaded, with the durability
//! the stores ship with (WAL, `synchronous=FULL`): one caller at a time
//! means one commit, so one fsync, per write. Then relay requests from 1
//! and 64 threads at once, as the HTTP server's blocking pool calls the
//! store: the relay store's writer commits concurrent writes together (one
//! fsync per batch), so 64 callers go far beyond the fsync rate. Then a
//! read/write mix for two read-pool sizes. Takes about 45 s.

use std::error::Error;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use retalk_proto::client::{Changes, MemoryStore, OutboxEntry, OutboxKind, SessionRecord, Store};
use retalk_proto::ids::{sha256_hex, UserId};
use retalk_proto::relay::{DeliveryRules, MemoryRelayStore, NewMessage, ReadLimit, RelayStore};
use retalk_proto::wire::PublicKeys;
use retalk_store_sqlite::{SqliteRelayStore, SqliteStore};

type Res<T> = Result<T, Box<dyn Error>>;

const BUDGET: Duration = Duration::from_millis(800);
const MAX_OPS: usize = 40_000;
const PREFILL: usize = 40_000;

/// Runs `op(i)` for i = 0.. until the budget or `max` is reached; ops/s.
fn measure(max: usize, mut op: impl FnMut(usize) -> Res<()>) -> Res<f64> {
    let start = Instant::now();
    let mut n = 0;
    while n < max && start.elapsed() < BUDGET {
        op(n)?;
        n += 1;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

fn uid(n: usize) -> Res<UserId> {
    Ok(UserId::parse(&format!("{n:032x}"))?)
}

fn keys() -> PublicKeys {
    PublicKeys {
        identity_key: "I".repeat(43),
        signing_key: "S".repeat(43),
    }
}

const OPEN: DeliveryRules = DeliveryRules {
    max_mailbox: 0,
    max_per_sender: 0,
    refusals_expire_before: f64::NEG_INFINITY,
};

/// A typical ciphertext: a short chat message, base64.
fn body(i: usize) -> String {
    format!("{i:08}{}", "A".repeat(292))
}

fn message(from: &UserId, to: &UserId, i: usize) -> NewMessage {
    let body = body(i);
    NewMessage {
        sender: from.clone(),
        recipient: to.clone(),
        mtype: 1,
        body_hash: sha256_hex(&body),
        body,
        ts: i as f64,
    }
}

struct RelayNumbers {
    use_nonce: f64,
    send: f64,
    read_one: f64,
    read_batch: f64,
    claim: f64,
}

/// Fills a mailbox and a key stash quickly, outside the measured code: in
/// one transaction for SQLite, through the API for memory.
trait Prefill: RelayStore {
    /// `n` messages for each of `to`, `n` one-time keys for `owner`.
    fn prefill(&self, to: &[&UserId], from: &UserId, owner: &UserId, n: usize) -> Res<()>;
}

impl Prefill for MemoryRelayStore {
    fn prefill(&self, to: &[&UserId], from: &UserId, owner: &UserId, n: usize) -> Res<()> {
        for to in to {
            for i in 0..n {
                self.send_message(&message(from, to, i), &OPEN)?;
            }
        }
        let otks: Vec<(String, String)> = (0..n)
            .map(|i| (format!("{i:011}"), format!("{i:043}")))
            .collect();
        self.publish_keys(owner, &keys(), &otks, None, u64::MAX)?;
        Ok(())
    }
}

impl Prefill for SqliteRelayStore {
    fn prefill(&self, to: &[&UserId], from: &UserId, owner: &UserId, n: usize) -> Res<()> {
        self.publish_keys(owner, &keys(), &[], None, u64::MAX)?;
        let mut conn = rusqlite::Connection::open(self.path())?;
        let tx = conn.transaction()?;
        {
            let mut m = tx.prepare(
                "INSERT INTO messages(ts, sender, recipient, mtype, body) VALUES(?1, ?2, ?3, 1, ?4)",
            )?;
            let mut k = tx.prepare("INSERT INTO otks(owner, key_id, key) VALUES(?1, ?2, ?3)")?;
            for i in 0..n {
                for to in to {
                    m.execute(rusqlite::params![
                        i as f64,
                        from.as_str(),
                        to.as_str(),
                        body(i)
                    ])?;
                }
                k.execute(rusqlite::params![
                    owner.as_str(),
                    format!("{i:011}"),
                    format!("{i:043}")
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

fn relay_numbers<S: Prefill>(store: &S) -> Res<RelayNumbers> {
    let (a, b, reader, owner, batch_reader) = (uid(1)?, uid(2)?, uid(3)?, uid(4)?, uid(5)?);
    for u in [&b, &reader, &batch_reader] {
        store.publish_keys(u, &keys(), &[], None, 1000)?;
    }
    store.prefill(&[&reader, &batch_reader], &a, &owner, PREFILL)?;
    let use_nonce = measure(MAX_OPS, |i| {
        store.use_nonce(&format!("{i:032x}"), 1000.0, 700.0)?;
        Ok(())
    })?;
    let send = measure(MAX_OPS, |i| {
        store.send_message(&message(&a, &b, i), &OPEN)?;
        Ok(())
    })?;
    let one = ReadLimit {
        max_messages: 1,
        max_bytes: 1 << 20,
    };
    let read_one = measure(MAX_OPS, |_| {
        store.read_messages(&reader, None, false, one)?;
        Ok(())
    })?;
    let hundred = ReadLimit {
        max_messages: 100,
        max_bytes: 1 << 20,
    };
    let read_batch = measure(PREFILL / 100, |_| {
        store.read_messages(&batch_reader, None, false, hundred)?;
        Ok(())
    })? * 100.0;
    let claim = measure(MAX_OPS, |_| {
        store.claim_key(&owner)?;
        Ok(())
    })?;
    Ok(RelayNumbers {
        use_nonce,
        send,
        read_one,
        read_batch,
        claim,
    })
}

/// The client's most common batch: an advanced session and the outbox
/// entry it produced.
fn client_commits<S: Store>(store: &S) -> Res<f64> {
    let peer = uid(9)?;
    measure(MAX_OPS, |i| {
        let _lock = store.lock()?;
        store.commit(Changes {
            sessions: vec![SessionRecord {
                peer: peer.clone(),
                session_id: "session".into(),
                pickle: "P".repeat(600),
                last_received: i as f64,
                created: 0.0,
            }],
            outbox: vec![OutboxEntry {
                key: format!("{i:032x}"),
                envelope_id: format!("{i:032x}"),
                peer: peer.clone(),
                kind: OutboxKind::Message,
                mtype: 1,
                body: body(i),
                created: i as f64,
                next_attempt: i as f64 + 120.0,
                attempts: 0,
                last_error: None,
                envelope: None,
            }],
            ..Changes::default()
        })?;
        Ok(())
    })
}

/// 8 threads for a fixed time, each looping over a request-like mix: a
/// nonce, then alternately get_keys (a read) and send_message (a write);
/// or, with `reads_only`, get_keys then count_keys.
fn concurrent_mix(store: &SqliteRelayStore, reads_only: bool) -> Res<f64> {
    let users: Vec<UserId> = (100..108).map(uid).collect::<Res<_>>()?;
    for u in &users {
        store.publish_keys(u, &keys(), &[], None, 1000)?;
    }
    let request = |t: usize, i: usize, to: &UserId| -> bool {
        if reads_only {
            return store.get_keys(to).is_ok() && store.count_keys(to).is_ok();
        }
        let from = &users[t];
        store.use_nonce(&format!("{t}-{i}"), 1000.0, 700.0).is_ok()
            && if i & 1 == 1 {
                store.send_message(&message(from, to, i), &OPEN).is_ok()
            } else {
                store.get_keys(to).is_ok()
            }
    };
    let done = AtomicUsize::new(0);
    let errors = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..8 {
            let (users, done, errors, request) = (&users, &done, &errors, &request);
            s.spawn(move || {
                let mut i = 0;
                while start.elapsed() < BUDGET {
                    if !request(t, i, &users[(t + i) % 8]) {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            });
        }
    });
    if errors.load(Ordering::Relaxed) > 0 {
        return Err(format!("{} requests failed", errors.load(Ordering::Relaxed)).into());
    }
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

/// The disk's rate of small write + fdatasync for 1 s, the ceiling of
/// durable commits one at a time.
fn fsyncs_per_second(dir: &std::path::Path) -> Res<f64> {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("fsync-probe"))?;
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(1) {
        f.write_all(&[0u8; 100])?;
        f.sync_data()?;
        n += 1;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// What each request does, as the relay does for a signed request: the
/// nonce first (a durable write), then the tool.
#[derive(Clone, Copy)]
enum Request {
    /// nonce + send_message: two durable writes.
    Send,
    /// nonce + count_keys: one durable write and one read.
    CountKeys,
}

/// How long each concurrent measurement runs.
const CONCURRENT_BUDGET: Duration = Duration::from_millis(1500);

/// `threads` callers at once on `store` for [`CONCURRENT_BUDGET`], each
/// looping over `request`; requests/s. `run` keeps the nonces of
/// successive runs on one store apart.
fn concurrent_requests<S: RelayStore>(
    store: &S,
    threads: usize,
    request: Request,
    run: &str,
) -> Res<f64> {
    let to: Vec<UserId> = (300..308).map(uid).collect::<Res<_>>()?;
    for u in &to {
        store.publish_keys(u, &keys(), &[], None, 1000)?;
    }
    let from: Vec<UserId> = (0..threads).map(|t| uid(1000 + t)).collect::<Res<_>>()?;
    let (done, errors) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let start = Instant::now();
    std::thread::scope(|s| {
        for (t, me) in from.iter().enumerate() {
            let (to, done, errors) = (&to, &done, &errors);
            s.spawn(move || {
                let mut i = 0;
                while start.elapsed() < CONCURRENT_BUDGET {
                    let peer = &to[(t + i) % to.len()];
                    let ok = store
                        .use_nonce(&format!("{run}-{t}-{i}"), 1000.0, 700.0)
                        .is_ok_and(|fresh| fresh)
                        && match request {
                            Request::Send => {
                                store.send_message(&message(me, peer, i), &OPEN).is_ok()
                            }
                            Request::CountKeys => store.count_keys(peer).is_ok(),
                        };
                    if !ok {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            });
        }
    });
    if errors.load(Ordering::Relaxed) > 0 {
        return Err(format!("{} requests failed", errors.load(Ordering::Relaxed)).into());
    }
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

/// Both request kinds from 1 and from 64 threads: four numbers.
fn concurrent_numbers<S: RelayStore>(store: &S) -> Res<[f64; 4]> {
    Ok([
        concurrent_requests(store, 1, Request::Send, "s1")?,
        concurrent_requests(store, 64, Request::Send, "s64")?,
        concurrent_requests(store, 1, Request::CountKeys, "c1")?,
        concurrent_requests(store, 64, Request::CountKeys, "c64")?,
    ])
}

fn row(op: &str, disk: f64, tmpfs: Option<f64>, memory: f64) {
    let tmpfs = tmpfs.map_or("-".to_string(), |t| format!("{t:.0}"));
    println!(
        "{op:<40} {disk:>9.0} {tmpfs:>9} {memory:>10.0} {:>10.0}x",
        memory / disk
    );
}

/// Where fsync is (nearly) free, so SQLite's own cost shows: tmpfs.
fn tmpfs_dir() -> Option<tempfile::TempDir> {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).ok()
    } else {
        None
    }
}

fn main() -> Res<()> {
    let dir = tempfile::tempdir()?;
    let shm = tmpfs_dir();
    println!(
        "retalk-store-sqlite: ops/s, single thread, WAL + synchronous=FULL, database in {}",
        dir.path().display()
    );
    let fsyncs = fsyncs_per_second(dir.path())?;
    println!(
        "this disk: {fsyncs:.0} write+fdatasync/s (1 s probe); each SQLite commit is one fsync. \
         The tmpfs column (/dev/shm, fsync ~free) shows SQLite's CPU cost alone."
    );
    println!(
        "{:<40} {:>9} {:>9} {:>10} {:>11}",
        "operation", "sqlite", "tmpfs", "memory", "mem/sqlite"
    );
    let disk = relay_numbers(&SqliteRelayStore::open(dir.path().join("server.db"))?)?;
    let fast = match &shm {
        Some(d) => Some(relay_numbers(&SqliteRelayStore::open(
            d.path().join("server.db"),
        )?)?),
        None => None,
    };
    let memory = relay_numbers(&MemoryRelayStore::new())?;
    let f = |get: fn(&RelayNumbers) -> f64| fast.as_ref().map(get);
    row(
        "relay use_nonce",
        disk.use_nonce,
        f(|n| n.use_nonce),
        memory.use_nonce,
    );
    row("relay send_message", disk.send, f(|n| n.send), memory.send);
    row(
        "relay read_messages (1/read)",
        disk.read_one,
        f(|n| n.read_one),
        memory.read_one,
    );
    row(
        "relay read_messages (msgs/s, 100/read)",
        disk.read_batch,
        f(|n| n.read_batch),
        memory.read_batch,
    );
    row("relay claim_key", disk.claim, f(|n| n.claim), memory.claim);
    let client_disk = client_commits(&SqliteStore::open(dir.path().join("identity"))?)?;
    let client_fast = match &shm {
        Some(d) => Some(client_commits(&SqliteStore::open(
            d.path().join("identity"),
        )?)?),
        None => None,
    };
    let client_memory = client_commits(&MemoryStore::new())?;
    row(
        "client commit (session+outbox)",
        client_disk,
        client_fast,
        client_memory,
    );

    // The disk's rate drifts (other work on the machine): probe again.
    let fsyncs = fsyncs_per_second(dir.path())?;
    println!(
        "\nrelay requests/s, {:.1} s each, as the relay serves a signed request: use_nonce, \
         then the tool. sqlite: concurrent writes share one commit; this disk now: {fsyncs:.0} \
         write+fdatasync/s. memory: its use_nonce prunes by scanning every nonce, so it \
         slows as nonces pile up.",
        CONCURRENT_BUDGET.as_secs_f64()
    );
    println!(
        "{:<40} {:>9} {:>9} {:>10} {:>11}",
        "request, callers", "sqlite", "tmpfs", "memory", "sqlite/fsync"
    );
    let disk = concurrent_numbers(&SqliteRelayStore::open(dir.path().join("c.db"))?)?;
    let fast = match &shm {
        Some(d) => Some(concurrent_numbers(&SqliteRelayStore::open(
            d.path().join("c.db"),
        )?)?),
        None => None,
    };
    let memory = concurrent_numbers(&MemoryRelayStore::new())?;
    let labels = [
        "nonce + send_message, 1 thread",
        "nonce + send_message, 64 threads",
        "nonce + count_keys, 1 thread",
        "nonce + count_keys, 64 threads",
    ];
    for (i, label) in labels.iter().enumerate() {
        let tmpfs = fast.map_or("-".to_string(), |f| format!("{:.0}", f[i]));
        println!(
            "{label:<40} {:>9.0} {tmpfs:>9} {:>10.0} {:>11.1}x",
            disk[i],
            memory[i],
            disk[i] / fsyncs
        );
    }

    println!("\nsqlite relay on disk, 8 threads, nonce + (get_keys | send_message) per request:");
    println!("  read pool   requests/s   read-only requests/s (get_keys + count_keys)");
    for pool in [1, 8] {
        let path = dir.path().join(format!("pool-{pool}.db"));
        let store = SqliteRelayStore::open_with_pool(&path, pool)?;
        let mixed = concurrent_mix(&store, false)?;
        let reads = concurrent_mix(&store, true)?;
        println!("  {pool:>9} {mixed:>12.0} {reads:>22.0}");
    }
    Ok(())
}
