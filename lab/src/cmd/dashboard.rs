//! `lab dashboard`: serve the web dashboard until Ctrl-C.
//!
//! Like `lab watch`, it writes as it goes (the URL, at once) and returns
//! nothing to print.

use std::sync::Arc;

use super::Report;
use crate::cli::DashboardArgs;
use crate::dashboard::{Dashboard, Lab};
use crate::error::Result;
use crate::lb_admin::http_connector;
use crate::runtime::DockerRuntime;

pub async fn run(lab: &str, a: DashboardArgs) -> Result<Report> {
    let rt = DockerRuntime::connect().await?;
    let lab_ref = Lab {
        rt: Arc::new(rt),
        name: lab.to_string(),
        lb: http_connector(),
    };
    let d = Dashboard::bind(lab_ref, a.port).await?;
    let url = d.url();
    say(&format!(
        "lab {lab:?}: dashboard on {url}\n(the #token part lets the page act on the lab; Ctrl-C to stop)"
    ));
    if a.open {
        open_browser(&url).await;
    }
    d.serve(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(Report::None)
}

/// A line for the student. The dashboard goes on serving when nobody reads
/// its output any more (a closed pipe, a terminal gone), where `println!`
/// would end the process.
fn say(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// Asks the desktop to open `url`; without one (a server, a container),
/// says so and carries on: the URL is printed already.
async fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    let spawned = tokio::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    match spawned {
        // Reaped in the background, so it leaves no zombie behind.
        Ok(mut child) => {
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
        }
        Err(e) => say(&format!(
            "(could not start {opener}: {e}; open the URL above yourself)"
        )),
    }
}
