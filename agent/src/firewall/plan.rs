//! The table as a plan, without I/O: every chain and rule written once, as nft script text and as the
//! JSON `nft -j list` reports for it, so that [`render`] and [`desired`] cannot disagree.
//!
//! What comes out of the tunnel (input interface = the WireGuard device) is a shoot's, and shoots are
//! hostile: a shoot's owner holds its private key and can send anything its tunnel address may send.
//! Two chains let through only replies to flows the seed opened and the sidecar's probe of the slot
//! address; everything else is dropped and counted, per destination (rule comments name the counters):
//!
//! - `shoot_forward` (forward hook): to another shoot (the hairpin back into the device), to seed pods,
//!   other nodes or anything past the gateway;
//! - `shoot_input` (input hook): to the gateway node itself (health server, kubelet, node ports, the slot
//!   address).
//!
//! Source NAT applies only to what enters from the seed side, never to what comes out of the tunnel.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use serde_json::{Value, json};

use super::{DONE, EARLY, FirewallSpec, Ruleset, TABLE, canonical};

/// Rule comments of the drop rules: the names [`super::Drops`] reads the counters by.
pub const SHOOT_TO_SHOOT: &str = "drop: shoot to shoot";
pub const SHOOT_TO_SEED: &str = "drop: shoot to seed";
pub const SHOOT_TO_NODE: &str = "drop: shoot to gateway node";

/// The shoot filter on the forward hook runs before `forward_early` (-400): what it drops never
/// counts as forwarded traffic that entered and did not leave, so a shoot sending what it may not
/// cannot make its gateway look broken (`agent::datapath::dropped`) and give its slot up. Connection
/// tracking is already done (prerouting, -200), so `ct state` is known at any forward priority.
const SHOOT_FORWARD_PRIO: i32 = -450;

/// One match or statement: as an nft script writes it, and as `nft -j list` reports it.
struct Term {
    text: String,
    json: Value,
}

/// One rule of a chain.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub text: String,
    pub expr: Vec<Value>,
    pub comment: Option<&'static str>,
}

/// One base chain (policy accept: each chain decides only about what it matches).
#[derive(Debug, Clone, PartialEq)]
pub struct Chain {
    pub name: &'static str,
    pub kind: &'static str,
    pub hook: &'static str,
    pub prio: i32,
    pub rules: Vec<Rule>,
}

/// The whole table.
pub fn plan(spec: &FirewallSpec) -> Vec<Chain> {
    let chain = |name, kind, hook, prio, rules| Chain { name, kind, hook, prio, rules };
    vec![
        // srcnat is priority 100, mangle -150.
        chain("postrouting", "nat", "postrouting", 100, vec![snat_from_seed(spec)]),
        // dstnat is priority -100: the VPN connections of shoots, each to its own server.
        chain("shoot_dnat", "nat", "prerouting", -100, dnat_to_vpn_servers(spec)),
        chain("forward", "filter", "forward", -150, mss_clamp(&spec.device)),
        chain("shoot_forward", "filter", "forward", SHOOT_FORWARD_PRIO, shoot_forward(spec)),
        chain("shoot_input", "filter", "input", 0, shoot_input(spec)),
        chain(EARLY, "filter", "forward", -400, count_both_ways(&spec.device)),
        chain(DONE, "filter", "forward", 400, count_both_ways(&spec.device)),
    ]
}

/// Seed traffic into the tunnel leaves with the slot address, so each shoot answers to the gateway it
/// came through. Never what came out of the tunnel: a shoot's packet must not borrow the one source its
/// peers trust as their control plane (the forward filter drops such a hairpin anyway).
fn snat_from_seed(spec: &FirewallSpec) -> Rule {
    let (dev, fam, to) = (&spec.device, family(spec.cidr.addr()), spec.snat_to);
    rule(None, [iif_not(dev), oif(dev), daddr_in(fam, spec.cidr), saddr_not(fam, to), snat(fam, to)])
}

/// TCP SYNs in both directions get the route MTU as MSS, so TCP fits the tunnel whichever side opens it.
fn mss_clamp(dev: &str) -> Vec<Rule> {
    vec![rule(None, [oif(dev), tcp_syn(), mss_to_mtu()]), rule(None, [iif(dev), tcp_syn(), mss_to_mtu()])]
}

/// What a shoot may send through the gateway: replies to the seed's flows, nothing to another shoot.
fn shoot_forward(spec: &FirewallSpec) -> Vec<Rule> {
    let dev = spec.device.as_str();
    let mut rules = vec![
        rule(Some(SHOOT_TO_SHOOT), [iif(dev), oif(dev), counter(), drop()]),
        rule(None, [iif(dev), ct_replies(), accept()]),
    ];
    rules.extend(opened_by_shoots(spec));
    rules.push(rule(Some(SHOOT_TO_SEED), [iif(dev), counter(), drop()]));
    rules
}

/// Connections a shoot may open towards the seed: its VPN connection and nothing else. What
/// [`dnat_to_vpn_servers`] sent on is accepted: exactly that shoot's address towards exactly its own
/// server's port, and only as translated (`ct status dnat`): dialling the server's address itself
/// is not the VPN connection; another shoot's server, or another port of its own, stays dropped.
fn opened_by_shoots(spec: &FirewallSpec) -> Vec<Rule> {
    let dev = spec.device.as_str();
    vpn_servers(spec)
        .map(|(fam, shoot, server)| {
            let translated = ct_dnat();
            rule(
                None,
                [iif(dev), saddr_is(fam, shoot), daddr_is(fam, server), tcp_dport(VPN_PORT), translated, accept()],
            )
        })
        .collect()
}

/// The port a shoot's VPN client dials on the slot address, and the port its server listens on:
/// vpn-seed-server's OpenVPN listens on 1194 (`port 1194` in gardener/vpn2's server configuration), and
/// a client without an HTTP proxy dials 1194 unless told otherwise.
pub const VPN_PORT: u16 = 1194;

/// A shoot's connection from its own tunnel address to the slot address, TCP [`VPN_PORT`], goes to
/// its own control plane's VPN server (`FirewallSpec::vpn_servers`), keyed on the source address,
/// which WireGuard's cryptokey routing ties to the shoot's key. A shoot without an entry, or any other
/// source, is not translated and meets the input filter's drop.
fn dnat_to_vpn_servers(spec: &FirewallSpec) -> Vec<Rule> {
    let (dev, slot) = (spec.device.as_str(), spec.snat_to);
    vpn_servers(spec)
        .map(|(fam, shoot, server)| {
            let to = SocketAddr::new(server, VPN_PORT);
            rule(None, [iif(dev), saddr_is(fam, shoot), daddr_is(fam, slot), tcp_dport(VPN_PORT), dnat(fam, to)])
        })
        .collect()
}

/// The VPN servers of shoots in the CIDR, of its family (there is no NAT between families).
fn vpn_servers(spec: &FirewallSpec) -> impl Iterator<Item = (Family, IpAddr, IpAddr)> + '_ {
    let fam = family(spec.snat_to);
    spec.vpn_servers
        .iter()
        .filter(move |(shoot, server)| spec.cidr.contains(*shoot) && family(**shoot) == fam && family(**server) == fam)
        .map(move |(shoot, server)| (fam, *shoot, *server))
}

/// What a shoot may send to the gateway node itself: replies to the node's own flows (the agent's
/// probes), and the sidecar's probe: an ICMP echo request to the slot address (`shoot::sidecar`,
/// `probe::ping_burst`). Nothing else of the node's: no listener, no other address.
fn shoot_input(spec: &FirewallSpec) -> Vec<Rule> {
    let (dev, slot) = (spec.device.as_str(), spec.snat_to);
    let fam = family(slot);
    vec![
        rule(None, [iif(dev), ct_replies(), accept()]),
        rule(None, [iif(dev), daddr_is(fam, slot), echo_request(fam), accept()]),
        rule(Some(SHOOT_TO_NODE), [iif(dev), counter(), drop()]),
    ]
}

/// Into and out of the tunnel, counted (see [`super::ForwardCounters`]).
fn count_both_ways(dev: &str) -> Vec<Rule> {
    vec![rule(None, [oif(dev), counter()]), rule(None, [iif(dev), counter()])]
}

/// The address family of the spec's CIDR, as nft names it in matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn ip(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }

    fn icmp(self) -> &'static str {
        match self {
            Family::V4 => "icmp",
            Family::V6 => "icmpv6",
        }
    }
}

fn family(addr: IpAddr) -> Family {
    if addr.is_ipv4() { Family::V4 } else { Family::V6 }
}

fn rule<const N: usize>(comment: Option<&'static str>, terms: [Term; N]) -> Rule {
    let mut text = terms.iter().map(|t| t.text.as_str()).collect::<Vec<_>>().join(" ");
    if let Some(c) = comment {
        text += &format!(" comment \"{c}\"");
    }
    Rule { text, expr: terms.into_iter().map(|t| t.json).collect(), comment }
}

fn term(text: String, json: Value) -> Term {
    Term { text, json }
}

fn matches(op: &str, left: Value, right: Value) -> Value {
    json!({"match": {"op": op, "left": left, "right": right}})
}

fn meta(key: &str, op: &str, dev: &str) -> Term {
    let text = if op == "==" { format!("{key} \"{dev}\"") } else { format!("{key} {op} \"{dev}\"") };
    term(text, matches(op, json!({"meta": {"key": key}}), json!(dev)))
}

fn iif(dev: &str) -> Term {
    meta("iifname", "==", dev)
}

fn iif_not(dev: &str) -> Term {
    meta("iifname", "!=", dev)
}

fn oif(dev: &str) -> Term {
    meta("oifname", "==", dev)
}

fn payload(protocol: &str, field: &str) -> Value {
    json!({"payload": {"protocol": protocol, "field": field}})
}

fn daddr_in(fam: Family, cidr: IpNet) -> Term {
    let prefix = json!({"prefix": {"addr": cidr.network().to_string(), "len": cidr.prefix_len()}});
    term(format!("{} daddr {cidr}", fam.ip()), matches("==", payload(fam.ip(), "daddr"), prefix))
}

fn daddr_is(fam: Family, addr: IpAddr) -> Term {
    term(format!("{} daddr {addr}", fam.ip()), matches("==", payload(fam.ip(), "daddr"), json!(addr.to_string())))
}

fn saddr_is(fam: Family, addr: IpAddr) -> Term {
    term(format!("{} saddr {addr}", fam.ip()), matches("==", payload(fam.ip(), "saddr"), json!(addr.to_string())))
}

fn tcp_dport(port: u16) -> Term {
    term(format!("tcp dport {port}"), matches("==", payload("tcp", "dport"), json!(port)))
}

fn dnat(fam: Family, to: SocketAddr) -> Term {
    let json = json!({"dnat": {"family": fam.ip(), "addr": to.ip().to_string(), "port": to.port()}});
    term(format!("dnat {} to {to}", fam.ip()), json)
}

fn saddr_not(fam: Family, addr: IpAddr) -> Term {
    term(format!("{} saddr != {addr}", fam.ip()), matches("!=", payload(fam.ip(), "saddr"), json!(addr.to_string())))
}

fn snat(fam: Family, to: IpAddr) -> Term {
    term(format!("snat {} to {to}", fam.ip()), json!({"snat": {"family": fam.ip(), "addr": to.to_string()}}))
}

fn tcp_syn() -> Term {
    term("tcp flags syn".into(), matches("in", payload("tcp", "flags"), json!("syn")))
}

fn mss_to_mtu() -> Term {
    let mss = json!({"mangle": {"key": {"tcp option": {"name": "maxseg", "field": "size"}}, "value": {"rt": {"key": "mtu"}}}});
    term("tcp option maxseg size set rt mtu".into(), mss)
}

/// Packets of flows this side opened: replies, and ICMP errors about them.
fn ct_replies() -> Term {
    let state = matches("in", json!({"ct": {"key": "state"}}), json!(["established", "related"]));
    term("ct state established,related".into(), state)
}

/// Connections the gateway translated (the VPN connection's DNAT), not ones dialled to the target.
fn ct_dnat() -> Term {
    term("ct status dnat".into(), matches("in", json!({"ct": {"key": "status"}}), json!("dnat")))
}

fn echo_request(fam: Family) -> Term {
    let icmp = fam.icmp();
    term(format!("{icmp} type echo-request"), matches("==", payload(icmp, "type"), json!("echo-request")))
}

fn counter() -> Term {
    term("counter".into(), json!({"counter": {"packets": 0, "bytes": 0}}))
}

fn accept() -> Term {
    term("accept".into(), json!({"accept": null}))
}

fn drop() -> Term {
    term("drop".into(), json!({"drop": null}))
}

/// The whole table as one atomic nft script (create-if-missing, delete, define).
pub fn render(spec: &FirewallSpec) -> String {
    let mut out = format!(
        "table inet {TABLE} {{}}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n  comment \"managed by kubelink\"\n"
    );
    for c in plan(spec) {
        out += &format!(
            "  chain {} {{\n    type {} hook {} priority {}; policy accept;\n",
            c.name, c.kind, c.hook, c.prio
        );
        for r in &c.rules {
            out += &format!("    {}\n", r.text);
        }
        out += "  }\n";
    }
    out + "}\n"
}

/// The ruleset [`render`] gives, as `nft -j list` (nftables 1.0) reports it.
pub fn desired(spec: &FirewallSpec) -> Ruleset {
    let mut set = Ruleset::default();
    for c in plan(spec) {
        let head = json!({"family": "inet", "table": TABLE, "name": c.name, "type": c.kind, "hook": c.hook, "prio": c.prio, "policy": "accept"});
        set.chains.insert(canonical(&head));
        let rules = c.rules.iter().map(|r| {
            let mut body = json!({"family": "inet", "table": TABLE, "chain": c.name, "expr": r.expr});
            if let Some(comment) = r.comment {
                body["comment"] = json!(comment);
            }
            canonical(&body)
        });
        // The kernel lists no rules of an empty chain (`shoot_dnat` of a gateway without VPN servers).
        if !c.rules.is_empty() {
            set.rules.insert(c.name.to_string(), rules.collect());
        }
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::tests::spec;

    fn spec6() -> FirewallSpec {
        FirewallSpec { cidr: "fd00:128::/64".parse().unwrap(), snat_to: "fd00:128::1".parse().unwrap(), ..spec() }
    }

    fn chain(spec: &FirewallSpec, name: &str) -> Chain {
        plan(spec).into_iter().find(|c| c.name == name).unwrap()
    }

    fn texts(spec: &FirewallSpec, name: &str) -> Vec<String> {
        chain(spec, name).rules.into_iter().map(|r| r.text).collect()
    }

    #[test]
    fn out_of_the_tunnel_only_replies_pass_the_forward_hook_and_a_hairpin_is_dropped_first() {
        let dev = "iifname \"kubelink0\"";
        assert_eq!(
            texts(&spec(), "shoot_forward"),
            [
                format!("{dev} oifname \"kubelink0\" counter drop comment \"drop: shoot to shoot\""),
                format!("{dev} ct state established,related accept"),
                format!("{dev} ip saddr 192.168.128.10 ip daddr 100.64.7.10 tcp dport 1194 ct status dnat accept"),
                format!("{dev} counter drop comment \"drop: shoot to seed\""),
            ]
        );
    }

    /// A shoot's connection to the slot address, TCP 1194, goes to its own VPN server, keyed on its
    /// address; the forward filter accepts exactly that shoot towards exactly that server.
    #[test]
    fn a_shoots_vpn_connection_goes_to_its_own_server_and_only_it_is_accepted() {
        let dev = "iifname \"kubelink0\"";
        assert_eq!(
            texts(&spec(), "shoot_dnat"),
            [format!(
                "{dev} ip saddr 192.168.128.10 ip daddr 192.168.128.1 tcp dport 1194 dnat ip to 100.64.7.10:1194"
            )]
        );
        let v6 = FirewallSpec {
            vpn_servers: [("fd00:128::10".parse().unwrap(), "fd00:64::7:10".parse().unwrap())].into(),
            ..spec6()
        };
        assert_eq!(
            texts(&v6, "shoot_dnat"),
            [format!(
                "{dev} ip6 saddr fd00:128::10 ip6 daddr fd00:128::1 tcp dport 1194 dnat ip6 to [fd00:64::7:10]:1194"
            )]
        );
        assert_eq!(
            texts(&v6, "shoot_forward")[2],
            format!("{dev} ip6 saddr fd00:128::10 ip6 daddr fd00:64::7:10 tcp dport 1194 ct status dnat accept")
        );
        // A shoot outside the CIDR, a server of the other family: no rule (no NAT between families).
        let odd = FirewallSpec {
            vpn_servers: [
                ("10.0.0.1".parse().unwrap(), "100.64.7.1".parse().unwrap()),
                ("192.168.128.11".parse().unwrap(), "fd00:64::7:11".parse().unwrap()),
            ]
            .into(),
            ..spec()
        };
        assert!(texts(&odd, "shoot_dnat").is_empty());
        assert_eq!(texts(&odd, "shoot_forward").len(), 3);
        // No servers: the chain is there, empty, and the listing of it has no rules to compare.
        let none = FirewallSpec { vpn_servers: Default::default(), ..spec() };
        assert!(texts(&none, "shoot_dnat").is_empty());
        assert!(!desired(&none).rules.contains_key("shoot_dnat"));
    }

    #[test]
    fn the_gateway_node_answers_a_shoot_only_its_replies_and_the_probe_of_the_slot_address() {
        let dev = "iifname \"kubelink0\"";
        assert_eq!(
            texts(&spec(), "shoot_input"),
            [
                format!("{dev} ct state established,related accept"),
                format!("{dev} ip daddr 192.168.128.1 icmp type echo-request accept"),
                format!("{dev} counter drop comment \"drop: shoot to gateway node\""),
            ]
        );
        let probe = &texts(&spec6(), "shoot_input")[1];
        assert_eq!(probe, &format!("{dev} ip6 daddr fd00:128::1 icmpv6 type echo-request accept"));
    }

    /// Whatever the family of the spec: a shoot with an address of the other family (a dual-stack
    /// device) is dropped all the same.
    #[test]
    fn drops_match_no_address_family() {
        for s in [spec(), spec6()] {
            let drops: Vec<Rule> = plan(&s).into_iter().flat_map(|c| c.rules).filter(|r| r.comment.is_some()).collect();
            assert_eq!(drops.len(), 3);
            for r in drops {
                assert!(!r.text.contains("ip ") && !r.text.contains("ip6 "), "{}", r.text);
                assert!(r.expr.iter().all(|e| e.get("match").is_none_or(|m| m["left"].get("meta").is_some())));
            }
        }
    }

    /// Every accept of what comes out of the tunnel: exactly these four (the VPN connection's for the
    /// one shoot of `spec()` with a server). A new one must come with its own reason in
    /// docs/security.md.
    #[test]
    fn nothing_else_from_the_tunnel_is_accepted() {
        let accepts: Vec<String> = plan(&spec())
            .into_iter()
            .flat_map(|c| c.rules.into_iter().map(move |r| (c.name, r)))
            .filter(|(_, r)| r.text.starts_with("iifname \"kubelink0\"") && r.text.ends_with("accept"))
            .map(|(c, r)| format!("{c}: {}", r.text))
            .collect();
        assert_eq!(
            accepts,
            [
                "shoot_forward: iifname \"kubelink0\" ct state established,related accept",
                "shoot_forward: iifname \"kubelink0\" ip saddr 192.168.128.10 ip daddr 100.64.7.10 tcp dport 1194 ct status dnat accept",
                "shoot_input: iifname \"kubelink0\" ct state established,related accept",
                "shoot_input: iifname \"kubelink0\" ip daddr 192.168.128.1 icmp type echo-request accept",
            ]
        );
        for name in ["shoot_forward", "shoot_input"] {
            let last = chain(&spec(), name).rules.pop().unwrap();
            assert_eq!((last.expr.len(), &last.expr[2]), (3, &json!({"drop": null})), "{name} ends in a drop of all");
        }
    }

    #[test]
    fn snat_only_for_what_enters_from_the_seed_side() {
        assert_eq!(
            texts(&spec(), "postrouting"),
            [
                "iifname != \"kubelink0\" oifname \"kubelink0\" ip daddr 192.168.128.0/22 ip saddr != 192.168.128.1 snat ip to 192.168.128.1"
            ]
        );
        assert_eq!(
            texts(&spec6(), "postrouting"),
            [
                "iifname != \"kubelink0\" oifname \"kubelink0\" ip6 daddr fd00:128::/64 ip6 saddr != fd00:128::1 snat ip6 to fd00:128::1"
            ]
        );
    }

    /// Dropped shoot traffic never reaches the forwarding counters, which would take it for a node
    /// that drops forwarded packets; the MSS clamp sees only what passed.
    #[test]
    fn the_shoot_filter_runs_first_on_the_forward_hook() {
        let forward: Vec<(&str, i32)> =
            plan(&spec()).into_iter().filter(|c| c.hook == "forward").map(|c| (c.name, c.prio)).collect();
        let first = forward.iter().min_by_key(|(_, p)| *p).unwrap();
        assert_eq!(first, &("shoot_forward", SHOOT_FORWARD_PRIO));
        assert_eq!(forward.iter().filter(|(_, p)| *p == SHOOT_FORWARD_PRIO).count(), 1);
    }

    #[test]
    fn the_script_replaces_the_table_atomically_and_clamps_mss_both_ways() {
        let text = render(&spec());
        assert!(text.starts_with("table inet kubelink {}\ndelete table inet kubelink\n"), "atomic replace");
        assert_eq!(text.matches("maxseg size set rt mtu").count(), 2, "both directions");
        for c in plan(&spec()) {
            let head = format!(
                "  chain {} {{\n    type {} hook {} priority {}; policy accept;\n",
                c.name, c.kind, c.hook, c.prio
            );
            assert!(text.contains(&head), "{head}");
            assert!(c.rules.iter().all(|r| text.contains(&format!("    {}\n", r.text))));
        }
    }

    /// The listing holds every chain and rule of the plan, the comments of the drop rules with them.
    #[test]
    fn desired_has_every_rule_of_the_plan() {
        let want = desired(&spec());
        assert_eq!(want.chains.len(), plan(&spec()).len());
        assert_eq!(want.rules["shoot_input"].len(), 3);
        assert!(want.rules["shoot_input"][2].contains("\"comment\":\"drop: shoot to gateway node\""));
    }
}
