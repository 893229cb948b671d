//! The relay's one reading of the wall clock. Everything below the HTTP
//! edge takes `now` as an argument.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time in seconds.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
