//! # Strategies: which server gets this request?
//!
//! * **round-robin** (nginx's default): servers take turns, 1, 2, 3, 1, 2, 3.
//!   Fair when every request costs the same.
//! * **least-conn** (nginx `least_conn`, HAProxy `balance leastconn`): the
//!   server with the fewest requests in flight. A server stuck on slow
//!   requests gets fewer new ones; ties take turns.
//! * **ip-hash** (nginx `ip_hash`, HAProxy `balance source`): the client's IP
//!   address picks the server, so one client always lands on the same server
//!   without any cookie. This uses *rendezvous hashing*: every server gets a
//!   score from hash(client IP, server name) and the best score wins. When a
//!   server dies, only its own clients move; everyone else stays put.
//! * **sticky** (HAProxy `cookie SERVERID insert`): the first answer sets a
//!   cookie naming the server; later requests carrying it go to that server.
//!   When that server is down or gone, the client is rebalanced and the
//!   cookie rewritten. That is when an in-memory session is lost.
//!
//! Only *eligible* servers (up, not draining) are candidates, and a retry
//! excludes the server that just failed. The functions here touch no network:
//! they read the servers' state and return an index.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_utils::CachePadded;

use crate::upstream::Upstream;

/// A way of picking a server: one spelling shared with the CLI and the
/// config file (`lab_contract::knobs`).
pub use lab_contract::knobs::Strategy;

/// What a strategy may look at to pick.
#[derive(Debug, Clone, Copy)]
pub struct PickRequest<'a> {
    /// The client's address as seen on the TCP connection (never a header).
    pub client_ip: IpAddr,
    /// The server named by the sticky cookie, if any.
    pub cookie_server: Option<&'a str>,
    /// A server not to pick (the one that just failed, on a retry).
    pub exclude: Option<&'a str>,
}

/// Picks servers; holds the round-robin turn.
///
/// The turn is the one counter that every worker writes on every request
/// (a turn per worker, as nginx keeps one per process, would make the
/// rotation only roughly fair); it sits alone on its cache line so that its
/// writes do not slow down reads of the settings next to it.
#[derive(Debug, Default)]
pub struct Picker {
    turn: CachePadded<AtomicUsize>,
}

impl Picker {
    /// A picker whose first round-robin turn is the first server.
    pub fn new() -> Self {
        Self::default()
    }

    /// Index into `servers` of the server for this request, or None when no
    /// server is eligible.
    pub fn pick(
        &self,
        strategy: Strategy,
        servers: &[Arc<Upstream>],
        req: &PickRequest<'_>,
    ) -> Option<usize> {
        let eligible = |u: &Upstream| u.is_eligible() && Some(u.name()) != req.exclude;
        match strategy {
            Strategy::RoundRobin => self.round_robin(servers, eligible),
            Strategy::LeastConn => {
                let fewest = servers
                    .iter()
                    .filter(|u| eligible(u))
                    .map(|u| u.in_flight())
                    .min()?;
                // ties take turns, so idle servers share the load evenly
                self.round_robin(servers, |u| eligible(u) && u.in_flight() == fewest)
                    .or_else(|| self.round_robin(servers, eligible))
            }
            Strategy::IpHash => servers
                .iter()
                .enumerate()
                .filter(|(_, u)| eligible(u))
                .max_by_key(|(_, u)| rendezvous_score(req.client_ip, u.name()))
                .map(|(i, _)| i),
            Strategy::Sticky => req
                .cookie_server
                .and_then(|name| servers.iter().position(|u| u.name() == name && eligible(u)))
                .or_else(|| self.round_robin(servers, eligible)),
        }
    }

    /// The next eligible server in turn: with n eligible servers, each gets
    /// exactly one of every n picks.
    fn round_robin(
        &self,
        servers: &[Arc<Upstream>],
        eligible: impl Fn(&Upstream) -> bool,
    ) -> Option<usize> {
        let count = servers.iter().filter(|u| eligible(u)).count();
        if count == 0 {
            return None;
        }
        let nth = self.turn.fetch_add(1, Ordering::Relaxed) % count;
        servers
            .iter()
            .enumerate()
            .filter(|(_, u)| eligible(u))
            .nth(nth)
            .map(|(i, _)| i)
    }
}

/// Score of a server for a client in rendezvous hashing; stable across
/// restarts (FNV-1a then a 64-bit mix, no random seed).
pub fn rendezvous_score(ip: IpAddr, server: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    match ip {
        IpAddr::V4(v4) => feed(&v4.octets()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => feed(&v4.octets()),
            None => feed(&v6.octets()),
        },
    }
    feed(&[0xff]);
    feed(server.as_bytes());
    // splitmix64 finaliser: spreads FNV's weak low bits
    let mut z = h;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{FailureKind, HealthPolicy};
    use std::net::Ipv4Addr;
    use std::time::{Duration, Instant};

    fn servers(n: usize) -> Vec<Arc<Upstream>> {
        (1..=n)
            .map(|i| {
                Arc::new(Upstream::new(format!("server-{i}"), format!("server-{i}:8000")).unwrap())
            })
            .collect()
    }

    fn kill(u: &Upstream) {
        let policy = HealthPolicy {
            fall: 3,
            rise: 2,
            max_fails: 1,
            fail_timeout: Duration::from_secs(2),
        };
        let mut h = u.health();
        h.record_failure(FailureKind::Refused, Instant::now(), &policy);
        u.sync_health(&h);
    }

    fn req(ip: [u8; 4]) -> PickRequest<'static> {
        PickRequest {
            client_ip: IpAddr::V4(Ipv4Addr::from(ip)),
            cookie_server: None,
            exclude: None,
        }
    }

    fn counts(p: &Picker, s: Strategy, list: &[Arc<Upstream>], n: usize) -> Vec<usize> {
        let mut c = vec![0; list.len()];
        for _ in 0..n {
            c[p.pick(s, list, &req([127, 0, 0, 1])).unwrap()] += 1;
        }
        c
    }

    #[test]
    fn strategy_names_round_trip() {
        for s in Strategy::ALL {
            assert_eq!(s.as_str().parse::<Strategy>().unwrap(), s);
        }
        let err = "random".parse::<Strategy>().unwrap_err().to_string();
        assert!(err.contains("random") && err.contains("sticky"));
    }

    #[test]
    fn round_robin_takes_turns_exactly() {
        let list = servers(3);
        let p = Picker::new();
        let order: Vec<usize> = (0..6)
            .map(|_| {
                p.pick(Strategy::RoundRobin, &list, &req([1, 1, 1, 1]))
                    .unwrap()
            })
            .collect();
        assert_eq!(order, vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(
            counts(&p, Strategy::RoundRobin, &list, 300),
            vec![100, 100, 100]
        );
    }

    #[test]
    fn round_robin_skips_down_and_draining_servers() {
        let list = servers(3);
        kill(&list[1]);
        list[2].set_draining(true);
        let p = Picker::new();
        assert_eq!(counts(&p, Strategy::RoundRobin, &list, 10), vec![10, 0, 0]);
        list[2].set_draining(false);
        assert_eq!(counts(&p, Strategy::RoundRobin, &list, 10), vec![5, 0, 5]);
    }

    #[test]
    fn nothing_eligible_picks_nothing() {
        let list = servers(2);
        kill(&list[0]);
        kill(&list[1]);
        for s in Strategy::ALL {
            assert_eq!(Picker::new().pick(s, &list, &req([1, 2, 3, 4])), None);
        }
        assert_eq!(
            Picker::new().pick(Strategy::RoundRobin, &[], &req([1, 2, 3, 4])),
            None
        );
    }

    #[test]
    fn least_conn_prefers_the_idle_server_and_shares_ties() {
        let list = servers(3);
        let view = crate::upstream::ServerList::new(list.clone());
        // in flight on different workers: the counts add up
        let _busy: Vec<_> = (0..3).map(|w| view.get(0).begin_request(w)).collect();
        let _one = view.get(1).begin_request(1);
        let p = Picker::new();
        assert_eq!(counts(&p, Strategy::LeastConn, &list, 5), vec![0, 0, 5]);
        drop(_one);
        assert_eq!(counts(&p, Strategy::LeastConn, &list, 10), vec![0, 5, 5]);
    }

    #[test]
    fn ip_hash_is_stable_and_only_moves_the_dead_servers_clients() {
        let list = servers(3);
        let p = Picker::new();
        let ips: Vec<[u8; 4]> = (1..=60).map(|i| [10, 0, i, 7]).collect();
        let before: Vec<usize> = ips
            .iter()
            .map(|ip| p.pick(Strategy::IpHash, &list, &req(*ip)).unwrap())
            .collect();
        // same answer every time
        for (ip, b) in ips.iter().zip(&before) {
            assert_eq!(p.pick(Strategy::IpHash, &list, &req(*ip)), Some(*b));
        }
        // spread over all servers
        for i in 0..3 {
            assert!(
                before.iter().filter(|b| **b == i).count() >= 5,
                "{before:?}"
            );
        }
        kill(&list[1]);
        for (ip, b) in ips.iter().zip(&before) {
            let after = p.pick(Strategy::IpHash, &list, &req(*ip)).unwrap();
            if *b == 1 {
                assert_ne!(after, 1);
            } else {
                assert_eq!(after, *b, "a client of a live server must not move");
            }
        }
    }

    #[test]
    fn retry_excludes_the_failed_server() {
        let list = servers(2);
        let p = Picker::new();
        for s in Strategy::ALL {
            for _ in 0..4 {
                let r = PickRequest {
                    exclude: Some("server-1"),
                    cookie_server: Some("server-1"),
                    ..req([9, 9, 9, 9])
                };
                assert_eq!(p.pick(s, &list, &r), Some(1), "{s}");
            }
        }
    }

    #[test]
    fn sticky_follows_the_cookie_and_rebalances_when_its_server_is_down() {
        let list = servers(3);
        let p = Picker::new();
        let with_cookie = |name: &'static str| PickRequest {
            cookie_server: Some(name),
            ..req([1, 2, 3, 4])
        };
        for _ in 0..5 {
            assert_eq!(
                p.pick(Strategy::Sticky, &list, &with_cookie("server-2")),
                Some(1)
            );
        }
        // no cookie or an unknown server: round-robin
        let firsts: Vec<_> = (0..3)
            .map(|_| {
                p.pick(Strategy::Sticky, &list, &with_cookie("nope"))
                    .unwrap()
            })
            .collect();
        let mut sorted = firsts.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 1, 2]);
        kill(&list[1]);
        for _ in 0..5 {
            assert_ne!(
                p.pick(Strategy::Sticky, &list, &with_cookie("server-2")),
                Some(1)
            );
        }
    }
}
