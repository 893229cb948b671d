//! Mail a `receive` call took, held until its answer leaves.
//!
//! rmcp drops the answer of a call the host cancelled, even when the call
//! had already taken mail from the inbox (`service.rs`: "dropping response
//! for cancelled request"), so a taken message would be lost. Each call's
//! take is kept here under its JSON-RPC id, and [`crate::link::Link`], which
//! sees the host's cancellations and our answers in the order rmcp handles
//! them, either lets it go with the answer or puts it back.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use retalk_proto::client::HandOut;
use rmcp::model::RequestId;
use tokio_util::sync::CancellationToken;

/// The takes of the calls in flight.
#[derive(Default)]
pub(crate) struct Handouts {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// What each unanswered call took (a call that took nothing has no
    /// entry).
    held: HashMap<RequestId, HandOut>,
    /// Calls the host cancelled whose answer is not sent: rmcp will drop
    /// it. Cleared when the host reuses the id for a new call.
    cancelled: HashSet<RequestId>,
}

impl Handouts {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `take` for the call `id` and holds what it took until the
    /// call's answer leaves. Takes nothing (an empty hand-out) when the
    /// call is cancelled (`cancel`, or a cancellation [`Link`] saw that
    /// rmcp has not acted on yet), or when another call under the same id
    /// holds mail (a host that reuses ids in flight: one answer could carry
    /// off both takes).
    ///
    /// [`Link`]: crate::link::Link
    pub(crate) fn take<E>(
        &self,
        id: &RequestId,
        cancel: &CancellationToken,
        take: impl FnOnce() -> Result<HandOut, E>,
    ) -> Result<Vec<retalk_proto::client::Received>, E> {
        let mut state = self.state();
        if cancel.is_cancelled() || state.cancelled.contains(id) {
            return Ok(Vec::new());
        }
        if state.held.contains_key(id) {
            return Ok(Vec::new());
        }
        let taken = take()?;
        let messages = taken.messages.clone();
        if !messages.is_empty() {
            state.held.insert(id.clone(), taken);
        }
        Ok(messages)
    }

    /// The host made a call `id`: an earlier call under that id is over.
    pub(crate) fn called(&self, id: &RequestId) {
        self.state().cancelled.remove(id);
    }

    /// The host cancelled the call `id`: what it took, to put back (rmcp
    /// will drop its answer, if it has not sent it already, in which case
    /// nothing is held any more).
    pub(crate) fn cancelled(&self, id: &RequestId) -> Option<HandOut> {
        let mut state = self.state();
        state.cancelled.insert(id.clone());
        state.held.remove(id)
    }

    /// The answer to the call `id` is leaving: what it took, now the
    /// host's (to put back if the answer cannot be written).
    pub(crate) fn answered(&self, id: &RequestId) -> Option<HandOut> {
        self.state().held.remove(id)
    }

    /// Everything still held (the connection is over: no answer will
    /// leave).
    pub(crate) fn all(&self) -> Vec<HandOut> {
        self.state().held.drain().map(|(_, h)| h).collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use retalk_proto::client::Received;
    use retalk_proto::UserId;

    fn one(text: &str) -> Result<HandOut, ()> {
        let mut h = HandOut::default();
        h.messages.push(Received {
            key: text.into(),
            id: text.into(),
            from: UserId::parse("0123456789abcdef0123456789abcdef").unwrap(),
            name: String::new(),
            text: text.into(),
            extra: None,
        });
        Ok(h)
    }

    fn texts(h: Option<HandOut>) -> Vec<String> {
        h.map(|h| h.messages.into_iter().map(|m| m.text).collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_take_is_held_until_answered_or_cancelled() {
        let hs = Handouts::default();
        let live = CancellationToken::new();
        let (a, b) = (RequestId::Number(1), RequestId::Number(2));
        assert_eq!(hs.take(&a, &live, || one("m1")).unwrap().len(), 1);
        assert_eq!(hs.take(&b, &live, || one("m2")).unwrap().len(), 1);
        assert_eq!(texts(hs.cancelled(&b)), ["m2"]);
        assert_eq!(texts(hs.answered(&a)), ["m1"]);
        // Each once.
        assert!(hs.answered(&a).is_none() && hs.cancelled(&b).is_none());
        assert!(hs.all().is_empty());
    }

    #[test]
    fn a_cancelled_call_takes_nothing_until_its_id_is_reused() {
        let hs = Handouts::default();
        let live = CancellationToken::new();
        let id = RequestId::Number(7);
        // rmcp has not cancelled the call's token yet, the link saw it.
        assert!(hs.cancelled(&id).is_none());
        let ran = std::cell::Cell::new(false);
        let got = hs.take(&id, &live, || {
            ran.set(true);
            one("m")
        });
        assert!(got.unwrap().is_empty() && !ran.get());
        // The token said it.
        let cancelled = CancellationToken::new();
        cancelled.cancel();
        let other = RequestId::Number(8);
        assert!(hs.take(&other, &cancelled, || one("m")).unwrap().is_empty());
        // A new call under the old id takes again.
        hs.called(&id);
        assert_eq!(hs.take(&id, &live, || one("m")).unwrap().len(), 1);
    }

    #[test]
    fn a_reused_id_in_flight_does_not_take_twice() {
        let hs = Handouts::default();
        let live = CancellationToken::new();
        let id = RequestId::Number(3);
        assert_eq!(hs.take(&id, &live, || one("m1")).unwrap().len(), 1);
        assert!(hs.take(&id, &live, || one("m2")).unwrap().is_empty());
        assert_eq!(texts(hs.all().pop()), ["m1"]);
    }
}
