//! What is particular to PostgreSQL: start-up errors, the schema version
//! gate, notifications across stores, and riding out a database restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use retalk_proto::ids::UserId;
use retalk_proto::relay::{DeliveryRules, NewMessage, RelayStore, SendOutcome};
use retalk_proto::wire::PublicKeys;
use retalk_store_postgres::{PgError, PgOptions, PgRelayStore, Wake, SCHEMA_VERSION};
use retalk_testkit::postgres::Cluster;

fn uid(n: u32) -> UserId {
    UserId::parse(&format!("{n:032x}")).unwrap()
}

fn keys() -> PublicKeys {
    PublicKeys {
        identity_key: "ik".into(),
        signing_key: "sk".into(),
    }
}

const OPEN: DeliveryRules = DeliveryRules {
    max_mailbox: 0,
    max_per_sender: 0,
    refusals_expire_before: f64::NEG_INFINITY,
};

fn send(store: &PgRelayStore, to: &UserId, body: &str) -> Result<SendOutcome, String> {
    let m = NewMessage::new(uid(1), to.clone(), 1, body.into(), 1.0);
    store.send_message(&m, &OPEN).map_err(|e| e.to_string())
}

#[test]
fn malformed_urls_and_unreachable_databases_are_named() {
    for bad in [
        "",
        "not a url",
        "postgres://host:notaport/db",
        "mysql://x/y",
    ] {
        let e = PgRelayStore::connect(bad).unwrap_err();
        assert!(matches!(e, PgError::BadUrl(_)), "{bad:?}: {e:?}");
        assert!(e.to_string().starts_with("invalid database URL"), "{e}");
    }
    // Nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let options = PgOptions {
        connect_timeout: Duration::from_secs(2),
        ..PgOptions::default()
    };
    let started = Instant::now();
    let e = PgRelayStore::connect_with(&format!("postgres://u@127.0.0.1:{port}/db"), options)
        .unwrap_err();
    assert!(matches!(e, PgError::Unreachable(_)), "{e:?}");
    assert!(
        e.to_string().starts_with("cannot reach the database"),
        "{e}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // A database that does not exist is named by the server.
    let cluster = Cluster::shared();
    let e = PgRelayStore::connect(&cluster.url("no_such_db")).unwrap_err();
    assert!(e.to_string().contains("no_such_db"), "{e}");
}

#[test]
fn a_newer_schema_is_refused_and_an_equal_one_reopened() {
    let url = Cluster::shared().create_database();
    drop(PgRelayStore::connect(&url).unwrap());
    drop(PgRelayStore::connect(&url).unwrap());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let versions: Vec<i32> = client
            .query("SELECT version FROM retalk_schema_version ORDER BY 1", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(versions, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
        client
            .execute(
                "INSERT INTO retalk_schema_version(version) VALUES($1)",
                &[&(SCHEMA_VERSION + 1)],
            )
            .await
            .unwrap();
    });
    let e = PgRelayStore::connect(&url).unwrap_err();
    assert!(
        matches!(e, PgError::NewerSchema { found, known } if found == SCHEMA_VERSION + 1 && known == SCHEMA_VERSION),
        "{e:?}"
    );
}

/// Waits for a wake-up matching `want` within `within`.
fn expect_wake(
    rx: &std::sync::mpsc::Receiver<Wake>,
    want: impl Fn(&Wake) -> bool,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let left = within.saturating_sub(started.elapsed());
        match rx.recv_timeout(left) {
            Ok(w) if want(&w) => return started.elapsed(),
            Ok(_) => {}
            Err(_) => panic!("no wake-up within {within:?}"),
        }
    }
}

#[test]
fn notifications_cross_stores_and_the_listener_survives_a_restart() {
    let cluster = Cluster::start();
    let url = cluster.create_database();
    let node_a = PgRelayStore::connect(&url).unwrap();
    let node_b = PgRelayStore::connect(&url).unwrap();
    let bob = uid(2);
    node_a.publish_keys(&bob, &keys(), &[], None, 10).unwrap();

    // Node A listens; node B stores the mail.
    let (tx, rx) = std::sync::mpsc::channel();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = node_a.listener();
    let task = runtime.spawn(listener.run(move |w| {
        let _ = tx.send(w);
    }));
    expect_wake(&rx, |w| *w == Wake::Everyone, Duration::from_secs(10));
    assert!(matches!(
        send(&node_b, &bob, "hi"),
        Ok(SendOutcome::Stored { .. })
    ));
    let took = expect_wake(
        &rx,
        |w| *w == Wake::Mail(bob.clone()),
        Duration::from_secs(5),
    );
    assert!(took < Duration::from_millis(500), "took {took:?}");
    // A refused send notifies nobody.
    assert_eq!(
        send(&node_b, &uid(3), "x"),
        Ok(SendOutcome::UnknownRecipient)
    );

    // The database restarts: calls fail meanwhile, nothing stored is lost,
    // both the store and the listener come back by themselves.
    cluster.stop_server();
    assert!(send(&node_b, &bob, "during").is_err());
    cluster.start_server();
    let deadline = Instant::now() + Duration::from_secs(20);
    let stored = loop {
        match send(&node_b, &bob, "after") {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => panic!("store did not recover: {e}"),
        }
    };
    assert!(matches!(stored, SendOutcome::Stored { .. }));
    // After reconnecting the listener asks every waiter to look again.
    expect_wake(&rx, |w| *w == Wake::Everyone, Duration::from_secs(20));
    let bodies: Vec<String> = node_a
        .read_messages(
            &bob,
            None,
            false,
            retalk_proto::relay::ReadLimit {
                max_messages: 100,
                max_bytes: 1 << 20,
            },
        )
        .unwrap()
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert_eq!(bodies, ["hi", "after"]);
    assert!(matches!(
        send(&node_b, &bob, "again"),
        Ok(SendOutcome::Stored { .. })
    ));
    expect_wake(
        &rx,
        |w| *w == Wake::Mail(bob.clone()),
        Duration::from_secs(5),
    );
    task.abort();
    runtime.shutdown_background();
}
