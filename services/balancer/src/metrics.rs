//! # Metrics: what the balancer saw, for Prometheus
//!
//! `GET /metrics` on the admin port answers in the Prometheus/OpenMetrics text
//! format, the lingua franca of monitoring. What a student can read there:
//!
//! * `lb_requests_total{server,status}`: every answer, by server and HTTP
//!   status (server `none` when no server could be picked: the 503s);
//! * `lb_retries_total{server}`: requests replayed after `server` failed;
//! * `lb_upstream_failures_total{server,kind}`: failed attempts by cause;
//! * `lb_health_transitions_total{server,to}`: servers going `up`/`down`;
//! * `lb_request_duration_seconds{server}`: time to response headers, as a
//!   histogram (p50/p99 come from its buckets);
//! * `lb_server_up{server}`, `lb_server_in_flight{server}`: gauges, set when
//!   scraped.
//!
//! Built on `prometheus-client`, the official Rust client. The counters
//! that every request touches (requests, latency) are [sharded] per worker,
//! so that workers never write the same memory; they print as one series.
//!
//! [sharded]: crate::sharded

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::health::{FailureKind, Transition};
use crate::sharded;
use crate::upstream::Upstream;

/// Labels of `lb_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Server name, or `none`.
    pub server: String,
    /// HTTP status code.
    pub status: u16,
}

/// A label set with only the server's name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabel {
    /// Server name.
    pub server: String,
}

/// Labels of `lb_upstream_failures_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// Server name.
    pub server: String,
    /// Kind of failure (`refused`, `reset`, ...).
    pub kind: &'static str,
}

/// Labels of `lb_health_transitions_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    /// Server name.
    pub server: String,
    /// `up` or `down`.
    pub to: &'static str,
}

/// One server's request metrics, resolved once (see [`Metrics::server`]).
#[derive(Debug, Clone)]
pub struct ServerMetrics {
    name: String,
    latency: sharded::Histogram,
    ok: sharded::Counter,
    requests: Family<RequestLabels, sharded::Counter>,
}

impl ServerMetrics {
    /// Counts an answer from this server and its latency, in `worker`'s slot.
    pub fn record_response(&self, worker: usize, status: u16, elapsed: Duration) {
        self.latency.observe(worker, elapsed);
        if status == 200 {
            self.ok.inc(worker);
        } else {
            self.requests
                .get_or_create(&RequestLabels {
                    server: self.name.clone(),
                    status,
                })
                .inc(worker);
        }
    }
}

/// Every metric the balancer keeps, plus the registry that prints them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, sharded::Counter>,
    retries: Family<ServerLabel, Counter>,
    failures: Family<FailureLabels, Counter>,
    transitions: Family<TransitionLabels, Counter>,
    latency: Family<ServerLabel, sharded::Histogram>,
    up: Family<ServerLabel, Gauge>,
    in_flight: Family<ServerLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn failure_label(kind: FailureKind) -> &'static str {
    match kind {
        FailureKind::Refused => "refused",
        FailureKind::ConnectTimeout => "connect_timeout",
        FailureKind::Connect => "connect",
        FailureKind::Reset => "reset",
        FailureKind::EmptyResponse => "empty_response",
        FailureKind::ResponseTimeout => "response_timeout",
        FailureKind::Other => "other",
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("lb");
        let requests = Family::<RequestLabels, sharded::Counter>::default();
        let retries = Family::<ServerLabel, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let transitions = Family::<TransitionLabels, Counter>::default();
        let latency = Family::<ServerLabel, sharded::Histogram>::default();
        let up = Family::<ServerLabel, Gauge>::default();
        let in_flight = Family::<ServerLabel, Gauge>::default();
        registry.register(
            "requests",
            "Requests answered, by server and status",
            requests.clone(),
        );
        registry.register(
            "retries",
            "Requests retried on another server after this server failed",
            retries.clone(),
        );
        registry.register(
            "upstream_failures",
            "Failed attempts to get a response from a server",
            failures.clone(),
        );
        registry.register(
            "health_transitions",
            "Servers changing state (to = up or down)",
            transitions.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from receiving a request to the response headers",
            latency.clone(),
        );
        registry.register(
            "server_up",
            "1 if the server passes its health checks",
            up.clone(),
        );
        registry.register(
            "server_in_flight",
            "Requests in flight on the server",
            in_flight.clone(),
        );
        Self {
            registry,
            requests,
            retries,
            failures,
            transitions,
            latency,
            up,
            in_flight,
        }
    }

    /// Counts an answer and its latency (server `None`: nobody was picked),
    /// in `worker`'s slot.
    pub fn record_response(
        &self,
        worker: usize,
        server: Option<&str>,
        status: u16,
        elapsed: Duration,
    ) {
        let server = server.unwrap_or("none").to_owned();
        self.latency
            .get_or_create(&ServerLabel {
                server: server.clone(),
            })
            .observe(worker, elapsed);
        self.requests
            .get_or_create(&RequestLabels { server, status })
            .inc(worker);
    }

    /// The metrics of one server, looked up once: recording a response
    /// through them takes no label lookup (the common status, 200, has its
    /// own counter; other statuses are looked up).
    pub fn server(&self, name: &str) -> ServerMetrics {
        ServerMetrics {
            name: name.to_owned(),
            latency: self
                .latency
                .get_or_create(&ServerLabel {
                    server: name.to_owned(),
                })
                .clone(),
            ok: self
                .requests
                .get_or_create(&RequestLabels {
                    server: name.to_owned(),
                    status: 200,
                })
                .clone(),
            requests: self.requests.clone(),
        }
    }

    /// Counts a retry away from `server`.
    pub fn record_retry(&self, server: &str) {
        self.retries
            .get_or_create(&ServerLabel {
                server: server.to_owned(),
            })
            .inc();
    }

    /// Counts a failed attempt.
    pub fn record_failure(&self, server: &str, kind: FailureKind) {
        self.failures
            .get_or_create(&FailureLabels {
                server: server.to_owned(),
                kind: failure_label(kind),
            })
            .inc();
    }

    /// Counts a health transition.
    pub fn record_transition(&self, server: &str, t: Transition) {
        let to = match t {
            Transition::WentUp => "up",
            Transition::WentDown => "down",
        };
        self.transitions
            .get_or_create(&TransitionLabels {
                server: server.to_owned(),
                to,
            })
            .inc();
    }

    /// Prints every metric in the text format, after setting the gauges from
    /// the current servers.
    pub fn render(&self, servers: &[std::sync::Arc<Upstream>]) -> String {
        self.up.clear();
        self.in_flight.clear();
        for u in servers {
            let label = ServerLabel {
                server: u.name().to_owned(),
            };
            self.up.get_or_create(&label).set(i64::from(u.is_up()));
            self.in_flight
                .get_or_create(&label)
                .set(i64::try_from(u.in_flight()).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_was_recorded() {
        let m = Metrics::new();
        m.record_response(0, Some("server-1"), 200, Duration::from_millis(3));
        m.server("server-1")
            .record_response(1, 200, Duration::from_millis(3));
        m.server("server-3")
            .record_response(0, 404, Duration::from_millis(3));
        m.record_response(1, None, 503, Duration::from_micros(50));
        m.record_retry("server-2");
        m.record_failure("server-2", FailureKind::Refused);
        m.record_transition("server-2", Transition::WentDown);
        let servers = vec![std::sync::Arc::new(
            Upstream::new("server-1", "s:1").unwrap(),
        )];
        let text = m.render(&servers);
        assert!(
            text.contains(r#"lb_requests_total{server="server-1",status="200"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"lb_requests_total{server="none",status="503"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"lb_requests_total{server="server-3",status="404"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"lb_retries_total{server="server-2"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"lb_upstream_failures_total{server="server-2",kind="refused"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"lb_health_transitions_total{server="server-2",to="down"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"lb_request_duration_seconds_count{server="server-1"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"lb_request_duration_seconds_bucket{le="0.004",server="server-1"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"lb_request_duration_seconds_bucket{le="0.002",server="server-1"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"lb_request_duration_seconds_bucket{le="+Inf",server="server-1"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"lb_server_up{server="server-1"} 1"#),
            "{text}"
        );
    }
}
