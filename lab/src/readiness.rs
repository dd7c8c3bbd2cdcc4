//! When is a container ready?
//!
//! Docker decides with the container's health check, run on a clock: the
//! first run one interval after the start, then one each interval. A
//! container that became ready just after a run is called "starting" until
//! the next one, up to a whole interval later (Docker 25 added a faster
//! clock for the first seconds, `start_interval`; the Docker 20.10 of many
//! laptops and CI machines has none).
//!
//! The lab does not wait for that clock. While Docker still says
//! "starting", it runs the very same command itself, at once, the way
//! Docker would (an exec in the container), and a pass counts as healthy.
//! The test is the one Docker runs, so nothing is called ready sooner than
//! it is; Docker agrees at its next run. Every listing of a lab's
//! containers goes through here, so `lab up`, `lab status` and the
//! dashboard never disagree about a container's health.

use std::time::Duration;

use futures::future::join_all;

use crate::runtime::{ContainerInfo, Health, Runtime, State};

/// How long one run of a check may take: the lab's health checks allow
/// Docker as long ([`crate::roles::docker_health`]).
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What to exec for a health check as Docker stores it, or None: no
/// check, or `NONE` (switched off).
pub fn command(test: &[String]) -> Option<Vec<String>> {
    match test.split_first()? {
        (kind, rest) if kind == "CMD" && !rest.is_empty() => Some(rest.to_vec()),
        (kind, [line]) if kind == "CMD-SHELL" => {
            Some(vec!["/bin/sh".into(), "-c".into(), line.clone()])
        }
        _ => None,
    }
}

/// A container's health now: Docker's word, except for a running container
/// Docker still calls starting, whose check is run at once.
pub async fn health_now(rt: &dyn Runtime, c: &ContainerInfo) -> Health {
    if c.state != State::Running || c.health != Health::Starting {
        return c.health;
    }
    let Some(cmd) = command(&c.health_test) else {
        return c.health;
    };
    let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
    match tokio::time::timeout(CHECK_TIMEOUT, rt.exec(&c.name, &args)).await {
        Ok(Ok(out)) if out.code == 0 => Health::Healthy,
        // Failed, timed out, or the container went away meanwhile: Docker's
        // clock will say the rest.
        _ => Health::Starting,
    }
}

/// [`health_now`] for every container, all at once.
pub async fn refresh(rt: &dyn Runtime, containers: &mut [ContainerInfo]) {
    let now = join_all(containers.iter().map(|c| health_now(rt, c))).await;
    for (c, h) in containers.iter_mut().zip(now) {
        c.health = h;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::fake::FakeRuntime;
    use crate::runtime::{ContainerSpec, Healthcheck};

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn runs_what_docker_would_run() {
        assert_eq!(
            command(&s(&["CMD", "pg_isready", "-q"])),
            Some(s(&["pg_isready", "-q"]))
        );
        assert_eq!(
            command(&s(&["CMD-SHELL", "curl -f localhost"])),
            Some(s(&["/bin/sh", "-c", "curl -f localhost"]))
        );
        assert_eq!(command(&s(&["NONE"])), None);
        assert_eq!(command(&s(&["CMD"])), None);
        assert_eq!(command(&[]), None);
    }

    async fn started(rt: &FakeRuntime, test: &[&str]) -> ContainerInfo {
        let spec = ContainerSpec {
            name: "t-db-1".into(),
            alias: "db-1".into(),
            image: "i".into(),
            cmd: None,
            env: Default::default(),
            labels: Default::default(),
            ports: Vec::new(),
            volumes: Vec::new(),
            network: "t-net".into(),
            healthcheck: Some(Healthcheck {
                test: s(test),
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(2),
                retries: 3,
                start_period: Duration::ZERO,
            }),
            cpus: None,
            memory: None,
            cap_add: Vec::new(),
            files: Vec::new(),
            stop_timeout: None,
            hashed_extra: None,
            ipv4: None,
        };
        rt.add_image("i", &[]);
        rt.create_container(&spec).await.unwrap();
        rt.start_container("t-db-1").await.unwrap();
        rt.set_health("t-db-1", Health::Starting);
        rt.list_containers(&[]).await.unwrap().remove(0)
    }

    #[tokio::test]
    async fn a_starting_container_whose_check_passes_is_healthy() {
        let rt = FakeRuntime::new();
        let c = started(&rt, &["CMD", "pg_isready", "-q"]).await;
        assert_eq!(health_now(&rt, &c).await, Health::Healthy);
        assert!(rt
            .calls()
            .contains(&"exec t-db-1 pg_isready -q".to_string()));
    }

    #[tokio::test]
    async fn a_failing_check_leaves_it_starting() {
        let rt = FakeRuntime::new();
        let c = started(&rt, &["CMD", "pg_isready", "-q"]).await;
        rt.set_exec_code("t-db-1", 2);
        assert_eq!(health_now(&rt, &c).await, Health::Starting);
    }

    #[tokio::test]
    async fn docker_s_word_stands_otherwise() {
        let rt = FakeRuntime::new();
        let mut c = started(&rt, &["CMD", "pg_isready", "-q"]).await;
        rt.set_exec_code("t-db-1", 0);
        for (state, health) in [
            (State::Running, Health::Unhealthy),
            (State::Running, Health::Healthy),
            (State::Running, Health::None),
            (State::Exited, Health::Starting),
        ] {
            c.state = state;
            c.health = health;
            assert_eq!(health_now(&rt, &c).await, health, "{state} {health}");
        }
        // No check to run: starting it stays.
        c.state = State::Running;
        c.health = Health::Starting;
        c.health_test = s(&["NONE"]);
        assert_eq!(health_now(&rt, &c).await, Health::Starting);
        rt.clear_calls();
        let mut all = vec![c];
        refresh(&rt, &mut all).await;
        assert!(rt.calls().iter().all(|x| !x.starts_with("exec")));
    }
}
