//! Single points of failure, found by removing each part in turn.
//!
//! A part is a single point of failure when the site stops working without
//! it. Diagrams guess that; `lab spof` measures it: under a light load, it
//! crashes one service, gives the system a recovery window to notice and
//! work around the loss (a balancer marking a server down, a standby taking
//! a floating address, a manager promoting a replica), then measures the
//! share of requests that succeed. Below the threshold after the window, the
//! part is a single point of failure. The part is started again and the lab
//! allowed to settle before the next one, and every fault is healed at the
//! end, also on Ctrl-C.
//!
//! What counts is what users get: a server whose loss costs a few seconds of
//! errors is no single point of failure; a database whose loss stops every
//! deposit for good is one, even if the home page still loads.
//!
//! The edge, which stands for the internet in front of an HA pair of
//! balancers, is not part of the site and is never crashed. Each part has
//! duties in the course's words (web, db, LB, cache): a machine that runs
//! both the web server and its database is one part with two duties, and its
//! loss takes both.

use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::faults::Faults;
use crate::load::report::TimelineEntry;
use crate::runtime::{labels, ContainerInfo, Health, State};
use crate::topology::Role;

/// What a part does for the site, in the course's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Duty {
    Lb,
    Web,
    Cache,
    Db,
}

impl Duty {
    pub fn as_str(self) -> &'static str {
        match self {
            Duty::Lb => "LB",
            Duty::Web => "web",
            Duty::Cache => "cache",
            Duty::Db => "db",
        }
    }

    /// A role's duties; none for the edge, which is not part of the site.
    pub fn of(role: Role) -> Vec<Duty> {
        match role {
            Role::Lb => vec![Duty::Lb],
            Role::Server => vec![Duty::Web],
            Role::Redis => vec![Duty::Cache],
            Role::Database => vec![Duty::Db],
            Role::Edge => Vec::new(),
        }
    }
}

/// One part of the site that the probe takes away.
#[derive(Clone, Debug, PartialEq)]
pub struct Part {
    /// How `lab crash` names it (a service, or a container's name).
    pub name: String,
    /// Its container's name, to see when it is back.
    pub container: String,
    pub role: String,
    pub duties: Vec<Duty>,
}

impl Part {
    /// The part a lab's container is, unless it is not part of the site.
    pub fn of(c: &ContainerInfo) -> Option<Part> {
        let role = c.label(labels::ROLE).and_then(Role::parse)?;
        let duties = Duty::of(role);
        (!duties.is_empty()).then(|| Part {
            name: service_of(c).unwrap_or_else(|| c.name.clone()),
            container: c.name.clone(),
            role: role.as_str().to_string(),
            duties,
        })
    }
}

/// Where the probe's light load enters the site.
#[derive(Clone, Debug)]
pub enum Entry {
    /// The lab's entry point (the edge of an HA pair, or the balancer),
    /// asked again before each part.
    Lab,
    /// A fixed loopback URL (a site without a balancer).
    Url(String),
}

/// How the probe judges each part.
#[derive(Clone, Debug, Serialize)]
pub struct ProbeSettings {
    /// Load before the crash, to see the site healthy first.
    pub before_s: u64,
    /// Time the lab gets to notice the loss and work around it.
    pub window_s: u64,
    /// Time over which the success rate is measured, after the window.
    pub measure_s: u64,
    /// When the success rate after the window falls below this share of the
    /// rate before the crash, the part is a single point of failure.
    pub threshold: f64,
    /// Requests per second of the light load (`mixed` scenario, open
    /// model: a failing request counts as often as a fast success would, so
    /// slow failures cannot hide behind quick answers).
    pub rate: f64,
}

impl Default for ProbeSettings {
    fn default() -> ProbeSettings {
        ProbeSettings {
            before_s: 3,
            window_s: 15,
            measure_s: 5,
            threshold: 0.9,
            rate: 40.0,
        }
    }
}

/// One part and what its loss did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PartResult {
    pub service: String,
    pub role: String,
    pub duties: Vec<Duty>,
    /// Share of requests that succeeded before the crash: the baseline (a
    /// lab with sessions in one server's memory fails some requests even
    /// when nothing is broken).
    pub success_before: Option<f64>,
    /// Share of requests that succeeded after the window; None when no
    /// request finished at all in that time (everything hung).
    pub success_after: Option<f64>,
    pub requests_after: u64,
    pub spof: bool,
}

/// Every part of the lab, judged.
#[derive(Clone, Debug, Serialize)]
pub struct SpofReport {
    pub lab: String,
    pub settings: ProbeSettings,
    pub parts: Vec<PartResult>,
    /// The single points of failure, by name.
    pub spofs: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

impl SpofReport {
    pub fn render_text(&self) -> String {
        let mut out = format!(
            "single points of failure of lab {:?}: crash each part under a light load, wait {} s, then measure {} s (a part is one when, without it, requests succeed less than {:.0}% as often as before)\n\n",
            self.lab,
            self.settings.window_s,
            self.settings.measure_s,
            self.settings.threshold * 100.0
        );
        out.push_str(&format!(
            "  {:<14} {:<8} {:>8} {:>8} {:>9}  verdict\n",
            "PART", "DUTY", "BEFORE", "AFTER", "REQUESTS"
        ));
        let pct = |s: Option<f64>| {
            s.map(|s| format!("{:.1}%", s * 100.0))
                .unwrap_or_else(|| "none".into())
        };
        for p in &self.parts {
            out.push_str(&format!(
                "  {:<14} {:<8} {:>8} {:>8} {:>9}  {}\n",
                p.service,
                p.duties
                    .iter()
                    .map(|d| d.as_str())
                    .collect::<Vec<_>>()
                    .join("+"),
                pct(p.success_before),
                pct(p.success_after),
                p.requests_after,
                if p.spof {
                    "SINGLE POINT OF FAILURE"
                } else {
                    "survivable"
                }
            ));
        }
        if let Some(why) = &self.stopped {
            out.push_str(&format!("\nstopped early: {why}\n"));
        }
        out.push_str(&format!(
            "\n{} single point{} of failure{}\n",
            self.spofs.len(),
            if self.spofs.len() == 1 { "" } else { "s" },
            if self.spofs.is_empty() {
                String::new()
            } else {
                format!(": {}", self.spofs.join(", "))
            }
        ));
        out
    }
}

/// The share of finished requests that succeeded in the seconds after
/// `from` up to and including `to` (a timeline's second `t` covers the time
/// from t-1 to t), and how many finished.
pub fn success_between(timeline: &[TimelineEntry], from: u64, to: u64) -> (Option<f64>, u64) {
    let (ok, all) = timeline
        .iter()
        .filter(|s| s.t > from && s.t <= to)
        .fold((0, 0), |(ok, all), s| (ok + s.ok, all + s.requests));
    let rate = (all > 0).then(|| ok as f64 / all as f64);
    (rate, all)
}

/// The verdict: a part is a single point of failure when, after the window,
/// requests succeed less than `threshold` times as often as they did before
/// the crash, or when nothing finished at all.
pub fn is_spof(before: Option<f64>, after: Option<f64>, threshold: f64) -> bool {
    let before = before.unwrap_or(1.0);
    after.is_none_or(|a| a < threshold * before)
}

fn service_of(c: &ContainerInfo) -> Option<String> {
    c.label(labels::SERVICE).map(str::to_string)
}

/// Waits until every part runs and is healthy again (or `limit`).
async fn settle(f: &Faults<'_>, parts: &[Part], limit: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let all = crate::up::containers(f.rt, f.lab).await?;
        let ready = parts.iter().all(|p| {
            all.iter().any(|c| {
                c.name == p.container
                    && c.state == State::Running
                    && matches!(c.health, Health::Healthy | Health::None)
            })
        });
        if ready || tokio::time::Instant::now() >= deadline {
            // A few more seconds for the balancer's rise checks.
            tokio::time::sleep(Duration::from_secs(3)).await;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Crashes one part under load and measures what users get afterwards.
async fn probe_one(
    f: &Faults<'_>,
    base_url: &str,
    s: &ProbeSettings,
    part: &Part,
) -> Result<PartResult> {
    let total = s.before_s + s.window_s + s.measure_s;
    let args = crate::load::LoadPlan {
        scenario: crate::load::Scenario::Mixed,
        rate: Some(s.rate),
        duration: Duration::from_secs(total),
        timeout: Duration::from_secs(2),
        live: crate::load::LiveView::Off,
        ..crate::load::LoadPlan::default()
    };
    let base = base_url.to_string();
    let load = tokio::spawn(async move {
        crate::load::run_until(&args, &base, CancellationToken::new()).await
    });
    tokio::time::sleep(Duration::from_secs(s.before_s)).await;
    let crashed = f.crash(&part.name).await;
    let report = load
        .await
        .map_err(|e| crate::error::LabError::LoadAborted(e.to_string()))??;
    f.heal(&part.name).await?;
    crashed?;
    let from = s.before_s + s.window_s;
    let (success_before, _) = success_between(&report.timeline, 0, s.before_s);
    let (success_after, requests_after) =
        success_between(&report.timeline, from, from + s.measure_s);
    Ok(PartResult {
        service: part.name.clone(),
        role: part.role.clone(),
        duties: part.duties.clone(),
        success_before,
        success_after,
        requests_after,
        spof: is_spof(success_before, success_after, s.threshold),
    })
}

/// Probes the given parts in turn, each crashed and started again, the
/// lab settled before each. It neither heals everything afterwards nor
/// listens for Ctrl-C: the caller does.
pub async fn probe_parts(
    f: &Faults<'_>,
    entry: &Entry,
    parts: &[Part],
    s: &ProbeSettings,
    results: &mut Vec<PartResult>,
) -> Result<()> {
    for part in parts {
        settle(f, parts, Duration::from_secs(90)).await?;
        let base = match entry {
            Entry::Url(u) => u.clone(),
            // Asked each time: a restarted balancer is the same address.
            Entry::Lab => {
                let now = crate::up::containers(f.rt, f.lab).await?;
                crate::up::entrypoint(&now)
                    .ok_or_else(|| crate::naming::NameError::NoLab(f.lab.to_string()))?
            }
        };
        results.push(probe_one(f, &base, s, part).await?);
    }
    Ok(())
}

/// Probes every part of the running lab in turn, healing as it goes and
/// everything at the end.
pub async fn probe(f: &Faults<'_>, s: &ProbeSettings) -> Result<SpofReport> {
    let all = crate::up::containers(f.rt, f.lab).await?;
    if all.is_empty() {
        return Err(crate::naming::NameError::NoLab(f.lab.to_string()).into());
    }
    let mut parts: Vec<Part> = all.iter().filter_map(Part::of).collect();
    parts.sort_by_key(|p| crate::naming::natural_key(&p.name));
    let mut results = Vec::new();
    let stopped = tokio::select! {
        r = probe_parts(f, &Entry::Lab, &parts, s, &mut results) => r.err().map(|e| e.to_string()),
        _ = tokio::signal::ctrl_c() => Some("interrupted (Ctrl-C)".to_string()),
    };
    f.heal_all().await?;
    let spofs = results
        .iter()
        .filter(|p| p.spof)
        .map(|p| p.service.clone())
        .collect();
    Ok(SpofReport {
        lab: f.lab.to_string(),
        settings: s.clone(),
        parts: results,
        spofs,
        stopped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn second(t: u64, ok: u64, requests: u64) -> TimelineEntry {
        TimelineEntry {
            t,
            requests,
            ok,
            errors: requests - ok,
            session_losses: 0,
            stale_reads: 0,
            errors_by_kind: Default::default(),
            p50_ms: 0.0,
            p99_ms: 0.0,
            max_ms: 0.0,
            late: 0,
            per_server: Default::default(),
        }
    }

    fn container(service: &str, role: &str) -> ContainerInfo {
        ContainerInfo {
            id: service.into(),
            name: format!("lab-{service}"),
            labels: [
                (labels::SERVICE.to_string(), service.to_string()),
                (labels::ROLE.to_string(), role.to_string()),
            ]
            .into(),
            state: State::Running,
            health: Health::Healthy,
            health_test: Vec::new(),
            ports: Default::default(),
            networks: Vec::new(),
            cpus: None,
            memory: None,
            cpuset: None,
        }
    }

    #[test]
    fn the_edge_is_not_part_of_the_site() {
        assert_eq!(Part::of(&container("edge", "edge")), None);
        let lb = Part::of(&container("lb-1", "lb")).unwrap();
        assert_eq!(
            (lb.name.as_str(), lb.duties.clone()),
            ("lb-1", vec![Duty::Lb])
        );
        assert_eq!(lb.container, "lab-lb-1");
        let db = Part::of(&container("db-2", "database")).unwrap();
        assert_eq!(db.duties, vec![Duty::Db]);
        // Containers of ours without a role (a lesson's own machine) are
        // named by the lesson, not found here.
        let mut other = container("box", "x");
        other.labels.remove(labels::ROLE);
        assert_eq!(Part::of(&other), None);
    }

    #[test]
    fn only_the_seconds_after_the_window_count() {
        // Seconds 1-3 healthy, 4-10 broken, 11-13 recovered.
        let mut tl: Vec<TimelineEntry> = (1..=3).map(|t| second(t, 100, 100)).collect();
        tl.extend((4..=10).map(|t| second(t, 0, 50)));
        tl.extend((11..=13).map(|t| second(t, 99, 100)));
        let (rate, n) = success_between(&tl, 10, 13);
        assert_eq!(n, 300);
        assert!((rate.unwrap() - 0.99).abs() < 1e-9);
        let (before, _) = success_between(&tl, 0, 3);
        assert!(!is_spof(before, rate, 0.9), "recovered after the window");
        let (rate, _) = success_between(&tl, 3, 10);
        assert!(is_spof(before, rate, 0.9), "still broken inside the window");
    }

    #[test]
    fn a_site_that_answers_nothing_after_the_window_has_a_spof() {
        let tl: Vec<TimelineEntry> = (1..=3).map(|t| second(t, 100, 100)).collect();
        let (rate, n) = success_between(&tl, 3, 8);
        assert_eq!((rate, n), (None, 0));
        assert!(is_spof(Some(1.0), rate, 0.9));
    }

    #[test]
    fn a_partial_outage_below_the_threshold_is_a_spof() {
        // Deposits fail (a third of the mix), reads go on: 67% succeed.
        let tl: Vec<TimelineEntry> = (1..=5).map(|t| second(t, 67, 100)).collect();
        let (rate, _) = success_between(&tl, 0, 5);
        assert!(is_spof(Some(1.0), rate, 0.9));
        assert!(!is_spof(Some(1.0), rate, 0.5));
    }

    #[test]
    fn the_baseline_is_what_the_lab_did_before_the_crash() {
        // Sessions in memory: 70% succeed before and after a server's loss.
        assert!(!is_spof(Some(0.7), Some(0.68), 0.9));
        // Deposits stop on top of that: 45% is well under 90% of 70%.
        assert!(is_spof(Some(0.7), Some(0.45), 0.9));
    }
}
