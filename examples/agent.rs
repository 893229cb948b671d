//! Two agents talking through a relay: `cargo run --example agent`.
//!
//! A researcher agent asks questions; an auto-responder agent answers each
//! one. Everything is end-to-end encrypted: the relay only ever holds
//! ciphertext, which this example prints to show.

use std::sync::Arc;

use retalk::{
    Client, LocalTransport, MemoryRelayStore, MemoryStore, Relay, RelayConfig, SystemClock,
};

const RELAY_URL: &str = "http://127.0.0.1:8766";

type Agent = Client<MemoryStore, LocalTransport<MemoryRelayStore, SystemClock>, SystemClock>;

fn agent(relay: &Arc<Relay<MemoryRelayStore>>, name: &str) -> Result<Agent, retalk::ClientError> {
    let transport = LocalTransport::new(relay.clone(), SystemClock, RELAY_URL);
    Client::create(
        MemoryStore::new(),
        transport,
        SystemClock,
        &format!("{name}-secret"),
        name,
    )
}

/// The responder's "model": answers a question about a text.
fn respond(question: &str) -> String {
    let words = question.split_whitespace().count();
    format!(
        "you asked {words} words; in capitals: {}",
        question.to_uppercase()
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let relay = Arc::new(Relay::new(
        MemoryRelayStore::new(),
        RelayConfig {
            audiences: vec![RELAY_URL.into()],
            ..RelayConfig::default()
        },
    ));
    let researcher = agent(&relay, "researcher")?;
    let responder = agent(&relay, "responder")?;
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

    println!("\nwhat the relay holds now (ciphertext only):");
    for m in relay.store().queued() {
        println!(
            "  #{} from {} mtype {} body {}...",
            m.message_id,
            &m.sender[..8],
            m.mtype,
            &m.body[..48.min(m.body.len())]
        );
        for q in questions {
            assert!(!m.body.contains(q), "plaintext on the relay");
        }
    }
    println!();

    // The auto-responder: answer everything that arrived.
    for m in responder.receive().await?.messages {
        println!("responder got from {}: {}", m.name, m.text);
        let answer = respond(&m.text);
        responder.send(&m.from, &answer).await?;
        println!("responder -> {}: {answer}", m.name);
    }
    println!();
    for m in researcher.receive().await?.messages {
        println!("researcher got from {}: {}", m.name, m.text);
    }
    // Acks flow back; both outboxes end empty.
    responder.receive().await?;
    use retalk::Store as _;
    println!(
        "\noutboxes: researcher {}, responder {}; relay queue: {}",
        researcher.store().outbox()?.len(),
        responder.store().outbox()?.len(),
        relay.store().queued().len()
    );
    Ok(())
}
