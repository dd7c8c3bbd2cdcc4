//! The dashboard in a real browser: headless Chromium from Debian's
//! packages, driven through WebDriver (Debian's chromedriver, the
//! fantoccini crate), showing and breaking a real lab in Docker.
//!
//! What the router tests cannot show is proved here: the page's script
//! draws the lab from the event stream, its buttons reach the lab with the
//! token they took from the URL, a load started from the page is charted
//! second by second, a crash shows as a server down and failed requests on
//! the chart and a start as its recovery, the run exports as a report, a
//! page without the token is read-only, and the page lives through
//! `lab down` and `lab up`.
//!
//! With `LAB_SCREENSHOTS=DIR` the test saves the page at its main steps
//! as `DIR/dashboard-*.png` (docs/images/ holds the ones the docs show).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{docker_ready, eventually, TestLab};
use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt;
use std::panic::AssertUnwindSafe;

/// A child process killed when the test ends, pass or fail.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// Debian's chromedriver (package chromium-driver), on a free port. It and
/// its Chromium keep their temporary files in `scratch`, which the test
/// removes: a killed browser leaves its own behind.
fn chromedriver(scratch: &std::path::Path) -> (Killed, u16) {
    let path = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect(
            "the dashboard's browser test needs Chromium and its driver from Debian: \
             apt-get install chromium chromium-driver (make test installs them), \
             or set LAB_SKIP_DOCKER=1 to skip the end-to-end tests",
        );
    let port = free_port();
    let child = Command::new(path)
        .arg(format!("--port={port}"))
        .env("TMPDIR", scratch)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    (Killed(child), port)
}

/// `lab dashboard --port 0` for the lab; returns the URL it printed.
fn dashboard(lab: &TestLab) -> (Killed, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lab"))
        .args(["--lab", &lab.name, "dashboard", "--port", "0"])
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("lab dashboard starts");
    let mut out = BufReader::new(child.stdout.take().expect("its stdout"));
    let mut first = String::new();
    out.read_line(&mut first)
        .expect("lab dashboard prints a line");
    // Keep reading what it prints, so it never writes to a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no URL in {first:?}"))
        .to_string();
    assert!(url.contains("/#token="), "{url}");
    (Killed(child), url)
}

/// A headless Chromium, once its driver answers, with its profile in
/// `scratch` (chromedriver's own would stay in /tmp).
async fn browser(driver_port: u16, scratch: &std::path::Path) -> Client {
    let profile = scratch.join("profile");
    let caps = serde_json::json!({
        "goog:chromeOptions": {
            // --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1400,1000",
                     format!("--user-data-dir={}", profile.display())]
        }
    });
    let caps = caps.as_object().cloned().unwrap_or_default();
    let url = format!("http://127.0.0.1:{driver_port}");
    eventually(Duration::from_secs(20), "chromedriver to answer", || {
        let (caps, url) = (caps.clone(), url.clone());
        async move {
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps)
                .connect(&url)
                .await
                .map_err(|e| eprintln!("waiting for chromedriver: {e}"))
                .ok()
        }
    })
    .await
}

/// The diagram's class for a service ("node ok", "node down"...), or None
/// while it is not drawn.
async fn drawn(c: &Client, service: &str) -> Option<String> {
    let css = format!("#topology g.node[data-service=\"{service}\"]");
    let node = c.find(Locator::Css(&css)).await.ok()?;
    node.attr("class").await.ok().flatten()
}

async fn text_of(c: &Client, id: &str) -> String {
    match c.find(Locator::Id(id)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn wait_drawn(c: &Client, service: &str, condition: &str) {
    let what = format!("{service} drawn as {condition}");
    eventually(Duration::from_secs(60), &what, || async {
        drawn(c, service)
            .await
            .filter(|class| class.split_whitespace().any(|w| w == condition))
    })
    .await;
}

async fn click_button(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("cannot click {css}: {e}"));
}

#[tokio::test]
async fn the_page_shows_the_lab_breaks_it_and_lives_through_down_and_up() {
    if !docker_ready() {
        return;
    }
    let lab = TestLab::new("dash");
    let up = ["up", "--servers", "2", "--replicas", "0", "--port", "0"];
    lab.ok(&up);
    let (_dashboard, url) = dashboard(&lab);
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let (_driver, driver_port) = chromedriver(scratch.path());
    let c = browser(driver_port, scratch.path()).await;
    // Killing chromedriver would leave its Chromium running: the session is
    // closed whatever happens, then a failure is passed on.
    let outcome = AssertUnwindSafe(async {
        load_crash_recover(&c, &url).await;
        walk_through(&lab, &c, &url, &up).await;
    })
    .catch_unwind()
    .await;
    let _ = c.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Saves the page as `$LAB_SCREENSHOTS/dashboard-NAME.png`, when asked.
async fn screenshot(c: &Client, name: &str) {
    let Some(dir) = std::env::var_os("LAB_SCREENSHOTS") else {
        return;
    };
    let png = c.screenshot().await.expect("a screenshot");
    let path = std::path::Path::new(&dir).join(format!("dashboard-{name}.png"));
    std::fs::write(&path, png).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// When screenshots are asked for, a few more seconds of load on the
/// charts before each, so that they show what happened around it.
async fn pause_for_screenshots() {
    if std::env::var_os("LAB_SCREENSHOTS").is_some() {
        tokio::time::sleep(Duration::from_secs(6)).await;
    }
}

/// A data attribute of an element, or None while it is not drawn.
async fn data(c: &Client, css: &str, attr: &str) -> Option<String> {
    let e = c.find(Locator::Css(css)).await.ok()?;
    e.attr(attr).await.ok().flatten()
}

async fn number(c: &Client, css: &str, attr: &str) -> Option<u64> {
    data(c, css, attr).await?.parse().ok()
}

/// Clicks a service's box until the page has selected it (the diagram is
/// drawn anew with each snapshot: a box found just before a redraw is gone
/// when clicked, so try again with the new one).
async fn select(c: &Client, service: &str) {
    let what = format!("a click on {service}'s box");
    eventually(Duration::from_secs(10), &what, || async {
        let css = format!("#topology g.node[data-service=\"{service}\"]");
        c.find(Locator::Css(&css)).await.ok()?.click().await.ok()?;
        let selected = text_of(c, "selected").await;
        (selected == format!("{service}:")).then_some(())
    })
    .await;
}

/// Issue #18's point 7: a load started from the page, server-2 crashed
/// from the page, its state down and failures on the chart, then started
/// again and recovered; the run exported as a report.
async fn load_crash_recover(c: &Client, url: &str) {
    // Tall enough for the diagram and the charts in one screenshot.
    c.set_window_size(1400, 2300).await.expect("a window size");
    c.goto(url).await.expect("the page loads");
    for service in ["lb-1", "server-1", "server-2"] {
        wait_drawn(c, service, "ok").await;
    }
    // The page's own load: the ping scenario (no database), 40 requests/s,
    // bounded to 120 s and stopped from the page before that.
    let scenario = c.find(Locator::Id("scenario")).await.expect("scenario");
    scenario.select_by_value("ping").await.expect("ping");
    let amount = c.find(Locator::Id("amount")).await.expect("amount");
    amount.clear().await.expect("cleared");
    amount.send_keys("40").await.expect("typed");
    let duration = c.find(Locator::Id("duration")).await.expect("duration");
    duration.clear().await.expect("cleared");
    duration.send_keys("120").await.expect("typed");
    click_button(c, "#load-start").await;
    eventually(Duration::from_secs(30), "the load to run", || async {
        let state = data(c, "#job", "data-state").await?;
        (state == "running").then_some(())
    })
    .await;
    // Seconds of the load engine, with ok requests and no failure yet.
    eventually(
        Duration::from_secs(30),
        "ok requests on the chart",
        || async {
            let source = data(c, "#charts", "data-source").await?;
            let ok = number(c, "#chart-requests", "data-ok-total").await?;
            (source == "load" && ok > 150).then_some(())
        },
    )
    .await;
    // A fresh lab may fail a first request or two: the crash must add more.
    let before = number(c, "#chart-requests", "data-failed-total")
        .await
        .unwrap_or(0);

    select(c, "server-2").await;
    click_button(c, "#service-buttons button[data-verb=\"crash\"]").await;
    wait_drawn(c, "server-2", "down").await;
    let failed = eventually(Duration::from_secs(30), "failures on the chart", || async {
        let n = number(c, "#chart-requests", "data-failed-total").await?;
        (n > before).then_some(n)
    })
    .await;
    eprintln!("{failed} failed requests charted, {before} before the crash");
    let marks = text_of(c, "marks").await;
    assert!(marks.contains("(page) crash server-2"), "{marks}");
    assert!(marks.contains("server-2: ok → down"), "{marks}");
    pause_for_screenshots().await;
    screenshot(c, "crash").await;

    select(c, "server-2").await;
    click_button(c, "#service-buttons button[data-verb=\"start\"]").await;
    wait_drawn(c, "server-2", "ok").await;
    // Recovered: seconds without failures, and server-2 answering again.
    eventually(
        Duration::from_secs(60),
        "server-2 back in the load",
        || async {
            let last_failed = number(c, "#chart-requests", "data-last-failed").await?;
            let shares: serde_json::Value =
                serde_json::from_str(&data(c, "#chart-share", "data-last-share").await?).ok()?;
            let back = shares["server-2"].as_f64().unwrap_or(0.0) > 20.0;
            (last_failed == 0 && back).then_some(())
        },
    )
    .await;
    pause_for_screenshots().await;
    screenshot(c, "recovered").await;

    click_button(c, "#job-stop").await;
    eventually(Duration::from_secs(30), "the load to end", || async {
        let state = data(c, "#job", "data-state").await?;
        (state == "done").then_some(())
    })
    .await;
    let summary = text_of(c, "job-steps").await;
    assert!(summary.contains("requests"), "{summary}");
    screenshot(c, "done").await;

    // The report, as the page's link downloads it.
    let base = url.split('#').next().unwrap_or_default();
    let report = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a client")
        .get(format!("{base}report"))
        .send()
        .await
        .expect("the report")
        .text()
        .await
        .expect("its text");
    assert!(report.contains("crash server-2"), "{report}");
    assert!(report.contains("Fault timeline") && report.contains("Totals"));
    assert!(!report.contains("src=") && !report.contains("href="));
}

/// What a student does with the page, checked step by step.
async fn walk_through(lab: &TestLab, c: &Client, url: &str, up: &[&str]) {
    // A fresh load (the same URL again would only change the fragment).
    c.goto("about:blank").await.expect("a blank page");
    c.goto(url).await.expect("the page loads");
    // The page keeps the token for itself and takes it out of the address bar.
    let shown = c.current_url().await.expect("a URL");
    assert!(!shown.as_str().contains("token"), "{shown}");
    for service in ["lb-1", "server-1", "redis", "db-1"] {
        wait_drawn(c, service, "ok").await;
    }
    // The scale box starts at the lab's count of servers.
    let servers = c.find(Locator::Id("servers")).await.expect("the scale box");
    let count = servers.prop("value").await.expect("its value");
    assert_eq!(count.as_deref(), Some("2"));

    // Break server-1 from the page: the button reaches the lab, and the next
    // snapshot, read back from Docker, draws it down.
    select(c, "server-1").await;
    click_button(c, "#service-buttons button[data-verb=\"crash\"]").await;
    eventually(Duration::from_secs(30), "the crash's answer", || async {
        let answer = text_of(c, "answer").await;
        answer.contains("crashed").then_some(answer)
    })
    .await;
    wait_drawn(c, "server-1", "down").await;
    let status = lab.status();
    let server1 = status["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "server-1"))
        .expect("server-1 in lab status")
        .clone();
    assert_eq!(server1["state"], "exited", "{server1}");
    // The change is marked under the chart.
    let marks = text_of(c, "marks").await;
    assert!(marks.contains("server-1: ok → down"), "{marks}");

    // A page opened without the token shows the lab but cannot act.
    let plain = url.split('#').next().unwrap_or_default().to_string();
    c.new_window(true).await.expect("a new tab");
    let tabs = c.windows().await.expect("the tabs");
    c.switch_to_window(tabs[1].clone())
        .await
        .expect("the new tab");
    c.goto(&plain).await.expect("the page loads without token");
    wait_drawn(c, "server-1", "down").await;
    let notice = c.find(Locator::Id("readonly")).await.expect("the notice");
    assert!(notice.is_displayed().await.unwrap_or(false));
    let heal = c.find(Locator::Id("heal-all")).await.expect("heal all");
    assert!(!heal.is_enabled().await.expect("a button's state"));
    c.close_window().await.expect("the tab closes");
    c.switch_to_window(tabs[0].clone())
        .await
        .expect("back to the first tab");

    click_button(c, "#heal-all").await;
    wait_drawn(c, "server-1", "ok").await;

    // The page outlives the lab, then shows the new one.
    lab.ok(&["down"]);
    eventually(
        Duration::from_secs(30),
        "the page to say no lab",
        || async {
            let message = text_of(c, "message").await;
            message.contains("not running").then_some(message)
        },
    )
    .await;
    assert!(drawn(c, "server-1").await.is_none());
    lab.ok(up);
    wait_drawn(c, "server-1", "ok").await;
    assert_eq!(text_of(c, "conn").await, "running");
}

/// One `error: ...` line on stderr that mentions every `needle`, exit 1.
fn one_line_error(out: &std::process::Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    for n in needles {
        assert!(lines[0].contains(n), "{n:?} missing from: {stderr}");
    }
}

#[test]
fn a_taken_port_or_no_docker_is_one_line_that_names_the_fix() {
    // Without a daemon: what to start, before any port is taken.
    let out = Command::new(env!("CARGO_BIN_EXE_lab"))
        .args(["dashboard", "--port", "0"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .env("NO_COLOR", "1")
        .output()
        .expect("the lab binary runs");
    one_line_error(&out, &["cannot reach the Docker daemon", "start Docker"]);
    if !docker_ready() {
        return;
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = taken.local_addr().expect("its address").port().to_string();
    let out = common::lab(&["--lab", "dash-port", "dashboard", "--port", &port]);
    one_line_error(&out, &[&format!("port {port}"), "--port"]);
}
