//! The local inbox: decrypted messages kept until the application takes them.

use super::{Client, ClientError, InboxRecord, Received, Store, Transport};
use crate::clock::Clock;
use crate::envelope::display_name;
use crate::ids::UserId;
use crate::olm::PickleKey;

/// Marks an inbox field sealed under the identity's pickle key
/// ([`PickleKey::seal`]). Records written before inbox sealing hold their
/// fields plain (no marker) and read as they are until taken.
const SEALED: &str = "sealed1:";

/// Seals one decrypted field for the inbox (empty stays empty: a record
/// that is not a message has no text).
fn seal_field(key: &PickleKey, plain: String) -> String {
    if plain.is_empty() {
        return plain;
    }
    format!("{SEALED}{}", key.seal(plain.as_bytes()))
}

/// Opens what [`seal_field`] made; a field without the marker is a plain
/// one from before sealing. A marked field that does not open is a damaged
/// store or another identity's key.
fn open_field(key: &PickleKey, stored: String) -> Result<String, ClientError> {
    let Some(sealed) = stored.strip_prefix(SEALED) else {
        return Ok(stored);
    };
    let bad = || ClientError::Unseal("an inbox message does not open with this key".into());
    let plain = key.open(sealed).map_err(|_| bad())?;
    String::from_utf8(plain).map_err(|_| bad())
}

/// The inbox record as stored: its decrypted content (text, claimed name,
/// extra fields) sealed under the pickle key, so no backend keeps received
/// plaintext at rest (the README's promise for history holds for mail
/// waiting to be taken too).
pub(super) fn seal_record(key: &PickleKey, r: InboxRecord) -> InboxRecord {
    InboxRecord {
        claimed_name: seal_field(key, r.claimed_name),
        text: seal_field(key, r.text),
        extra: r.extra.map(|e| seal_field(key, e)),
        ..r
    }
}

/// Undoes [`seal_record`]; plain records (written before sealing) pass.
fn open_record(key: &PickleKey, r: InboxRecord) -> Result<InboxRecord, ClientError> {
    Ok(InboxRecord {
        claimed_name: open_field(key, r.claimed_name)?,
        text: open_field(key, r.text)?,
        extra: r.extra.map(|e| open_field(key, e)).transpose()?,
        ..r
    })
}

impl<S: Store, T: Transport, C: Clock> Client<S, T, C> {
    /// Hands the decrypted messages to the application, removing them.
    /// For an application that can lose a message after this returns (a
    /// printer to a pipe), [`take_messages`](Self::take_messages) removes
    /// each only once it is handled.
    pub fn take_inbox(&self) -> Result<Vec<Received>, ClientError> {
        let _taking = self.store.take_lock()?;
        let mut tx = self.transaction()?;
        let messages = self.pending_messages()?;
        tx.changes.inbox_removed = messages.iter().map(|m| m.key.clone()).collect();
        tx.commit()?;
        Ok(messages)
    }

    /// Hands at most `limit` decrypted messages, oldest first, to `deliver`
    /// one at a time, and removes each from the inbox only after `deliver`
    /// returned `Ok` for it; the first error stops the run and is returned,
    /// leaving that message and the rest for the next call. Returns how
    /// many were taken.
    ///
    /// The whole run holds the store's take lock ([`Store::take_lock`],
    /// across processes for a file store), so processes sharing an
    /// identity never hand out the same message twice: a second taker
    /// waits, then finds only what the first left. The store's own lock is
    /// held only to remove each message, so `deliver` may block (a full
    /// pipe) or call [`send`](Self::send) without stopping senders and
    /// fetchers; it must not take messages itself (the take lock is not
    /// reentrant). A crash between `deliver` and the removal shows the
    /// message again on the next run (at least once, never lost).
    pub fn take_messages<E: From<ClientError>>(
        &self,
        limit: usize,
        deliver: impl FnMut(&Received) -> Result<(), E>,
    ) -> Result<usize, E> {
        self.take_messages_from(None, limit, deliver)
    }

    /// [`take_messages`](Self::take_messages) of the messages from the
    /// senders in `from` only (all with `None`); the others stay.
    pub fn take_messages_from<E: From<ClientError>>(
        &self,
        from: Option<&[UserId]>,
        limit: usize,
        mut deliver: impl FnMut(&Received) -> Result<(), E>,
    ) -> Result<usize, E> {
        if limit == 0 {
            return Ok(0);
        }
        let _taking = self.store.take_lock().map_err(ClientError::from)?;
        // Only takers remove from the inbox, and they take turns: what is
        // read now stays until this run removes it.
        let pending = self.pending_messages()?;
        let wanted = |m: &Received| from.is_none_or(|f| f.contains(&m.from));
        let mut taken = 0;
        for m in pending.into_iter().filter(wanted).take(limit) {
            deliver(&m)?;
            let mut tx = self.transaction()?;
            tx.changes.inbox_removed.push(m.key);
            tx.commit().map_err(ClientError::from)?;
            taken += 1;
        }
        Ok(taken)
    }

    /// Takes at most `limit` messages from the senders in `from` (all with
    /// `None`) out of the inbox in one step, oldest first, for a hand-off
    /// that can still fail after the take: an answer its transport may drop
    /// (the MCP server's, when the host cancels the call). Give the
    /// [`HandOut`] to [`put_back`](Self::put_back) if it never reached the
    /// reader, else drop it. Holds the take lock as
    /// [`take_messages`](Self::take_messages) does, so no other taker
    /// (another process either) gets the same messages.
    pub fn hand_out(&self, from: Option<&[UserId]>, limit: usize) -> Result<HandOut, ClientError> {
        let _taking = self.store.take_lock()?;
        // Picked by sender before anything is unsealed: a waiting reader
        // asks every second, past mail it does not want.
        let records: Vec<InboxRecord> = self
            .store
            .inbox()?
            .into_iter()
            .filter(|r| from.is_none_or(|f| f.contains(&r.from)))
            .take(limit)
            .collect();
        let messages = self.open_records(records.clone())?;
        if !records.is_empty() {
            let mut tx = self.transaction()?;
            tx.changes.inbox_removed = records.iter().map(|r| r.hash.clone()).collect();
            tx.commit()?;
        }
        Ok(HandOut { messages, records })
    }

    /// Returns what [`hand_out`](Self::hand_out) took to the inbox, as it
    /// was stored (sealed, with its arrival time); it is read after the
    /// messages that arrived in between.
    pub fn put_back(&self, handed: HandOut) -> Result<(), ClientError> {
        if handed.records.is_empty() {
            return Ok(());
        }
        let _taking = self.store.take_lock()?;
        let mut tx = self.transaction()?;
        tx.changes.inbox = handed.records;
        tx.commit()?;
        Ok(())
    }

    /// The decrypted messages not yet taken, oldest first, without removing
    /// them: for looking (a count, a test). To hand them on, use
    /// [`take_messages`](Self::take_messages) or
    /// [`take_inbox`](Self::take_inbox); another process may take a message
    /// this returned at any moment.
    pub fn pending_messages(&self) -> Result<Vec<Received>, ClientError> {
        self.open_records(self.store.inbox()?)
    }

    /// The stored inbox records, opened and named as the application sees
    /// them, in the same order.
    fn open_records(&self, records: Vec<InboxRecord>) -> Result<Vec<Received>, ClientError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let contacts = self.contacts()?;
        let saved = |id: &UserId| {
            contacts
                .iter()
                // A contact saved under its own id (`request` without
                // --peer) is unnamed: the sender's chosen name shows.
                .find(|c| &c.id == id && c.name != c.id.as_str())
                .map(|c| c.name.as_str())
        };
        records
            .into_iter()
            .map(|r| {
                let r = open_record(&self.key, r)?;
                Ok(Received {
                    name: display_name(saved(&r.from), &r.claimed_name),
                    key: r.hash,
                    id: r.envelope_id,
                    from: r.from,
                    text: r.text,
                    extra: r.extra,
                })
            })
            .collect()
    }
}

/// Messages [`Client::hand_out`] took from the inbox: `messages` to give
/// the reader, and the stored records, so that only what was taken can be
/// put back, exactly as it was.
#[derive(Debug, Default)]
pub struct HandOut {
    pub messages: Vec<Received>,
    records: Vec<InboxRecord>,
}
