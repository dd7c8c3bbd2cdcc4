//! `lab dashboard`: the lab in a browser, served from 127.0.0.1.
//!
//! The dashboard is a small web server inside `lab`. It serves one page
//! (written by hand, compiled into the binary: [`assets`]), pushes the lab's
//! state to it once a second ([`snapshot`], server-sent events), and offers
//! the page's buttons as POST requests ([`actions`]) that call the very
//! functions the CLI commands call. It keeps no state of its own: like
//! every `lab` command, it reads the lab back from Docker and the balancers
//! each time, so it shows a change made from a terminal as well as one made
//! from the page, and it carries on through `lab down` and `lab up`.
//!
//! A server on 127.0.0.1 is still reachable by every web page the student
//! opens, through their browser. [`guard`] checks each request before any
//! handler sees it: the Host it was sent to, the page it came from, and,
//! for a change, a random token printed with the URL.
//!
//! The routes:
//!
//! | route | what |
//! |---|---|
//! | `GET /`, `/app.js`, `/charts.js`, `/style.css` | the page (charts.js is inlined in the report too) |
//! | `GET /events` | a snapshot per second, as server-sent events |
//! | `GET /api/snapshot` | one snapshot, as JSON |
//! | `POST /api/services/{name}/{verb}` | `lab VERB NAME`: crash, stop, start, restart, pause, resume, partition, heal |
//! | `POST /api/services/{name}/slow` | `lab slow NAME --latency D`, body `{"latency_ms": 200}` |
//! | `POST /api/services/{name}/lag` | `lab lag NAME D`, body `{"delay_ms": 3000}` (0: `--off`) |
//! | `POST /api/replication` | `lab replication MODE`, body `{"mode": "sync"}` |
//! | `POST /api/heal-all` | `lab heal --all` |
//! | `POST /api/scale` | `lab scale servers N`, body `{"servers": N}` |
//! | `POST /api/set` | `lab set K=V...`, body `{"pairs": ["K=V"]}` |
//! | `POST /api/load` | `lab load`, body `{"scenario": "browse", "rate": 100, "duration_s": 60}` (or `"users"`), bounded ([`job`]) |
//! | `POST /api/lesson` | `lab lesson run NAME`, body `{"name": "sessions", "quick": true}` |
//! | `POST /api/job/stop` | ends the running load or lesson (Ctrl-C for it) |
//! | `GET /api/job` | the last load or lesson, every second of it, as JSON |
//! | `GET /api/lessons` | the lessons, as `lab lesson list` |
//! | `GET /report` | the last load or lesson as one self-contained HTML file ([`report`]) |

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use thiserror::Error;
use tokio::net::TcpListener;

use crate::error::{LabError, Result};
use crate::lb_admin::LbConnector;
use crate::runtime::Runtime;

pub mod actions;
pub mod assets;
pub mod guard;
pub mod job;
pub mod report;
pub mod snapshot;

#[cfg(test)]
mod tests;

pub use guard::Guard;

/// `lab dashboard`'s port when none is given: near the balancer's 8080,
/// and rarely taken.
pub const DEFAULT_PORT: u16 = 8099;

/// The dashboard's failures that are not the lab's.
#[derive(Error, Debug)]
pub enum DashboardError {
    #[error("cannot listen on 127.0.0.1:{port} ({cause}); pick another port with --port (0 picks a free one)")]
    Bind { port: u16, cause: String },
    #[error("the dashboard stopped serving ({0}); start it again with `lab dashboard`")]
    Serve(String),
}

/// The lab the dashboard shows and acts on, and how it reaches it.
pub struct Lab {
    pub rt: Arc<dyn Runtime>,
    /// The lab's name (`--lab`).
    pub name: String,
    pub lb: LbConnector,
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub lab: Arc<Lab>,
    pub feed: snapshot::Feed,
    pub guard: Guard,
    pub jobs: job::Jobs,
}

impl AppState {
    /// Starts the snapshot reader (a snapshot every `every` while a page
    /// is open); needs a Tokio runtime.
    pub fn new(lab: Lab, guard: Guard, every: Duration) -> AppState {
        let lab = Arc::new(lab);
        let jobs = job::Jobs::default();
        AppState {
            feed: snapshot::Feed::start(lab.clone(), jobs.clone(), every),
            lab,
            guard,
            jobs,
        }
    }
}

/// Every route, behind the guard.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(assets::index))
        .route("/app.js", get(assets::script))
        .route("/style.css", get(assets::style))
        .route("/charts.js", get(assets::charts))
        .route("/report", get(report::report))
        .route("/api/job", get(actions::job))
        .route("/api/lessons", get(actions::lessons))
        .route("/api/load", post(actions::load))
        .route("/api/lesson", post(actions::lesson))
        .route("/api/job/stop", post(actions::stop))
        .route("/events", get(snapshot::events))
        .route("/api/snapshot", get(snapshot::once))
        .route("/api/services/{name}/{verb}", post(actions::service))
        .route("/api/services/{name}/slow", post(actions::slow))
        .route("/api/services/{name}/lag", post(actions::lag))
        .route("/api/replication", post(actions::replication))
        .route("/api/heal-all", post(actions::heal_all))
        .route("/api/scale", post(actions::scale))
        .route("/api/set", post(actions::set))
        .layer(axum::middleware::from_fn_with_state(
            state.guard.clone(),
            guard::layer,
        ))
        .with_state(state)
}

/// One error answer for everything: `{"error": "..."}`.
pub(crate) fn json_error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// The address a browser opens: the token rides in the fragment, which
/// the browser keeps to itself (see [`guard`]).
pub fn url(port: u16, token: &str) -> String {
    format!("http://127.0.0.1:{port}/#token={token}")
}

/// A dashboard listening on 127.0.0.1, not serving yet.
pub struct Dashboard {
    listener: TcpListener,
    state: AppState,
}

impl Dashboard {
    /// Listens on 127.0.0.1:`port` (0: a free port) and makes the token.
    /// Only the loopback address: the lab's controls are for this machine.
    pub async fn bind(lab: Lab, port: u16) -> Result<Dashboard> {
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AddrInUse => LabError::PortInUse { port },
                _ => DashboardError::Bind {
                    port,
                    cause: e.to_string(),
                }
                .into(),
            })?;
        let port = listener
            .local_addr()
            .map_err(|e| DashboardError::Bind {
                port,
                cause: e.to_string(),
            })?
            .port();
        let state = AppState::new(lab, Guard::new(port), Duration::from_secs(1));
        Ok(Dashboard { listener, state })
    }

    /// Where it listens: 127.0.0.1 and the port given, or the one picked.
    pub fn local_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.state.guard.port()))
    }

    pub fn url(&self) -> String {
        url(self.state.guard.port(), self.state.guard.token())
    }

    /// Serves until `shutdown` completes (Ctrl-C, for `lab dashboard`).
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        // Not axum's graceful shutdown: it waits for every connection to
        // end, and an open page's event stream never does.
        tokio::select! {
            served = axum::serve(self.listener, app(self.state)) => {
                served.map_err(|e| DashboardError::Serve(e.to_string()).into())
            }
            _ = shutdown => Ok(()),
        }
    }
}
