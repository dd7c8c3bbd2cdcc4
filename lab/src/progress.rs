//! Progress: how slow work shows that it is still going.
//!
//! Making the Debian base image takes a minute, compressing a class bundle
//! several, and `lab up` waits for every service to turn healthy. The code
//! that does that work reports to a [`Progress`] and never draws anything
//! itself, so the same work can be shown on a terminal, in a web page, or not
//! at all:
//!
//! - [`Terminal`] draws spinners and bars with indicatif on stderr, and only
//!   when stderr is a terminal: a script, a pipe or `--json` sees nothing.
//! - [`Silent`] draws nothing, for tests and for callers that report in their
//!   own way.
//!
//! A task ends when the last handle to it is dropped, so an early return by
//! `?` cannot leave a spinner turning.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// How a task's amount of work is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    /// Nothing to count: a spinner and the time spent.
    Unknown,
    /// Bytes, with the total when it is known.
    Bytes(Option<u64>),
    /// A number of things, such as services to turn healthy.
    Items(u64),
}

/// Where slow work reports.
pub trait Progress: Send + Sync {
    /// Starts a task titled `title`.
    fn task(&self, title: &str, size: Size) -> Arc<dyn Task>;
    /// A line worth keeping on screen after the task ends, such as the tail
    /// of a failing tool's output.
    fn note(&self, line: &str);
}

/// One task under way.
pub trait Task: Send + Sync {
    /// What the task is doing now, beside its title.
    fn detail(&self, text: &str);
    fn set_position(&self, position: u64);
    fn inc(&self, delta: u64);
}

/// Progress on the terminal's stderr.
#[derive(Clone, Copy, Debug, Default)]
pub struct Terminal;

/// No progress shown.
#[derive(Clone, Copy, Debug, Default)]
pub struct Silent;

struct Bar(ProgressBar);

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

impl Task for Bar {
    fn detail(&self, text: &str) {
        self.0.set_message(text.to_string());
    }
    fn set_position(&self, position: u64) {
        self.0.set_position(position);
    }
    fn inc(&self, delta: u64) {
        self.0.inc(delta);
    }
}

impl Progress for Terminal {
    fn task(&self, title: &str, size: Size) -> Arc<dyn Task> {
        let (pb, template) = match size {
            Size::Unknown => (
                ProgressBar::new_spinner(),
                "{spinner} {prefix} {wide_msg} [{elapsed}]",
            ),
            Size::Bytes(None) => (
                ProgressBar::new_spinner(),
                "{spinner} {prefix} {binary_bytes} {wide_msg} [{elapsed}]",
            ),
            Size::Bytes(Some(total)) => (
                ProgressBar::new(total),
                "{prefix} {wide_bar} {binary_bytes}/{binary_total_bytes} ({eta})",
            ),
            Size::Items(total) => (
                ProgressBar::new(total),
                "{spinner} {prefix} {pos}/{len} {wide_msg} [{elapsed}]",
            ),
        };
        pb.set_style(
            ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        pb.set_prefix(title.to_string());
        pb.enable_steady_tick(Duration::from_millis(120));
        Arc::new(Bar(pb))
    }

    fn note(&self, line: &str) {
        eprintln!("  {line}");
    }
}

struct Nothing;

impl Task for Nothing {
    fn detail(&self, _: &str) {}
    fn set_position(&self, _: u64) {}
    fn inc(&self, _: u64) {}
}

impl Progress for Silent {
    fn task(&self, _: &str, _: Size) -> Arc<dyn Task> {
        Arc::new(Nothing)
    }
    fn note(&self, _: &str) {}
}

/// A reader that counts what passes through it on a task.
pub struct Counted<R> {
    inner: R,
    task: Arc<dyn Task>,
}

impl<R> Counted<R> {
    pub fn new(inner: R, task: Arc<dyn Task>) -> Counted<R> {
        Counted { inner, task }
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.task.inc(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[derive(Default)]
    struct Tally(AtomicU64);
    impl Task for Tally {
        fn detail(&self, _: &str) {}
        fn set_position(&self, p: u64) {
            self.0.store(p, Ordering::Relaxed);
        }
        fn inc(&self, d: u64) {
            self.0.fetch_add(d, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_counted_reader_reports_every_byte_it_passes() {
        let tally = Arc::new(Tally::default());
        let mut r = Counted::new(&[7u8; 10_000][..], tally.clone());
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), 10_000);
        assert_eq!(tally.0.load(Ordering::Relaxed), 10_000);
    }
}
