//! `lab watch`: the status table, redrawn every second, so a student can
//! keep one terminal on the whole lab while breaking it from another.
//! On a terminal the screen is redrawn in place; otherwise (a pipe, a log
//! file) each refresh is printed after the last, with a timestamp.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use crossterm::{cursor, terminal, QueueableCommand};

use crate::error::Result;
use crate::lb_admin::LbConnector;
use crate::runtime::Runtime;
use crate::status::status;

pub async fn watch(
    rt: &dyn Runtime,
    lab: &str,
    lb: &LbConnector,
    every: Duration,
    count: Option<u64>,
) -> Result<()> {
    let tty = std::io::stdout().is_terminal();
    let mut n = 0u64;
    loop {
        let report = status(rt, lab, lb).await?;
        let mut out = std::io::stdout();
        if tty {
            let _ = out.queue(cursor::MoveTo(0, 0));
            let _ = out.queue(terminal::Clear(terminal::ClearType::All));
        } else {
            let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
            let _ = writeln!(out, "--- {now}");
        }
        let _ = write!(out, "{}", report.render());
        if tty {
            let _ = writeln!(
                out,
                "\n(every {}; Ctrl-C to stop)",
                humantime::format_duration(every)
            );
        }
        let _ = out.flush();
        n += 1;
        if count.is_some_and(|c| n >= c) {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
