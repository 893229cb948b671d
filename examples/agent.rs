//! Two agents talking through a relay: `cargo run --example agent`.
//!
//! Starts our relay in-process on an SQLite file in a temporary folder,
//! serving real HTTP on loopback; creates two agents with the library API
//! (each an identity folder with its own SQLite store); the researcher
//! asks questions, the auto-responder answers each one. Everything is
//! end-to-end encrypted: the relay only ever holds ciphertext, which the
//! example shows by reading the relay's database as an operator would.

use std::path::Path;

use retalk::proto::client::{Follow, Followed};
use retalk::relay::{open_store, Backend, Config};
use retalk::{Client, HttpTransport, RelayServer, SqliteStore, SystemClock};

type Agent = Client<SqliteStore, HttpTransport, SystemClock>;

fn agent(dir: &Path, url: &str, name: &str) -> Result<Agent, Box<dyn std::error::Error>> {
    let store = SqliteStore::open(dir.join(name))?;
    let transport = HttpTransport::new(url)?;
    Ok(Client::create(
        store,
        transport,
        SystemClock,
        &format!("{name}-secret"),
        name,
    )?)
}

/// The responder's "model": answers a question about a text.
fn respond(question: &str) -> String {
    let words = question.split_whitespace().count();
    format!(
        "you asked {words} words; in capitals: {}",
        question.to_uppercase()
    )
}

/// What the relay's database holds, as `sqlite3 server.db` would show it.
fn relay_rows(db: &Path) -> rusqlite::Result<Vec<(String, String, i64, String)>> {
    let conn = rusqlite::Connection::open(db)?;
    let mut stmt =
        conn.prepare("SELECT sender, recipient, mtype, body FROM messages ORDER BY id")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
    rows.collect()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("server.db");
    let config = Config {
        backend: Backend::Sqlite,
        db: db.clone(),
        ..Config::local()
    };
    let server = RelayServer::start(&config, open_store(config.backend, &config.db)?).await?;
    let url = server.url().to_owned();
    println!("relay listening on {url} (SQLite at {})\n", db.display());

    let researcher = agent(dir.path(), &url, "researcher")?;
    let responder = agent(dir.path(), &url, "responder")?;
    responder.publish(100, false).await?;
    researcher.add_contact("responder", responder.user_id().clone(), None)?;
    println!("researcher is {}", researcher.user_id());
    println!("responder  is {}\n", responder.user_id());

    let questions = [
        "what is retalk?",
        "is the relay trusted?",
        "can it lose a message?",
    ];
    for q in questions {
        researcher.send(responder.user_id(), q).await?;
        println!("researcher -> responder: {q}");
    }

    println!("\nwhat the relay stores now (sqlite3 server.db 'SELECT * FROM messages'):");
    for (sender, recipient, mtype, body) in relay_rows(&db)? {
        println!(
            "  {}.. -> {}.. mtype {mtype} body {}...",
            &sender[..8],
            &recipient[..8],
            &body[..48.min(body.len())]
        );
        for q in questions {
            assert!(!body.contains(q), "plaintext on the relay");
        }
    }
    println!();

    // Both agents follow their mailboxes with the library's driver: a read
    // held open on the relay (long-poll), so each message arrives as it is
    // sent. No sleeps: each side reacts to what arrives.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let (to_responder, mut responder_inbox) = tokio::sync::mpsc::unbounded_channel();
    let (to_researcher, mut researcher_inbox) = tokio::sync::mpsc::unbounded_channel();
    let follow = Follow::default();
    let started = std::time::Instant::now();
    let responder_side = async {
        // The handler only queues (it must return quickly; a message leaves
        // the local inbox once it returned Ok); the loop below answers.
        let listening = responder.follow(&follow, until_stopped(), move |event| {
            if let Followed::Message(m) = event {
                let _ = to_responder.send(m.clone());
            }
            Ok::<_, retalk::ClientError>(())
        });
        let answering = async {
            while let Some(m) = responder_inbox.recv().await {
                println!("responder got from {}: {}", m.name, m.text);
                let answer = respond(&m.text);
                responder.send(&m.from, &answer).await?;
                println!("responder -> {}: {answer}", m.name);
            }
            Ok::<_, retalk::ClientError>(())
        };
        tokio::try_join!(listening, answering)
    };
    let researcher_side = async {
        let listening = researcher.follow(&follow, until_stopped(), move |event| {
            if let Followed::Message(m) = event {
                let _ = to_researcher.send(m.clone());
            }
            Ok::<_, retalk::ClientError>(())
        });
        let reading = async {
            for _ in questions {
                let Some(m) = researcher_inbox.recv().await else {
                    break;
                };
                println!(
                    "researcher got from {} after {:?}: {}",
                    m.name,
                    started.elapsed(),
                    m.text
                );
            }
            // Every answer is in: stop both drivers (and with the
            // responder's, its answering loop).
            let _ = stop.send(true);
            Ok::<_, retalk::ClientError>(())
        };
        tokio::try_join!(listening, reading)
    };
    tokio::try_join!(responder_side, researcher_side)?;
    println!();
    // The acks flow back; delivered mail is gone from the relay.
    responder.receive().await?;
    use retalk::Store as _;
    println!(
        "\noutboxes: researcher {}, responder {}; messages left on the relay: {}",
        researcher.store().outbox()?.len(),
        responder.store().outbox()?.len(),
        relay_rows(&db)?.len()
    );
    server.shutdown().await;
    Ok(())
}
