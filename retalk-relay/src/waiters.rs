//! Parked long-polls (`read_messages` with `wait`), keyed by the user they
//! wait for mail for, and the wake-ups that end them.
//!
//! A waiter registers (takes a [`Ticket`]) *before* it checks the mailbox,
//! so mail stored between the check and the wait still wakes it: the
//! ticket remembers the user's wake-up count at registration, and any
//! later [`Waiters::wake`] makes [`Ticket::woken`] resolve. A parked waiter
//! is a future on a channel: it costs memory, never CPU.
//!
//! Today wake-ups come from this process's own `send_message`s. A relay
//! sharing its store with other processes feeds theirs in through the
//! same [`Waiters::wake`] (and [`Waiters::wake_all`] when it may have
//! missed some).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use retalk_proto::UserId;
use tokio::sync::watch;

use crate::limit;

/// How many requests may be parked at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitCaps {
    /// In all: parked reads hold connections, so some must stay for the
    /// requests that would wake them.
    pub total: usize,
    /// Per user id (several processes of one agent may each hold one).
    pub per_user: usize,
    /// Per address group (an IPv4 address, an IPv6 /64, as the other
    /// per-address limits); loopback is exempt unless `limit_loopback`.
    pub per_address: usize,
    pub limit_loopback: bool,
}

/// Why a request could not be parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParkError {
    #[error("too many waiting reads on this relay (cap {0}); read without wait or retry later")]
    Total(usize),
    #[error(
        "too many waiting reads for this user (cap {0}); stop the others or read without wait"
    )]
    PerUser(usize),
    #[error("too many waiting reads from this address (cap {0}); read without wait")]
    PerAddress(usize),
}

#[derive(Default)]
struct Parked {
    /// A wake-up counter per user with parked waiters; dropped with the
    /// last of them, so idle users cost nothing.
    users: HashMap<UserId, (watch::Sender<u64>, usize)>,
    addresses: HashMap<IpAddr, usize>,
    total: usize,
}

/// The parked waiters of one relay process.
pub struct Waiters {
    caps: WaitCaps,
    parked: Mutex<Parked>,
}

impl Waiters {
    pub fn new(caps: WaitCaps) -> Arc<Self> {
        Arc::new(Self {
            caps,
            parked: Mutex::new(Parked::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Parked> {
        // Counters only: a panic elsewhere leaves them consistent.
        self.parked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a waiter for `user`'s mail, from `address` if known.
    pub fn park(
        self: &Arc<Self>,
        user: &UserId,
        address: Option<IpAddr>,
    ) -> Result<Ticket, ParkError> {
        let mut parked = self.lock();
        if parked.total >= self.caps.total {
            return Err(ParkError::Total(self.caps.total));
        }
        let counted = address
            .filter(|a| !limit::exempt(*a, self.caps.limit_loopback))
            .map(limit::group);
        if let Some(a) = counted {
            if parked.addresses.get(&a).copied().unwrap_or(0) >= self.caps.per_address {
                return Err(ParkError::PerAddress(self.caps.per_address));
            }
        }
        let (sender, count) = parked
            .users
            .entry(user.clone())
            .or_insert_with(|| (watch::channel(0).0, 0));
        if *count >= self.caps.per_user {
            return Err(ParkError::PerUser(self.caps.per_user));
        }
        *count += 1;
        let woken = sender.subscribe();
        if let Some(a) = counted {
            *parked.addresses.entry(a).or_default() += 1;
        }
        parked.total += 1;
        Ok(Ticket {
            waiters: self.clone(),
            user: user.clone(),
            address: counted,
            woken,
        })
    }

    /// Mail was stored for `user`: every waiter of theirs checks again.
    pub fn wake(&self, user: &UserId) {
        if let Some((sender, _)) = self.lock().users.get(user) {
            sender.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Every waiter checks again (after wake-ups may have been missed).
    pub fn wake_all(&self) {
        for (sender, _) in self.lock().users.values() {
            sender.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Requests parked now.
    pub fn parked(&self) -> usize {
        self.lock().total
    }

    fn release(&self, user: &UserId, address: Option<IpAddr>) {
        let mut parked = self.lock();
        parked.total = parked.total.saturating_sub(1);
        if let Some((_, count)) = parked.users.get_mut(user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                parked.users.remove(user);
            }
        }
        if let Some(a) = address {
            if let Some(n) = parked.addresses.get_mut(&a) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    parked.addresses.remove(&a);
                }
            }
        }
    }
}

/// One parked request; dropping it unparks.
pub struct Ticket {
    waiters: Arc<Waiters>,
    user: UserId,
    address: Option<IpAddr>,
    woken: watch::Receiver<u64>,
}

impl Ticket {
    /// Resolves at the first wake-up for the user since registration (or
    /// since the last time this resolved).
    pub async fn woken(&mut self) {
        // The sender lives as long as any ticket of the user, this one
        // included, so this cannot fail; if it ever did, waiting on would
        // never end, so treat it as a wake-up.
        let _ = self.woken.changed().await;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.waiters.release(&self.user, self.address);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::time::Duration;

    fn uid(n: u8) -> UserId {
        UserId::parse(&format!("{n:032x}")).unwrap()
    }

    fn caps() -> WaitCaps {
        WaitCaps {
            total: 5,
            per_user: 2,
            per_address: 3,
            limit_loopback: false,
        }
    }

    #[tokio::test]
    async fn a_wake_before_the_wait_is_not_lost() {
        let w = Waiters::new(caps());
        let mut t = w.park(&uid(1), None).unwrap();
        w.wake(&uid(1)); // mail stored after registering, before waiting
        tokio::time::timeout(Duration::from_secs(1), t.woken())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn only_the_users_waiters_wake() {
        let w = Waiters::new(caps());
        let mut a = w.park(&uid(1), None).unwrap();
        w.wake(&uid(2));
        assert!(tokio::time::timeout(Duration::from_millis(50), a.woken())
            .await
            .is_err());
        w.wake_all();
        tokio::time::timeout(Duration::from_secs(1), a.woken())
            .await
            .unwrap();
    }

    #[test]
    fn caps_per_user_and_per_address_and_release_on_drop() {
        let w = Waiters::new(caps());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let a = w.park(&uid(1), Some(ip)).unwrap();
        let _b = w.park(&uid(1), Some(ip)).unwrap();
        assert_eq!(w.park(&uid(1), Some(ip)).err(), Some(ParkError::PerUser(2)));
        let _c = w.park(&uid(2), Some(ip)).unwrap();
        assert_eq!(
            w.park(&uid(3), Some(ip)).err(),
            Some(ParkError::PerAddress(3))
        );
        // Loopback is not counted per address by default.
        let _d = w.park(&uid(3), Some("127.0.0.1".parse().unwrap())).unwrap();
        // IPv4-mapped loopback too (a dual-stack listener), and an IPv6 /64
        // counts as one address.
        let _e = w
            .park(&uid(4), Some("::ffff:127.0.0.1".parse().unwrap()))
            .unwrap();
        assert_eq!(w.parked(), 5);
        assert_eq!(w.park(&uid(5), None).err(), Some(ParkError::Total(5)));
        drop(a);
        assert_eq!(w.parked(), 4);
        w.park(&uid(1), Some(ip)).unwrap();
    }

    #[test]
    fn an_ipv6_64_is_one_address() {
        let w = Waiters::new(WaitCaps {
            total: 10,
            per_user: 10,
            per_address: 2,
            limit_loopback: false,
        });
        let _a = w
            .park(&uid(1), Some("2001:db8::1".parse().unwrap()))
            .unwrap();
        let _b = w
            .park(&uid(2), Some("2001:db8::2".parse().unwrap()))
            .unwrap();
        assert_eq!(
            w.park(&uid(3), Some("2001:db8::ffff:3".parse().unwrap()))
                .err(),
            Some(ParkError::PerAddress(2))
        );
        w.park(&uid(4), Some("2001:db8:0:1::1".parse().unwrap()))
            .unwrap();
    }
}
