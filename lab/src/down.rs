//! `lab down`: remove everything a lab created, and nothing else.
//!
//! The lab is found by its label, not by a list kept somewhere: whatever
//! Docker holds with `scaling-lab.lab=<name>` (containers, volumes, the
//! network) goes, even after an `up` that was killed half-way.

use futures::future::try_join_all;

use crate::error::Result;
use crate::runtime::{labels, Runtime};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct DownReport {
    pub containers: usize,
    pub volumes: usize,
    pub networks: usize,
}

impl DownReport {
    pub fn render(&self, lab: &str) -> String {
        if *self == DownReport::default() {
            format!("nothing to remove: no lab named {lab:?} exists\n")
        } else {
            format!(
                "removed lab {lab:?}: {} containers, {} volumes, {} network{}\n",
                self.containers,
                self.volumes,
                self.networks,
                if self.networks == 1 { "" } else { "s" }
            )
        }
    }
}

pub async fn down(rt: &dyn Runtime, lab: &str) -> Result<DownReport> {
    rt.ping().await?;
    let filter = [(labels::LAB, lab)];
    let containers = rt.list_containers(&filter).await?;
    try_join_all(containers.iter().map(|c| rt.remove_container(&c.name))).await?;
    // Volumes and the network can only go once no container uses them.
    let volumes = rt.list_volumes(&filter).await?;
    try_join_all(volumes.iter().map(|v| rt.remove_volume(&v.name))).await?;
    let networks = rt.list_networks(&filter).await?;
    for n in &networks {
        rt.remove_network(&n.name).await?;
    }
    Ok(DownReport {
        containers: containers.len(),
        volumes: volumes.len(),
        networks: networks.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::fake::FakeRuntime;
    use crate::runtime::ContainerSpec;
    use std::collections::BTreeMap;

    fn spec(lab: &str, name: &str) -> ContainerSpec {
        ContainerSpec {
            name: format!("{lab}-{name}"),
            alias: name.into(),
            image: "img".into(),
            cmd: None,
            env: BTreeMap::new(),
            labels: BTreeMap::from([(labels::LAB.to_string(), lab.to_string())]),
            ports: vec![],
            volumes: vec![],
            network: format!("{lab}-net"),
            healthcheck: None,
            cpus: None,
            memory: None,
            cap_add: vec![],
            files: vec![],
            stop_timeout: None,
            hashed_extra: None,
            ipv4: None,
        }
    }

    #[tokio::test]
    async fn removes_only_its_own_lab() {
        let rt = FakeRuntime::new();
        rt.add_image("img", &[]);
        for lab in ["a", "b"] {
            let l = BTreeMap::from([(labels::LAB.to_string(), lab.to_string())]);
            rt.create_network(&format!("{lab}-net"), &l).await.unwrap();
            rt.create_volume(&format!("{lab}-db"), &l).await.unwrap();
            rt.create_container(&spec(lab, "server-1")).await.unwrap();
        }
        let r = down(&rt, "a").await.unwrap();
        assert_eq!(
            r,
            DownReport {
                containers: 1,
                volumes: 1,
                networks: 1
            }
        );
        assert_eq!(
            rt.list_containers(&[(labels::LAB, "b")])
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(rt.list_volumes(&[]).await.unwrap().len(), 1);
        assert_eq!(down(&rt, "a").await.unwrap(), DownReport::default());
        assert!(DownReport::default()
            .render("a")
            .contains("nothing to remove"));
    }
}
