//! `cargo bench -p retalk-cli --bench cli`: the median time of one
//! `retalk id` and one `retalk send` against a local relay, ours beside the
//! Python 0.0.1 CLI measured in the same run. Target: `retalk id` < 10 ms.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;

const RUNS: usize = 21;

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn time(cli: &Cli, args: &[&str]) -> Duration {
    let samples = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            cli.ok(args);
            start.elapsed()
        })
        .collect();
    median(samples)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let python = retalk_testkit::python::python_with_retalk("0.0.1");
    let tmp = tempfile::tempdir().unwrap();
    let relay = OurRelay::start(tmp.path());
    let ours = Cli::ours(tmp.path());
    let theirs = Cli::python(&python, tmp.path());

    let bob = ours
        .ok(&["init", "bob", "--server", &relay.url])
        .trim()
        .to_owned();
    ours.ok(&["receive", "-s", "bob"]);
    ours.ok(&["init", "rs", "--server", &relay.url]);
    theirs.ok(&["init", "py", "--server", &relay.url]);
    // First contact (key claim, publish) out of the measurement.
    ours.ok(&["send", &bob, "warm-up", "-s", "rs"]);
    theirs.ok(&["send", &bob, "warm-up", "-s", "py"]);

    let rs_id = time(&ours, &["id", "-s", "rs"]);
    let py_id = time(&theirs, &["id", "-s", "py"]);
    let rs_send = time(&ours, &["send", &bob, "benchmark message", "-s", "rs"]);
    let py_send = time(&theirs, &["send", &bob, "benchmark message", "-s", "py"]);

    println!("median of {RUNS} runs, relay on loopback (SQLite), same machine, same run");
    println!(
        "{:<14} {:>10} {:>12} {:>8}",
        "command", "retalk-rs", "python 0.0.1", "speedup"
    );
    for (name, rs, py) in [
        ("retalk id", rs_id, py_id),
        ("retalk send", rs_send, py_send),
    ] {
        println!(
            "{name:<14} {:>10} {:>12} {:>7.1}x",
            ms(rs),
            ms(py),
            py.as_secs_f64() / rs.as_secs_f64()
        );
    }
    println!(
        "target: retalk id under 10 ms: {}",
        if rs_id < Duration::from_millis(10) {
            "met"
        } else {
            "NOT met"
        }
    );
}
