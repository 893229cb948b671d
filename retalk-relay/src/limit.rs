//! Cheap per-source-address limits, applied before any signature work: a
//! request rate and a count of open connections.
//!
//! Addresses are grouped the way they are handed out: an IPv4 address is
//! its own group, an IPv6 address counts with its /64. Loopback peers are
//! exempt unless configured otherwise (behind a local TLS proxy every client
//! arrives from loopback, and limiting them together would throttle them all
//! as one).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

use retalk_proto::relay::RateLimiter;
use std::sync::{Arc, Mutex};

/// Seconds of the request-rate window.
pub const WINDOW: f64 = 60.0;

/// The group an address is limited in.
pub fn group(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Whether an address is exempt from the per-address limits (loopback,
/// IPv4-mapped included, unless `limit_loopback`).
pub fn exempt(ip: IpAddr, limit_loopback: bool) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    !limit_loopback && ip.is_loopback()
}

/// Requests per address group per minute: the protocol's [`RateLimiter`]
/// keyed by [`group`], with loopback exempt unless configured otherwise.
#[derive(Debug)]
pub struct IpRateLimiter {
    limit_loopback: bool,
    rate: RateLimiter<IpAddr>,
}

impl IpRateLimiter {
    /// `limit` 0 disables it.
    pub fn new(limit: usize, limit_loopback: bool) -> Self {
        Self {
            limit_loopback,
            rate: RateLimiter::new(limit, WINDOW),
        }
    }

    /// Counts one request from `ip` at `now`; false when over the limit
    /// (and then it is not counted).
    pub fn allow(&self, ip: IpAddr, now: f64) -> bool {
        exempt(ip, self.limit_loopback) || self.rate.allow(group(ip), now)
    }
}

/// Open connections per address.
#[derive(Debug, Clone)]
pub struct ConnectionCounter {
    limit: usize,
    limit_loopback: bool,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One counted connection; uncounted when dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    ip: Option<IpAddr>,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl ConnectionCounter {
    pub fn new(limit: usize, limit_loopback: bool) -> Self {
        Self {
            limit,
            limit_loopback,
            open: Arc::default(),
        }
    }

    /// A slot for a new connection from `ip`, or `None` when that address
    /// already has its share open.
    pub fn admit(&self, ip: IpAddr) -> Option<ConnectionSlot> {
        if exempt(ip, self.limit_loopback) {
            return Some(ConnectionSlot {
                ip: None,
                open: self.open.clone(),
            });
        }
        let key = group(ip);
        let mut open = self.open.lock().ok()?;
        let n = open.entry(key).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(ConnectionSlot {
            ip: Some(key),
            open: self.open.clone(),
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let Some(ip) = self.ip else { return };
        if let Ok(mut open) = self.open.lock() {
            if let Some(n) = open.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    open.remove(&ip);
                }
            }
        }
    }
}

/// Failed attempts (wrong `/admin` passwords) per address: past `limit`
/// in a minute, the address is refused before its next attempt is even
/// checked, until that minute is over. Loopback is not exempt: a password
/// guessed through a local proxy is guessed all the same.
#[derive(Debug)]
pub struct FailureLimiter {
    limit: usize,
    failures: Mutex<HashMap<IpAddr, (f64, usize)>>,
}

/// Addresses remembered at most; past it, the stale ones are dropped.
const MAX_TRACKED: usize = 100_000;

impl FailureLimiter {
    /// `limit` 0 disables it.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            failures: Mutex::default(),
        }
    }

    /// Whether `ip` has used up its attempts for now.
    pub fn blocked(&self, ip: IpAddr, now: f64) -> bool {
        if self.limit == 0 {
            return false;
        }
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures
            .get(&group(ip))
            .is_some_and(|(since, n)| now - since < WINDOW && *n >= self.limit)
    }

    /// Counts one failed attempt from `ip`.
    pub fn failed(&self, ip: IpAddr, now: f64) {
        if self.limit == 0 {
            return;
        }
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= MAX_TRACKED {
            failures.retain(|_, (since, _)| now - *since < WINDOW);
        }
        let entry = failures.entry(group(ip)).or_insert((now, 0));
        if now - entry.0 >= WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn rate_is_per_address_and_slides() {
        let l = IpRateLimiter::new(3, false);
        let t = 6000.0; // the start of a window
        assert!((0..3).all(|_| l.allow(ip("192.0.2.1"), t)));
        assert!(!l.allow(ip("192.0.2.1"), t + 1.0));
        assert!(l.allow(ip("192.0.2.2"), t + 1.0));
        // Half into the next window, half of the last one still counts.
        assert!(l.allow(ip("192.0.2.1"), t + 90.0));
        assert!(l.allow(ip("192.0.2.1"), t + 90.0));
        assert!(!l.allow(ip("192.0.2.1"), t + 90.0));
        // Two windows on, all forgotten.
        assert!((0..3).all(|_| l.allow(ip("192.0.2.1"), t + 200.0)));
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let l = IpRateLimiter::new(2, false);
        assert!(l.allow(ip("2001:db8::1"), 0.0));
        assert!(l.allow(ip("2001:db8::2:3"), 0.0));
        assert!(!l.allow(ip("2001:db8::ffff"), 0.0));
        assert!(l.allow(ip("2001:db8:0:1::1"), 0.0));
        assert_eq!(group(ip("::ffff:192.0.2.9")), ip("192.0.2.9"));
    }

    #[test]
    fn loopback_is_exempt_unless_asked() {
        let l = IpRateLimiter::new(1, false);
        assert!((0..10).all(|_| l.allow(ip("127.0.0.1"), 0.0)));
        assert!((0..10).all(|_| l.allow(ip("::1"), 0.0)));
        let l = IpRateLimiter::new(1, true);
        assert!(l.allow(ip("127.0.0.1"), 0.0));
        assert!(!l.allow(ip("127.0.0.1"), 0.0));
        assert!((0..10).all(|_| IpRateLimiter::new(0, true).allow(ip("127.0.0.1"), 0.0)));
    }

    #[test]
    fn failures_block_until_the_minute_is_over() {
        let f = FailureLimiter::new(3);
        let me = ip("127.0.0.1");
        for _ in 0..3 {
            assert!(!f.blocked(me, 100.0));
            f.failed(me, 100.0);
        }
        assert!(f.blocked(me, 101.0), "loopback is not exempt");
        assert!(!f.blocked(ip("127.0.0.2"), 101.0));
        assert!(!f.blocked(me, 160.5));
        f.failed(me, 161.0);
        assert!(!f.blocked(me, 161.0));
        assert!(!FailureLimiter::new(0).blocked(me, 0.0));
    }

    #[test]
    fn connections_are_counted_and_released() {
        let c = ConnectionCounter::new(2, true);
        let a = c.admit(ip("127.0.0.1")).unwrap();
        let _b = c.admit(ip("127.0.0.1")).unwrap();
        assert!(c.admit(ip("127.0.0.1")).is_none());
        assert!(c.admit(ip("127.0.0.2")).is_some());
        drop(a);
        assert!(c.admit(ip("127.0.0.1")).is_some());
        let exempt = ConnectionCounter::new(1, false);
        let _x = exempt.admit(ip("127.0.0.1")).unwrap();
        assert!(exempt.admit(ip("127.0.0.1")).is_some());
    }
}
