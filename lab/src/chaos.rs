//! Chaos: random faults on a schedule while users keep using the site.
//!
//! A lesson breaks one thing on purpose and watches what follows. Real
//! systems break in an order nobody chose, so `lab chaos` draws faults at
//! random (crash, pause, partition, a slow, hung or reset link, replication
//! lag), one at a time, each on a service that can suffer it, holds it a few
//! seconds and heals it, while the load driver plays users and its checkers
//! count what those users lose: failed requests, lost sessions, stale reads,
//! lost writes.
//!
//! Two promises, as in Jepsen's nemesis schedules and Chaos Toolkit's
//! rollbacks:
//!
//! - **Replayable.** The schedule is a pure function of the seed, the
//!   duration, the faults asked for and the lab's services: the same seed on
//!   the same lab replays the same faults at the same moments. The seed is
//!   always reported, so an interesting run can be run again.
//! - **Always healed.** Whatever ends the run (its end, Ctrl-C, an error),
//!   every fault in the lab is healed before the command returns, and the
//!   report says whether anything was still broken at that point.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::faults::{Break, Faults, Slow};
use crate::roles::{self, FaultKind};
use crate::runtime::{labels, ContainerInfo};
use crate::topology::Role;

/// A fault `lab chaos` can draw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ChaosFault {
    /// SIGKILL, then start again.
    Crash,
    /// Freeze the process, then resume it.
    Pause,
    /// Cut the service off the lab network, then reconnect it.
    Partition,
    /// 200 ms more on every byte of its link (its fault proxy).
    Slow,
    /// Its link accepts and lets nothing through (its fault proxy).
    Blackhole,
    /// Its link refuses and cuts connections (its fault proxy).
    Reset,
    /// A replica applies the primary's changes 2 s late.
    Lag,
}

impl ChaosFault {
    pub const ALL: [ChaosFault; 7] = [
        ChaosFault::Crash,
        ChaosFault::Pause,
        ChaosFault::Partition,
        ChaosFault::Slow,
        ChaosFault::Blackhole,
        ChaosFault::Reset,
        ChaosFault::Lag,
    ];

    /// The delay `slow` adds.
    pub const SLOW: Duration = Duration::from_millis(200);
    /// The lag `lag` sets.
    pub const LAG: Duration = Duration::from_secs(2);

    fn kind(self) -> FaultKind {
        match self {
            ChaosFault::Crash => FaultKind::Crash,
            ChaosFault::Pause => FaultKind::Pause,
            ChaosFault::Partition => FaultKind::Partition,
            ChaosFault::Slow | ChaosFault::Blackhole | ChaosFault::Reset => FaultKind::Slow,
            ChaosFault::Lag => FaultKind::Lag,
        }
    }

    /// Whether it acts through the service's fault proxy.
    fn needs_proxy(self) -> bool {
        matches!(
            self,
            ChaosFault::Slow | ChaosFault::Blackhole | ChaosFault::Reset
        )
    }
}

/// A service as the schedule sees it: its name and the faults it can take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Victim {
    pub service: String,
    pub faults: Vec<ChaosFault>,
}

/// The lab's services that can take at least one of `wanted`, sorted by
/// name so the schedule does not depend on Docker's listing order.
pub fn victims(containers: &[ContainerInfo], wanted: &[ChaosFault]) -> Vec<Victim> {
    let mut out: Vec<Victim> = containers
        .iter()
        .filter_map(|c| {
            let service = c.label(labels::SERVICE)?.to_string();
            let role = c.label(labels::ROLE).and_then(Role::parse)?;
            let has_proxy = c.ports.contains_key(&roles::proxy::ADMIN_PORT);
            let faults: Vec<ChaosFault> = wanted
                .iter()
                .copied()
                .filter(|f| roles::kind(role).accepts(f.kind()))
                .filter(|f| !f.needs_proxy() || has_proxy)
                .collect();
            (!faults.is_empty()).then_some(Victim { service, faults })
        })
        .collect();
    out.sort_by(|a, b| a.service.cmp(&b.service));
    out
}

/// How faults are spread over a run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pace {
    /// Mean quiet time before each fault.
    pub gap: Duration,
    /// Mean time a fault is held before it is healed.
    pub hold: Duration,
    /// Quiet time kept at the end, so the last recovery is measured too.
    pub cooldown: Duration,
}

impl Default for Pace {
    fn default() -> Pace {
        Pace {
            gap: Duration::from_secs(5),
            hold: Duration::from_secs(5),
            cooldown: Duration::from_secs(5),
        }
    }
}

/// One fault of the schedule.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Step {
    /// Seconds from the start of the run.
    pub at_s: f64,
    pub fault: ChaosFault,
    pub service: String,
    /// Seconds the fault is held before it is healed.
    pub hold_s: f64,
}

/// The schedule: one fault at a time, each held then healed, drawn from
/// `seed` alone. Each gap and hold is drawn between half and one and a half
/// times its mean; a fault that would still be held within `cooldown` of
/// the end is not scheduled.
pub fn schedule(seed: u64, duration: Duration, victims: &[Victim], pace: Pace) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut steps = Vec::new();
    if victims.is_empty() {
        return steps;
    }
    let end = duration.saturating_sub(pace.cooldown).as_secs_f64();
    let around = |rng: &mut StdRng, mean: Duration| {
        let m = mean.as_secs_f64();
        if m <= 0.0 {
            0.0
        } else {
            rng.random_range(m * 0.5..=m * 1.5)
        }
    };
    let mut t = 0.0;
    loop {
        t += around(&mut rng, pace.gap);
        let hold = around(&mut rng, pace.hold).max(0.5);
        let victim = &victims[rng.random_range(0..victims.len())];
        let fault = victim.faults[rng.random_range(0..victim.faults.len())];
        if t + hold > end {
            break;
        }
        // Tenths of a second: what a person reads, and what a replay needs.
        let round = |x: f64| (x * 10.0).round() / 10.0;
        steps.push(Step {
            at_s: round(t),
            fault,
            service: victim.service.clone(),
            hold_s: round(hold),
        });
        t += hold;
    }
    steps
}

/// What happened to one step when it ran.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "result")]
pub enum Applied {
    /// Applied, then healed at `healed_s`.
    Healed { healed_s: f64 },
    /// Applied, and the run ended before its own heal (the final heal
    /// mended it).
    Cut,
    /// The fault could not be applied (the reason, in one line).
    Failed { error: String },
}

/// One line of the fault timeline.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    #[serde(flatten)]
    pub step: Step,
    #[serde(flatten)]
    pub applied: Applied,
}

/// What `lab chaos` did and what the users went through.
#[derive(Debug, Serialize)]
pub struct ChaosReport {
    pub seed: u64,
    pub duration_s: f64,
    pub faults: Vec<ChaosFault>,
    pub timeline: Vec<Event>,
    /// Services the final heal still found broken (none, when every step
    /// healed its own fault).
    pub healed_at_end: Vec<String>,
    /// Why the run stopped early, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    pub load: crate::load::Report,
}

impl ChaosReport {
    pub fn render_text(&self) -> String {
        let mut out = format!(
            "chaos: seed {} ({} faults in {:.0} s; replay with --seed {})\n",
            self.seed,
            self.timeline.len(),
            self.duration_s,
            self.seed
        );
        for e in &self.timeline {
            let what = match &e.applied {
                Applied::Healed { healed_s } => format!("healed at {healed_s:>5.1} s"),
                Applied::Cut => "healed at the end".to_string(),
                Applied::Failed { error } => format!("not applied: {error}"),
            };
            out.push_str(&format!(
                "  {:>5.1} s  {:<9} {:<14} {what}\n",
                e.step.at_s,
                format!("{:?}", e.step.fault).to_lowercase(),
                e.step.service
            ));
        }
        if let Some(why) = &self.stopped {
            out.push_str(&format!("stopped early: {why}\n"));
        }
        if self.healed_at_end.is_empty() {
            out.push_str("every fault was healed\n");
        } else {
            out.push_str(&format!(
                "the final heal mended: {}\n",
                self.healed_at_end.join(", ")
            ));
        }
        out.push('\n');
        out.push_str(&self.load.render_text());
        out
    }
}

/// What `lab chaos` is asked to do.
#[derive(Clone, Debug)]
pub struct ChaosPlan {
    pub duration: Duration,
    pub faults: Vec<ChaosFault>,
    pub seed: u64,
    pub pace: Pace,
    pub load: crate::load::LoadPlan,
}

/// Applies one fault.
async fn apply(f: &Faults<'_>, step: &Step) -> Result<()> {
    let name = step.service.as_str();
    let direction = lab_contract::faultproxy::Direction::Both;
    match step.fault {
        ChaosFault::Crash => f.crash(name).await.map(drop),
        ChaosFault::Pause => f.pause(name).await.map(drop),
        ChaosFault::Partition => f.partition(name).await.map(drop),
        ChaosFault::Slow => f
            .slow(
                name,
                &Slow {
                    latency: ChaosFault::SLOW,
                    ..Slow::default()
                },
            )
            .await
            .map(drop),
        ChaosFault::Blackhole => f
            .break_link(name, Break::Blackhole, None, direction)
            .await
            .map(drop),
        ChaosFault::Reset => f
            .break_link(name, Break::Reset, None, direction)
            .await
            .map(drop),
        ChaosFault::Lag => f.lag(name, Some(ChaosFault::LAG)).await.map(drop),
    }
}

/// Runs the schedule against the lab while the load runs, then heals
/// everything, whatever happened.
pub async fn run(
    f: &Faults<'_>,
    base_url: &str,
    plan: &ChaosPlan,
    steps: Vec<Step>,
) -> Result<ChaosReport> {
    let load_cancel = CancellationToken::new();
    let mut load_args = plan.load.clone();
    // The load outlives the schedule by nothing: it stops with it.
    load_args.duration = plan.duration;
    let base = base_url.to_string();
    let cancel = load_cancel.clone();
    let load = tokio::spawn(async move { crate::load::run_until(&load_args, &base, cancel).await });

    let start = tokio::time::Instant::now();
    let mut timeline = Vec::new();
    let stopped = tokio::select! {
        r = drive(f, start, &steps, &mut timeline) => r.err().map(|e| e.to_string()),
        _ = tokio::signal::ctrl_c() => Some("interrupted (Ctrl-C)".to_string()),
    };
    let healed = f.heal_all().await;
    if stopped.is_some() {
        load_cancel.cancel();
    }
    let load = load
        .await
        .map_err(|e| crate::error::LabError::LoadAborted(e.to_string()))??;
    let healed_at_end = healed?
        .into_iter()
        .map(|h| h.service)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    Ok(ChaosReport {
        seed: plan.seed,
        duration_s: start.elapsed().as_secs_f64(),
        faults: plan.faults.clone(),
        timeline,
        healed_at_end,
        stopped,
        load,
    })
}

/// Applies and heals each step on time. A step that cannot be applied is
/// recorded and the schedule goes on; a heal that fails stops the run (the
/// final heal then tries again).
async fn drive(
    f: &Faults<'_>,
    start: tokio::time::Instant,
    steps: &[Step],
    timeline: &mut Vec<Event>,
) -> Result<()> {
    for step in steps {
        tokio::time::sleep_until(start + Duration::from_secs_f64(step.at_s)).await;
        if let Err(e) = apply(f, step).await {
            timeline.push(Event {
                step: step.clone(),
                applied: Applied::Failed {
                    error: e.to_string(),
                },
            });
            continue;
        }
        // `Cut` until its own heal: if the run stops while the fault is
        // held, that is what it was.
        timeline.push(Event {
            step: step.clone(),
            applied: Applied::Cut,
        });
        tokio::time::sleep_until(start + Duration::from_secs_f64(step.at_s + step.hold_s)).await;
        f.heal(&step.service).await?;
        if let Some(last) = timeline.last_mut() {
            last.applied = Applied::Healed {
                healed_s: (start.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            };
        }
    }
    Ok(())
}

/// How many faults of each kind a schedule holds (for the docs and tests).
pub fn tally(steps: &[Step]) -> BTreeMap<ChaosFault, usize> {
    let mut m = BTreeMap::new();
    for s in steps {
        *m.entry(s.fault).or_insert(0) += 1;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab() -> Vec<Victim> {
        vec![
            Victim {
                service: "db-2".into(),
                faults: ChaosFault::ALL.to_vec(),
            },
            Victim {
                service: "redis".into(),
                faults: vec![ChaosFault::Crash, ChaosFault::Pause, ChaosFault::Reset],
            },
            Victim {
                service: "server-1".into(),
                faults: vec![ChaosFault::Crash, ChaosFault::Slow],
            },
        ]
    }

    #[test]
    fn the_same_seed_replays_the_same_schedule() {
        let d = Duration::from_secs(120);
        let a = schedule(7, d, &lab(), Pace::default());
        assert_eq!(a, schedule(7, d, &lab(), Pace::default()));
        assert!(a.len() >= 5, "{a:?}");
        assert_ne!(a, schedule(8, d, &lab(), Pace::default()));
    }

    #[test]
    fn faults_never_overlap_and_end_before_the_cooldown() {
        let pace = Pace::default();
        for seed in 0..50 {
            let d = Duration::from_secs(60);
            let s = schedule(seed, d, &lab(), pace);
            for w in s.windows(2) {
                assert!(w[0].at_s + w[0].hold_s <= w[1].at_s + 1e-9, "{w:?}");
            }
            if let Some(last) = s.last() {
                assert!(last.at_s + last.hold_s <= 55.0 + 0.05, "{last:?}");
            }
        }
    }

    #[test]
    fn each_fault_lands_on_a_service_that_can_take_it() {
        let v = lab();
        let s = schedule(3, Duration::from_secs(600), &v, Pace::default());
        for step in &s {
            let victim = v.iter().find(|x| x.service == step.service).unwrap();
            assert!(victim.faults.contains(&step.fault), "{step:?}");
        }
        // Over ten minutes every kind asked for shows up.
        assert_eq!(tally(&s).len(), ChaosFault::ALL.len(), "{:?}", tally(&s));
    }

    #[test]
    fn a_run_too_short_for_one_fault_has_none() {
        assert!(schedule(1, Duration::from_secs(6), &lab(), Pace::default()).is_empty());
        assert!(schedule(1, Duration::from_secs(60), &[], Pace::default()).is_empty());
    }
}
