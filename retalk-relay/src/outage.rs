//! What the operator is told about storage failures (issue #10, item 8),
//! decided without a clock or a log: the caller hands in the time and
//! writes the [`Report`]s out.
//!
//! While the store fails, every request that needs it is answered 503
//! "relay storage unavailable; retry later" (and nothing is lost), so a
//! full disk under load fails thousands of requests a second. The operator
//! needs the cause, once, not once per request: the first failure of a
//! burst is reported with its error, then at most one summary per
//! [`SUMMARY_EVERY`] seconds while failures continue (how many, and the
//! latest error), and the first success at least [`QUIET`] seconds after
//! the last failure ends the burst with a recovery report.
//!
//! Why a quiet period rather than the first success: a full disk fails
//! writes while reads still work, so under mixed traffic successes and
//! failures interleave; ending the burst on any success would log the cause
//! again for every failing write.

/// Seconds between two summaries of a continuing burst of failures.
pub const SUMMARY_EVERY: f64 = 60.0;

/// Seconds without a failure before a success counts as recovery.
pub const QUIET: f64 = 5.0;

/// One thing to tell the operator.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// The first failure after the store worked (or since start).
    Failing { cause: String },
    /// `failures` more failures in the `seconds` since the last report;
    /// `cause` is the latest one's error.
    StillFailing {
        failures: u64,
        seconds: f64,
        cause: String,
    },
    /// The store works again after `failures` failed calls over `seconds`
    /// (from the first failure to the last).
    Recovered { failures: u64, seconds: f64 },
}

/// A burst of failures in progress.
#[derive(Debug)]
struct Burst {
    since: f64,
    last_failure: f64,
    failures: u64,
    /// Failures since the last report, and its time.
    unreported: u64,
    reported_at: f64,
}

/// The state of the store as the operator has been told it.
#[derive(Debug, Default)]
pub struct Outage {
    burst: Option<Burst>,
}

impl Outage {
    /// Whether a burst of failures is in progress (the next success will
    /// be reported).
    pub fn is_failing(&self) -> bool {
        self.burst.is_some()
    }

    /// A store call failed at `now` with `cause`.
    pub fn failed(&mut self, now: f64, cause: &str) -> Option<Report> {
        let Some(b) = self.burst.as_mut() else {
            self.burst = Some(Burst {
                since: now,
                last_failure: now,
                failures: 1,
                unreported: 0,
                reported_at: now,
            });
            return Some(Report::Failing {
                cause: cause.to_owned(),
            });
        };
        b.failures += 1;
        b.unreported += 1;
        b.last_failure = now;
        if now - b.reported_at < SUMMARY_EVERY {
            return None;
        }
        let report = Report::StillFailing {
            failures: b.unreported,
            seconds: now - b.reported_at,
            cause: cause.to_owned(),
        };
        b.unreported = 0;
        b.reported_at = now;
        Some(report)
    }

    /// A store call succeeded at `now`.
    pub fn succeeded(&mut self, now: f64) -> Option<Report> {
        let quiet = now - self.burst.as_ref()?.last_failure >= QUIET;
        let b = self.burst.take_if(|_| quiet)?;
        Some(Report::Recovered {
            failures: b.failures,
            seconds: b.last_failure - b.since,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_reported_once_then_summarised_then_recovered() {
        let mut o = Outage::default();
        assert_eq!(o.succeeded(0.0), None);
        assert!(!o.is_failing());
        assert_eq!(
            o.failed(100.0, "disk full"),
            Some(Report::Failing {
                cause: "disk full".into()
            })
        );
        assert!(o.is_failing());
        // Many more within the interval: silent.
        for i in 0..1000 {
            assert_eq!(o.failed(100.0 + f64::from(i) * 0.05, "disk full"), None);
        }
        assert_eq!(
            o.failed(160.0, "disk I/O error"),
            Some(Report::StillFailing {
                failures: 1001,
                seconds: 60.0,
                cause: "disk I/O error".into()
            })
        );
        assert_eq!(o.failed(200.0, "disk full"), None);
        // Successes soon after a failure (reads while writes fail) do not
        // end the burst.
        assert_eq!(o.succeeded(200.0), None);
        assert_eq!(o.succeeded(200.0 + QUIET - 0.1), None);
        assert!(o.is_failing());
        assert_eq!(
            o.succeeded(200.0 + QUIET),
            Some(Report::Recovered {
                failures: 1003,
                seconds: 100.0
            })
        );
        assert!(!o.is_failing());
        assert_eq!(o.succeeded(206.0), None);
        // A new burst is a new first failure.
        assert_eq!(
            o.failed(300.0, "readonly"),
            Some(Report::Failing {
                cause: "readonly".into()
            })
        );
    }
}
