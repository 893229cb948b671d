//! Throughput of the sled stores next to the in-memory ones, in one run:
//! `cargo bench -p retalk-store-sled --bench store`. The shared harness
//! (`retalk_testkit::bench`, also behind retalk-store-sqlite's bench, so the
//! two tables read side by side) measures the disk's fsync rate, then each
//! operation single-threaded with the durability the stores ship with
//! (every write is flushed and fsynced before it returns, so on a real disk
//! the numbers mostly measure fsync), then relay requests (use_nonce, then
//! the tool) from 1 and 64 threads, and 64 threads claiming keys. Here
//! only, first: a raw sled probe of what the flush and the fdatasync cost.
//! About 35 s.

use std::path::Path;
use std::time::{Duration, Instant};

use retalk_store_sled::{SledRelayStore, SledStore};
use retalk_testkit::bench::{body, measure, Backend, Dirs, Prefill, Res, Settings, MAX_OPS};

const BUDGET: Duration = Duration::from_millis(500);

/// A string as the store's values hold it: u64 big-endian length, bytes.
fn enc_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Fills mailboxes straight into the sled trees, before the store opens
/// them (a fsync per message through the API would take most of the
/// budget). Mirrors the `messages` layout of `src/relay.rs`; the harness
/// checks the count through the API, so a layout change fails loudly.
fn prefill_sled(path: &Path, fill: &Prefill) -> Res<()> {
    let db = sled::open(path)?;
    let messages = db.open_tree("messages")?;
    let mut id = 0u64;
    for i in 0..fill.n {
        for to in &fill.mailboxes {
            id += 1;
            let mut key = to.as_str().as_bytes().to_vec();
            key.extend_from_slice(&id.to_be_bytes());
            let mut value = vec![1u8];
            enc_str(&mut value, fill.from.as_str());
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

struct Sled;

impl Backend for Sled {
    type Relay = SledRelayStore;
    type Client = SledStore;

    fn relay(&self, path: &Path) -> Res<SledRelayStore> {
        Ok(SledRelayStore::open(path)?)
    }

    /// The messages straight into the trees, the keys in one step.
    fn prefilled_relay(&self, path: &Path, fill: &Prefill) -> Res<SledRelayStore> {
        prefill_sled(path, fill)?;
        let store = self.relay(path)?;
        fill.keys_through_api(&store)?;
        Ok(store)
    }

    fn client(&self, path: &Path) -> Res<SledStore> {
        Ok(SledStore::open(path)?)
    }
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
        measure(BUDGET, MAX_OPS, |_| {
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

fn main() -> Res<()> {
    let started = Instant::now();
    let dirs = Dirs::new()?;
    let mut probes = vec![("disk", raw_sled_flush_cost(dirs.disk.path())?)];
    if let Some(d) = &dirs.tmpfs {
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
    let settings = Settings {
        name: "sled",
        durability: "flush + fdatasync before every write returns",
        concurrency: "concurrent writers share one fsync (group commit)",
        budget: BUDGET,
        concurrent_budget: Duration::from_millis(800),
        prefill: 20_000,
    };
    retalk_testkit::bench::run(&Sled, &dirs, &settings)?;
    println!("\n(took {:.1} s)", started.elapsed().as_secs_f64());
    Ok(())
}
