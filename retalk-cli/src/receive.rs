//! `retalk receive [--follow] [--json]`.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use retalk_proto::client::Inbox;

use crate::error::CliError;
use crate::{print_stdout, py_json, Agent};

const POLL: Duration = Duration::from_secs(2);
const MAINTAIN_EVERY: Duration = Duration::from_secs(60);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Prints what arrived. Each message is removed from the local inbox only
/// after it is written, so a closed pipe or a crash loses nothing.
fn emit(agent: &Agent, json: bool) -> Result<usize, CliError> {
    let pending = agent.pending_messages()?;
    let n = pending.len();
    for m in pending {
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
            format!("{who}: {}", m.text)
        };
        print_stdout(&line)?;
        agent.confirm_taken(vec![m.key])?;
    }
    Ok(n)
}

fn report(inbox: &Inbox) {
    for p in &inbox.problems {
        eprintln!("retalk: skipped a message from {}: {}", p.from, p.reason);
    }
}

pub async fn run(agent: &Agent, follow: bool, json: bool) -> Result<(), CliError> {
    // Messages a previous run saved but could not print come first.
    emit(agent, json)?;
    if !follow {
        let inbox = agent.fetch().await?;
        report(&inbox);
        emit(agent, json)?;
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
        emit(agent, json)?;
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
