//! The storage benchmark the durable backends share (their `benches/store.rs`
//! call [`run`]): each operation on the backend's stores on disk, on tmpfs
//! and, as the baseline measured in the same run, on the in-memory stores;
//! one table of single-threaded operations (with memory/backend ratios) and
//! one of relay requests from 1 and 64 threads (with the backend's rate over
//! the disk's fsync rate). A backend supplies how to open its stores
//! ([`Backend`]), optionally a fast way to fill a relay store, and prints
//! its own extra measurements around [`run`].

use std::error::Error;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use retalk_proto::client::{Changes, MemoryStore, OutboxEntry, OutboxKind, SessionRecord, Store};
use retalk_proto::ids::UserId;
use retalk_proto::relay::{
    DeliveryRules, MemoryRelayStore, NewMessage, ReadLimit, RelayStore, SendOutcome,
};
use retalk_proto::wire::PublicKeys;

pub type Res<T> = Result<T, Box<dyn Error>>;

/// The most operations one single-threaded measurement makes.
pub const MAX_OPS: usize = 40_000;

/// Runs `op(i)` for i = 0.. until `budget` or `max` is reached; ops/s.
pub fn measure(budget: Duration, max: usize, op: impl FnMut(usize) -> Res<()>) -> Res<f64> {
    measure_until(|| Ok(()), budget, max, op)
}

/// [`measure`], timed until `finish`, called after the last `op`, returns.
fn measure_until(
    finish: impl FnOnce() -> Res<()>,
    budget: Duration,
    max: usize,
    mut op: impl FnMut(usize) -> Res<()>,
) -> Res<f64> {
    let start = Instant::now();
    let mut n = 0;
    while n < max && start.elapsed() < budget {
        op(n)?;
        n += 1;
    }
    finish()?;
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// `threads` threads calling `request(thread, i)` for i = 0.. until
/// `budget`; calls/s. Any failed call fails the measurement.
pub fn concurrently(
    threads: usize,
    budget: Duration,
    request: impl Fn(usize, usize) -> Res<()> + Sync,
) -> Res<f64> {
    concurrently_until(|| Ok(()), threads, budget, request)
}

/// [`concurrently`], timed until `finish`, called after the last call,
/// returns.
fn concurrently_until(
    finish: impl FnOnce() -> Res<()>,
    threads: usize,
    budget: Duration,
    request: impl Fn(usize, usize) -> Res<()> + Sync,
) -> Res<f64> {
    let (done, errors) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let start = Instant::now();
    let caller = |t: usize| {
        let (mut i, mut failed) = (0, 0);
        while start.elapsed() < budget {
            failed += usize::from(request(t, i).is_err());
            i += 1;
        }
        done.fetch_add(i, Ordering::Relaxed);
        errors.fetch_add(failed, Ordering::Relaxed);
    };
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || caller(t));
        }
    });
    match errors.into_inner() {
        0 => finish()?,
        n => return Err(format!("{n} requests failed").into()),
    }
    Ok(done.into_inner() as f64 / start.elapsed().as_secs_f64())
}

/// One durable write, answered once it has committed: a store that
/// answers some writes before they are durable (SQLite's use_nonce queues
/// its insert for the writer, which commits in order) has then written
/// them all. The relay measurements end with it, timed: what a store queued
/// is paid for by the measurement that queued it, not by the next one.
fn settle<S: RelayStore + ?Sized>(store: &S) -> Res<()> {
    store.publish_keys(&uid(7)?, &keys(), &[], None, 1000)?;
    Ok(())
}

/// The user with id `n` (32 hex digits).
pub fn uid(n: usize) -> Res<UserId> {
    Ok(UserId::parse(&format!("{n:032x}"))?)
}

/// Identity and signing keys of the right length.
pub fn keys() -> PublicKeys {
    PublicKeys {
        identity_key: "I".repeat(43),
        signing_key: "S".repeat(43),
    }
}

/// No caps, no refusals.
pub const OPEN: DeliveryRules = DeliveryRules {
    max_mailbox: 0,
    max_per_sender: 0,
    refusals_expire_before: f64::NEG_INFINITY,
};

/// A typical ciphertext: a short chat message, base64.
pub fn body(i: usize) -> String {
    format!("{i:08}{}", "A".repeat(292))
}

/// Message `i` from `from` to `to`, sent at `ts = i`.
pub fn message(from: &UserId, to: &UserId, i: usize) -> NewMessage {
    NewMessage::new(from.clone(), to.clone(), 1, body(i), i as f64)
}

/// One-time key `i` (key id, key).
pub fn otk(i: usize) -> (String, String) {
    (format!("{i:011}"), format!("{i:043}"))
}

/// What the single-threaded relay measurements need in place before they
/// start: `n` messages ([`message`]`(from, to, i)`) in each mailbox and `n`
/// one-time keys ([`otk`]) for `owner`. [`run`] checks it through the API
/// before measuring, so a backend's fast fill that goes wrong fails loudly.
pub struct Prefill {
    pub mailboxes: Vec<UserId>,
    pub from: UserId,
    pub owner: UserId,
    pub n: usize,
}

impl Prefill {
    /// The messages, one `send_message` each (registering the recipients).
    pub fn messages_through_api<S: RelayStore + ?Sized>(&self, store: &S) -> Res<()> {
        for to in &self.mailboxes {
            store.publish_keys(to, &keys(), &[], None, 1000)?;
            for i in 0..self.n {
                match store.send_message(&message(&self.from, to, i), &OPEN)? {
                    SendOutcome::Stored { .. } => {}
                    other => return Err(format!("prefill: {other:?}").into()),
                }
            }
        }
        Ok(())
    }

    /// The owner's keys, in one `publish_keys`.
    pub fn keys_through_api<S: RelayStore + ?Sized>(&self, store: &S) -> Res<()> {
        let otks: Vec<(String, String)> = (0..self.n).map(otk).collect();
        store.publish_keys(&self.owner, &keys(), &otks, None, u64::MAX)?;
        Ok(())
    }

    /// Whether `store` holds it all (peeking at the mailboxes).
    fn check<S: RelayStore + ?Sized>(&self, store: &S) -> Res<()> {
        let all = ReadLimit {
            max_messages: usize::MAX,
            max_bytes: usize::MAX,
        };
        for to in &self.mailboxes {
            let held = store.read_messages(to, None, true, all)?.len();
            if held != self.n {
                return Err(format!("prefill: {held} messages, not {}", self.n).into());
            }
        }
        let keys = store.count_keys(&self.owner)?.unclaimed;
        if keys != self.n as u64 {
            return Err(format!("prefill: {keys} one-time keys, not {}", self.n).into());
        }
        Ok(())
    }
}

/// How a backend opens its stores. `path` is a fresh path in the run's
/// folder (on disk or tmpfs); the backend makes a file or folder there.
pub trait Backend {
    type Relay: RelayStore;
    type Client: Store;

    fn relay(&self, path: &Path) -> Res<Self::Relay>;

    /// A relay store holding `fill`. By default through the API; a backend
    /// whose every write costs an fsync fills its files directly.
    fn prefilled_relay(&self, path: &Path, fill: &Prefill) -> Res<Self::Relay> {
        let store = self.relay(path)?;
        fill.messages_through_api(&store)?;
        fill.keys_through_api(&store)?;
        Ok(store)
    }

    fn client(&self, path: &Path) -> Res<Self::Client>;
}

/// The baseline: the in-memory stores (the paths are not used).
pub struct Memory;

impl Backend for Memory {
    type Relay = MemoryRelayStore;
    type Client = MemoryStore;

    fn relay(&self, _: &Path) -> Res<MemoryRelayStore> {
        Ok(MemoryRelayStore::new())
    }

    fn client(&self, _: &Path) -> Res<MemoryStore> {
        Ok(MemoryStore::new())
    }
}

/// What one bench run says and how long it measures.
pub struct Settings {
    /// The backend's column ("sqlite", "sled").
    pub name: &'static str,
    /// How its stores make a write durable, for the first line.
    pub durability: &'static str,
    /// How concurrent writes share an fsync, for the requests table.
    pub concurrency: &'static str,
    /// Each single-threaded measurement.
    pub budget: Duration,
    /// Each concurrent measurement.
    pub concurrent_budget: Duration,
    /// Messages per prefilled mailbox and prefilled one-time keys: the most
    /// reads and claims one measurement makes.
    pub prefill: usize,
}

/// Where the stores go: a temp dir on disk, and one on tmpfs (/dev/shm,
/// where fsync is nearly free, so the stores' own cost shows) if there is.
pub struct Dirs {
    pub disk: tempfile::TempDir,
    pub tmpfs: Option<tempfile::TempDir>,
}

impl Dirs {
    pub fn new() -> Res<Dirs> {
        Ok(Dirs {
            disk: tempfile::tempdir()?,
            tmpfs: tempfile::tempdir_in("/dev/shm").ok(),
        })
    }
}

/// The disk's rate of small write + fdatasync for 1 s: the ceiling of
/// durable writes one at a time.
pub fn fsyncs_per_second(dir: &Path) -> Res<f64> {
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

/// Takes `n` messages from `user`'s mailbox; an error if it held fewer.
fn read_full<S: RelayStore>(store: &S, user: &UserId, n: usize) -> Res<()> {
    let limit = ReadLimit {
        max_messages: n,
        max_bytes: 1 << 20,
    };
    match store.read_messages(user, None, false, limit)?.len() {
        got if got == n => Ok(()),
        got => Err(format!("read_messages: {got} messages, not {n}: the mailbox ran out").into()),
    }
}

/// The single-threaded relay operations, in [`SingleThread`] order.
fn relay_numbers<B: Backend>(backend: &B, path: &Path, set: &Settings) -> Res<Vec<f64>> {
    let [a, b, reader, owner, batch_reader] = [uid(1)?, uid(2)?, uid(3)?, uid(4)?, uid(5)?];
    let fill = Prefill {
        mailboxes: vec![reader.clone(), batch_reader.clone()],
        from: a.clone(),
        owner: owner.clone(),
        n: set.prefill,
    };
    let store = backend.prefilled_relay(path, &fill)?;
    for u in [&b, &reader, &batch_reader] {
        store.publish_keys(u, &keys(), &[], None, 1000)?;
    }
    fill.check(&store)?;
    let settled = || settle(&store);
    settled()?;
    let use_nonce = measure_until(settled, set.budget, MAX_OPS, |i| {
        store.use_nonce(&format!("{i:032x}"), 1000.0, 700.0)?;
        Ok(())
    })?;
    let send = measure_until(settled, set.budget, MAX_OPS, |i| {
        store.send_message(&message(&a, &b, i), &OPEN)?;
        Ok(())
    })?;
    let read_one = measure_until(settled, set.budget, set.prefill, |_| {
        read_full(&store, &reader, 1)
    })?;
    let read_batch = measure_until(settled, set.budget, set.prefill / 100, |_| {
        read_full(&store, &batch_reader, 100)
    })? * 100.0;
    let claim = measure_until(settled, set.budget, set.prefill, |_| {
        store.claim_key(&owner)?;
        Ok(())
    })?;
    Ok(vec![use_nonce, send, read_one, read_batch, claim])
}

/// The client's most common batch: an advanced session and the outbox
/// entry it produced.
fn client_commits<S: Store>(store: &S, set: &Settings) -> Res<f64> {
    let peer = uid(9)?;
    measure(set.budget, MAX_OPS, |i| {
        store.commit(&store.lock()?, session_and_outbox(&peer, i))?;
        Ok(())
    })
}

/// Batch `i` of [`client_commits`]: the session with `peer` and message `i`
/// to send to them.
fn session_and_outbox(peer: &UserId, i: usize) -> Changes {
    let session = SessionRecord {
        peer: peer.clone(),
        session_id: "session".into(),
        pickle: "P".repeat(600),
        last_received: i as f64,
        created: 0.0,
    };
    let entry = OutboxEntry {
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
        reencrypt: false,
        envelope: None,
    };
    Changes {
        sessions: vec![session],
        outbox: vec![entry],
        ..Changes::default()
    }
}

/// A table's numbers for one backend's stores in one folder.
trait Numbers {
    /// The rows.
    const LABELS: &'static [&'static str];
    fn of<B: Backend>(backend: &B, dir: &Path, set: &Settings) -> Res<Vec<f64>>;
}

/// The single-threaded operations.
struct SingleThread;

impl Numbers for SingleThread {
    const LABELS: &'static [&'static str] = &[
        "relay use_nonce",
        "relay send_message",
        "relay read_messages (1/read)",
        "relay read_messages (msgs/s, 100/read)",
        "relay claim_key",
        "client commit (session+outbox)",
    ];

    fn of<B: Backend>(backend: &B, dir: &Path, set: &Settings) -> Res<Vec<f64>> {
        let mut numbers = relay_numbers(backend, &dir.join("relay"), set)?;
        numbers.push(client_commits(
            &backend.client(&dir.join("identity"))?,
            set,
        )?);
        Ok(numbers)
    }
}

/// What each request does, as the relay does for a signed request: the
/// nonce first (a durable write), then the tool.
#[derive(Clone, Copy, Debug)]
enum Request {
    /// nonce + send_message: two durable writes.
    Send,
    /// nonce + count_keys: one durable write and one read.
    CountKeys,
}

/// `threads` callers looping over `request`; requests/s. The nonces name
/// the request and `threads`, so the runs on one store use different ones.
fn requests<S: RelayStore>(
    store: &S,
    threads: usize,
    request: Request,
    set: &Settings,
) -> Res<f64> {
    let to: Vec<UserId> = (300..308).map(uid).collect::<Res<_>>()?;
    for u in &to {
        store.publish_keys(u, &keys(), &[], None, 1000)?;
    }
    let from: Vec<UserId> = (0..threads).map(|t| uid(1000 + t)).collect::<Res<_>>()?;
    let settled = || settle(store);
    concurrently_until(settled, threads, set.concurrent_budget, |t, i| {
        let peer = &to[(t + i) % to.len()];
        if !store.use_nonce(&format!("{request:?}{threads}-{t}-{i}"), 1000.0, 700.0)? {
            return Err("nonce replayed".into());
        }
        match request {
            Request::Send => store
                .send_message(&message(&from[t], peer, i), &OPEN)
                .map(drop)?,
            Request::CountKeys => store.count_keys(peer).map(drop)?,
        }
        Ok(())
    })
}

/// 64 threads claiming one user's keys at once.
fn claims_64<S: RelayStore>(store: &S, set: &Settings) -> Res<f64> {
    let owner = uid(200)?;
    let otks: Vec<(String, String)> = (0..MAX_OPS).map(otk).collect();
    store.publish_keys(&owner, &keys(), &otks, None, u64::MAX)?;
    let settled = || settle(store);
    concurrently_until(settled, 64, set.concurrent_budget, |_, _| {
        store.claim_key(&owner)?;
        Ok(())
    })
}

/// Relay requests from 1 and 64 threads, and claims from 64.
struct Concurrent;

impl Numbers for Concurrent {
    const LABELS: &'static [&'static str] = &[
        "nonce + send_message, 1 thread",
        "nonce + send_message, 64 threads",
        "nonce + count_keys, 1 thread",
        "nonce + count_keys, 64 threads",
        "claim_key, 64 threads",
    ];

    fn of<B: Backend>(backend: &B, dir: &Path, set: &Settings) -> Res<Vec<f64>> {
        let store = backend.relay(&dir.join("requests"))?;
        Ok(vec![
            requests(&store, 1, Request::Send, set)?,
            requests(&store, 64, Request::Send, set)?,
            requests(&store, 1, Request::CountKeys, set)?,
            requests(&store, 64, Request::CountKeys, set)?,
            claims_64(&store, set)?,
        ])
    }
}

/// `N`'s table: on disk, on tmpfs if there is one and in memory, with
/// memory/backend, and backend/fsync given the disk's `fsyncs`.
fn table<N: Numbers, B: Backend>(
    backend: &B,
    dirs: &Dirs,
    set: &Settings,
    first: &str,
    fsyncs: Option<f64>,
) -> Res<()> {
    let name = set.name;
    let per_fsync = fsyncs.map_or(String::new(), |_| {
        format!(" {:>11}", format!("{name}/fsync"))
    });
    println!(
        "{first:<40} {name:>9} {:>9} {:>10} {:>11}{per_fsync}",
        "tmpfs",
        "memory",
        format!("mem/{name}"),
    );
    let disk = N::of(backend, dirs.disk.path(), set)?;
    let fast = dirs
        .tmpfs
        .as_ref()
        .map(|d| N::of(backend, d.path(), set))
        .transpose()?;
    let memory = N::of(&Memory, dirs.disk.path(), set)?;
    for (i, label) in N::LABELS.iter().enumerate() {
        let fast = fast
            .as_ref()
            .map_or("-".to_string(), |f| format!("{:.0}", f[i]));
        let per_fsync = fsyncs.map_or(String::new(), |f| format!(" {:>10.1}x", disk[i] / f));
        println!(
            "{label:<40} {:>9.0} {fast:>9} {:>10.0} {:>10.0}x{per_fsync}",
            disk[i],
            memory[i],
            memory[i] / disk[i]
        );
    }
    Ok(())
}

/// Both tables for `backend` next to the in-memory stores, with their
/// headers, in `dirs`. Takes about 10 budgets per store for the first table
/// and 5 concurrent budgets per store for the second, on disk, tmpfs and
/// memory.
pub fn run<B: Backend>(backend: &B, dirs: &Dirs, set: &Settings) -> Res<()> {
    let (name, disk_dir) = (set.name, dirs.disk.path());
    println!(
        "retalk-store-{name}: ops/s, single thread, {}, database in {}",
        set.durability,
        disk_dir.display()
    );
    println!(
        "this disk: {:.0} write+fdatasync/s (1 s probe), the ceiling of durable writes one at a \
         time. The tmpfs column (/dev/shm, fsync ~free) shows {name}'s CPU cost alone; memory \
         is the in-memory stores, measured in this run. Relay rates are timed until a write \
         after the last call has committed (writes a store queues count where they were made).",
        fsyncs_per_second(disk_dir)?
    );
    table::<SingleThread, B>(backend, dirs, set, "operation", None)?;

    // The disk's rate drifts (other work on the machine): probe again.
    let fsyncs = fsyncs_per_second(disk_dir)?;
    println!(
        "\nrelay requests/s, {:.1} s each, as the relay serves a signed request (use_nonce, then \
         the tool), and 64 threads claiming one user's keys. {name}: {}; this disk now: \
         {fsyncs:.0} write+fdatasync/s.",
        set.concurrent_budget.as_secs_f64(),
        set.concurrency
    );
    table::<Concurrent, B>(backend, dirs, set, "request, callers", Some(fsyncs))
}
