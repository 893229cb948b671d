//! A client [`Store`] in memory: for unit tests and examples.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use super::store::*;
use crate::ids::UserId;

#[derive(Default, Clone)]
struct State {
    identity: Option<IdentityRecord>,
    sessions: BTreeMap<(UserId, String), SessionRecord>,
    outbox: BTreeMap<String, (u64, OutboxEntry)>,
    processed: HashMap<String, ProcessedRecord>,
    incoming: BTreeMap<String, (u64, IncomingRecord)>,
    inbox: BTreeMap<String, (u64, InboxRecord)>,
    contacts: BTreeMap<String, Contact>,
    settings: BTreeMap<String, String>,
    /// Saved history by row number (the rows' own order is save time).
    messages: BTreeMap<i64, MessageRecord>,
    blocked: std::collections::BTreeSet<UserId>,
    received_contacts: BTreeMap<UserId, ReceivedContact>,
    groups: BTreeMap<crate::group::GroupId, Group>,
    left_groups: BTreeMap<crate::group::GroupId, LeftGroup>,
    invites: BTreeMap<String, InviteRecord>,
    seq: u64,
}

/// A [`Store`] in memory.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    op: Mutex<()>,
    take: Mutex<()>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many processed markers are kept (for tests of the bounds).
    pub fn processed_count(&self) -> usize {
        self.state().map(|s| s.processed.len()).unwrap_or_default()
    }

    fn state(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        self.state
            .lock()
            .map_err(|_| StoreError::msg("memory store poisoned"))
    }
}

fn ordered<T: Clone>(map: &BTreeMap<String, (u64, T)>) -> Vec<T> {
    let mut v: Vec<_> = map.values().cloned().collect();
    v.sort_by_key(|(seq, _)| *seq);
    v.into_iter().map(|(_, t)| t).collect()
}

/// The store's lock: private, so only [`MemoryStore::lock`] makes one.
pub struct MemoryLock<'a>(#[allow(dead_code)] MutexGuard<'a, ()>);

impl Store for MemoryStore {
    type Lock<'a> = MemoryLock<'a>;

    fn lock(&self) -> Result<Self::Lock<'_>, StoreError> {
        self.op
            .lock()
            .map(MemoryLock)
            .map_err(|_| StoreError::msg("memory store poisoned"))
    }

    type TakeLock<'a> = MutexGuard<'a, ()>;

    fn take_lock(&self) -> Result<Self::TakeLock<'_>, StoreError> {
        // Guards no data: a taker that panicked left nothing half-done.
        Ok(self.take.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn commit(&self, _lock: &MemoryLock<'_>, c: Changes) -> Result<(), StoreError> {
        // Every field named: a field added to `Changes` fails to compile
        // here until this store writes it.
        let Changes {
            identity,
            sessions,
            sessions_removed,
            outbox,
            outbox_removed,
            processed,
            processed_forget_before,
            incoming,
            incoming_removed,
            inbox,
            inbox_removed,
            contacts,
            contacts_removed,
            settings,
            messages,
            blocked,
            blocked_removed,
            received_contacts,
            received_contacts_removed,
            groups,
            groups_removed,
            left_groups,
            left_groups_removed,
            invites,
        } = c;
        let mut s = self.state()?;
        if let Some(i) = identity {
            s.identity = Some(i);
        }
        for r in sessions {
            s.sessions.insert((r.peer.clone(), r.session_id.clone()), r);
        }
        for k in sessions_removed {
            s.sessions.remove(&k);
        }
        for e in outbox {
            s.seq += 1;
            let seq = s.outbox.get(&e.key).map_or(s.seq, |(q, _)| *q);
            s.outbox.insert(e.key.clone(), (seq, e));
        }
        for k in outbox_removed {
            s.outbox.remove(&k);
        }
        if let Some(before) = processed_forget_before {
            s.processed.retain(|_, p| p.at >= before);
        }
        for p in processed {
            s.processed.insert(p.hash.clone(), p);
        }
        for i in incoming {
            s.seq += 1;
            let seq = s.seq;
            s.incoming.entry(i.hash.clone()).or_insert((seq, i));
        }
        for k in incoming_removed {
            s.incoming.remove(&k);
        }
        for m in inbox {
            s.seq += 1;
            let seq = s.seq;
            s.inbox.entry(m.hash.clone()).or_insert((seq, m));
        }
        for k in inbox_removed {
            s.inbox.remove(&k);
        }
        for ct in contacts {
            s.contacts.insert(ct.name.clone(), ct);
        }
        for k in contacts_removed {
            s.contacts.remove(&k);
        }
        for (k, v) in settings {
            s.settings.insert(k, v);
        }
        for m in messages {
            if s.messages.values().any(|held| held.msg_id == m.msg_id) {
                continue;
            }
            let rowid = s.messages.keys().next_back().map_or(1, |r| r + 1);
            s.messages.insert(rowid, m);
        }
        for b in blocked {
            s.blocked.insert(b);
        }
        for b in blocked_removed {
            s.blocked.remove(&b);
        }
        for r in received_contacts {
            s.received_contacts.insert(r.id.clone(), r);
        }
        for k in received_contacts_removed {
            s.received_contacts.remove(&k);
        }
        for g in groups {
            s.groups.insert(g.id.clone(), g);
        }
        for k in groups_removed {
            s.groups.remove(&k);
        }
        for l in left_groups {
            s.left_groups.insert(l.id.clone(), l);
        }
        for k in left_groups_removed {
            s.left_groups.remove(&k);
        }
        for i in invites {
            s.invites.insert(i.code.clone(), i);
        }
        Ok(())
    }

    fn identity(&self) -> Result<Option<IdentityRecord>, StoreError> {
        Ok(self.state()?.identity.clone())
    }

    fn sessions(&self, peer: &UserId) -> Result<Vec<SessionRecord>, StoreError> {
        let s = self.state()?;
        let mut v: Vec<_> = s
            .sessions
            .values()
            .filter(|r| &r.peer == peer)
            .cloned()
            .collect();
        v.sort_by(|a, b| {
            b.last_received
                .total_cmp(&a.last_received)
                .then(b.created.total_cmp(&a.created))
        });
        Ok(v)
    }

    fn outbox_entry(&self, key: &str) -> Result<Option<OutboxEntry>, StoreError> {
        Ok(self.state()?.outbox.get(key).map(|(_, e)| e.clone()))
    }

    fn outbox(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        Ok(ordered(&self.state()?.outbox))
    }

    fn processed(&self, hash: &str) -> Result<Option<ProcessedRecord>, StoreError> {
        Ok(self.state()?.processed.get(hash).cloned())
    }

    fn incoming(&self) -> Result<Vec<IncomingRecord>, StoreError> {
        Ok(ordered(&self.state()?.incoming))
    }

    fn is_incoming(&self, hash: &str) -> Result<bool, StoreError> {
        Ok(self.state()?.incoming.contains_key(hash))
    }

    fn inbox(&self) -> Result<Vec<InboxRecord>, StoreError> {
        Ok(ordered(&self.state()?.inbox))
    }

    fn contacts(&self) -> Result<Vec<Contact>, StoreError> {
        Ok(self.state()?.contacts.values().cloned().collect())
    }

    fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.state()?.settings.get(key).cloned())
    }

    fn messages(
        &self,
        of: MessageFilter<'_>,
        after_rowid: i64,
    ) -> Result<Vec<SavedMessage>, StoreError> {
        let mut rows: Vec<SavedMessage> = self
            .state()?
            .messages
            .range(after_rowid.saturating_add(1)..)
            .filter(|(_, record)| of.matches(record))
            .map(|(rowid, record)| SavedMessage {
                rowid: *rowid,
                record: record.clone(),
            })
            .collect();
        SavedMessage::sort_for_history(&mut rows);
        Ok(rows)
    }

    fn blocked(&self) -> Result<Vec<UserId>, StoreError> {
        Ok(self.state()?.blocked.iter().cloned().collect())
    }

    fn received_contacts(&self) -> Result<Vec<ReceivedContact>, StoreError> {
        let mut v: Vec<_> = self.state()?.received_contacts.values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        Ok(v)
    }

    fn groups(&self) -> Result<Vec<Group>, StoreError> {
        Ok(self.state()?.groups.values().cloned().collect())
    }

    fn left_groups(&self) -> Result<Vec<LeftGroup>, StoreError> {
        Ok(self.state()?.left_groups.values().cloned().collect())
    }

    fn invites(&self) -> Result<Vec<InviteRecord>, StoreError> {
        Ok(self.state()?.invites.values().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::MemoryStore;
    crate::store_tests!(MemoryStore::new);
}
