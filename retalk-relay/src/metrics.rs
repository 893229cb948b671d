//! `GET /metrics`: the node's counters in Prometheus text format (with the
//! `prometheus` crate), so an operator running several nodes sees each.
//!
//! - `retalk_requests_total{tool, status}`: tool calls answered, by tool
//!   (`unknown` for a body naming none of the seven) and HTTP status;
//! - `retalk_request_duration_seconds{tool}`: how long they took, parked
//!   long-polls included (so `read_messages` with `wait` is slow by design);
//! - `retalk_parked_waiters`: reads held open for mail right now;
//! - `retalk_store_errors_total`: failed store calls (each answered 503).
//!
//! Labels are bounded (seven tools, a few statuses): no user id, address
//! or other metadata is ever a label.

use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use retalk_proto::wire::Tool;

use crate::waiters::Waiters;

/// The node's metrics.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    parked: IntGauge,
    store_errors: IntCounter,
}

/// Why the metrics could not be set up (a programming error: a bad name).
#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    pub fn new() -> Result<Arc<Self>, MetricsError> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "retalk_requests_total",
                "Tool calls answered, by tool and HTTP status.",
            ),
            &["tool", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "retalk_request_duration_seconds",
                "Time to answer a tool call (a long-poll counts its wait).",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]),
            &["tool"],
        )?;
        let parked = IntGauge::new(
            "retalk_parked_waiters",
            "Reads held open (read_messages with wait) on this node.",
        )?;
        let store_errors = IntCounter::new(
            "retalk_store_errors_total",
            "Store calls that failed (answered 503).",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(parked.clone()))?;
        registry.register(Box::new(store_errors.clone()))?;
        Ok(Arc::new(Self {
            registry,
            requests,
            latency,
            parked,
            store_errors,
        }))
    }

    /// Counts one answered tool call.
    pub fn request(&self, tool: &str, status: u16, took: Duration) {
        let code = status.to_string();
        self.requests.with_label_values(&[tool, &code]).inc();
        self.latency
            .with_label_values(&[tool])
            .observe(took.as_secs_f64());
    }

    /// Counts one failed store call.
    pub fn store_error(&self) {
        self.store_errors.inc();
    }

    /// The text exposition, with the parked waiters read now.
    pub fn render(&self, waiters: &Waiters) -> Vec<u8> {
        self.parked
            .set(i64::try_from(waiters.parked()).unwrap_or(i64::MAX));
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail but for a bad metric, which
        // `new` would have refused.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// The tool a request body names, as a bounded label: one of the seven
/// tools, else `unknown`. Reads only the `tool` field.
pub fn tool_label(body: &[u8]) -> &'static str {
    #[derive(serde::Deserialize)]
    struct Named<'a> {
        #[serde(borrow)]
        tool: Option<std::borrow::Cow<'a, str>>,
    }
    serde_json::from_slice::<Named<'_>>(body)
        .ok()
        .and_then(|n| n.tool)
        .and_then(|t| Tool::from_name(&t))
        .map_or("unknown", Tool::name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(
            tool_label(br#"{"tool":"count_keys","args":{}}"#),
            "count_keys"
        );
        assert_eq!(
            tool_label(br#"{"args":{},"tool":"send_message"}"#),
            "send_message"
        );
        assert_eq!(tool_label(br#"{"tool":"drop_tables"}"#), "unknown");
        assert_eq!(tool_label(b"not json"), "unknown");
        assert_eq!(tool_label(br#"{"tool":7}"#), "unknown");
    }

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new().unwrap();
        m.request("count_keys", 200, Duration::from_millis(3));
        m.request("count_keys", 401, Duration::from_millis(1));
        m.store_error();
        let waiters = Waiters::new(crate::waiters::WaitCaps {
            total: 1,
            per_user: 1,
            per_address: 1,
            limit_loopback: false,
        });
        let text = String::from_utf8(m.render(&waiters)).unwrap();
        assert!(
            text.contains(r#"retalk_requests_total{status="200",tool="count_keys"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"retalk_requests_total{status="401",tool="count_keys"} 1"#));
        assert!(text.contains("retalk_request_duration_seconds_bucket"));
        assert!(text.contains("retalk_parked_waiters 0"));
        assert!(text.contains("retalk_store_errors_total 1"));
    }
}
