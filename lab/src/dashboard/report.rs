//! `GET /report`: the last load or lesson as one HTML file a student can
//! hand in.
//!
//! The file stands alone: its style, its data and its chart script
//! ([`assets::CHARTS`], the page's own) are inside it, it names no other
//! file and fetches nothing, so it opens the same on a teacher's machine a
//! year later, offline. What it says (verdicts, totals, the fault timeline)
//! is written as HTML text, readable without its script; the charts are
//! drawn by the script from the data beside them.
//!
//! It is a read, like the page: the guard's Host and Sec-Fetch-Site checks
//! apply, but no token, so a plain link on the page downloads it. It shows
//! what the page showed, which no other site can read (the browser's
//! same-origin rule) and any local user could see with `lab status`.
//!
//! [`assets::CHARTS`]: super::assets::CHARTS

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::assets;
use super::job::{Mark, Record};
use super::AppState;

/// Marks this long after a run ended still belong to it: a heal seen in
/// the snapshot after the load's last second.
const AFTER_MS: u64 = 5_000;

/// Text made safe to put between HTML tags or in an attribute.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn clock(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// What the report's script reads.
#[derive(Serialize)]
struct Data<'a> {
    seconds: &'a [super::job::Second],
    marks: &'a [Mark],
    t0: u64,
    t1: u64,
}

/// JSON that can sit inside `<script>`: no `</script>` can end it early.
fn script_json(v: &impl Serialize) -> String {
    serde_json::to_string(v)
        .unwrap_or_else(|_| "null".into())
        .replace("</", "<\\/")
        .replace("<!--", "<\\!--")
}

fn table(out: &mut String, header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) {
    out.push_str("<table><tr>");
    for h in header {
        out.push_str(&format!("<th>{}</th>", escape(h)));
    }
    out.push_str("</tr>");
    for r in rows {
        out.push_str("<tr>");
        for c in r {
            out.push_str(&format!("<td>{}</td>", escape(&c)));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>\n");
}

/// The report of `record` in lab `lab`, with the marks made during it.
pub fn html(lab: &str, record: &Record, marks: &[Mark]) -> String {
    let t0 = record.started;
    let t1 = record
        .ended
        .unwrap_or_else(super::job::now_ms)
        .max(t0 + 1000);
    let marks: Vec<Mark> = marks
        .iter()
        .filter(|m| m.t >= t0 && m.t <= t1 + AFTER_MS)
        .cloned()
        .collect();
    let mut b = String::new();
    b.push_str(&format!(
        "<h1>scaling-lab report: {}</h1>\n<p class=\"meta\">lab <b>{}</b> · started {} · {} · {}</p>\n",
        escape(&record.title),
        escape(lab),
        clock(t0),
        match record.ended {
            Some(e) => format!("ended {}", clock(e)),
            None => "still running when exported".into(),
        },
        escape(&serde_json::to_value(record.phase).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()),
    ));
    if let Some(e) = &record.error {
        b.push_str(&format!("<p class=\"error\">{}</p>\n", escape(e)));
    }
    if let Some(l) = &record.lesson {
        b.push_str(&format!(
            "<h2>Hypothesis</h2>\n<p>{}</p>\n<h2 id=\"verdict\">Verdict: {}</h2>\n",
            escape(&l.hypothesis),
            if l.passed {
                "the claim holds"
            } else {
                "the claim did NOT hold"
            }
        ));
        table(
            &mut b,
            &["", "expectation", "measured"],
            l.verdicts.iter().map(|v| {
                vec![
                    if v.passed { "✓" } else { "✗" }.to_string(),
                    v.expectation.clone(),
                    v.measured.clone(),
                ]
            }),
        );
        for t in &l.tables {
            b.push_str(&format!("<h3>{}</h3>\n", escape(&t.title)));
            let header: Vec<&str> = t.header.iter().map(String::as_str).collect();
            table(&mut b, &header, t.rows.iter().cloned());
        }
    } else if !record.steps.is_empty() {
        // A lesson stopped before its report: the verdicts reached so far.
        b.push_str("<h2 id=\"verdict\">Verdicts reached</h2>\n");
        table(
            &mut b,
            &["", "expectation", "measured"],
            record.steps.iter().filter_map(|s| match &s.step {
                crate::lessons::Step::Verdict(v) => Some(vec![
                    if v.passed { "✓" } else { "✗" }.to_string(),
                    v.expectation.clone(),
                    v.measured.clone(),
                ]),
                _ => None,
            }),
        );
    }
    if let Some(r) = &record.load {
        b.push_str("<h2 id=\"verdict\">Totals</h2>\n");
        let e = &r.errors;
        table(
            &mut b,
            &["figure", "value"],
            [
                ("requests", r.requests.to_string()),
                ("ok", r.ok.to_string()),
                ("requests/s", format!("{:.1}", r.rps)),
                (
                    "failed (connect, timeout, 5xx, 4xx, other)",
                    format!(
                        "{} ({}, {}, {}, {}, {})",
                        e.total(),
                        e.connect,
                        e.timeout,
                        e.http_5xx,
                        e.http_4xx,
                        e.other
                    ),
                ),
                (
                    "latency p50 / p99 / max",
                    format!(
                        "{:.1} / {:.1} / {:.1} ms",
                        r.latency_ms.p50, r.latency_ms.p99, r.latency_ms.max
                    ),
                ),
                ("session losses", r.session_losses.to_string()),
                ("stale reads", r.stale_reads.to_string()),
                ("lost writes (audit)", r.lost_writes.to_string()),
                ("writes of unknown outcome", r.unknown_writes.to_string()),
                (
                    "share per server",
                    r.per_server
                        .iter()
                        .map(|(k, v)| {
                            format!("{k} {:.0}%", 100.0 * *v as f64 / r.requests.max(1) as f64)
                        })
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
            ]
            .into_iter()
            .map(|(k, v)| vec![k.to_string(), v]),
        );
    }
    if !record.seconds.is_empty() {
        b.push_str("<h2>Per second</h2>\n<div id=\"charts\"></div>\n");
    }
    b.push_str("<h2>Fault timeline</h2>\n");
    if record.kind == super::job::Kind::Lesson {
        // The dashboard watches its own lab; the lesson runs in another.
        b.push_str("<p>A lesson runs in a lab of its own: its faults are in its steps below, each with its time.</p>\n");
    }
    if marks.is_empty() {
        b.push_str("<p>No fault or change was seen during the run.</p>\n");
    } else {
        table(
            &mut b,
            &["#", "time", "after", "by", "what"],
            marks.iter().enumerate().map(|(i, m)| {
                vec![
                    (i + 1).to_string(),
                    clock(m.t),
                    format!("{:.0} s", m.t.saturating_sub(t0) as f64 / 1000.0),
                    match m.source {
                        super::job::Source::Page => "the page".into(),
                        super::job::Source::Lab => "seen in the lab".into(),
                    },
                    m.text.clone(),
                ]
            }),
        );
    }
    if !record.steps.is_empty() {
        b.push_str("<h2>What the lesson did</h2>\n<ol class=\"steps\">\n");
        for s in &record.steps {
            let after = format!("{:.0} s: ", s.at.saturating_sub(t0) as f64 / 1000.0);
            let line = after
                + &match &s.step {
                    crate::lessons::Step::Say { text } => format!("→ {text}"),
                    crate::lessons::Step::Verdict(v) => format!(
                        "{} {}: {}",
                        if v.passed { "✓" } else { "✗" },
                        v.expectation,
                        v.measured
                    ),
                    crate::lessons::Step::Table(t) => format!("table: {}", t.title),
                };
            b.push_str(&format!("<li>{}</li>\n", escape(&line)));
        }
        b.push_str("</ol>\n");
    }
    let data = script_json(&Data {
        seconds: &record.seconds,
        marks: &marks,
        t0,
        t1,
    });
    format!(
        "<!doctype html>\n<!-- Exported by scaling-lab's dashboard (lab dashboard): one file, nothing fetched. -->\n\
         <html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>scaling-lab report: {title}</title>\n\
         <style>\n{style}\n{extra}\n</style>\n</head>\n<body class=\"report\">\n<main class=\"report\">\n{b}</main>\n\
         <script>\nconst REPORT = {data};\n</script>\n<script>\n{charts}\n\
         const box = document.getElementById('charts');\n\
         if (box) Charts.draw(box, REPORT.seconds, REPORT.marks, REPORT.t0, REPORT.t1);\n</script>\n</body>\n</html>\n",
        title = escape(&record.title),
        style = assets::STYLE,
        extra = REPORT_STYLE,
        charts = assets::CHARTS,
    )
}

/// What only the report needs on top of the page's style sheet.
const REPORT_STYLE: &str = "main.report { display: block; max-width: 960px; margin: 0 auto; } \
     table { border-collapse: collapse; margin: .4em 0 1em; } \
     td, th { border: 1px solid #e0e0e0; padding: .2em .6em; text-align: left; } \
     .meta { color: #616161; } .error { color: #c62828; }";

/// `GET /report`: the file, as a download named after the run.
pub async fn report(State(s): State<AppState>) -> Response {
    let Some(record) = s.jobs.record() else {
        return super::json_error(
            StatusCode::NOT_FOUND,
            "no load or lesson has run in this dashboard yet: start one from the page, then export it",
        );
    };
    let marks = s.jobs.marks_since(record.started);
    let body = html(&s.lab.name, &record, &marks);
    let name = format!(
        "scaling-lab-{}-{}.html",
        s.lab
            .name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect::<String>(),
        match record.kind {
            super::job::Kind::Load => "load",
            super::job::Kind::Lesson => "lesson",
        }
    );
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_string()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
        ],
        body,
    )
        .into_response()
}
