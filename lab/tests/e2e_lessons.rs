//! The lessons are the end-to-end suite: every lesson of the course runs
//! against real containers and must reach its verdict. They run one after
//! another in a single test, because they measure latency and capacity and
//! two at once would disturb each other's figures.

mod common;

use std::time::Instant;

use common::{docker_ready, lab};

#[test]
fn every_lesson_holds() {
    if !docker_ready() {
        return;
    }
    let list = String::from_utf8(lab(&["lesson", "list"]).stdout).unwrap();
    let names: Vec<String> = list
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect();
    assert!(names.len() >= 9, "lessons: {list}");
    // Only some, when asked: LAB_LESSONS=cache,sessions
    let only: Option<Vec<String>> = std::env::var("LAB_LESSONS")
        .ok()
        .map(|s| s.split(',').map(|x| x.trim().to_string()).collect());
    // A misspelt name must not run nothing and pass.
    if let Some(only) = &only {
        let unknown: Vec<&String> = only.iter().filter(|o| !names.contains(o)).collect();
        assert!(
            unknown.is_empty(),
            "LAB_LESSONS names no lesson called {unknown:?}; the lessons are: {}",
            names.join(", ")
        );
    }
    let prefix = format!("e2e-{}", std::process::id());
    let mut failed = Vec::new();
    for name in &names {
        if only.as_ref().is_some_and(|o| !o.contains(name)) {
            continue;
        }
        let started = Instant::now();
        // --quick: the architecture lesson crashes one part of each kind
        // and ramps more coarsely (its full run is in docs/labs); the other
        // lessons have one method only.
        let out = lab(&["--lab", &prefix, "lesson", "run", name, "--json", "--quick"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let report: serde_json::Value = match serde_json::from_str(&stdout) {
            Ok(v) => v,
            Err(_) => {
                failed.push(format!(
                    "{name}: no report ({})",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
                continue;
            }
        };
        eprintln!("lesson {name} ({:.0} s):", started.elapsed().as_secs_f64());
        // The failed verdicts are repeated in the final message: a CI log
        // cut in the middle must still say which claim failed and by what.
        let mut missed = Vec::new();
        for v in report["verdicts"].as_array().unwrap() {
            let line = format!(
                "{}: {}",
                v["expectation"].as_str().unwrap_or_default(),
                v["measured"].as_str().unwrap_or_default()
            );
            let passed = v["passed"] == true;
            eprintln!("  {} {line}", if passed { "ok  " } else { "FAIL" });
            if !passed {
                missed.push(format!("  FAIL {line}"));
            }
        }
        if report["passed"] != true {
            // What it measured, for a CI log to say why without a rerun
            // (the lessons that size themselves on the machine show the
            // sizes in their tables' titles).
            eprint!("{}", tables_text(&report));
            assert_eq!(out.status.code(), Some(1), "a failed lesson exits 1");
            let why = match report["error"].as_str() {
                Some(e) => e.to_string(),
                None => format!("a verdict failed\n{}", missed.join("\n")),
            };
            failed.push(format!("{name}: {why}"));
        } else {
            assert!(out.status.success());
        }
        // Whatever happened, the lesson removed its lab.
        let left = common::leftovers(&format!("{prefix}-lesson-{name}"));
        assert!(left.is_empty(), "lesson {name} left {left:?}");
    }
    assert!(
        failed.is_empty(),
        "lessons that did not hold:\n{}",
        failed.join("\n")
    );
}

/// A report's tables as text, a row a line, for the log of a failed lesson.
fn tables_text(report: &serde_json::Value) -> String {
    let mut text = String::new();
    for t in report["tables"].as_array().into_iter().flatten() {
        text += &format!("  {}\n", t["title"].as_str().unwrap_or_default());
        for row in std::iter::once(&t["header"]).chain(t["rows"].as_array().into_iter().flatten()) {
            let cells: Vec<&str> = row
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| c.as_str().unwrap_or_default())
                .collect();
            text += &format!("    {}\n", cells.join(" | "));
        }
    }
    text
}

#[test]
fn a_failed_lessons_tables_read_as_text() {
    let report = serde_json::json!({
        "passed": false,
        "tables": [{
            "title": "Capacity (7 ms of page work)",
            "header": ["memory", "requests/s"],
            "rows": [["32 MiB", "63"], ["64 MiB", "85"]]
        }]
    });
    assert_eq!(
        tables_text(&report),
        "  Capacity (7 ms of page work)\n    memory | requests/s\n    32 MiB | 63\n    64 MiB | 85\n"
    );
    assert_eq!(tables_text(&serde_json::json!({"passed": false})), "");
}
