//! The local inbox: decrypted messages kept until the application takes them.

use super::{Client, ClientError, Received, Store, Transport};
use crate::clock::Clock;
use crate::envelope::display_name;
use crate::ids::UserId;

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

    /// The decrypted messages not yet taken, oldest first, without removing
    /// them: for looking (a count, a test). To hand them on, use
    /// [`take_messages`](Self::take_messages) or
    /// [`take_inbox`](Self::take_inbox); another process may take a message
    /// this returned at any moment.
    pub fn pending_messages(&self) -> Result<Vec<Received>, ClientError> {
        let records = self.store.inbox()?;
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let contacts = self.contacts()?;
        let saved = |id: &UserId| {
            contacts
                .iter()
                .find(|c| &c.id == id)
                .map(|c| c.name.as_str())
        };
        Ok(records
            .into_iter()
            .map(|r| Received {
                name: display_name(saved(&r.from), &r.claimed_name),
                key: r.hash,
                id: r.envelope_id,
                from: r.from,
                text: r.text,
                extra: r.extra,
            })
            .collect())
    }
}
