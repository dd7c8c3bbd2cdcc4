//! The live view: what the run looks like while it runs, once a second.
//!
//! A lesson is watching a number move when you break something: kill a server
//! and see, within a second, errors appear, the share of the dead server drop
//! to zero and (with sessions in memory) session losses climb. So every second
//! the view shows that second's requests, errors by kind, p50/p99 latency, the
//! share of each server (from `X-Served-By`), and the session losses and stale
//! reads so far.
//!
//! Where it goes: on a terminal, a small panel redrawn in place; anywhere else
//! (a pipe, a file, CI) one plain line per second, which stays readable in a
//! log. With `--json` the view goes to stderr, so that stdout carries exactly
//! one JSON document. Colour only on a terminal and never when `NO_COLOR` is
//! set (<https://no-color.org>).

use std::io::{IsTerminal, Write};
use std::time::Duration;

use crossterm::style::Stylize;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::stats::{Counts, Second};

/// What the view needs to draw one second.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub elapsed: Duration,
    pub planned: Duration,
    pub total: Counts,
    /// The second that just ended.
    pub last: Option<Second>,
    pub max_lag: Duration,
}

enum Mode {
    Quiet,
    Lines {
        to_stderr: bool,
    },
    Panel {
        bar: ProgressBar,
        color: bool,
        _echo: QuietCtrlC,
    },
}

/// While the panel is on screen, the terminal does not echo Ctrl-C as `^C`.
/// The echo lands inside the panel and moves the cursor under the panel's
/// feet, so clearing it afterwards would leave its first line above the
/// report. The terminal's setting comes back when the panel goes.
struct QuietCtrlC {
    #[cfg(unix)]
    saved: Option<rustix::termios::Termios>,
}

impl QuietCtrlC {
    #[cfg(unix)]
    fn new() -> Self {
        use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok().and_then(|mut t| {
            if !t.local_modes.contains(LocalModes::ECHOCTL) {
                return None;
            }
            let saved = t.clone();
            t.local_modes.remove(LocalModes::ECHOCTL);
            tcsetattr(&stdin, OptionalActions::Now, &t).ok()?;
            Some(saved)
        });
        Self { saved }
    }

    #[cfg(not(unix))]
    fn new() -> Self {
        Self {}
    }
}

impl Drop for QuietCtrlC {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(saved) = self.saved.take() {
            use rustix::termios::{tcsetattr, OptionalActions};
            let _ = tcsetattr(std::io::stdin(), OptionalActions::Now, &saved);
        }
    }
}

/// Where the live view goes: stdout, stderr (when stdout carries the JSON
/// report), or nowhere (`--quiet`, and lessons).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiveView {
    Stdout,
    Stderr,
    Off,
}

pub struct View {
    mode: Mode,
}

fn color_allowed() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

impl View {
    /// `header` names the run (scenario, model, target).
    pub fn new(live: LiveView, header: &str, planned: Duration) -> View {
        let json = match live {
            LiveView::Off => return View { mode: Mode::Quiet },
            LiveView::Stderr => true,
            LiveView::Stdout => false,
        };
        let terminal = if json {
            std::io::stderr().is_terminal()
        } else {
            std::io::stdout().is_terminal()
        };
        if !terminal {
            let view = View {
                mode: Mode::Lines { to_stderr: json },
            };
            view.line(&format!("lab load: {header}"));
            return view;
        }
        let target = if json {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::stdout()
        };
        let bar = ProgressBar::with_draw_target(Some(planned.as_secs().max(1)), target);
        let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len}s\n{msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(format!("lab load: {header}"));
        bar.set_message("  starting...");
        View {
            mode: Mode::Panel {
                bar,
                color: color_allowed(),
                _echo: QuietCtrlC::new(),
            },
        }
    }

    fn line(&self, text: &str) {
        if let Mode::Lines { to_stderr } = self.mode {
            // A closed pipe must not stop the run: the report still matters.
            if to_stderr {
                let _ = writeln!(std::io::stderr().lock(), "{text}");
            } else {
                let _ = writeln!(std::io::stdout().lock(), "{text}");
            }
        }
    }

    /// Prints a one-off note (e.g. "auditing...") in the view's own place.
    pub fn note(&self, text: &str) {
        match &self.mode {
            Mode::Quiet => {}
            Mode::Lines { .. } => self.line(text),
            Mode::Panel { bar, .. } => bar.set_message(format!("  {text}")),
        }
    }

    pub fn tick(&mut self, snap: &Snapshot) {
        match &self.mode {
            Mode::Quiet => {}
            Mode::Lines { .. } => self.line(&plain_line(snap)),
            Mode::Panel { bar, color, .. } => {
                bar.set_position(snap.elapsed.as_secs().min(snap.planned.as_secs()));
                bar.set_message(panel(snap, *color));
            }
        }
    }

    /// Removes the panel so the summary prints on a clean screen.
    pub fn finish(&mut self) {
        if let Mode::Panel { bar, .. } = &self.mode {
            bar.finish_and_clear();
            // gives the terminal its Ctrl-C echo back
            self.mode = Mode::Quiet;
        }
    }
}

fn shares(second: &Second) -> String {
    let total: u64 = second.per_server.iter().map(|(_, n)| n).sum();
    if total == 0 {
        return "-".to_string();
    }
    let mut servers = second.per_server.clone();
    servers.sort();
    servers
        .iter()
        .map(|(name, n)| format!("{name} {:.0}%", *n as f64 * 100.0 / total as f64))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One line per second, for pipes and logs.
pub fn plain_line(snap: &Snapshot) -> String {
    let Some(s) = &snap.last else {
        return format!("t={}s (no data yet)", snap.elapsed.as_secs());
    };
    let c = &s.counts;
    let mut line = format!(
        "t={}s req={} ok={} err={} (connect {}, timeout {}, 5xx {}, 4xx {}) p50={}ms p99={}ms servers: {} | session_losses={} stale_reads={}",
        s.t,
        c.requests,
        c.ok,
        c.errors(),
        c.connect,
        c.timeout,
        c.http_5xx,
        c.http_4xx,
        s.p50_ms,
        s.p99_ms,
        shares(s),
        snap.total.session_losses,
        snap.total.stale_reads,
    );
    if snap.total.late > 0 {
        line.push_str(&format!(
            " behind_schedule={} max_lag={}ms",
            snap.total.late,
            snap.max_lag.as_millis()
        ));
    }
    line
}

fn panel(snap: &Snapshot, color: bool) -> String {
    let Some(s) = &snap.last else {
        return "  waiting for the first second...".to_string();
    };
    let c = &s.counts;
    let t = &snap.total;
    let paint = |text: String, bad: bool| -> String {
        if color && bad {
            text.red().bold().to_string()
        } else {
            text
        }
    };
    let errors = paint(
        format!(
            "errors {}  (connect {}, timeout {}, 5xx {}, 4xx {})",
            c.errors(),
            c.connect,
            c.timeout,
            c.http_5xx,
            c.http_4xx
        ),
        c.errors() > 0,
    );
    let mut out = format!(
        "  last second   {} requests, {} ok, {errors}\n  latency       p50 {} ms   p99 {} ms   max {} ms\n  servers       {}\n  so far        {} requests, {} errors, {}, {}",
        c.requests,
        c.ok,
        s.p50_ms,
        s.p99_ms,
        s.max_ms,
        shares(s),
        t.requests,
        t.errors(),
        paint(format!("{} session losses", t.session_losses), t.session_losses > 0),
        paint(format!("{} stale reads", t.stale_reads), t.stale_reads > 0),
    );
    if t.late > 0 {
        out.push_str(&format!(
            "\n  {}",
            paint(
                format!(
                    "behind schedule: {} requests started late (max lag {} ms)",
                    t.late,
                    snap.max_lag.as_millis()
                ),
                true
            )
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_line_names_every_figure() {
        let second = Second {
            t: 3,
            counts: Counts {
                requests: 10,
                ok: 8,
                http_5xx: 2,
                ..Counts::default()
            },
            p50_ms: 1.5,
            p99_ms: 9.0,
            max_ms: 9.0,
            per_server: vec![("server-2".into(), 5), ("server-1".into(), 5)],
        };
        let snap = Snapshot {
            elapsed: Duration::from_secs(3),
            planned: Duration::from_secs(10),
            total: Counts {
                stale_reads: 4,
                ..Counts::default()
            },
            last: Some(second),
            max_lag: Duration::ZERO,
        };
        let line = plain_line(&snap);
        assert!(line.starts_with("t=3s req=10 ok=8 err=2"), "{line}");
        assert!(line.contains("5xx 2"), "{line}");
        assert!(line.contains("server-1 50% server-2 50%"), "{line}");
        assert!(line.contains("stale_reads=4"), "{line}");
        assert!(!line.contains('\u{1b}'), "no colour codes in plain lines");
    }
}
