//! Throughput of the SQLite stores next to the in-memory ones, in one run:
//! `cargo bench -p retalk-store-sqlite --bench store`. The shared harness
//! (`retalk_testkit::bench`, also behind retalk-store-sled's bench) measures
//! the disk's fsync rate, then each operation single-threaded with the
//! durability the stores ship with (WAL, `synchronous=FULL`: one caller at a
//! time means one commit, so one fsync, per write), then relay requests from
//! 1 and 64 threads (the relay store's writer commits concurrent writes
//! together, one fsync per batch, so 64 callers go far beyond the fsync
//! rate). Here only: a read/write mix for two read-pool sizes. About 60 s.

use std::path::Path;
use std::time::{Duration, Instant};

use retalk_proto::ids::UserId;
use retalk_proto::relay::RelayStore;
use retalk_store_sqlite::{SqliteRelayStore, SqliteStore};
use retalk_testkit::bench::{
    body, concurrently, keys, message, otk, uid, Backend, Dirs, Prefill, Res, Settings, OPEN,
};

struct Sqlite;

impl Backend for Sqlite {
    type Relay = SqliteRelayStore;
    type Client = SqliteStore;

    fn relay(&self, path: &Path) -> Res<SqliteRelayStore> {
        Ok(SqliteRelayStore::open(path)?)
    }

    /// Everything in one transaction on a second connection (a commit per
    /// message through the API would take most of the budget).
    fn prefilled_relay(&self, path: &Path, fill: &Prefill) -> Res<SqliteRelayStore> {
        let store = self.relay(path)?;
        store.publish_keys(&fill.owner, &keys(), &[], None, u64::MAX)?;
        let mut conn = rusqlite::Connection::open(path)?;
        let tx = conn.transaction()?;
        {
            let mut m = tx.prepare(
                "INSERT INTO messages(ts, sender, recipient, mtype, body) VALUES(?1, ?2, ?3, 1, ?4)",
            )?;
            let mut k = tx.prepare("INSERT INTO otks(owner, key_id, key) VALUES(?1, ?2, ?3)")?;
            for i in 0..fill.n {
                for to in &fill.mailboxes {
                    m.execute(rusqlite::params![
                        i as f64,
                        fill.from.as_str(),
                        to.as_str(),
                        body(i)
                    ])?;
                }
                let (key_id, key) = otk(i);
                k.execute(rusqlite::params![fill.owner.as_str(), key_id, key])?;
            }
        }
        tx.commit()?;
        Ok(store)
    }

    fn client(&self, path: &Path) -> Res<SqliteStore> {
        Ok(SqliteStore::open(path)?)
    }
}

const MIX_BUDGET: Duration = Duration::from_millis(800);

/// 8 threads looping over a request-like mix: a nonce, then alternately
/// get_keys (a read) and send_message (a write); or, with `reads_only`,
/// get_keys then count_keys.
fn concurrent_mix(store: &SqliteRelayStore, reads_only: bool) -> Res<f64> {
    let users: Vec<UserId> = (100..108).map(uid).collect::<Res<_>>()?;
    for u in &users {
        store.publish_keys(u, &keys(), &[], None, 1000)?;
    }
    concurrently(8, MIX_BUDGET, |t, i| {
        let to = &users[(t + i) % 8];
        if reads_only {
            store.get_keys(to)?;
            store.count_keys(to)?;
            return Ok(());
        }
        store.use_nonce(&format!("{t}-{i}"), 1000.0, 700.0)?;
        if i & 1 == 1 {
            store.send_message(&message(&users[t], to, i), &OPEN)?;
        } else {
            store.get_keys(to)?;
        }
        Ok(())
    })
}

fn main() -> Res<()> {
    let started = Instant::now();
    let dirs = Dirs::new()?;
    let settings = Settings {
        name: "sqlite",
        durability: "WAL + synchronous=FULL (one commit, one fsync, per write)",
        concurrency: "concurrent writes share one commit",
        budget: Duration::from_millis(800),
        concurrent_budget: Duration::from_millis(1500),
        prefill: 40_000,
    };
    retalk_testkit::bench::run(&Sqlite, &dirs, &settings)?;

    println!("\nsqlite relay on disk, 8 threads, nonce + (get_keys | send_message) per request:");
    println!("  read pool   requests/s   read-only requests/s (get_keys + count_keys)");
    for pool in [1, 8] {
        let path = dirs.disk.path().join(format!("pool-{pool}.db"));
        let store = SqliteRelayStore::open_with_pool(&path, pool)?;
        let mixed = concurrent_mix(&store, false)?;
        let reads = concurrent_mix(&store, true)?;
        println!("  {pool:>9} {mixed:>12.0} {reads:>22.0}");
    }
    println!("\n(took {:.1} s)", started.elapsed().as_secs_f64());
    Ok(())
}
