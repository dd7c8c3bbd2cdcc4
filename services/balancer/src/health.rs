//! # Health checks: knowing which servers can take traffic
//!
//! A balancer must stop sending requests to a server that died, and start
//! again when it comes back. It learns this two ways:
//!
//! * **Active checks** (HAProxy's `check inter fall rise`): every `interval`
//!   the balancer itself sends `GET /healthz` to each server. An answer with a
//!   2xx or 3xx status within `timeout` is a *pass*; anything else (refused,
//!   reset, too slow, a 500) is a *fail*. One bad answer means little (a
//!   blip), so a server that is up goes **down** only after `fall`
//!   *consecutive* fails, and a server that is down comes back **up** only
//!   after `rise` consecutive passes. With the defaults (500ms, fall 3,
//!   rise 2) a dead server is noticed within about 1.5 s, and a revived one
//!   gets traffic again about 1 s after it answers.
//!
//! * **Passive checks** (nginx's `max_fails` / `fail_timeout`): real requests
//!   that fail count too. A connection that is *refused* or *reset* is proof
//!   enough: the server is marked down at once, without waiting for the
//!   next active check. Other failures (a connect timeout, a response
//!   timeout) are counted: `max_fails` of them within `fail_timeout` mark the
//!   server down. A server taken down this way stays down at least
//!   `fail_timeout`, then active checks bring it back after `rise` passes.
//!
//! [`HealthState`] is the state machine, with no network in it: it is fed
//! results and answers with a [`Transition`] when the server changes state.
//! [`run`] is the loop that feeds it with real checks.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::Empty;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::balancer::Balancer;
use crate::config::{HealthConfig, PassiveConfig};
use crate::pool::{ConnectError, UpstreamError};
use crate::upstream::Upstream;

/// The numbers that drive the state machine (from `[health]` and `[passive]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Consecutive failed checks that take an up server down.
    pub fall: u32,
    /// Consecutive passed checks that bring a down server up.
    pub rise: u32,
    /// Failed requests within `fail_timeout` that take a server down (0: off).
    pub max_fails: u32,
    /// Window for `max_fails`, and least time down after a passive failure.
    pub fail_timeout: Duration,
}

impl HealthPolicy {
    /// Builds the policy from the config sections.
    pub fn new(health: &HealthConfig, passive: &PassiveConfig) -> Self {
        Self {
            fall: health.fall,
            rise: health.rise,
            max_fails: passive.max_fails,
            fail_timeout: passive.fail_timeout,
        }
    }
}

/// A change of state worth logging and counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The server stops getting traffic.
    WentDown,
    /// The server gets traffic again.
    WentUp,
}

/// How a request to a server failed; decides passive checks and retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Nothing listens on the port (the process died, the container stopped).
    Refused,
    /// No answer to the TCP handshake within `timeouts.connect` (a frozen or
    /// vanished machine: packets go nowhere).
    ConnectTimeout,
    /// Another connect error (DNS name unknown, network unreachable, ...).
    Connect,
    /// The connection was reset while the request was in flight.
    Reset,
    /// The server closed the connection before sending response headers.
    EmptyResponse,
    /// No response headers within `timeouts.response`.
    ResponseTimeout,
    /// Anything else (a malformed response, ...).
    Other,
}

impl FailureKind {
    /// Refused and reset connections take a server down at once.
    pub fn is_immediate(self) -> bool {
        matches!(self, Self::Refused | Self::Reset | Self::EmptyResponse)
    }

    /// Whether the request can be replayed on another server: the server
    /// never produced a response, so an idempotent request may be sent again.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::Refused
                | Self::ConnectTimeout
                | Self::Connect
                | Self::Reset
                | Self::EmptyResponse
        )
    }

    /// Short human text.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Refused => "connection refused",
            Self::ConnectTimeout => "connect timed out",
            Self::Connect => "could not connect",
            Self::Reset => "connection reset",
            Self::EmptyResponse => "connection closed before response headers",
            Self::ResponseTimeout => "response timed out",
            Self::Other => "bad response",
        }
    }

    /// Sorts an error of hyper-util's client into a kind, looking through its
    /// chain of causes for the I/O error underneath.
    pub fn classify(err: &hyper_util::client::legacy::Error) -> Self {
        Self::from_causes(err.source(), err.is_connect())
    }

    /// Sorts a failed request to a server (see [`crate::pool`]) into a kind.
    pub fn classify_upstream(err: &UpstreamError) -> Self {
        match err {
            UpstreamError::Connect(ConnectError::Timeout) => Self::ConnectTimeout,
            UpstreamError::Connect(ConnectError::Io(io))
                if io.kind() == std::io::ErrorKind::ConnectionRefused =>
            {
                Self::Refused
            }
            UpstreamError::Connect(_) => Self::Connect,
            UpstreamError::Http { error, .. } => Self::from_causes(Some(error), false),
            UpstreamError::RequestBody(_) => Self::Other,
        }
    }

    /// Looks through a chain of causes for the I/O error underneath.
    fn from_causes(first: Option<&(dyn StdError + 'static)>, is_connect: bool) -> Self {
        let mut source = first;
        let mut kind = None;
        while let Some(e) = source {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                use std::io::ErrorKind as K;
                kind = Some(match io.kind() {
                    K::ConnectionRefused => Self::Refused,
                    K::TimedOut => {
                        if is_connect {
                            Self::ConnectTimeout
                        } else {
                            Self::Other
                        }
                    }
                    K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => Self::Reset,
                    K::UnexpectedEof => Self::EmptyResponse,
                    _ if is_connect => Self::Connect,
                    _ => Self::Other,
                });
                break;
            }
            if let Some(h) = e.downcast_ref::<hyper::Error>() {
                if h.is_incomplete_message() || h.is_canceled() {
                    kind = Some(Self::EmptyResponse);
                    // keep looking: an io::Error below is more precise
                }
            }
            source = e.source();
        }
        match kind {
            Some(k) => k,
            None if is_connect => Self::Connect,
            None => Self::Other,
        }
    }
}

/// The health of one server: the HAProxy/nginx state machine.
#[derive(Debug, Clone)]
pub struct HealthState {
    up: bool,
    ok_streak: u32,
    fail_streak: u32,
    reason: Option<String>,
    last_check: Option<SystemTime>,
    last_check_ok: Option<bool>,
    passive_fails: u32,
    passive_window_start: Option<Instant>,
    hold_until: Option<Instant>,
}

impl Default for HealthState {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthState {
    /// A new server starts **up** (as in HAProxy): it gets traffic at once,
    /// and checks take it down if it does not answer.
    pub fn new() -> Self {
        Self {
            up: true,
            ok_streak: 0,
            fail_streak: 0,
            reason: None,
            last_check: None,
            last_check_ok: None,
            passive_fails: 0,
            passive_window_start: None,
            hold_until: None,
        }
    }

    /// Whether the server may get traffic.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Why the server is down (None when up).
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// Wall-clock time of the last active check.
    pub fn last_check(&self) -> Option<SystemTime> {
        self.last_check
    }

    /// Whether the last active check passed.
    pub fn last_check_ok(&self) -> Option<bool> {
        self.last_check_ok
    }

    /// Feeds the result of one active check.
    pub fn record_check(
        &mut self,
        result: Result<(), String>,
        now: Instant,
        wall: SystemTime,
        policy: &HealthPolicy,
    ) -> Option<Transition> {
        self.last_check = Some(wall);
        self.last_check_ok = Some(result.is_ok());
        match result {
            Ok(()) => {
                self.ok_streak = self.ok_streak.saturating_add(1);
                self.fail_streak = 0;
                let held = self.hold_until.is_some_and(|t| now < t);
                if !self.up && self.ok_streak >= policy.rise && !held {
                    self.up = true;
                    self.reason = None;
                    self.hold_until = None;
                    self.passive_fails = 0;
                    self.passive_window_start = None;
                    return Some(Transition::WentUp);
                }
                None
            }
            Err(why) => {
                self.fail_streak = self.fail_streak.saturating_add(1);
                self.ok_streak = 0;
                let plural = if self.fail_streak == 1 { "" } else { "s" };
                if self.up {
                    if self.fail_streak >= policy.fall {
                        self.up = false;
                        self.reason =
                            Some(format!("{why} ({} failed check{plural})", self.fail_streak));
                        return Some(Transition::WentDown);
                    }
                } else {
                    self.reason =
                        Some(format!("{why} ({} failed check{plural})", self.fail_streak));
                }
                None
            }
        }
    }

    /// Feeds the failure of a real request.
    pub fn record_failure(
        &mut self,
        kind: FailureKind,
        now: Instant,
        policy: &HealthPolicy,
    ) -> Option<Transition> {
        if policy.max_fails == 0 {
            return None;
        }
        let window_open = self
            .passive_window_start
            .is_some_and(|start| now.duration_since(start) <= policy.fail_timeout);
        if window_open {
            self.passive_fails = self.passive_fails.saturating_add(1);
        } else {
            self.passive_window_start = Some(now);
            self.passive_fails = 1;
        }
        let trip = kind.is_immediate() || self.passive_fails >= policy.max_fails;
        if !trip {
            return None;
        }
        // A passive failure restarts the count of passes needed to come back.
        self.ok_streak = 0;
        self.hold_until = Some(now + policy.fail_timeout);
        if !self.up {
            return None;
        }
        self.up = false;
        self.reason = Some(if kind.is_immediate() {
            format!("{} (a request failed)", kind.describe())
        } else {
            format!(
                "{} ({} failed request{} within {})",
                kind.describe(),
                self.passive_fails,
                if self.passive_fails == 1 { "" } else { "s" },
                humantime::format_duration(policy.fail_timeout)
            )
        });
        Some(Transition::WentDown)
    }
}

/// The HTTP client used by the checks: no pooled connections, so each check
/// opens a fresh connection exactly like a new client would.
pub type CheckClient = Client<HttpConnector, Empty<Bytes>>;

/// Builds the client for active checks.
pub fn check_client(connect_timeout: Duration) -> CheckClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .pool_timer(TokioTimer::new())
        .build(connector)
}

/// Sends one active check to `upstream`.
pub async fn check_once(
    client: &CheckClient,
    upstream: &Upstream,
    path: &str,
    timeout: Duration,
) -> Result<(), String> {
    let uri = Uri::builder()
        .scheme("http")
        .authority(upstream.authority().clone())
        .path_and_query(path)
        .build()
        .map_err(|e| format!("bad check URI: {e}"))?;
    let req = Request::get(uri)
        .header(http::header::USER_AGENT, "lab-balancer-health-check")
        .body(Empty::new())
        .map_err(|e| format!("bad check request: {e}"))?;
    match tokio::time::timeout(timeout, client.request(req)).await {
        Err(_) => Err(format!(
            "no answer within {}",
            humantime::format_duration(timeout)
        )),
        Ok(Err(e)) => Err(FailureKind::classify(&e).describe().to_owned()),
        Ok(Ok(resp)) => {
            let status = resp.status();
            if status.is_success() || status.is_redirection() {
                Ok(())
            } else {
                Err(format!("HTTP {}", status.as_u16()))
            }
        }
    }
}

/// The active check loop: every `interval`, checks every current server in
/// parallel, until `shutdown` is cancelled.
pub async fn run(balancer: Arc<Balancer>, shutdown: CancellationToken) {
    let cfg = balancer.config().health.clone();
    let client = check_client(balancer.config().timeouts.connect.min(cfg.timeout));
    let mut ticker = tokio::time::interval(cfg.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let mut checks = JoinSet::new();
        let servers = balancer.upstreams().snapshot();
        for upstream in servers.iter() {
            let upstream = upstream.clone();
            let client = client.clone();
            let path = cfg.path.clone();
            let timeout = cfg.timeout;
            let balancer = balancer.clone();
            checks.spawn(async move {
                let result = check_once(&client, &upstream, &path, timeout).await;
                balancer.record_check(&upstream, result);
            });
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = async { while checks.join_next().await.is_some() {} } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> HealthPolicy {
        HealthPolicy {
            fall: 3,
            rise: 2,
            max_fails: 1,
            fail_timeout: Duration::from_secs(2),
        }
    }

    fn check(s: &mut HealthState, ok: bool, now: Instant) -> Option<Transition> {
        let r = if ok {
            Ok(())
        } else {
            Err("connection refused".to_owned())
        };
        s.record_check(r, now, SystemTime::now(), &policy())
    }

    #[test]
    fn starts_up_and_goes_down_after_fall_consecutive_fails() {
        let t = Instant::now();
        let mut s = HealthState::new();
        assert!(s.is_up());
        assert_eq!(check(&mut s, false, t), None);
        assert_eq!(check(&mut s, false, t), None);
        assert!(s.is_up(), "two fails are not enough with fall = 3");
        assert_eq!(check(&mut s, false, t), Some(Transition::WentDown));
        assert!(!s.is_up());
        assert_eq!(s.reason(), Some("connection refused (3 failed checks)"));
        assert_eq!(s.last_check_ok(), Some(false));
        assert!(s.last_check().is_some());
    }

    #[test]
    fn a_pass_resets_the_fail_streak() {
        let t = Instant::now();
        let mut s = HealthState::new();
        check(&mut s, false, t);
        check(&mut s, false, t);
        check(&mut s, true, t);
        check(&mut s, false, t);
        check(&mut s, false, t);
        assert!(s.is_up(), "fails must be consecutive");
        assert_eq!(check(&mut s, false, t), Some(Transition::WentDown));
    }

    #[test]
    fn comes_back_after_rise_consecutive_passes() {
        let t = Instant::now();
        let mut s = HealthState::new();
        for _ in 0..3 {
            check(&mut s, false, t);
        }
        assert!(!s.is_up());
        assert_eq!(check(&mut s, true, t), None);
        assert_eq!(check(&mut s, false, t), None, "still down");
        assert_eq!(check(&mut s, true, t), None);
        assert_eq!(check(&mut s, true, t), Some(Transition::WentUp));
        assert!(s.is_up());
        assert_eq!(s.reason(), None);
    }

    #[test]
    fn refused_request_takes_the_server_down_at_once_and_holds_it() {
        let t = Instant::now();
        let mut s = HealthState::new();
        let p = policy();
        let p_many = HealthPolicy { max_fails: 5, ..p };
        assert_eq!(
            s.record_failure(FailureKind::Refused, t, &p_many),
            Some(Transition::WentDown),
            "refused is immediate whatever max_fails says"
        );
        assert_eq!(s.reason(), Some("connection refused (a request failed)"));
        // passes during fail_timeout do not bring it back
        check(&mut s, true, t + Duration::from_millis(500));
        assert_eq!(check(&mut s, true, t + Duration::from_millis(1000)), None);
        assert!(!s.is_up());
        // after fail_timeout, rise passes do
        assert_eq!(
            check(&mut s, true, t + Duration::from_millis(2100)),
            Some(Transition::WentUp)
        );
    }

    #[test]
    fn counted_failures_need_max_fails_within_fail_timeout() {
        let t = Instant::now();
        let p = HealthPolicy {
            max_fails: 3,
            ..policy()
        };
        let mut s = HealthState::new();
        let k = FailureKind::ConnectTimeout;
        assert_eq!(s.record_failure(k, t, &p), None);
        assert_eq!(
            s.record_failure(k, t + Duration::from_millis(500), &p),
            None
        );
        // the window expired: counting starts again
        assert_eq!(
            s.record_failure(k, t + Duration::from_millis(2600), &p),
            None
        );
        assert_eq!(
            s.record_failure(k, t + Duration::from_millis(2700), &p),
            None
        );
        assert!(s.is_up());
        assert_eq!(
            s.record_failure(k, t + Duration::from_millis(2800), &p),
            Some(Transition::WentDown)
        );
        assert_eq!(
            s.reason(),
            Some("connect timed out (3 failed requests within 2s)")
        );
    }

    #[test]
    fn max_fails_zero_turns_passive_checks_off() {
        let p = HealthPolicy {
            max_fails: 0,
            ..policy()
        };
        let mut s = HealthState::new();
        assert_eq!(
            s.record_failure(FailureKind::Refused, Instant::now(), &p),
            None
        );
        assert!(s.is_up());
    }

    #[test]
    fn failure_kinds_decide_retries() {
        assert!(FailureKind::Refused.is_retryable());
        assert!(FailureKind::EmptyResponse.is_retryable());
        assert!(FailureKind::ConnectTimeout.is_retryable());
        assert!(!FailureKind::ResponseTimeout.is_retryable());
        assert!(!FailureKind::Other.is_retryable());
        assert!(!FailureKind::ConnectTimeout.is_immediate());
    }
}
