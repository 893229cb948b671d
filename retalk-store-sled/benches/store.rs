//! Throughput of the sled stores next to the in-memory ones, in one run:
//! `cargo bench -p retalk-store-sled --bench store`. The same operations
//! as retalk-store-sqlite's bench, so the two tables read side by side.
//!
//! Each operation runs for a short time budget (or a maximum count),
//! single-threaded, with the durability the stores ship with: every write
//! is flushed and fsynced before it returns, so on a real disk the numbers
//! mostly measure fsync. The tmpfs column (/dev/shm, where fsync is nearly
//! free) shows the stores' own CPU cost; a raw sled probe shows what the
//! flush and the fdatasync cost. Then relay requests (use_nonce, then the
//! tool) from 1 and 64 threads, and 64 threads claiming keys. About 25 s.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::error::Error;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use retalk_proto::client::{Changes, MemoryStore, OutboxEntry, OutboxKind, SessionRecord, Store};
use retalk_proto::ids::{sha256_hex, UserId};
use retalk_proto::relay::{DeliveryRules, MemoryRelayStore, NewMessage, ReadLimit, RelayStore};
use retalk_proto::wire::PublicKeys;
use retalk_store_sled::{SledRelayStore, SledStore};

type Res<T> = Result<T, Box<dyn Error>>;

const BUDGET: Duration = Duration::from_millis(500);
/// How long each concurrent measurement runs.
const CONCURRENT_BUDGET: Duration = Duration::from_millis(800);
const MAX_OPS: usize = 40_000;
const PREFILL: usize = 20_000;

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

/// A string as the store's values hold it: u64 big-endian length, bytes.
fn enc_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Fills mailboxes straight into the sled trees, before the store opens
/// them (a fsync per message through the API would take most of the
/// budget). Mirrors the `messages` layout of `src/relay.rs`; the count is
/// checked through the API afterwards, so a layout change fails loudly.
fn prefill_sled(path: &Path, to: &[&UserId], from: &UserId, n: usize) -> Res<()> {
    let db = sled::open(path)?;
    let messages = db.open_tree("messages")?;
    let mut id = 0u64;
    for i in 0..n {
        for to in to {
            id += 1;
            let mut key = to.as_str().as_bytes().to_vec();
            key.extend_from_slice(&id.to_be_bytes());
            let mut value = vec![1u8];
            enc_str(&mut value, from.as_str());
            value.extend_from_slice(&(i as f64).to_bits().to_be_bytes());
            value.extend_from_slice(&1i64.to_be_bytes());
            enc_str(&mut value, &body(i));
            messages.insert(key, value)?;
        }
    }
    db.open_tree("meta")?
        .insert("next_message", &id.to_be_bytes())?;
    db.flush()?;
    Ok(())
}

struct RelayNumbers {
    use_nonce: f64,
    send: f64,
    read_one: f64,
    read_batch: f64,
    claim: f64,
}

/// Opens a sled relay store at `path` with the two mailboxes prefilled.
fn sled_relay(path: &Path, readers: &[&UserId], from: &UserId) -> Res<SledRelayStore> {
    prefill_sled(path, readers, from, PREFILL)?;
    let store = SledRelayStore::open(path)?;
    let all = ReadLimit {
        max_messages: usize::MAX,
        max_bytes: usize::MAX,
    };
    let held = store.read_messages(readers[0], None, true, all)?.len();
    if held != PREFILL {
        return Err(format!("prefill: {held} messages, not {PREFILL}").into());
    }
    Ok(store)
}

fn users() -> Res<[UserId; 5]> {
    Ok([uid(1)?, uid(2)?, uid(3)?, uid(4)?, uid(5)?])
}

fn relay_numbers<S: RelayStore>(store: &S) -> Res<RelayNumbers> {
    let [a, b, reader, owner, batch_reader] = users()?;
    for u in [&b, &reader, &batch_reader] {
        store.publish_keys(u, &keys(), &[], None, 1000)?;
    }
    // One step for the whole stash.
    let otks: Vec<(String, String)> = (0..PREFILL)
        .map(|i| (format!("{i:011}"), format!("{i:043}")))
        .collect();
    store.publish_keys(&owner, &keys(), &otks, None, u64::MAX)?;
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
    let read_one = measure(PREFILL, |_| {
        match store.read_messages(&reader, None, false, one)? {
            got if got.len() == 1 => Ok(()),
            _ => Err("read_messages: the prefilled mailbox is empty".into()),
        }
    })?;
    let hundred = ReadLimit {
        max_messages: 100,
        max_bytes: 1 << 20,
    };
    let read_batch = measure(PREFILL / 100, |_| {
        match store.read_messages(&batch_reader, None, false, hundred)? {
            got if got.len() == 100 => Ok(()),
            _ => Err("read_messages: the prefilled mailbox ran out".into()),
        }
    })? * 100.0;
    let claim = measure(PREFILL, |_| {
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

/// `threads` threads calling `request(thread, i)` for the budget; calls/s.
fn concurrently(threads: usize, request: impl Fn(usize, usize) -> Res<()> + Sync) -> Res<f64> {
    let done = AtomicUsize::new(0);
    let errors = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (done, errors, request) = (&done, &errors, &request);
            s.spawn(move || {
                let mut i = 0;
                while start.elapsed() < CONCURRENT_BUDGET {
                    if request(t, i).is_err() {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            });
        }
    });
    match errors.load(Ordering::Relaxed) {
        0 => Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()),
        n => Err(format!("{n} requests failed").into()),
    }
}

/// 64 threads claiming one user's keys at once.
fn claims_64<S: RelayStore>(store: &S) -> Res<f64> {
    let owner = uid(200)?;
    let otks: Vec<(String, String)> = (0..MAX_OPS)
        .map(|i| (format!("{i:011}"), format!("{i:043}")))
        .collect();
    store.publish_keys(&owner, &keys(), &otks, None, u64::MAX)?;
    concurrently(64, |_, _| {
        store.claim_key(&owner)?;
        Ok(())
    })
}

/// What each request does, as the relay does for a signed request: the
/// nonce first (a durable write), then the tool. The SQLite bench's rows.
#[derive(Clone, Copy)]
enum Request {
    /// nonce + send_message: two durable writes.
    Send,
    /// nonce + count_keys: one durable write and one read.
    CountKeys,
}

/// `threads` callers looping over `request`; requests/s. `run` keeps the
/// nonces of successive runs on one store apart.
fn requests<S: RelayStore>(store: &S, threads: usize, request: Request, run: &str) -> Res<f64> {
    let to: Vec<UserId> = (300..308).map(uid).collect::<Res<_>>()?;
    for u in &to {
        store.publish_keys(u, &keys(), &[], None, 1000)?;
    }
    let from: Vec<UserId> = (0..threads).map(|t| uid(1000 + t)).collect::<Res<_>>()?;
    concurrently(threads, |t, i| {
        let peer = &to[(t + i) % to.len()];
        if !store.use_nonce(&format!("{run}-{t}-{i}"), 1000.0, 700.0)? {
            return Err("nonce replayed".into());
        }
        match request {
            Request::Send => {
                store.send_message(&message(&from[t], peer, i), &OPEN)?;
            }
            Request::CountKeys => {
                store.count_keys(peer)?;
            }
        }
        Ok(())
    })
}

/// Both request kinds from 1 and from 64 threads, then 64 threads
/// claiming: five numbers.
fn concurrent_numbers<S: RelayStore>(store: &S) -> Res<[f64; 5]> {
    Ok([
        requests(store, 1, Request::Send, "s1")?,
        requests(store, 64, Request::Send, "s64")?,
        requests(store, 1, Request::CountKeys, "c1")?,
        requests(store, 64, Request::CountKeys, "c64")?,
        claims_64(store)?,
    ])
}

/// The disk's rate of small write + fsync, the ceiling of durable writes.
fn fsyncs_per_second(dir: &Path) -> Res<f64> {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("fsync-probe"))?;
    measure(MAX_OPS, |_| {
        f.write_all(&[0u8; 100])?;
        f.sync_all()?;
        Ok(())
    })
}

/// Raw sled, small inserts per second: without a flush (sled's default,
/// its own flush every 500 ms), with `flush()` after each (sled's log
/// write + `sync_file_range` on Linux), and with `flush()` then
/// `fdatasync` of the log file (what the stores do: see `Base::sync`).
fn raw_sled_flush_cost(dir: &Path) -> Res<[f64; 3]> {
    let path = dir.join("raw.sled");
    let db = sled::open(&path)?;
    let log = std::fs::File::open(path.join("db"))?;
    let tree = db.open_tree("t")?;
    let value = [7u8; 300];
    let mut key = 0u64;
    let mut rate = |sync: u8| {
        measure(MAX_OPS, |_| {
            key += 1;
            tree.insert(key.to_be_bytes(), &value[..])?;
            if sync > 0 {
                db.flush()?;
            }
            if sync > 1 {
                log.sync_data()?;
            }
            Ok(())
        })
    };
    Ok([rate(0)?, rate(1)?, rate(2)?])
}

fn micros(rate: f64) -> f64 {
    1e6 / rate
}

fn row(op: &str, disk: f64, tmpfs: Option<f64>, memory: f64) {
    let tmpfs = tmpfs.map_or("-".to_string(), |t| format!("{t:.0}"));
    println!(
        "{op:<40} {disk:>9.0} {tmpfs:>9} {memory:>10.0} {:>10.0}x",
        memory / disk
    );
}

/// Where fsync is (nearly) free, so the stores' own cost shows: tmpfs.
fn tmpfs_dir() -> Option<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).ok()
    } else {
        None
    }
}

fn main() -> Res<()> {
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let shm = tmpfs_dir();
    println!(
        "retalk-store-sled: ops/s, single thread, flush + fsync before every write returns, \
         database in {}",
        dir.path().display()
    );
    println!(
        "this disk: {:.0} write+fsync/s. The tmpfs column (/dev/shm, fsync ~free) shows the \
         stores' CPU cost alone.",
        fsyncs_per_second(dir.path())?
    );
    let mut probes = vec![("disk", raw_sled_flush_cost(dir.path())?)];
    if let Some(d) = &shm {
        probes.push(("tmpfs", raw_sled_flush_cost(d.path())?));
    }
    for (place, [buffered, flushed, synced]) in probes {
        println!(
            "raw sled insert (300 B) on {place}: {buffered:.0}/s buffered, {flushed:.0}/s with \
             flush(), {synced:.0}/s with flush() + fdatasync: the flush costs {:.0} us, the \
             fdatasync {:.0} us more",
            micros(flushed) - micros(buffered),
            micros(synced) - micros(flushed)
        );
    }
    println!();
    println!(
        "{:<40} {:>9} {:>9} {:>10} {:>11}",
        "operation", "sled", "tmpfs", "memory", "mem/sled"
    );
    let [a, _, reader, _, batch_reader] = users()?;
    let readers = [&reader, &batch_reader];
    let disk = relay_numbers(&sled_relay(&dir.path().join("relay.sled"), &readers, &a)?)?;
    let fast = match &shm {
        Some(d) => Some(relay_numbers(&sled_relay(
            &d.path().join("relay.sled"),
            &readers,
            &a,
        )?)?),
        None => None,
    };
    let memory_relay = MemoryRelayStore::new();
    for to in readers {
        memory_relay.publish_keys(to, &keys(), &[], None, 1000)?;
        for i in 0..PREFILL {
            memory_relay.send_message(&message(&a, to, i), &OPEN)?;
        }
    }
    let memory = relay_numbers(&memory_relay)?;
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
    let client_disk = client_commits(&SledStore::open(dir.path().join("identity"))?)?;
    let client_fast = match &shm {
        Some(d) => Some(client_commits(&SledStore::open(
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

    println!(
        "\nrelay requests/s, {} ms each, as the relay serves a signed request (use_nonce, then \
         the tool): concurrent writers share one fsync (group commit).",
        CONCURRENT_BUDGET.as_millis()
    );
    println!(
        "{:<40} {:>9} {:>9} {:>10}",
        "request, callers", "sled", "tmpfs", "memory"
    );
    let disk = concurrent_numbers(&SledRelayStore::open(dir.path().join("requests.sled"))?)?;
    let fast = match &shm {
        Some(d) => Some(concurrent_numbers(&SledRelayStore::open(
            d.path().join("requests.sled"),
        )?)?),
        None => None,
    };
    let memory = concurrent_numbers(&MemoryRelayStore::new())?;
    let labels = [
        "nonce + send_message, 1 thread",
        "nonce + send_message, 64 threads",
        "nonce + count_keys, 1 thread",
        "nonce + count_keys, 64 threads",
        "claim_key, 64 threads",
    ];
    for (i, label) in labels.iter().enumerate() {
        let tmpfs = fast.map_or("-".to_string(), |f| format!("{:.0}", f[i]));
        println!(
            "{label:<40} {:>9.0} {tmpfs:>9} {:>10.0}",
            disk[i], memory[i]
        );
    }
    println!("\n(took {:.1} s)", started.elapsed().as_secs_f64());
    Ok(())
}
