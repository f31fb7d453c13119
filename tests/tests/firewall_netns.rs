//! The gateway's nftables table against a real kernel (root, in a private network namespace): the
//! desired ruleset matches what `nft -j list` reports, so a current table is not rewritten, and a rule
//! edited by hand (SNAT, MSS clamping, the shoot filter) is put back on the next pass.

use std::sync::Arc;

use kubelink::firewall::{FirewallSpec, FirewallTable, Nft};
use kubelink_tests::netns::{self, Netns};

fn spec() -> FirewallSpec {
    FirewallSpec {
        device: "kl0".into(),
        cidr: "192.168.128.0/22".parse().unwrap(),
        snat_to: "192.168.128.1".parse().unwrap(),
        // A shoot's VPN connection forwarded to its server: the DNAT and its accept in the listing.
        vpn_servers: [("192.168.128.10".parse().unwrap(), "100.64.7.10".parse().unwrap())].into(),
    }
}

fn spec6() -> FirewallSpec {
    FirewallSpec {
        cidr: "fd00:128::/64".parse().unwrap(),
        snat_to: "fd00:128::1".parse().unwrap(),
        vpn_servers: [("fd00:128::10".parse().unwrap(), "fd00:64::7:10".parse().unwrap())].into(),
        ..spec()
    }
}

/// One `ensure` of `spec()` with a fresh table state (as after a restart): whether it wrote.
fn ensure_in(ns: &Netns) -> bool {
    ensure_spec_in(ns, spec())
}

fn ensure_spec_in(ns: &Netns, spec: FirewallSpec) -> bool {
    let run = move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(FirewallTable::new(Arc::new(Nft)).ensure(&spec)).map_err(|e| e.to_string())
    };
    ns.run_in(run).unwrap().unwrap()
}

#[test]
fn a_hand_edited_rule_is_repaired() {
    if !netns::require("a_hand_edited_rule_is_repaired", &["ip", "nft"]) {
        return;
    }
    let ns = Netns::new("fw").unwrap();
    assert!(ensure_in(&ns), "no table yet: written");
    assert!(!ensure_in(&ns), "the kernel's listing equals the desired ruleset: no rewrite, even after a restart");

    ns.sh(&["nft", "flush chain inet kubelink postrouting"]).unwrap();
    ns.sh(&["nft", "add rule inet kubelink postrouting oifname kl0 snat ip to 192.168.128.9"]).unwrap();
    assert!(ensure_in(&ns), "the changed SNAT rule is found");
    let listing = ns.sh(&["nft", "list table inet kubelink"]).unwrap();
    assert!(listing.contains("snat ip to 192.168.128.1") && !listing.contains("192.168.128.9"), "{listing}");

    ns.sh(&["nft", "flush chain inet kubelink forward"]).unwrap();
    assert!(ensure_in(&ns), "the deleted MSS rules are found");
    assert!(!ensure_in(&ns), "repaired");
    assert_eq!(ns.sh(&["nft", "list table inet kubelink"]).unwrap().matches("maxseg size set rt mtu").count(), 2);

    // The shoot filter: a flushed chain and a drop rule deleted by hand are found and put back.
    ns.sh(&["nft", "flush chain inet kubelink shoot_input"]).unwrap();
    assert!(ensure_in(&ns), "the flushed shoot_input chain is found");
    let handle = rule_handle(&ns, "shoot_forward", "drop: shoot to seed");
    ns.sh(&["nft", &format!("delete rule inet kubelink shoot_forward handle {handle}")]).unwrap();
    assert!(ensure_in(&ns), "the deleted drop rule is found");
    assert!(!ensure_in(&ns), "repaired");
    let listing = ns.sh(&["nft", "list", "table", "inet", "kubelink"]).unwrap();
    assert_eq!(listing.matches("counter packets 0 bytes 0 drop comment").count(), 3, "{listing}");

    assert!(ensure_spec_in(&ns, spec6()), "IPv6: the table is replaced");
    assert!(!ensure_spec_in(&ns, spec6()), "IPv6: the kernel's listing equals the desired ruleset too");
    let listing = ns.sh(&["nft", "list", "table", "inet", "kubelink"]).unwrap();
    assert!(listing.contains("ip6 daddr fd00:128::1 icmpv6 type echo-request accept"), "{listing}");
}

/// The handle of the rule of `chain` with `comment`, from the kernel's listing.
fn rule_handle(ns: &Netns, chain: &str, comment: &str) -> u64 {
    let out = ns.sh(&["nft", "-j", "list", "chain", "inet", "kubelink", chain]).unwrap();
    let listing: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rules = listing["nftables"].as_array().unwrap().iter().filter_map(|o| o.get("rule"));
    rules.filter(|r| r["comment"] == comment).find_map(|r| r["handle"].as_u64()).unwrap()
}
