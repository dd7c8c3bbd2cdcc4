//! What the page shows: the lab read back once a second, and pushed to
//! every open page as a server-sent event.
//!
//! A snapshot is the report `lab status --json` prints, made by the same
//! function ([`crate::status::status`]), with the time it was read and
//! whether there is a lab at all. "No lab" is a snapshot like any other,
//! not an error that ends the stream: after `lab down` the page says so,
//! and after `lab up` the next snapshot shows the new lab.
//!
//! One reader serves every page: a single task reads the lab and publishes
//! the result in a `watch` channel that each page's stream follows, so two
//! browsers see the same snapshot and cost what one does. With no page
//! open it reads nothing, so an idle dashboard does not load Docker or the
//! balancers while a student measures something else.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Serialize;
use tokio::sync::{watch, Notify};

use super::{AppState, Lab};
use crate::error::LabError;
use crate::naming::NameError;
use crate::status::StatusReport;

/// The lab at one moment.
#[derive(Serialize, Debug, Clone)]
pub struct Snapshot {
    /// When it was read, in ms since the Unix epoch: the charts' time axis.
    pub t: u64,
    /// The lab the dashboard was started for (`--lab`).
    pub lab: String,
    #[serde(flatten)]
    pub lab_state: LabState,
}

/// Whether there is a lab to show.
#[derive(Serialize, Debug, Clone)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum LabState {
    /// The lab runs (or some of it): what `lab status --json` says.
    Running { status: Box<StatusReport> },
    /// No container of this lab exists: before `lab up`, after `lab down`.
    NoLab { message: String },
    /// The lab could not be read (Docker did not answer, say).
    Error { message: String },
}

/// Reads the lab once, the way `lab status` does.
pub async fn read(lab: &Lab) -> Snapshot {
    let lab_state = match crate::status::status(&*lab.rt, &lab.name, &lab.lb).await {
        Ok(status) => LabState::Running {
            status: Box::new(status),
        },
        Err(e @ LabError::Name(NameError::NoLab(_))) => LabState::NoLab {
            message: e.to_string(),
        },
        Err(e) => LabState::Error {
            message: e.to_string(),
        },
    };
    Snapshot {
        t: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        lab: lab.name.clone(),
        lab_state,
    }
}

/// The latest snapshot as JSON, shared by every open page.
#[derive(Clone)]
pub struct Feed {
    tx: watch::Sender<Option<Arc<str>>>,
    wake: Arc<Notify>,
}

impl Feed {
    /// Starts the reader: a snapshot every `every` while a page is open.
    pub fn start(lab: Arc<Lab>, every: Duration) -> Feed {
        let (tx, _) = watch::channel(None);
        let feed = Feed {
            tx,
            wake: Arc::new(Notify::new()),
        };
        let (tx, wake) = (feed.tx.clone(), feed.wake.clone());
        tokio::spawn(async move {
            // Ticks every `every` from the start of each read, not after it:
            // reading a lab takes a good part of a second (a `docker exec`
            // per service), and the page's time axis counts seconds. A read
            // longer than `every` delays the next tick rather than bunching.
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = wake.notified() => {}
                }
                if tx.receiver_count() > 0 {
                    let json = match serde_json::to_string(&read(&lab).await) {
                        Ok(j) => j,
                        Err(e) => format!(
                            r#"{{"state":"error","message":"cannot serialise the snapshot: {e}"}}"#
                        ),
                    };
                    tx.send_replace(Some(json.into()));
                }
            }
        });
        feed
    }

    /// Read the lab now rather than at the next tick: a page just opened,
    /// or a button changed the lab and the student waits to see it.
    pub fn refresh(&self) {
        self.wake.notify_one();
    }

    /// A stream of snapshots, starting with a fresh one.
    pub fn subscribe(&self) -> impl Stream<Item = Arc<str>> + Send + 'static {
        // A new receiver counts the current (maybe old) value as seen: the
        // first item is the one read for this page.
        let rx = self.tx.subscribe();
        self.refresh();
        futures::stream::unfold(rx, |mut rx| async move {
            loop {
                rx.changed().await.ok()?;
                let latest = rx.borrow_and_update().clone();
                if let Some(json) = latest {
                    return Some((json, rx));
                }
            }
        })
    }
}

/// `GET /events`: one `data:` line of JSON per snapshot, for `EventSource`.
pub async fn events(State(s): State<AppState>) -> Response {
    use futures::StreamExt;
    let stream = s
        .feed
        .subscribe()
        .map(|json| Ok::<_, Infallible>(Event::default().data(&*json)));
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// `GET /api/snapshot`: one snapshot, for scripts and `curl`.
pub async fn once(State(s): State<AppState>) -> Response {
    axum::Json(read(&s.lab).await).into_response()
}
