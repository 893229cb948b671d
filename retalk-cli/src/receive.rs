//! `retalk receive [--follow] [--json]`.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use retalk_proto::client::Inbox;

use crate::error::CliError;
use crate::{display, print_stdout, py_json, Agent};

const POLL: Duration = Duration::from_secs(2);
const MAINTAIN_EVERY: Duration = Duration::from_secs(60);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Prints up to `limit` waiting messages. The library removes each from
/// the local inbox only once its line is written, and holds the identity's
/// lock meanwhile, so a closed pipe or a crash loses nothing and processes
/// sharing the identity never print one twice.
fn emit(agent: &Agent, json: bool, limit: usize) -> Result<usize, CliError> {
    agent.take_messages(limit, |m| {
        let line = if json {
            py_json(&[
                ("from", m.from.as_str()),
                ("name", &m.name),
                ("text", &m.text),
            ])
        } else {
            let who = if m.name.is_empty() {
                m.from.as_str()
            } else {
                &m.name
            };
            display::human(who, &m.text)
        };
        print_stdout(&line)
    })
}

fn report(inbox: &Inbox) {
    for p in &inbox.problems {
        eprintln!("retalk: skipped a message from {}: {}", p.from, p.reason);
    }
}

/// `limit`: print at most this many in all, then stop (the rest stay in
/// the local inbox for the next call).
pub async fn run(
    agent: &Agent,
    follow: bool,
    json: bool,
    limit: Option<usize>,
) -> Result<(), CliError> {
    let mut left = limit.unwrap_or(usize::MAX);
    // Messages a previous run saved but could not print come first.
    left -= emit(agent, json, left)?;
    if left == 0 {
        return Ok(());
    }
    if !follow {
        let inbox = agent.fetch().await?;
        report(&inbox);
        emit(agent, json, left)?;
        return Ok(());
    }

    let stop = Arc::new(AtomicBool::new(false));
    let signal = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            signal.store(true, Ordering::SeqCst);
        }
    });
    let progress = std::io::stderr().is_terminal();
    if progress {
        eprintln!("listening for messages (Ctrl-C to stop)");
    }
    let mut wait = POLL;
    let mut last_maintain = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        match agent.fetch().await {
            Ok(inbox) => {
                report(&inbox);
                wait = POLL;
            }
            Err(e) => {
                wait = (wait * 2).min(MAX_BACKOFF);
                eprintln!("retalk: {e} (retrying in {}s)", wait.as_secs());
            }
        }
        left -= emit(agent, json, left)?;
        if left == 0 {
            break;
        }
        if last_maintain.elapsed() >= MAINTAIN_EVERY && !stop.load(Ordering::SeqCst) {
            last_maintain = Instant::now();
            match agent.maintain().await {
                Ok(r) => {
                    for e in &r.flush.expired {
                        eprintln!(
                            "retalk: gave up on message {} to {}: no acknowledgement for 30 days",
                            e.envelope_id, e.peer
                        );
                    }
                    if progress {
                        eprintln!(
                            "keys: {} one-time keys on the relay{}{}; resent {}",
                            r.unclaimed,
                            if r.replenished { ", replenished" } else { "" },
                            if r.fallback_rotated {
                                ", fallback key rotated"
                            } else {
                                ""
                            },
                            r.flush.sent
                        );
                    }
                }
                Err(e) => eprintln!("retalk: key maintenance failed: {e} (will retry)"),
            }
        }
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}
