//! Two balancers and a floating address: the network layout an HA pair
//! needs, and reading which balancer holds the address.
//!
//! keepalived (VRRP) on lb-1 and lb-2 moves one *virtual* address (the VIP)
//! to whichever balancer it elects master; the `edge` forwards users to that
//! address. The VIP must be an address Docker never hands to a container,
//! and keepalived's peers are addresses, not names, so the balancers need
//! fixed ones. Both come from how the lab's network is made: Docker picks a
//! free subnet, then the network is made again with the same subnet and an
//! allocation range (`ip_range`) of its lower half only. The upper half is
//! ours: its last usable address is the VIP, the two below it are lb-1 and
//! lb-2. Every lab's network is made that way, so going from one balancer
//! to two never has to remake a network under running containers.
//!
//! Which node holds the VIP comes from keepalived itself: its notify hook
//! writes [`lab_contract::vrrp::STATE_FILE`] on every change of role.

use std::net::Ipv4Addr;
use std::time::Duration;

use lab_contract::vrrp::{VipRole, VrrpState, STATE_FILE};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::runtime::{NetworkIpam, Runtime};
use crate::secrets::Secrets;

#[derive(Error, Debug, PartialEq)]
pub enum HaError {
    #[error("lab {lab:?} was made by an older lab whose network reserves no floating address: run `lab down`, then `lab up --balancers 2`")]
    NoReservedRange { lab: String },
    #[error("no balancer took the floating address within {secs} s (keepalived elects one about 3 x advert_int after both start); see `lab logs lb-1` and `lab logs lb-2`")]
    NoMaster { secs: u64 },
    #[error("{service} cannot run keepalived here: {reason}")]
    Keepalived { service: String, reason: String },
}

/// The addresses of an HA pair on the lab's network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The floating address: the last usable one of the subnet.
    pub vip: Ipv4Addr,
    /// lb-1's and lb-2's fixed addresses, just below the VIP.
    pub lb: [Ipv4Addr; 2],
}

/// `a.b.c.d/n` into the network's first address and its prefix length.
fn parse_cidr(cidr: &str) -> Option<(u32, u8)> {
    let (addr, prefix) = cidr.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    if prefix > 32 {
        return None;
    }
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    Some((u32::from(addr) & mask, prefix))
}

/// The lower half of a subnet, where Docker may allocate: `172.29.0.0/16`
/// gives `172.29.0.0/17`. None for a subnet too small to split (the upper
/// half must hold the broadcast address, the VIP and two balancers).
pub fn lower_half(subnet: &str) -> Option<String> {
    let (net, prefix) = parse_cidr(subnet)?;
    (prefix <= 28).then(|| format!("{}/{}", Ipv4Addr::from(net), prefix + 1))
}

/// How to make the lab's network again from what Docker chose: the same
/// subnet and gateway, allocation limited to the lower half.
pub fn reserved(chosen: &NetworkIpam) -> Option<NetworkIpam> {
    Some(NetworkIpam {
        subnet: chosen.subnet.clone(),
        gateway: chosen.gateway.clone(),
        ip_range: Some(lower_half(&chosen.subnet)?),
    })
}

impl Layout {
    /// The pair's addresses on a network made by [`reserved`]; None for a
    /// network that leaves no upper half to us (made by an older `lab`).
    pub fn of(ipam: &NetworkIpam) -> Option<Layout> {
        let want = lower_half(&ipam.subnet)?;
        if ipam.ip_range.as_deref() != Some(want.as_str()) {
            return None;
        }
        let (net, prefix) = parse_cidr(&ipam.subnet)?;
        let broadcast = net | (u32::MAX >> prefix);
        let vip = broadcast - 1;
        Some(Layout {
            vip: Ipv4Addr::from(vip),
            lb: [Ipv4Addr::from(vip - 1), Ipv4Addr::from(vip - 2)],
        })
    }
}

/// VRRPv2's simple password for the pair (8 characters), made from the
/// lab's secrets so it is the same at every `up` and differs between labs.
/// It keeps a stray node out; it is no secret on the wire.
pub fn vrrp_password(s: &Secrets) -> String {
    let mut h = Sha256::new();
    h.update(b"vrrp:");
    h.update(s.session_secret.as_bytes());
    h.finalize()
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One balancer's role as it believes it, from its state file.
pub async fn vip_state(rt: &dyn Runtime, container: &str) -> Option<VrrpState> {
    let out = rt.exec(container, &["cat", STATE_FILE]).await.ok()?;
    if out.code != 0 {
        return None;
    }
    serde_json::from_str(out.stdout.trim()).ok()
}

/// Waits until exactly one of the balancers is master; returns its
/// container's name. Both start as backup (see keepalived.conf.in), so the
/// first election takes one master-down interval: about 3 x advert_int.
pub async fn wait_master(
    rt: &dyn Runtime,
    containers: &[String],
    timeout: Duration,
) -> Option<String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let mut masters = Vec::new();
        for c in containers {
            if vip_state(rt, c).await.map(|s| s.state) == Some(VipRole::Master) {
                masters.push(c.clone());
            }
        }
        if masters.len() == 1 {
            return masters.pop();
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// VRRP's skew time of a backup: (256 - priority) / 256 x advert_int.
pub fn skew(priority: u8, advert_int: Duration) -> Duration {
    advert_int.mul_f64(f64::from(256 - u16::from(priority)) / 256.0)
}

/// How long after its master's death a backup of `priority` takes over:
/// VRRP's master-down interval, 3 x advert_int + skew. The master's last
/// advert left up to one interval before the death, so the takeover comes
/// between this minus one advert_int and this.
pub fn master_down(priority: u8, advert_int: Duration) -> Duration {
    advert_int * 3 + skew(priority, advert_int)
}

/// The priorities keepalived gets: lb-1 wins the first election.
pub const PRIORITIES: [u8; 2] = [150, 100];

#[cfg(test)]
mod tests {
    use super::*;

    fn ipam(subnet: &str, range: Option<&str>) -> NetworkIpam {
        NetworkIpam {
            subnet: subnet.into(),
            gateway: None,
            ip_range: range.map(str::to_string),
        }
    }

    #[test]
    fn the_upper_half_holds_the_vip_and_the_pair() {
        let chosen = ipam("172.29.0.0/16", None);
        let net = reserved(&chosen).unwrap();
        assert_eq!(net.ip_range.as_deref(), Some("172.29.0.0/17"));
        let l = Layout::of(&net).unwrap();
        assert_eq!(l.vip, Ipv4Addr::new(172, 29, 255, 254));
        assert_eq!(
            l.lb,
            [
                Ipv4Addr::new(172, 29, 255, 253),
                Ipv4Addr::new(172, 29, 255, 252)
            ]
        );
        // A /20 as Docker hands out from 192.168.0.0/16.
        let l = Layout::of(&reserved(&ipam("192.168.80.0/20", None)).unwrap()).unwrap();
        assert_eq!(l.vip, Ipv4Addr::new(192, 168, 95, 254));
        assert_eq!(lower_half("192.168.80.0/20").unwrap(), "192.168.80.0/21");
    }

    #[test]
    fn a_network_without_the_reserved_half_has_no_layout() {
        assert_eq!(Layout::of(&ipam("172.29.0.0/16", None)), None);
        assert_eq!(
            Layout::of(&ipam("172.29.0.0/16", Some("172.29.0.0/18"))),
            None
        );
        assert_eq!(lower_half("10.0.0.0/30"), None);
        assert_eq!(lower_half("nonsense"), None);
    }

    #[test]
    fn vrrp_timers_follow_the_rfc() {
        let one = Duration::from_secs(1);
        // (256 - 100) / 256 = 0.609 s; lb-2 takes over 3.609 s after lb-1's last advert.
        assert_eq!(master_down(100, one).as_millis(), 3609);
        assert_eq!(master_down(150, one).as_millis(), 3414);
        assert_eq!(master_down(100, one * 2).as_millis(), 7218);
    }

    #[test]
    fn the_password_is_eight_characters_and_stable() {
        let s = Secrets {
            db_password: "a".into(),
            redis_password: "b".into(),
            session_secret: "c".repeat(64),
        };
        let p = vrrp_password(&s);
        assert_eq!(p.len(), 8);
        assert_eq!(p, vrrp_password(&s));
    }
}
