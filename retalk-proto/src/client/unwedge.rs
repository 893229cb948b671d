//! Repairing a wedged pair (MSC1719) and re-encrypting what a peer may
//! no longer open.

use super::{
    Changes, Client, ClientError, OutboxEntry, OutboxKind, Store, StoreTransaction, Transport,
};
use crate::clock::Clock;
use crate::envelope::Envelope;
use crate::ids::{new_message_id, UserId};

/// A repair started by us (a fresh session for a wedged pair).
pub(super) const REPAIR_UNWEDGE: &str = "unwedged_at";
/// A repair the peer started (our unacknowledged mail re-encrypted on the
/// new session it opened).
pub(super) const REPAIR_RESEAL: &str = "resealed_at";

/// The setting under which the last repair of one kind with a peer is
/// remembered (unix seconds).
pub(super) fn repair_setting(kind: &str, peer: &UserId) -> String {
    format!("{kind}/{peer}")
}

impl<S: Store, T: Transport, C: Clock> Client<S, T, C> {
    /// Whether a repair of this kind with `peer` ran less than
    /// `unwedge_every` ago (a clock that went back counts as not recent).
    pub(super) fn repaired_recently(
        &self,
        store: &S,
        peer: &UserId,
        now: f64,
        kind: &str,
    ) -> Result<bool, ClientError> {
        Ok(store
            .setting(&repair_setting(kind, peer))?
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|at| at <= now && now - at < self.config.unwedge_every))
    }

    /// The unacknowledged messages to `peer`, marked to be re-encrypted on
    /// the current session and due at once (the peer may be unable to open
    /// their old ciphertexts), read under `tx`'s lock; the caller files
    /// them in its batch.
    pub(super) fn unacknowledged(
        &self,
        tx: &StoreTransaction<'_, S>,
        peer: &UserId,
        now: f64,
    ) -> Result<Vec<OutboxEntry>, ClientError> {
        Ok(tx
            .store()
            .outbox()?
            .into_iter()
            .filter(|e| &e.peer == peer && e.kind == OutboxKind::Message)
            .filter(|e| e.envelope.is_some())
            .map(|e| OutboxEntry {
                reencrypt: true,
                next_attempt: e.next_attempt.min(now),
                ..e
            })
            .collect())
    }

    /// Repairs a wedged pair (MSC1719's "Olm unwedging"): a peer we hold
    /// sessions with sent mail that none of them opens, so one side lost
    /// its ratchet state (a restored backup, a lost session). Starts a
    /// fresh outbound session to the peer, makes it the send session, sends
    /// a dummy (an ack of nothing, which every client drops silently) so
    /// the peer learns the session even when we have nothing to say, and
    /// re-encrypts on it every message the peer has not acknowledged. The
    /// peer, seeing a new session from us, does the same for ours. At most
    /// once per peer per `unwedge_every`; returns whether it ran.
    pub(super) async fn unwedge(&self, peer: &UserId) -> Result<bool, ClientError> {
        if self.store.sessions(peer)?.is_empty()
            || self.repaired_recently(&self.store, peer, self.clock.now(), REPAIR_UNWEDGE)?
        {
            return Ok(false);
        }
        let (identity_key, one_time_key) = self.claim_peer_key(peer).await?;
        let outgoing = {
            let mut tx = self.transaction()?;
            let now = self.clock.now();
            if self.repaired_recently(tx.store(), peer, now, REPAIR_UNWEDGE)? {
                return Ok(false); // another task or process repaired it
            }
            let mut session = self.outbound_session(peer, identity_key, one_time_key)?;
            let dummy = self.encrypt_entry(
                &mut session,
                peer,
                &Envelope::Ack {
                    id: new_message_id(),
                },
                OutboxKind::Ack,
            )?;
            let resend = self.unacknowledged(&tx, peer, now)?;
            tx.changes = Changes {
                // It must win over the wedged ones as the send session.
                sessions: vec![self.session_record(peer, &session, true)],
                outbox: vec![dummy.clone()],
                settings: vec![(repair_setting(REPAIR_UNWEDGE, peer), now.to_string())],
                ..Changes::default()
            };
            tx.changes.outbox.extend(resend.iter().cloned());
            tx.commit()?;
            std::iter::once(dummy).chain(resend).collect::<Vec<_>>()
        };
        self.flush(outgoing).await?;
        Ok(true)
    }
}
