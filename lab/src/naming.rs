//! How lab objects are named, and how a name a student types is found.
//!
//! Docker names carry the lab's name (`lab-server-1`) so two labs can run
//! side by side and `docker ps` shows which is which; inside a lab, services
//! reach each other by the short name (`server-1`) on the lab's network, and
//! the short name is also what every `lab` command takes.

use thiserror::Error;

use crate::runtime::{labels, ContainerInfo};

pub fn container(lab: &str, service: &str) -> String {
    format!("{lab}-{service}")
}

pub fn network(lab: &str) -> String {
    format!("{lab}-net")
}

pub fn volume(lab: &str, service: &str) -> String {
    format!("{lab}-{service}-data")
}

#[derive(Error, Debug, PartialEq)]
pub enum NameError {
    #[error("no service named {name:?} in lab {lab:?}{}; the services are: {}", suggestion.as_ref().map(|s| format!(" (did you mean {s}?)")).unwrap_or_default(), valid.join(", "))]
    Unknown {
        name: String,
        lab: String,
        valid: Vec<String>,
        suggestion: Option<String>,
    },
    #[error("lab {0:?} is not running: start it with `lab up`")]
    NoLab(String),
}

/// The closest valid name, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(name: &str, valid: impl IntoIterator<Item = &'a str>) -> Option<String> {
    valid
        .into_iter()
        .map(|v| (strsim::jaro_winkler(name, v), v))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, v)| v.to_string())
}

/// Finds a service among a lab's containers by its short name.
pub fn find<'a>(
    lab: &str,
    containers: &'a [ContainerInfo],
    name: &str,
) -> Result<&'a ContainerInfo, NameError> {
    if containers.is_empty() {
        return Err(NameError::NoLab(lab.to_string()));
    }
    if let Some(c) = containers
        .iter()
        .find(|c| c.label(labels::SERVICE) == Some(name))
    {
        return Ok(c);
    }
    let mut valid: Vec<String> = containers
        .iter()
        .filter_map(|c| c.label(labels::SERVICE).map(str::to_string))
        .collect();
    valid.sort_by_key(|a| natural_key(a));
    // Accept the Docker name too (`lab-server-1`), which students copy from `docker ps`.
    if let Some(c) = containers.iter().find(|c| c.name == name) {
        return Ok(c);
    }
    Err(NameError::Unknown {
        name: name.to_string(),
        lab: lab.to_string(),
        suggestion: did_you_mean(name, valid.iter().map(String::as_str)),
        valid,
    })
}

/// Sorts `server-10` after `server-9`.
pub fn natural_key(name: &str) -> (String, u32) {
    match name.rsplit_once('-') {
        Some((stem, n)) if n.chars().all(|c| c.is_ascii_digit()) => {
            (stem.to_string(), n.parse().unwrap_or(0))
        }
        _ => (name.to_string(), 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_get_a_suggestion() {
        let valid = ["server-1", "server-2", "db-1", "db-2", "lb-1", "redis"];
        assert_eq!(did_you_mean("sever-1", valid), Some("server-1".into()));
        assert_eq!(did_you_mean("db2", valid), Some("db-2".into()));
        assert_eq!(did_you_mean("rediss", valid), Some("redis".into()));
        assert_eq!(did_you_mean("kafka", valid), None);
    }

    #[test]
    fn natural_order() {
        let mut v = vec!["server-10", "server-2", "server-1"];
        v.sort_by_key(|s| natural_key(s));
        assert_eq!(v, ["server-1", "server-2", "server-10"]);
    }
}
