//! A simulated world for scenario tests: in-process relays, clients on
//! in-memory stores, one simulated clock, and a transport that can fail on
//! purpose.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use retalk_proto::client::{Client, LocalTransport, MemoryStore, Transport, TransportError};
use retalk_proto::relay::{MemoryRelayStore, Relay, RelayConfig};
use retalk_proto::wire::{Args, SignedRequest, Tool};
use retalk_proto::{Clock, SimClock, UserId};
use serde_json::Value;

pub const T0: f64 = 1_800_000_000.0;

pub type TestRelay = Arc<Relay<MemoryRelayStore>>;
pub type Agent =
    Client<Arc<MemoryStore>, Faulty<LocalTransport<MemoryRelayStore, SimClock>>, SimClock>;

/// What a [`Faulty`] transport does to calls.
#[derive(Default)]
pub struct Faults {
    /// Every call fails as unreachable.
    pub down: AtomicBool,
    /// The next call to each listed tool fails before reaching the relay.
    pub fail_before: Mutex<VecDeque<Tool>>,
    /// The next call to each listed tool reaches the relay, but its answer
    /// is lost.
    pub lose_answer: Mutex<VecDeque<Tool>>,
    /// The next call to each listed tool reaches the relay, and its answer
    /// is held until the paired sender fires (or is dropped): a request in
    /// flight, for races.
    pub hold_answer: Mutex<VecDeque<(Tool, tokio::sync::oneshot::Receiver<()>)>>,
    /// Every request sent, as body bytes (0.0.1 dialect).
    pub log: Mutex<Vec<Vec<u8>>>,
}

impl Faults {
    fn take(list: &Mutex<VecDeque<Tool>>, tool: Tool) -> bool {
        let mut l = list.lock().unwrap();
        match l.iter().position(|t| *t == tool) {
            Some(i) => {
                l.remove(i);
                true
            }
            None => false,
        }
    }
    pub fn fail_next(&self, tool: Tool) {
        self.fail_before.lock().unwrap().push_back(tool);
    }
    pub fn lose_next_answer(&self, tool: Tool) {
        self.lose_answer.lock().unwrap().push_back(tool);
    }
    /// Holds the answer to the next call of `tool` until the returned
    /// sender fires.
    pub fn hold_next_answer(&self, tool: Tool) -> tokio::sync::oneshot::Sender<()> {
        let (release, held) = tokio::sync::oneshot::channel();
        self.hold_answer.lock().unwrap().push_back((tool, held));
        release
    }
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

/// A transport wrapper that fails on command.
pub struct Faulty<T> {
    pub inner: T,
    pub faults: Arc<Faults>,
}

impl<T: Transport> Transport for Faulty<T> {
    fn audience(&self) -> &str {
        self.inner.audience()
    }

    fn call(
        &self,
        request: SignedRequest,
    ) -> impl Future<Output = Result<Value, TransportError>> + Send {
        let faults = self.faults.clone();
        let tool = request.tool;
        faults
            .log
            .lock()
            .unwrap()
            .push(request.to_body(retalk_proto::auth::Dialect::V001));
        let down = faults.down.load(Ordering::SeqCst) || Faults::take(&faults.fail_before, tool);
        let inner = if down {
            None
        } else {
            Some(self.inner.call(request))
        };
        let held = {
            let mut l = faults.hold_answer.lock().unwrap();
            l.iter()
                .position(|(t, _)| *t == tool)
                .and_then(|i| l.remove(i))
                .map(|(_, held)| held)
        };
        async move {
            let Some(inner) = inner else {
                return Err(TransportError::NotSent("simulated outage".into()));
            };
            let answer = inner.await;
            if let Some(held) = held {
                let _ = held.await;
            }
            if Faults::take(&faults.lose_answer, tool) {
                return Err(TransportError::Unreachable("simulated lost answer".into()));
            }
            answer
        }
    }
}

/// Relays and a clock.
pub struct World {
    pub clock: SimClock,
}

impl World {
    pub fn new() -> Self {
        Self {
            clock: SimClock::new(T0),
        }
    }

    pub fn relay(&self, audience: &str) -> TestRelay {
        self.relay_with(RelayConfig {
            audiences: vec![audience.into()],
            ..RelayConfig::default()
        })
    }

    pub fn relay_with(&self, config: RelayConfig) -> TestRelay {
        Arc::new(Relay::new(MemoryRelayStore::new(), config))
    }

    /// A transport to `relay`, signing for its first audience.
    pub fn transport(
        &self,
        relay: &TestRelay,
    ) -> (
        Faulty<LocalTransport<MemoryRelayStore, SimClock>>,
        Arc<Faults>,
    ) {
        let faults = Arc::new(Faults::default());
        let audience = relay.config().audiences[0].clone();
        let inner = LocalTransport::new(relay.clone(), self.clock.clone(), audience);
        (
            Faulty {
                inner,
                faults: faults.clone(),
            },
            faults,
        )
    }

    /// A new agent on `relay`.
    pub fn agent(&self, relay: &TestRelay, name: &str) -> (Agent, Arc<Faults>) {
        let (t, faults) = self.transport(relay);
        let store = Arc::new(MemoryStore::new());
        (
            Client::create(
                store,
                t,
                self.clock.clone(),
                &format!("{name}-secret"),
                name,
            )
            .unwrap(),
            faults,
        )
    }

    /// The same identity (same store) on another relay.
    pub fn move_agent(&self, agent: &Agent, name: &str, relay: &TestRelay) -> (Agent, Arc<Faults>) {
        let (t, faults) = self.transport(relay);
        let store = agent.store().clone();
        (
            Client::open(store, t, self.clock.clone(), &format!("{name}-secret")).unwrap(),
            faults,
        )
    }
}

/// Texts of a receive.
pub async fn texts(agent: &Agent) -> Vec<String> {
    agent
        .receive()
        .await
        .unwrap()
        .messages
        .into_iter()
        .map(|m| m.text)
        .collect()
}

/// Signs `args` as `account` for `audience` at time `now`, as a request body.
pub fn signed_body(
    account: &vodozemac::olm::Account,
    args: &Args,
    audience: &str,
    now: f64,
) -> Vec<u8> {
    SignedRequest::sign(account, args, audience, now).to_body(retalk_proto::auth::Dialect::V001)
}

/// A participant driven by hand, below the client API: for sending things a
/// well-behaved client never would.
pub struct RawPeer {
    pub account: vodozemac::olm::Account,
    pub id: UserId,
}

impl RawPeer {
    pub fn new() -> Self {
        let account = vodozemac::olm::Account::new();
        let id = UserId::from_keys(
            &account.curve25519_key().to_base64(),
            &account.ed25519_key().to_base64(),
        );
        Self { account, id }
    }

    pub fn call(
        &self,
        relay: &TestRelay,
        clock: &SimClock,
        args: Args,
    ) -> retalk_proto::relay::Response {
        let aud = relay.config().audiences[0].clone();
        relay.handle(
            &signed_body(&self.account, &args, &aud, clock.now()),
            clock.now(),
        )
    }

    /// Publishes identity and a fallback key.
    pub fn publish(&mut self, relay: &TestRelay, clock: &SimClock) {
        self.account.generate_fallback_key();
        let fallback = self
            .account
            .fallback_key()
            .into_iter()
            .map(|(k, v)| (k.to_base64(), v.to_base64()))
            .next();
        let args = Args::PublishKeys {
            identity_key: self.account.curve25519_key().to_base64(),
            signing_key: self.account.ed25519_key().to_base64(),
            one_time_keys: vec![],
            fallback_key: fallback,
        };
        assert_eq!(self.call(relay, clock, args).status, 200);
        self.account.mark_keys_as_published();
    }

    /// Claims `peer`'s key and opens an outbound session.
    pub fn session_with(
        &self,
        relay: &TestRelay,
        clock: &SimClock,
        peer: &UserId,
    ) -> vodozemac::olm::Session {
        let r = self.call(
            relay,
            clock,
            Args::ClaimKey {
                peer: peer.to_string(),
            },
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let ik =
            vodozemac::Curve25519PublicKey::from_base64(r.body["identity_key"].as_str().unwrap())
                .unwrap();
        let otk =
            vodozemac::Curve25519PublicKey::from_base64(r.body["one_time_key"].as_str().unwrap())
                .unwrap();
        self.account
            .create_outbound_session(retalk_proto::olm::session_config(), ik, otk)
            .unwrap()
    }

    /// Encrypts raw plaintext bytes on `session` and sends them to `peer`.
    pub fn send_plain(
        &self,
        relay: &TestRelay,
        clock: &SimClock,
        session: &mut vodozemac::olm::Session,
        peer: &UserId,
        plain: &[u8],
    ) {
        let (mtype, body) = retalk_proto::olm::encode_message(&session.encrypt(plain).unwrap());
        self.send_raw(relay, clock, peer, mtype, &body);
    }

    /// Sends an arbitrary body.
    pub fn send_raw(
        &self,
        relay: &TestRelay,
        clock: &SimClock,
        peer: &UserId,
        mtype: i64,
        body: &str,
    ) {
        let r = self.call(
            relay,
            clock,
            Args::SendMessage {
                to: peer.to_string(),
                mtype,
                body: body.into(),
            },
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
}
