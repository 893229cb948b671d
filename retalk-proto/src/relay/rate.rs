//! A request-rate limiter, sans IO: the caller passes `now`.
//!
//! A sliding window estimated from two fixed ones (the count of the current
//! window plus the previous one's, weighted by how much of it still
//! overlaps), so each key costs constant memory whatever the limit. Used
//! per verified user id here and per source address by the HTTP server.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

/// Keys tracked at most; past it, stale ones are dropped, and if the table
/// is still full new keys go unlimited (fail open) rather than evicting the
/// ones being limited.
const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Slot {
    window: u64,
    current: u32,
    previous: u32,
}

/// Allows at most `limit` events per key in any `window` seconds.
#[derive(Debug)]
pub struct RateLimiter<K> {
    limit: u32,
    window: f64,
    slots: Mutex<HashMap<K, Slot>>,
}

impl<K: Hash + Eq> RateLimiter<K> {
    /// `limit` 0 disables the limiter.
    pub fn new(limit: usize, window: f64) -> Self {
        Self {
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
            window: window.max(f64::MIN_POSITIVE),
            slots: Mutex::new(HashMap::new()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.limit > 0
    }

    /// Counts one event for `key` at `now`; false when it is over the limit
    /// (and then it is not counted).
    pub fn allow(&self, key: K, now: f64) -> bool {
        if self.limit == 0 {
            return true;
        }
        let Ok(mut slots) = self.slots.lock() else {
            return true;
        };
        let position = (now / self.window).max(0.0);
        let window = position.floor() as u64;
        let into = position.fract();
        if slots.len() >= MAX_TRACKED {
            slots.retain(|_, s| s.window + 1 >= window);
            if slots.len() >= MAX_TRACKED {
                return true;
            }
        }
        let slot = slots.entry(key).or_insert(Slot {
            window,
            current: 0,
            previous: 0,
        });
        if slot.window != window {
            slot.previous = if slot.window + 1 == window {
                slot.current
            } else {
                0
            };
            slot.current = 0;
            slot.window = window;
        }
        let estimate = f64::from(slot.previous) * (1.0 - into) + f64::from(slot.current);
        if estimate >= f64::from(self.limit) {
            return false;
        }
        slot.current = slot.current.saturating_add(1);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_slides() {
        let r = RateLimiter::new(2, 60.0);
        assert!(r.allow("a", 0.0));
        assert!(r.allow("a", 1.0));
        assert!(!r.allow("a", 2.0));
        assert!(r.allow("b", 2.0));
        // Half-way into the next window, half of the previous count remains.
        assert!(r.allow("a", 90.0));
        assert!(!r.allow("a", 90.0));
        // Two windows on, everything is forgotten.
        assert!(r.allow("a", 180.0) && r.allow("a", 180.5));
        let off = RateLimiter::new(0, 60.0);
        assert!((0..100).all(|i| off.allow("a", i as f64)));
    }
}
