//! Breaking the lab on purpose, and mending it.
//!
//! Each fault is one thing that happens to real systems: a machine dies
//! (`crash`, SIGKILL), a process hangs (`pause`: connections open, no
//! answers), a network cable is pulled (`partition`), a link is slow or
//! lossy (`slow`, the kernel's netem), a replica falls behind (`lag`). Every
//! fault is state that Docker or the service itself holds — a container's
//! state, its networks, a queueing discipline, a PostgreSQL setting — so
//! `lab status` reads it back and `lab heal` undoes it, with no file of ours
//! in between. Applying a fault twice is safe: the second time says so.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use thiserror::Error;

use crate::error::{LabError, Result};
use crate::images::Image;
use crate::lb_admin::LbConnector;
use crate::naming;
use crate::primary::DbRole;
use crate::roles::{self, names, FaultKind};
use crate::runtime::{labels, ContainerInfo, Runtime, State};
use crate::status::pg_duration_ms;
use crate::topology::{HealthChecks, Replication, Role};
use crate::up::containers;

#[derive(Error, Debug, PartialEq)]
pub enum FaultError {
    #[error("{verb} applies to {what}; {name} is {role_article} {role}")]
    WrongRole {
        verb: &'static str,
        what: &'static str,
        name: String,
        role_article: &'static str,
        role: Role,
    },
    #[error("{name} is not running ({state}): start it first with `lab start {name}`")]
    NotRunning { name: String, state: State },
    #[error("network emulation (tc netem) is not available here: {0}; drop --netem to use the lab's fault proxy, or load the kernel module with `modprobe sch_netem`")]
    NetemUnavailable(String),
    #[error("invalid {what} {value:?}: {hint}")]
    Invalid {
        what: &'static str,
        value: String,
        hint: &'static str,
    },
    #[error("{name} has no fault proxy in front of it (the balancer is the lab's entry point): slow a server, redis or a database node, or use --netem")]
    NoProxy { name: String },
    #[error("{what} failed: {detail}")]
    Failed { what: String, detail: String },
}

/// Network emulation applied to one service.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Netem {
    pub latency_ms: f64,
    pub jitter_ms: f64,
    pub loss_pct: f64,
}

/// A time as `tc` prints it (`200ms`, `1s`, `500us`, `1.5ms`) in ms.
fn tc_time_ms(s: &str) -> Option<f64> {
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        _ => return None,
    })
}

/// Reads `tc qdisc show` output: the netem line, if any.
pub fn parse_netem(out: &str) -> Option<Netem> {
    let line = out.lines().find(|l| l.contains("netem"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let mut n = Netem {
        latency_ms: 0.0,
        jitter_ms: 0.0,
        loss_pct: 0.0,
    };
    let mut i = 0;
    while i < words.len() {
        match words[i] {
            "delay" => {
                n.latency_ms = words.get(i + 1).and_then(|w| tc_time_ms(w)).unwrap_or(0.0);
                if let Some(j) = words.get(i + 2).and_then(|w| tc_time_ms(w)) {
                    n.jitter_ms = j;
                    i += 1;
                }
                i += 1;
            }
            "loss" => {
                n.loss_pct = words
                    .get(i + 1)
                    .and_then(|w| w.trim_end_matches('%').parse().ok())
                    .unwrap_or(0.0);
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    Some(n)
}

/// The netem settings of a running service, read from its own namespace.
pub async fn netem_of(rt: &dyn Runtime, container: &str) -> Option<Netem> {
    let out = rt
        .exec(container, &["tc", "qdisc", "show", "dev", "eth0"])
        .await
        .ok()?;
    parse_netem(&out.stdout)
}

fn role_of(c: &ContainerInfo) -> Role {
    c.label(labels::ROLE)
        .and_then(Role::parse)
        .unwrap_or(Role::Server)
}

fn service_of(c: &ContainerInfo) -> String {
    c.label(labels::SERVICE).unwrap_or(&c.name).to_string()
}

/// What happened, typed: the web dashboard shows it its own way, the CLI
/// prints [`Outcome`]'s `Display`. Nothing ever reads the text back.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    Crashed,
    AlreadyDown {
        state: State,
    },
    Stopped,
    AlreadyStopped {
        state: State,
    },
    Started,
    AlreadyRunning,
    /// `start` on a paused service: it needs `resume`.
    PausedNotStopped,
    Restarted,
    Paused,
    AlreadyPaused,
    Resumed,
    NotPaused {
        state: State,
    },
    Partitioned,
    AlreadyPartitioned,
    Slowed {
        latency_ms: u64,
        jitter_ms: Option<u64>,
        loss_pct: Option<f64>,
        bandwidth_bps: Option<u64>,
        /// A close passed on this late (proxy only).
        #[serde(skip_serializing_if = "Option::is_none")]
        slow_close_ms: Option<u64>,
        /// The proxy link slowed; None for the kernel's netem.
        link: Option<String>,
    },
    /// A link of the service's fault proxy hangs or refuses connections.
    LinkBroken {
        link: String,
        how: Break,
    },
    Lagging {
        delay_ms: u64,
    },
    LagEnded,
    Replication {
        mode: Replication,
        replicas: Vec<String>,
    },
    Resized {
        cpus: Option<f64>,
        memory: Option<String>,
        cpuset: Option<String>,
    },
    /// The primary moved (`lab failover`, `lab promote`).
    Switched(crate::failover::Switched),
    /// `lab promote` of the node that is primary already.
    AlreadyPrimary,
}

/// The outcome of one fault command.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The service it acted on (empty for lab-wide changes).
    pub service: String,
    #[serde(flatten)]
    pub event: Event,
    /// What a student should look for now; teaching text, never parsed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch: Option<String>,
}

impl Outcome {
    fn new(service: &str, event: Event) -> Outcome {
        Outcome {
            service: service.to_string(),
            event,
            watch: None,
        }
    }

    fn watch(mut self, text: String) -> Outcome {
        self.watch = Some(text);
        self
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let svc = &self.service;
        let watch = self.watch.as_deref().unwrap_or_default();
        match &self.event {
            Event::Crashed => writeln!(
                f,
                "{svc} crashed (SIGKILL: no clean shutdown, open connections cut).\nWatch: {watch}\nBring it back with `lab start {svc}`."
            ),
            Event::AlreadyDown { state } => writeln!(
                f,
                "{svc} is already down ({state}); `lab start {svc}` brings it back."
            ),
            Event::Stopped => writeln!(
                f,
                "{svc} stopped gracefully (SIGTERM: it finished what it was doing first).\nWatch: {watch}"
            ),
            Event::AlreadyStopped { state } => {
                writeln!(f, "{svc} is already stopped ({state}).")
            }
            Event::Started => writeln!(f, "{svc} started.\nWatch: {watch}"),
            Event::AlreadyRunning => writeln!(f, "{svc} is already running."),
            Event::PausedNotStopped => writeln!(
                f,
                "{svc} is paused, not stopped: `lab resume {svc}`."
            ),
            Event::Restarted => writeln!(
                f,
                "{svc} restarted (SIGTERM, then started again).\nWatch: a short gap while it starts; with memory sessions its users are logged out."
            ),
            Event::Paused => writeln!(
                f,
                "{svc} is paused: its process is frozen, connections to it open but nothing answers.\nWatch: {watch} Resume with `lab resume {svc}`."
            ),
            Event::AlreadyPaused => writeln!(f, "{svc} is already paused."),
            Event::Resumed => writeln!(f, "{svc} resumed."),
            Event::NotPaused { state } => writeln!(f, "{svc} is not paused ({state})."),
            Event::Partitioned => writeln!(
                f,
                "{svc} is cut off the lab network: it runs, but nothing can reach it and it reaches nothing.\nWatch: {watch}\nUndo with `lab heal {svc}`."
            ),
            Event::AlreadyPartitioned => {
                writeln!(f, "{svc} is already cut off the lab network.")
            }
            Event::LinkBroken { link, how } => writeln!(
                f,
                "{svc}'s {link} link now {} (its fault proxy).\nWatch: {watch} Undo with `lab heal {svc}`.",
                match how {
                    Break::Blackhole => "accepts connections and lets nothing through",
                    Break::Reset => "refuses new connections and has cut the open ones",
                }
            ),
            Event::Slowed {
                latency_ms,
                jitter_ms,
                loss_pct,
                bandwidth_bps,
                slow_close_ms,
                link,
            } => {
                let jitter = jitter_ms.map(|j| format!(" ± {j} ms")).unwrap_or_default();
                match link {
                    None => writeln!(
                        f,
                        "{svc} now sends every packet {latency_ms} ms{jitter} late{} (tc netem).\nWatch: {watch} Undo with `lab heal {svc}`.",
                        loss_pct
                            .map(|l| format!(", and drops {l}% of them"))
                            .unwrap_or_default()
                    ),
                    Some(link) => {
                        let mut what = Vec::new();
                        if *latency_ms > 0 {
                            what.push(format!("delays every byte {latency_ms} ms{jitter}"));
                        }
                        if let Some(b) = bandwidth_bps {
                            what.push(format!("carries at most {}", describe_rate(*b)));
                        }
                        if let Some(c) = slow_close_ms {
                            what.push(format!("passes each close on {c} ms late"));
                        }
                        writeln!(
                            f,
                            "{svc}'s {link} link now {} (its fault proxy).\nWatch: {watch} Undo with `lab heal {svc}`.",
                            what.join(" and ")
                        )
                    }
                }
            }

            Event::Lagging { delay_ms } => writeln!(
                f,
                "{svc} now applies each change {} after the primary committed it.\nWatch: {watch} End it with `lab lag {svc} --off`.",
                humantime::format_duration(Duration::from_millis(*delay_ms))
            ),
            Event::LagEnded => writeln!(
                f,
                "{svc} applies changes as soon as they arrive again."
            ),
            Event::Replication {
                mode: Replication::Sync,
                replicas,
            } => writeln!(
                f,
                "replication is now synchronous: a commit returns only once {} applied it.\nWatch: {watch}",
                replicas.join(", ")
            ),
            Event::Replication { .. } => writeln!(
                f,
                "replication is now asynchronous: a commit returns as soon as the primary has it.\nWatch: {watch}"
            ),
            Event::Switched(sw) => writeln!(
                f,
                "{} is the primary now{} ({:.1} s until it took writes); the old primary follows it as a replica.\nWatch: {watch}",
                sw.to,
                sw.from
                    .as_ref()
                    .map(|p| format!(", in place of {p}"))
                    .unwrap_or_default(),
                sw.seconds
            ),
            Event::AlreadyPrimary => writeln!(f, "{svc} is the primary already."),
            Event::Resized {
                cpus,
                memory,
                cpuset,
            } => writeln!(
                f,
                "{svc} now has {}{}{} (changed live, no restart).\nWatch: {watch}",
                cpus.map(|c| format!("{c} CPUs"))
                    .unwrap_or_else(|| "its CPUs".into()),
                memory
                    .as_ref()
                    .map(|m| format!(" and {m} of memory"))
                    .unwrap_or_default(),
                cpuset
                    .as_ref()
                    .map(|s| format!(", pinned to host CPU(s) {s}"))
                    .unwrap_or_default()
            ),
        }
    }
}

/// A rate in bytes per second, the way people say it.
pub fn describe_rate(bps: u64) -> String {
    let bits = bps * 8;
    if bits >= 1_000_000 {
        format!("{:.1} Mbit/s", bits as f64 / 1e6)
    } else {
        format!("{:.0} kbit/s", bits as f64 / 1e3)
    }
}

/// A proxy link's fault in a few words, for `lab status`.
pub fn describe_link_fault(f: &lab_contract::faultproxy::Fault) -> String {
    if f.reset {
        return "RESET".into();
    }
    let mut parts = Vec::new();
    if f.blackhole {
        parts.push("BLACKHOLE".to_string());
    }
    if f.latency_ms > 0 {
        parts.push(if f.jitter_ms > 0 {
            format!("SLOW +{}ms ±{}ms", f.latency_ms, f.jitter_ms)
        } else {
            format!("SLOW +{}ms", f.latency_ms)
        });
    }
    if let Some(b) = f.bandwidth_bps {
        parts.push(format!("≤ {}", describe_rate(b)));
    }
    if f.slow_close_ms > 0 {
        parts.push(format!("close +{}ms", f.slow_close_ms));
    }
    format!("{} ({})", parts.join(" "), f.direction)
}

/// What `lab slow` asks for.
#[derive(Debug, Clone, Default)]
pub struct Slow {
    pub latency: Duration,
    pub jitter: Option<Duration>,
    /// Bytes per second (proxy only).
    pub bandwidth_bps: Option<u64>,
    /// Share of packets dropped (netem only).
    pub loss: Option<f64>,
    /// The proxy link; default the one in front of the service's port.
    pub link: Option<String>,
    pub direction: lab_contract::faultproxy::Direction,
    /// Use the kernel's tc netem instead of the proxy.
    pub netem: bool,
    /// Pass a connection's close on this much later (proxy only).
    pub slow_close: Option<Duration>,
}

/// A link fault that is not a delay.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Break {
    /// A hung link: connections are accepted, nothing gets through.
    Blackhole,
    /// New connections are refused, open ones cut with a TCP reset.
    Reset,
}

/// `1mbit`, `500kbit`, `2MB`, `64kB` (per second) to bytes per second.
pub fn parse_rate(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.trim_end_matches("/s").trim_end_matches("ps");
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: f64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a rate such as 1mbit or 500kbit"))?;
    let bytes = match unit {
        "bit" => n / 8.0,
        "kbit" => n * 1e3 / 8.0,
        "mbit" => n * 1e6 / 8.0,
        "gbit" => n * 1e9 / 8.0,
        "b" | "" => n,
        "kb" => n * 1e3,
        "mb" => n * 1e6,
        "gb" => n * 1e9,
        _ => return Err(format!("{s:?} is not a rate such as 1mbit or 500kbit")),
    };
    if bytes < 1.0 {
        return Err(format!("{s:?} is below one byte per second"));
    }
    Ok(bytes as u64)
}

/// One fault undone by `heal`.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Mended {
    Reconnected,
    Resumed,
    Started,
    SlowRemoved,
    /// Faults on the links of its proxy.
    LinksHealed,
    LagEnded,
}

/// What `heal` undid on one service.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Healed {
    pub service: String,
    pub mended: Mended,
}

impl std::fmt::Display for Healed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.mended {
            Mended::Reconnected => "reconnected to the lab network",
            Mended::Resumed => "resumed",
            Mended::Started => "started",
            Mended::SlowRemoved => "network delay and loss removed",
            Mended::LinksHealed => "faults on its proxy's links removed",
            Mended::LagEnded => "lag ended",
        };
        write!(f, "{}: {what}", self.service)
    }
}

fn pg_exec_args(sql: &str) -> Vec<String> {
    [
        "psql", "-AtX", "-U", "postgres", "-d", "postgres", "-c", sql,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The actions on a running lab.
pub struct Faults<'a> {
    pub rt: &'a dyn Runtime,
    pub lab: &'a str,
    pub lb: LbConnector,
}

impl Faults<'_> {
    /// A service by name; `primary` is the database node that is primary now.
    async fn find(&self, name: &str) -> Result<ContainerInfo> {
        let all = containers(self.rt, self.lab).await?;
        Ok(crate::primary::find(self.rt, self.lab, &all, name)
            .await?
            .clone())
    }

    /// The health-check knobs the lab runs with: every message about how
    /// long the balancer takes to notice is computed from them.
    async fn health(&self) -> HealthChecks {
        containers(self.rt, self.lab)
            .await
            .ok()
            .and_then(|all| all.iter().find_map(crate::current::made_for))
            .map(|t| t.health)
            .unwrap_or_default()
    }

    /// Asked before the fault: a database node's part decides what breaks.
    async fn after_loss(&self, c: &ContainerInfo) -> String {
        if role_of(c) == Role::Database && c.state == State::Running {
            let part = crate::primary::view_of(self.rt, c).await.role;
            if matches!(part, DbRole::Primary | DbRole::Replica) {
                return roles::database::after_loss_as(&service_of(c), part == DbRole::Primary);
            }
        }
        roles::kind(role_of(c)).after_loss(&service_of(c), &self.health().await)
    }

    /// Refuses a fault the service's role does not take, in one line.
    fn check_role(
        &self,
        c: &ContainerInfo,
        fault: FaultKind,
        verb: &'static str,
        what: &'static str,
    ) -> Result<()> {
        let role = role_of(c);
        if roles::kind(role).accepts(fault) {
            return Ok(());
        }
        Err(FaultError::WrongRole {
            verb,
            what,
            name: service_of(c),
            role_article: if role == Role::Lb { "the" } else { "a" },
            role,
        }
        .into())
    }

    async fn psql(&self, container: &str, sql: &str) -> Result<String> {
        let args = pg_exec_args(sql);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(container, &args).await
    }

    /// A command inside a container that must succeed.
    async fn run(&self, container: &str, args: &[&str]) -> Result<String> {
        let out = self.rt.exec(container, args).await?;
        if out.code != 0 {
            return Err(FaultError::Failed {
                what: format!("{} on {container}", args[0]),
                detail: out.stderr.trim().to_string(),
            }
            .into());
        }
        Ok(out.stdout)
    }

    /// `lab failover`: a planned switchover, done by Patroni.
    pub async fn failover(&self) -> Result<Outcome> {
        let sw = crate::failover::switchover(self.rt, self.lab).await?;
        Ok(Outcome::new(&sw.to.clone(), Event::Switched(sw)).watch(
            "writes paused for a moment and went on on the new primary; the servers found it by themselves. `lab status` shows each node's part and timeline.".into(),
        ))
    }

    /// `lab promote NODE`: a manual failover to that node, done by Patroni.
    pub async fn promote(&self, name: &str) -> Result<Outcome> {
        match crate::failover::promote(self.rt, self.lab, name).await? {
            Some(sw) => Ok(Outcome::new(&sw.to.clone(), Event::Switched(sw)).watch(
                "a node promoted while it was behind the primary loses what it had not received: `lab load --scenario bank` counts those lost writes.".into(),
            )),
            None => {
                let all = containers(self.rt, self.lab).await?;
                let c = crate::primary::find(self.rt, self.lab, &all, name).await?;
                Ok(Outcome::new(&service_of(c), Event::AlreadyPrimary))
            }
        }
    }

    pub async fn crash(&self, name: &str) -> Result<Outcome> {
        let c = self.find(name).await?;
        let svc = service_of(&c);
        match c.state {
            State::Running | State::Paused | State::Restarting => {
                let watch = self.after_loss(&c).await;
                self.rt.kill_container(&c.name, "SIGKILL").await?;
                Ok(Outcome::new(&svc, Event::Crashed).watch(watch))
            }
            state => Ok(Outcome::new(&svc, Event::AlreadyDown { state })),
        }
    }

    pub async fn stop(&self, name: &str) -> Result<Outcome> {
        let c = self.find(name).await?;
        let svc = service_of(&c);
        if !matches!(c.state, State::Running | State::Paused | State::Restarting) {
            return Ok(Outcome::new(&svc, Event::AlreadyStopped { state: c.state }));
        }
        let watch = self.after_loss(&c).await;
        if c.state == State::Paused {
            self.rt.unpause_container(&c.name).await?;
        }
        self.rt
            .stop_container(&c.name, Duration::from_secs(10))
            .await?;
        Ok(Outcome::new(&svc, Event::Stopped).watch(watch))
    }

    pub async fn start(&self, name: &str) -> Result<Outcome> {
        let c = self.find(name).await?;
        let svc = service_of(&c);
        match c.state {
            State::Running => Ok(Outcome::new(&svc, Event::AlreadyRunning)),
            State::Paused => Ok(Outcome::new(&svc, Event::PausedNotStopped)),
            _ => {
                self.rt.start_container(&c.name).await?;
                let h = self.health().await;
                Ok(Outcome::new(&svc, Event::Started).watch(format!(
                    "once its health check passes, the balancer sends it traffic again ({} good checks, about {:.1} s).",
                    h.rise,
                    h.recovery_window().as_secs_f64()
                )))
            }
        }
    }

    pub async fn restart(&self, name: &str) -> Result<Outcome> {
        let c = self.find(name).await?;
        let svc = service_of(&c);
        if c.state == State::Paused {
            self.rt.unpause_container(&c.name).await?;
        }
        self.rt
            .stop_container(&c.name, Duration::from_secs(10))
            .await?;
        self.rt.start_container(&c.name).await?;
        Ok(Outcome::new(&svc, Event::Restarted))
    }

    pub async fn pause(&self, name: &str) -> Result<Outcome> {
        let c = self.find(name).await?;
        let svc = service_of(&c);
        match c.state {
            State::Paused => Ok(Outcome::new(&svc, Event::AlreadyPaused)),
            State::Running => {
                self.rt.pause_container(&c.name).await?;
                let h = self.health().await;
                Ok(Outcome::new(&svc, Event::Paused).watch(format!(
                    "unlike a crash, requests to it do not fail fast — they hang until a timeout; the balancer's checks time out after {} ms each and take it down after {} of them (about {:.1} s).",
                    h.timeout.as_millis(),
                    h.fall,
                    h.hung_window().as_secs_f64()
                )))
            }
            state => Err(FaultError::NotRunning { name: svc, state }.into()),
        }
    }

    pub async fn resume(&self, name: &str) -> Result<Outcome> {
        let c = self.find(name).await?;
        let svc = service_of(&c);
        if c.state != State::Paused {
            return Ok(Outcome::new(&svc, Event::NotPaused { state: c.state }));
        }
        self.rt.unpause_container(&c.name).await?;
        Ok(Outcome::new(&svc, Event::Resumed))
    }

    pub async fn partition(&self, name: &str) -> Result<Outcome> {
        let c = self.find(name).await?;
        let svc = service_of(&c);
        let net = naming::network(self.lab);
        if !c.networks.contains(&net) {
            return Ok(Outcome::new(&svc, Event::AlreadyPartitioned));
        }
        let watch = self.after_loss(&c).await;
        self.rt.disconnect_network(&net, &c.name).await?;
        Ok(Outcome::new(&svc, Event::Partitioned).watch(watch))
    }

    /// A slow link. By default through the service's fault proxy (any
    /// kernel); with `netem`, through the kernel's tc netem, which can also
    /// drop packets.
    pub async fn slow(&self, name: &str, slow: &Slow) -> Result<Outcome> {
        let (c, svc) = self.running(name).await?;
        // A bandwidth limit or a late close alone is a slow link too
        // (through the proxy).
        let proxy_only = slow.bandwidth_bps.is_some() || slow.slow_close.is_some();
        if !(proxy_only && slow.latency.is_zero() && !slow.netem) {
            validate_slow(slow.latency, slow.jitter, slow.loss)?;
        }
        if slow.netem {
            self.netem(&c, slow).await?;
        } else {
            if let Some(l) = slow.loss {
                return Err(FaultError::Invalid {
                    what: "--loss",
                    value: format!("{l}%"),
                    hint: "dropping packets needs the kernel's netem: add --netem",
                }
                .into());
            }
            let link = slow.link.as_deref().unwrap_or(roles::proxy::SERVICE);
            let fault = lab_contract::faultproxy::Fault {
                direction: slow.direction,
                latency_ms: slow.latency.as_millis() as u64,
                jitter_ms: slow.jitter.map_or(0, |j| j.as_millis() as u64),
                bandwidth_bps: slow.bandwidth_bps,
                slow_close_ms: slow.slow_close.map_or(0, |d| d.as_millis() as u64),
                ..Default::default()
            };
            self.proxy(&c)?.set(link, &fault).await?;
        }
        let h = self.health().await;
        Ok(Outcome::new(
            &svc,
            Event::Slowed {
                latency_ms: slow.latency.as_millis() as u64,
                jitter_ms: slow.jitter.map(|j| j.as_millis() as u64),
                loss_pct: slow.loss,
                bandwidth_bps: slow.bandwidth_bps,
                slow_close_ms: slow.slow_close.map(|d| d.as_millis() as u64),
                link: (!slow.netem).then(|| {
                    slow.link
                        .clone()
                        .unwrap_or_else(|| roles::proxy::SERVICE.to_string())
                }),
            },
        )
        .watch(format!(
            "requests served by {svc} take that much longer (twice, for a new connection); the others do not. A server slower than the balancer's health timeout ({} ms) is marked down.",
            h.timeout.as_millis()
        )))
    }

    /// A link that hangs (blackhole) or refuses and cuts connections
    /// (reset), through the service's fault proxy.
    pub async fn break_link(
        &self,
        name: &str,
        how: Break,
        link: Option<&str>,
        direction: lab_contract::faultproxy::Direction,
    ) -> Result<Outcome> {
        let (c, svc) = self.running(name).await?;
        let link = link.unwrap_or(roles::proxy::SERVICE);
        let fault = lab_contract::faultproxy::Fault {
            direction,
            blackhole: how == Break::Blackhole,
            reset: how == Break::Reset,
            ..Default::default()
        };
        self.proxy(&c)?.set(link, &fault).await?;
        let h = self.health().await;
        let watch = match how {
            Break::Blackhole => format!(
                "whoever talks to {svc} waits: each request hangs until its caller gives up. The balancer marks a server down after {} failed checks of {} ms each, about {:.1} s; a database or Redis client waits for its own timeout.",
                h.fall,
                h.timeout.as_millis(),
                h.hung_window().as_secs_f64()
            ),
            Break::Reset => format!(
                "every connection to {svc} fails at once: the balancer's passive check marks a server down on the first reset{}, and clients of a database or Redis see their queries fail and reconnect.",
                if h.passive == crate::topology::Toggle::On { "" } else { " (passive checks are off here: it waits for the active ones)" }
            ),
        };
        Ok(Outcome::new(
            &svc,
            Event::LinkBroken {
                link: link.to_string(),
                how,
            },
        )
        .watch(watch))
    }

    /// The service, refused in one line unless it runs: a link can only be
    /// broken or slowed on a living service.
    async fn running(&self, name: &str) -> Result<(ContainerInfo, String)> {
        let c = self.find(name).await?;
        let svc = service_of(&c);
        if c.state != State::Running {
            return Err(FaultError::NotRunning {
                name: svc,
                state: c.state,
            }
            .into());
        }
        Ok((c, svc))
    }

    /// The admin API of a service's fault proxy.
    fn proxy(&self, c: &ContainerInfo) -> Result<crate::proxy_admin::ProxyAdmin> {
        let svc = service_of(c);
        match c.ports.get(&roles::proxy::ADMIN_PORT) {
            Some(addr) => Ok(crate::proxy_admin::ProxyAdmin::new(&svc, addr)),
            None => Err(FaultError::NoProxy { name: svc }.into()),
        }
    }

    async fn netem(&self, c: &ContainerInfo, slow: &Slow) -> Result<()> {
        let ms = |d: Duration| format!("{}ms", d.as_millis());
        let mut cmd = vec![
            "tc".to_string(),
            "qdisc".into(),
            "replace".into(),
            "dev".into(),
            "eth0".into(),
            "root".into(),
            "netem".into(),
            "delay".into(),
            ms(slow.latency),
        ];
        if let Some(j) = slow.jitter {
            cmd.push(ms(j));
        }
        if let Some(l) = slow.loss {
            cmd.extend(["loss".to_string(), format!("{l}%")]);
        }
        let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
        let l = BTreeMap::from([(labels::LAB.to_string(), self.lab.to_string())]);
        let out = self
            .rt
            .run_in_netns(&c.name, &Image::Base.tag(), &["NET_ADMIN"], &l, &cmd)
            .await?;
        if out.code != 0 {
            let err = format!("{}{}", out.stderr.trim(), out.stdout.trim());
            if err.contains("qdisc")
                || err.contains("No such file")
                || err.contains("not supported")
            {
                return Err(FaultError::NetemUnavailable(err).into());
            }
            return Err(FaultError::Failed {
                what: "tc netem".into(),
                detail: err,
            }
            .into());
        }
        Ok(())
    }

    pub async fn lag(&self, name: &str, delay: Option<Duration>) -> Result<Outcome> {
        let c = self.find(name).await?;
        let svc = service_of(&c);
        self.check_role(
            &c,
            FaultKind::Lag,
            "lag",
            "database nodes that are replicas now",
        )?;
        if c.state != State::Running {
            return Err(FaultError::NotRunning {
                name: svc,
                state: c.state,
            }
            .into());
        }
        if delay.is_some() {
            let role = crate::primary::view_of(self.rt, &c).await.role;
            if role != DbRole::Replica {
                return Err(crate::primary::PrimaryError::NotAReplica {
                    verb: "lag",
                    name: svc,
                    role,
                }
                .into());
            }
        }
        self.set_lag(&c, delay).await
    }

    /// Sets or ends a node's replay delay, whatever its part now (heal ends
    /// the delay of a replica that was promoted since).
    async fn set_lag(&self, c: &ContainerInfo, delay: Option<Duration>) -> Result<Outcome> {
        let svc = service_of(c);
        match delay {
            Some(d) => {
                if d.is_zero() || d > Duration::from_secs(3600) {
                    return Err(FaultError::Invalid {
                        what: "delay",
                        value: humantime::format_duration(d).to_string(),
                        hint: "use a duration between 1ms and 1h, or --off",
                    }
                    .into());
                }
                if roles::database::is_managed(c) {
                    // Patroni writes PostgreSQL's settings itself: the delay
                    // goes into this node's own Patroni file.
                    self.run(
                        &c.name,
                        &[
                            "lab-patroni-config",
                            "set",
                            "recovery_min_apply_delay",
                            &format!("{}ms", d.as_millis()),
                        ],
                    )
                    .await?;
                } else {
                    self.psql(
                        &c.name,
                        &format!(
                            "ALTER SYSTEM SET recovery_min_apply_delay = '{}ms'",
                            d.as_millis()
                        ),
                    )
                    .await?;
                    self.psql(&c.name, "SELECT pg_reload_conf()").await?;
                }
                Ok(Outcome::new(
                    &svc,
                    Event::Lagging {
                        delay_ms: d.as_millis() as u64,
                    },
                )
                .watch("with reads on the replicas, a balance read right after a deposit is stale (lab load --scenario bank counts these); `lab status` shows the replay lag.".into()))
            }
            None => {
                if roles::database::is_managed(c) {
                    self.run(
                        &c.name,
                        &["lab-patroni-config", "unset", "recovery_min_apply_delay"],
                    )
                    .await?;
                } else {
                    self.psql(&c.name, "ALTER SYSTEM RESET recovery_min_apply_delay")
                        .await?;
                    self.psql(&c.name, "SELECT pg_reload_conf()").await?;
                }
                Ok(Outcome::new(&svc, Event::LagEnded))
            }
        }
    }

    /// Switch between asynchronous and synchronous replication, live.
    pub async fn replication(&self, mode: Replication) -> Result<Outcome> {
        let sync = mode == Replication::Sync;
        let all = containers(self.rt, self.lab).await?;
        let primary = crate::primary::find(self.rt, self.lab, &all, names::PRIMARY_ALIAS).await?;
        let replicas: Vec<String> = crate::primary::nodes(&all)
            .into_iter()
            .filter(|c| c.name != primary.name)
            .map(service_of)
            .collect();
        if sync && replicas.is_empty() {
            return Err(LabError::Topology(
                crate::topology::TopologyError::SyncWithoutReplicas,
            ));
        }
        if roles::database::is_managed(primary) {
            // Patroni owns these settings cluster-wide and names the
            // synchronous standby itself.
            let p = crate::failover::manager(&all).await?;
            p.patch_config(&crate::patroni::replication_patch(sync))
                .await?;
            return Ok(Outcome::new("", Event::Replication { mode, replicas }).watch(if sync {
                "no acknowledged write can be lost on a failover, slower writes, and with no replica able to confirm, writes wait.".into()
            } else {
                "fast writes; a failover to a replica that was behind loses the writes it had not received.".into()
            }));
        }
        if sync {
            let names = crate::roles::database::sync_standby_names(&replicas);
            self.psql(
                &primary.name,
                &format!(
                    "ALTER SYSTEM SET synchronous_standby_names = '{}'",
                    names.replace('\'', "''")
                ),
            )
            .await?;
            self.psql(
                &primary.name,
                "ALTER SYSTEM SET synchronous_commit = 'remote_apply'",
            )
            .await?;
        } else {
            self.psql(
                &primary.name,
                "ALTER SYSTEM SET synchronous_standby_names = ''",
            )
            .await?;
            self.psql(&primary.name, "ALTER SYSTEM SET synchronous_commit = 'on'")
                .await?;
        }
        self.psql(&primary.name, "SELECT pg_reload_conf()").await?;
        let watch = if sync {
            "no stale reads, slower writes — and if a replica is unreachable, writes wait (the app gives up after its write timeout and says the outcome is unknown)."
        } else {
            "fast writes; replicas may briefly serve older data (stale reads)."
        };
        Ok(Outcome::new("", Event::Replication { mode, replicas }).watch(watch.into()))
    }

    pub async fn resize(
        &self,
        name: &str,
        cpus: Option<f64>,
        memory: Option<&str>,
        cpuset: Option<&str>,
    ) -> Result<Outcome> {
        let c = self.find(name).await?;
        let svc = service_of(&c);
        if cpus.is_none() && memory.is_none() && cpuset.is_none() {
            return Err(FaultError::Invalid {
                what: "resize",
                value: String::new(),
                hint: "give --cpus, --memory and/or --cpuset",
            }
            .into());
        }
        if let Some(set) = cpuset {
            let ok = !set.is_empty() && set.split([',', '-']).all(|p| p.parse::<u16>().is_ok());
            if !ok {
                return Err(FaultError::Invalid {
                    what: "--cpuset",
                    value: set.to_string(),
                    hint: "list host CPUs like 0, 0,1 or 0-1",
                }
                .into());
            }
        }
        if let Some(x) = cpus {
            if !(0.01..=64.0).contains(&x) {
                return Err(FaultError::Invalid {
                    what: "--cpus",
                    value: x.to_string(),
                    hint: "use a number of CPUs between 0.01 and 64, e.g. 0.5",
                }
                .into());
            }
        }
        let mem = match memory {
            Some(m) => Some(crate::topology::parse_memory(m).ok_or(FaultError::Invalid {
                what: "--memory",
                value: m.to_string(),
                hint: "use a size such as 256m or 1g (at least 6m)",
            })?),
            None => None,
        };
        self.rt.update_resources(&c.name, cpus, mem, cpuset).await?;
        Ok(Outcome::new(
            &svc,
            Event::Resized {
                cpus,
                memory: memory.map(str::to_string),
                cpuset: cpuset.map(str::to_string),
            },
        )
        .watch("`lab status` shows the new limits; `lab load` shows what they do to latency and throughput.".into()))
    }

    /// Undo every fault on one service: reconnect, unfreeze, remove netem,
    /// end lag, start it if it is down. Returns what was undone.
    pub async fn heal(&self, name: &str) -> Result<Vec<Healed>> {
        let c = self.find(name).await?;
        self.heal_one(&c).await
    }

    pub async fn heal_all(&self) -> Result<Vec<Healed>> {
        let all = containers(self.rt, self.lab).await?;
        if all.is_empty() {
            return Err(naming::NameError::NoLab(self.lab.to_string()).into());
        }
        let mut done = Vec::new();
        for c in &all {
            done.extend(self.heal_one(c).await?);
        }
        Ok(done)
    }

    async fn heal_one(&self, c: &ContainerInfo) -> Result<Vec<Healed>> {
        let svc = service_of(c);
        let mut done = Vec::new();
        let mut mended = |mended| {
            done.push(Healed {
                service: svc.clone(),
                mended,
            })
        };
        let net = naming::network(self.lab);
        if !c.networks.contains(&net) {
            self.rt.connect_network(&net, &c.name, &svc).await?;
            mended(Mended::Reconnected);
        }
        match c.state {
            State::Paused => {
                self.rt.unpause_container(&c.name).await?;
                mended(Mended::Resumed);
            }
            State::Exited | State::Dead | State::Created => {
                self.rt.start_container(&c.name).await?;
                mended(Mended::Started);
            }
            _ => {}
        }
        if matches!(c.state, State::Running | State::Paused) {
            if let Ok(admin) = self.proxy(c) {
                if admin
                    .links()
                    .await
                    .is_ok_and(|links| links.iter().any(|l| l.fault.is_some()))
                {
                    admin.heal().await?;
                    mended(Mended::LinksHealed);
                }
            }
        }
        if netem_of(self.rt, &c.name).await.is_some() {
            let l = BTreeMap::from([(labels::LAB.to_string(), self.lab.to_string())]);
            let out = self
                .rt
                .run_in_netns(
                    &c.name,
                    &Image::Base.tag(),
                    &["NET_ADMIN"],
                    &l,
                    &["tc", "qdisc", "del", "dev", "eth0", "root"],
                )
                .await?;
            if out.code == 0 {
                mended(Mended::SlowRemoved);
            }
        }
        if roles::kind(role_of(c)).accepts(FaultKind::Lag) {
            let delay = self
                .psql(&c.name, "SHOW recovery_min_apply_delay")
                .await
                .ok()
                .and_then(|s| pg_duration_ms(&s));
            if delay.is_some_and(|d| d > 0) {
                self.set_lag(c, None).await?;
                mended(Mended::LagEnded);
            }
        }
        Ok(done)
    }
}

fn validate_slow(
    latency: Duration,
    jitter: Option<Duration>,
    loss: Option<f64>,
) -> std::result::Result<(), FaultError> {
    if latency.is_zero() || latency > Duration::from_secs(60) {
        return Err(FaultError::Invalid {
            what: "--latency",
            value: humantime::format_duration(latency).to_string(),
            hint: "use a delay between 1ms and 60s, e.g. 200ms",
        });
    }
    if let Some(j) = jitter {
        if j > latency {
            return Err(FaultError::Invalid {
                what: "--jitter",
                value: humantime::format_duration(j).to_string(),
                hint: "jitter must not exceed --latency",
            });
        }
    }
    if let Some(l) = loss {
        if !(0.0..=100.0).contains(&l) {
            return Err(FaultError::Invalid {
                what: "--loss",
                value: format!("{l}%"),
                hint: "use a percentage between 0% and 100%",
            });
        }
    }
    Ok(())
}

/// `5%` or `5` to 5.0.
pub fn parse_percent(s: &str) -> std::result::Result<f64, String> {
    s.trim()
        .trim_end_matches('%')
        .parse::<f64>()
        .ok()
        .filter(|v| (0.0..=100.0).contains(v))
        .ok_or_else(|| format!("{s:?} is not a percentage between 0% and 100%"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::VERSION;
    use crate::lb_admin::FakeLb;
    use crate::runtime::fake::FakeRuntime;
    use crate::topology::Topology;
    use crate::up::{up, UpOptions};

    #[test]
    fn reads_tc_output() {
        let out = "qdisc netem 8001: root refcnt 2 limit 1000 delay 200ms  20ms loss 5%\n";
        assert_eq!(
            parse_netem(out),
            Some(Netem {
                latency_ms: 200.0,
                jitter_ms: 20.0,
                loss_pct: 5.0
            })
        );
        let out = "qdisc netem 8002: root refcnt 2 limit 1000 delay 1s\n";
        assert_eq!(parse_netem(out).unwrap().latency_ms, 1000.0);
        assert_eq!(parse_netem("qdisc noqueue 0: root refcnt 2\n"), None);
    }

    #[test]
    fn rates_read_like_tc_and_like_bytes() {
        assert_eq!(parse_rate("1mbit"), Ok(125_000));
        assert_eq!(parse_rate("500kbit"), Ok(62_500));
        assert_eq!(parse_rate("64kB"), Ok(64_000));
        assert_eq!(parse_rate("2MB/s"), Ok(2_000_000));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("1bit").is_err());
        assert_eq!(describe_rate(125_000), "1.0 Mbit/s");
    }

    #[tokio::test]
    async fn slow_without_netem_goes_to_the_proxy_and_loss_needs_netem() {
        let (rt, lb) = lab().await;
        let f = faults(&rt, &lb);
        let err = f
            .slow(
                "server-2",
                &Slow {
                    latency: Duration::from_millis(200),
                    loss: Some(5.0),
                    ..Slow::default()
                },
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("add --netem"), "{err}");
        // The balancer has no proxy: one line says what to do instead.
        let err = f
            .slow(
                "lb-1",
                &Slow {
                    latency: Duration::from_millis(200),
                    ..Slow::default()
                },
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("no fault proxy"), "{err}");
        assert!(!rt.calls().iter().any(|c| c.starts_with("netns")));
    }

    #[test]
    fn slow_arguments_are_checked() {
        assert!(validate_slow(
            Duration::from_millis(200),
            Some(Duration::from_millis(20)),
            Some(5.0)
        )
        .is_ok());
        assert!(validate_slow(Duration::ZERO, None, None).is_err());
        assert!(validate_slow(
            Duration::from_millis(10),
            Some(Duration::from_millis(20)),
            None
        )
        .is_err());
        assert!(validate_slow(Duration::from_millis(10), None, Some(120.0)).is_err());
        assert_eq!(parse_percent("5%"), Ok(5.0));
        assert!(parse_percent("150%").is_err());
    }

    fn text(healed: &[Healed]) -> Vec<String> {
        healed.iter().map(ToString::to_string).collect()
    }

    fn faults<'a>(rt: &'a FakeRuntime, lb: &FakeLb) -> Faults<'a> {
        Faults {
            rt,
            lab: "f",
            lb: lb.connector(),
        }
    }

    async fn lab() -> (FakeRuntime, FakeLb) {
        let rt = FakeRuntime::new();
        for i in Image::ALL {
            rt.add_image(&i.tag(), &[(labels::VERSION, VERSION)]);
        }
        let lb = FakeLb::default();
        let t = Topology {
            port: 0,
            ..Topology::default()
        };
        let opts = UpOptions {
            wait: false,
            timeout: Duration::from_secs(1),
            lb: lb.connector(),
            progress: std::sync::Arc::new(crate::progress::Silent),
        };
        up(&rt, "f", &t, &opts).await.unwrap();
        (rt, lb)
    }

    #[tokio::test]
    async fn crash_twice_says_already_down() {
        let (rt, lb) = lab().await;
        let f = faults(&rt, &lb);
        let first = f.crash("server-1").await.unwrap();
        assert_eq!(first.event, Event::Crashed);
        let first = first.to_string();
        assert!(
            first.contains("crashed") && first.contains("lab start server-1"),
            "{first}"
        );
        let second = f.crash("server-1").await.unwrap();
        assert!(matches!(second.event, Event::AlreadyDown { .. }));
        let second = second.to_string();
        assert!(second.contains("already down"), "{second}");
        assert_eq!(
            rt.calls().iter().filter(|c| c.starts_with("kill")).count(),
            1
        );
        let healed = f.heal_all().await.unwrap();
        assert_eq!(text(&healed), ["server-1: started"]);
    }

    #[tokio::test]
    async fn wrong_targets_are_refused() {
        let (rt, lb) = lab().await;
        let f = faults(&rt, &lb);
        let err = f
            .lag("server-1", Some(Duration::from_secs(2)))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("lag applies to database nodes that are replicas now")
                && err.contains("server-1 is a server"),
            "{err}"
        );
        let err = f
            .slow(
                "sever-2",
                &Slow {
                    latency: Duration::from_millis(200),
                    ..Slow::default()
                },
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("did you mean server-2"), "{err}");
    }

    #[tokio::test]
    async fn partition_and_heal() {
        let (rt, lb) = lab().await;
        let f = faults(&rt, &lb);
        assert!(f
            .partition("db-2")
            .await
            .unwrap()
            .to_string()
            .contains("cut off"));
        assert!(f
            .partition("db-2")
            .await
            .unwrap()
            .to_string()
            .contains("already"));
        assert!(rt.calls().contains(&"disconnect f-net f-db-2".to_string()));
        assert_eq!(
            text(&f.heal("db-2").await.unwrap()),
            ["db-2: reconnected to the lab network"]
        );
        assert_eq!(text(&f.heal("db-2").await.unwrap()), Vec::<String>::new());
    }

    #[tokio::test]
    async fn slow_runs_netem_with_net_admin_only() {
        let (rt, lb) = lab().await;
        let f = faults(&rt, &lb);
        f.slow(
            "server-2",
            &Slow {
                latency: Duration::from_millis(200),
                jitter: Some(Duration::from_millis(20)),
                loss: Some(5.0),
                netem: true,
                ..Slow::default()
            },
        )
        .await
        .unwrap();
        let call = rt
            .calls()
            .into_iter()
            .find(|c| c.starts_with("netns"))
            .unwrap();
        assert_eq!(call, "netns f-server-2 [NET_ADMIN] tc qdisc replace dev eth0 root netem delay 200ms 20ms loss 5%");
    }
}
