//! A sliding-window request counter, sans IO: the caller passes `now`.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;

/// Allows at most `limit` events per key in any `window` seconds.
pub struct RateLimiter<K> {
    limit: usize,
    window: f64,
    hits: Mutex<HashMap<K, VecDeque<f64>>>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `limit` 0 disables the limiter.
    pub fn new(limit: usize, window: f64) -> Self {
        Self {
            limit,
            window,
            hits: Mutex::new(HashMap::new()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.limit > 0
    }

    /// Records one event for `key`; false when it is over the limit (and
    /// then it is not recorded).
    pub fn allow(&self, key: &K, now: f64) -> bool {
        if self.limit == 0 {
            return true;
        }
        let Ok(mut hits) = self.hits.lock() else {
            return true;
        };
        let cutoff = now - self.window;
        // Keep the table bounded by the keys active in the last window.
        if hits.len() > 4096 {
            hits.retain(|_, q| q.back().is_some_and(|t| *t > cutoff));
        }
        let q = hits.entry(key.clone()).or_default();
        while q.front().is_some_and(|t| *t <= cutoff) {
            q.pop_front();
        }
        if q.len() >= self.limit {
            return false;
        }
        q.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_slides() {
        let r = RateLimiter::new(2, 60.0);
        assert!(r.allow(&"a", 0.0));
        assert!(r.allow(&"a", 1.0));
        assert!(!r.allow(&"a", 2.0));
        assert!(r.allow(&"b", 2.0));
        assert!(r.allow(&"a", 60.5));
        let off = RateLimiter::new(0, 60.0);
        assert!((0..100).all(|i| off.allow(&"a", i as f64)));
    }
}
