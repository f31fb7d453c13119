//! Which seed pods may open connections to which shoots, on every node (gateway or router): a pod in a
//! shoot's control-plane namespace reaches that shoot's tunnel addresses and no other shoot's; a pod of
//! any other namespace reaches none. The check runs on the pod's own node, in the forward hook, where
//! the packet still carries the pod's address (a CNI may masquerade it on its way to a gateway, and a
//! gateway would need every pod of the seed to know it).
//!
//! It applies to packets towards the WireGuard CIDR (vpn-seed-server's answers to its own shoot's VPN
//! client pass as its own shoot's), when the packet
//! - entered the node on a link other than the node's own (the one with the node IP) and the tunnel
//!   device: that is a pod of this node, whether the API server lists it yet or not (fail closed);
//! - or comes from an address the API server lists for a pod of this node (a pod on the node's own
//!   link, as ipvlan attaches them).
//!
//! Such a flow passes only for a (pod address, shoot address) pair of one namespace. The node's own
//! traffic (host-network pods, the agent's probes) never crosses the forward hook: a node is trusted
//! with every shoot (docs/security.md). The table (`inet kubelink_pods`) is kubelink's alone, replaced
//! in one transaction when the pods or shoots change, and put back when a hand edit changed it.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Mutex;

use ipnet::IpNet;
use serde_json::Value;

use crate::agent::ShootPeer;
use crate::firewall::{FirewallError, canonical, list_table, nft_script};

pub const TABLE: &str = "kubelink_pods";
/// The comment of both drop rules: the counters [`ScopeTable::drops`] sums.
pub const POD_TO_OTHER_SHOOT: &str = "drop: pod to a shoot not its own";
/// Before the gateway's shoot filter (-450) and its counting chain (-400): what a pod may not send never
/// counts as traffic the gateway failed to forward.
const PRIO: i32 = -460;

/// A pod of this node as the API server lists it (never a host-network one: its address is the node's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPod {
    pub namespace: String,
    pub ips: Vec<IpAddr>,
}

/// What the table must say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeSpec {
    pub cidr: IpNet,
    /// The node's own link(s) and the tunnel device: what arrives there is not a pod of this node.
    pub own_links: BTreeSet<String>,
    /// This node's pods' addresses (of the CIDR's family).
    pub pods: BTreeSet<IpAddr>,
    /// (pod address, shoot tunnel address) pairs of one namespace.
    pub allowed: BTreeSet<(IpAddr, IpAddr)>,
}

/// The spec from this node's pods and the seed's shoots (a ShootPeer is named after its shoot's
/// control-plane namespace). Pure.
pub fn plan(cidr: IpNet, own_links: BTreeSet<String>, pods: &[LocalPod], shoots: &BTreeSet<ShootPeer>) -> ScopeSpec {
    let same = |ip: &IpAddr| ip.is_ipv4() == cidr.addr().is_ipv4();
    let own_links = own_links.into_iter().filter(|l| nft_safe(l)).collect();
    let mut spec = ScopeSpec { cidr, own_links, pods: BTreeSet::new(), allowed: BTreeSet::new() };
    for pod in pods {
        let ips: Vec<IpAddr> = pod.ips.iter().copied().filter(same).collect();
        spec.pods.extend(&ips);
        let own = shoots.iter().filter(|s| s.control_plane == pod.namespace && cidr.contains(&s.address));
        for shoot in own {
            spec.allowed.extend(ips.iter().map(|ip| (*ip, shoot.address)));
        }
    }
    spec
}

/// A link name nft can take quoted. The kernel forbids `/`, `:` and white space, not quotes.
fn nft_safe(name: &str) -> bool {
    let ok = !name.is_empty() && !name.contains(['"', '\\']);
    if !ok {
        tracing::warn!(
            link = name.escape_debug().to_string(),
            "a link name nft cannot quote; not counted as the node's own"
        );
    }
    ok
}

/// The whole table as one atomic nft script (create-if-missing, delete, define).
pub fn render(spec: &ScopeSpec) -> String {
    let (ip, ty) = if spec.cidr.addr().is_ipv4() { ("ip", "ipv4_addr") } else { ("ip6", "ipv6_addr") };
    let elements = |items: Vec<String>| {
        if items.is_empty() { String::new() } else { format!(" elements = {{ {} }};", items.join(", ")) }
    };
    let pods = elements(spec.pods.iter().map(|p| p.to_string()).collect());
    let allowed = elements(spec.allowed.iter().map(|(p, s)| format!("{p} . {s}")).collect());
    let to_shoots = format!("{ip} daddr {}", spec.cidr);
    let refuse = format!("{ip} saddr . {ip} daddr != @allowed counter drop comment \"{POD_TO_OTHER_SHOOT}\"");
    let mut rules = Vec::new();
    if !spec.own_links.is_empty() {
        let links: Vec<String> = spec.own_links.iter().map(|l| format!("\"{l}\"")).collect();
        rules.push(format!("{to_shoots} iifname != {{ {} }} {refuse}", links.join(", ")));
    }
    rules.push(format!("{to_shoots} {ip} saddr @pods {refuse}"));
    let rules: String = rules.iter().map(|r| format!("    {r}\n")).collect();
    format!(
        "table inet {TABLE} {{}}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n  comment \"managed by kubelink\"\n  \
         set pods {{ type {ty};{pods} }}\n  set allowed {{ type {ty} . {ty};{allowed} }}\n  \
         chain forward {{\n    type filter hook forward priority {PRIO}; policy accept;\n{rules}  }}\n}}\n"
    )
}

/// The kernel side: the table's listing (canonical, counters emptied) and the drops it counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Listing {
    form: String,
    drops: u64,
}

impl Listing {
    fn of(listing: &Value) -> Result<Listing, FirewallError> {
        let objects =
            listing["nftables"].as_array().ok_or_else(|| FirewallError::Listing("no nftables array".into()))?;
        let mut out = Listing::default();
        for object in objects.iter().filter(|o| o.get("metainfo").is_none()) {
            out.form += &canonical(object);
            out.form.push('\n');
            let rule = &object["rule"];
            if rule["comment"] == POD_TO_OTHER_SHOOT {
                let packets = rule["expr"].as_array().into_iter().flatten();
                out.drops += packets.filter_map(|e| e.get("counter")?.get("packets")?.as_u64()).sum::<u64>();
            }
        }
        Ok(out)
    }
}

async fn read() -> Result<Option<Listing>, FirewallError> {
    list_table(TABLE).await?.map(|l| Listing::of(&l)).transpose()
}

/// Keeps the kernel's table equal to a spec. The kernel's form of a table is whatever it lists right
/// after our write; a later listing that differs from it was edited by someone else.
#[derive(Default)]
pub struct ScopeTable {
    written: Mutex<Option<(ScopeSpec, String)>>,
    drops: Mutex<Option<u64>>,
}

impl ScopeTable {
    /// Makes the kernel's table match `spec`; returns whether it had to write.
    pub async fn ensure(&self, spec: &ScopeSpec) -> Result<bool, FirewallError> {
        let have = read().await?;
        *self.drops.lock().unwrap_or_else(|e| e.into_inner()) = have.as_ref().map(|h| h.drops);
        let current = {
            let written = self.written.lock().unwrap_or_else(|e| e.into_inner());
            matches!((&*written, &have), (Some((s, form)), Some(h)) if s == spec && *form == h.form)
        };
        if current {
            return Ok(false);
        }
        nft_script(&render(spec)).await?;
        let back = read().await?.unwrap_or_default();
        *self.written.lock().unwrap_or_else(|e| e.into_inner()) = Some((spec.clone(), back.form));
        Ok(true)
    }

    /// Packets the table dropped as its last read counted them (`None`: no table then).
    pub fn drops(&self) -> Option<u64> {
        *self.drops.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubelink_contract::keys::PublicKey;

    fn shoot(n: u8, control_plane: &str, address: &str) -> ShootPeer {
        ShootPeer {
            public_key: PublicKey::from_bytes([n; 32]),
            address: address.parse().unwrap(),
            shoot: format!("garden-dev/s{n}"),
            control_plane: control_plane.into(),
            vpn_server: None,
        }
    }

    fn pod(namespace: &str, ips: &[&str]) -> LocalPod {
        LocalPod { namespace: namespace.into(), ips: ips.iter().map(|i| i.parse().unwrap()).collect() }
    }

    fn links(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_pod_is_paired_with_the_shoots_of_its_own_namespace_only() {
        let shoots = [shoot(1, "shoot--a", "192.168.128.10"), shoot(2, "shoot--b", "192.168.128.11")].into();
        let pods = [pod("shoot--a", &["100.64.2.1", "fd00::1"]), pod("garden", &["100.64.2.2"]), pod("shoot--b", &[])];
        let spec = plan("192.168.128.0/22".parse().unwrap(), links(&["eth0", "kubelink0"]), &pods, &shoots);
        let pair = |p: &str, s: &str| (p.parse().unwrap(), s.parse().unwrap());
        assert_eq!(spec.allowed, [pair("100.64.2.1", "192.168.128.10")].into());
        assert_eq!(spec.pods, ["100.64.2.1".parse().unwrap(), "100.64.2.2".parse().unwrap()].into(), "one family");
    }

    #[test]
    fn the_script_refuses_packets_from_pod_links_and_pod_addresses_and_quotes_link_names() {
        let shoots = [shoot(1, "shoot--a", "192.168.128.10")].into();
        let own = links(&["eth0", "kubelink0", "bad\"name"]);
        let spec = plan("192.168.128.0/22".parse().unwrap(), own, &[pod("shoot--a", &["100.64.2.1"])], &shoots);
        let script = render(&spec);
        assert!(script.contains("elements = { 100.64.2.1 . 192.168.128.10 }"), "{script}");
        assert!(script.contains("iifname != { \"eth0\", \"kubelink0\" } ip saddr . ip daddr != @allowed"), "{script}");
        assert!(script.contains("ip saddr @pods ip saddr . ip daddr != @allowed counter drop"), "{script}");
        assert!(!script.contains("bad"), "{script}");
        assert_eq!(script.matches("counter drop").count(), 2);
    }

    #[test]
    fn without_pods_or_links_the_sets_are_empty_and_only_the_address_rule_stays() {
        let spec = plan("fd00:128::/64".parse().unwrap(), BTreeSet::new(), &[], &BTreeSet::new());
        let script = render(&spec);
        assert!(script.contains("set pods { type ipv6_addr; }"), "{script}");
        assert!(script.contains("set allowed { type ipv6_addr . ipv6_addr; }"), "{script}");
        assert!(!script.contains("iifname"), "{script}");
        assert!(script.contains("ip6 daddr fd00:128::/64 ip6 saddr @pods"), "{script}");
    }

    #[test]
    fn drops_are_summed_from_the_commented_rules_and_counters_do_not_change_the_form() {
        let listing = |n: u64| {
            serde_json::json!({"nftables": [
                {"metainfo": {"version": "1.0.6"}},
                {"rule": {"family": "inet", "table": TABLE, "chain": "forward", "handle": n,
                          "comment": POD_TO_OTHER_SHOOT, "expr": [{"counter": {"packets": n, "bytes": 84 * n}}, {"drop": null}]}},
                {"rule": {"family": "inet", "table": TABLE, "chain": "forward", "handle": 9,
                          "comment": POD_TO_OTHER_SHOOT, "expr": [{"counter": {"packets": 2, "bytes": 1}}, {"drop": null}]}}
            ]})
        };
        let (a, b) = (Listing::of(&listing(3)).unwrap(), Listing::of(&listing(5)).unwrap());
        assert_eq!((a.drops, b.drops), (5, 7));
        assert_eq!(a.form, b.form);
    }
}
