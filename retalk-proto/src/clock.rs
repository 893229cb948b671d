//! Time as an input. The core never reads a clock; whoever drives it
//! supplies one. Tests share a [`SimClock`] between agents and the relay and
//! move it forward by hand, so "resend after 120 s" is a test, not a wait.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Unix time in seconds, as a float (what the wire carries), and waiting
/// on it: the follow driver's pauses go through the clock, so a simulated
/// one runs them at once.
pub trait Clock: Send + Sync {
    fn now(&self) -> f64;

    /// Resolves once `seconds` have passed on this clock.
    fn sleep(&self, seconds: f64) -> impl Future<Output = ()> + Send;
}

/// A clock that moves only when told. Clones share the same time.
#[derive(Clone, Debug)]
pub struct SimClock(Arc<AtomicU64>);

impl SimClock {
    pub fn new(start: f64) -> Self {
        Self(Arc::new(AtomicU64::new(start.to_bits())))
    }

    pub fn set(&self, t: f64) {
        self.0.store(t.to_bits(), Ordering::SeqCst);
    }

    pub fn advance(&self, seconds: f64) {
        self.set(self.now() + seconds);
    }
}

impl Clock for SimClock {
    fn now(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::SeqCst))
    }

    /// Moves the time on by `seconds` and returns at once.
    fn sleep(&self, seconds: f64) -> impl Future<Output = ()> + Send {
        self.advance(seconds.max(0.0));
        std::future::ready(())
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> f64 {
        (**self).now()
    }

    fn sleep(&self, seconds: f64) -> impl Future<Output = ()> + Send {
        (**self).sleep(seconds)
    }
}
