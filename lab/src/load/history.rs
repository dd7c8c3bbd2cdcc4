//! The history file: every operation of a run, one JSON object per line.
//!
//! Counters say *how many* stale reads there were; the history says *which*:
//! user u5 deposited 50 cents at 12.301 s (acknowledged, balance 250), read 200
//! at 12.305 s from db-2. With it a student can line up a fault's exact
//! moment against what users saw, or feed the run into a consistency checker.
//!
//! Each line: `t_ms` (when the operation finished, milliseconds since the
//! start), `user`, `kind` (login, me, cart_add, product, deposit, balance,
//! audit, ping, work), `value` (product id, deposit amount, balance read,
//! or the CPU ms a work request asked for),
//! `outcome` (`ok`, `fail`, or `unknown` for a write whose answer never came),
//! `status`, `error` (connect, broken, timeout), `check` (session_loss,
//! stale_read), `server` (X-Served-By) and `latency_ms`.
//!
//! Writing happens on a thread of its own so that a slow disk never slows the
//! users; lines are buffered and flushed at the end.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use tokio::sync::mpsc;

use super::http::Failure;
use super::scenario::OpResult;
use super::LoadError;

/// One line of the history file.
#[derive(Debug, Serialize)]
pub struct HistoryLine {
    pub t_ms: f64,
    pub user: u32,
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<u64>,
    pub value: Option<i64>,
    pub outcome: &'static str,
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<&'static str>,
    pub server: Option<String>,
    pub latency_ms: f64,
}

impl HistoryLine {
    pub fn new(t_ms: f64, user: u32, account: Option<u64>, r: &OpResult) -> Self {
        HistoryLine {
            t_ms: (t_ms * 1000.0).round() / 1000.0,
            user,
            kind: r.kind.name(),
            account,
            value: r.value,
            outcome: r.outcome.name(),
            status: r.status,
            error: r.failure.map(|f| match f {
                Failure::Connect => "connect",
                Failure::Broken => "broken",
                Failure::Timeout => "timeout",
            }),
            check: if r.session_loss {
                Some("session_loss")
            } else if r.stale_read {
                Some("stale_read")
            } else {
                None
            },
            server: r
                .served_by
                .as_ref()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
            latency_ms: r.latency.as_micros() as f64 / 1000.0,
        }
    }
}

/// The sending end, cloned into every user's recorder.
pub type HistorySender = mpsc::UnboundedSender<HistoryLine>;

/// A history file being written by its own thread.
pub struct HistoryWriter {
    path: PathBuf,
    handle: tokio::task::JoinHandle<std::io::Result<u64>>,
}

impl HistoryWriter {
    /// Creates (or truncates) the file now, so that a bad path is reported
    /// before any load is sent.
    pub fn create(path: &Path) -> Result<(Self, HistorySender), LoadError> {
        let file = File::create(path).map_err(|source| LoadError::History {
            path: path.to_path_buf(),
            source,
        })?;
        let (tx, mut rx) = mpsc::unbounded_channel::<HistoryLine>();
        let handle = tokio::task::spawn_blocking(move || {
            let mut out = BufWriter::with_capacity(1 << 16, file);
            let mut lines = 0u64;
            while let Some(line) = rx.blocking_recv() {
                serde_json::to_writer(&mut out, &line)?;
                out.write_all(b"\n")?;
                lines += 1;
            }
            out.flush()?;
            Ok(lines)
        });
        Ok((
            HistoryWriter {
                path: path.to_path_buf(),
                handle,
            },
            tx,
        ))
    }

    /// Waits for every line to be on disk. Call after the last sender is
    /// dropped.
    pub async fn finish(self) -> Result<u64, LoadError> {
        match self.handle.await {
            Ok(Ok(lines)) => Ok(lines),
            Ok(Err(source)) => Err(LoadError::History {
                path: self.path,
                source,
            }),
            Err(e) => Err(LoadError::History {
                path: self.path,
                source: std::io::Error::other(e.to_string()),
            }),
        }
    }
}
