//! The whole seed at a glance (`kubelink status --seed`): who holds which slot and where, what shoots
//! dial, each shoot's handshake and traffic on each gateway, and what each router routes. Built purely
//! from what the command read (the SeedTunnel, the slot Leases, the agent Pods, the ShootPeers, and
//! each agent's `/status`), so that the rendering is tested without a cluster.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ipnet::IpNet;
use serde::Serialize;

use crate::agent::view::{NodeView, RouteView};
use crate::election::SlotLease;
use crate::firewall::Drops;

/// An agent Pod as the command found it: its node, the node's IP, and what `/status` answered.
#[derive(Debug, Clone)]
pub struct AgentFound {
    pub pod: String,
    pub node: String,
    pub ip: Option<String>,
    pub view: Result<NodeView, String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SeedView {
    pub seed: String,
    pub namespace: String,
    pub cidr: Option<String>,
    pub slot_count: u8,
    pub slots: Vec<SlotRow>,
    pub nodes: Vec<NodeRow>,
    pub shoots: Vec<ShootRow>,
    /// What could not be read, each named.
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotRow {
    pub slot: u8,
    pub holder: Option<String>,
    pub node_ip: Option<String>,
    pub renewed_seconds_ago: Option<i64>,
    /// What the holder publishes to shoots.
    pub endpoint: Option<String>,
    pub public_key: Option<String>,
    pub ready: Option<bool>,
    pub peers: usize,
    /// Peers with a handshake within WireGuard's session lifetime (180 s).
    pub connected: usize,
    /// What the holder's filter dropped of what shoots sent.
    pub dropped: Option<Drops>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRow {
    pub node: String,
    pub pod: String,
    pub ip: Option<String>,
    pub role: Option<String>,
    pub slot: Option<u8>,
    pub ready: Option<bool>,
    pub not_ready: Option<String>,
    pub routes: Vec<RouteView>,
    /// `/status` could not be read.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShootRow {
    pub shoot: String,
    pub address: String,
    /// One entry per slot whose holder answered.
    pub gateways: Vec<GatewaySide>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySide {
    pub slot: u8,
    pub handshake_age_seconds: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// What the command read.
pub struct Found {
    pub seed: String,
    pub namespace: String,
    pub cidr: Option<String>,
    pub slot_count: u8,
    /// Per slot (in order): its Lease, if any.
    pub leases: Vec<Option<SlotLease>>,
    pub agents: Vec<AgentFound>,
    /// ShootPeers: shoot (`namespace/name`) and address.
    pub shoots: Vec<(String, String)>,
    pub problems: Vec<String>,
    pub now: k8s_openapi::jiff::Timestamp,
}

/// WireGuard's session lifetime: a handshake older than this means no session.
const SESSION: u64 = 180;

pub fn build(found: Found) -> SeedView {
    let holder_view = |holder: &str| {
        found.agents.iter().find(|a| a.node == holder).and_then(|a| a.view.as_ref().ok()).filter(|v| v.slot.is_some())
    };
    let slots: Vec<SlotRow> = found
        .leases
        .iter()
        .enumerate()
        .map(|(i, lease)| {
            let slot = i as u8;
            let live = lease.as_ref().filter(|l| l.holder.is_some());
            let holder = live.and_then(|l| l.holder.clone());
            let view = holder.as_deref().and_then(holder_view).filter(|v| v.slot == Some(slot));
            SlotRow {
                slot,
                holder,
                node_ip: live.and_then(|l| l.node_ip.clone()),
                renewed_seconds_ago: live.and_then(|l| l.renewed).map(|t| found.now.duration_since(t).as_secs()),
                endpoint: view.and_then(|v| v.endpoint.clone()),
                public_key: view.and_then(|v| v.public_key.clone()),
                ready: view.map(|v| v.ready),
                peers: view.map_or(0, |v| v.peers.len()),
                connected: view.map_or(0, |v| {
                    v.peers.iter().filter(|p| p.handshake_age_seconds.is_some_and(|a| a < SESSION)).count()
                }),
                dropped: view.and_then(|v| v.dropped),
            }
        })
        .collect();
    let gateways: Vec<(u8, &NodeView)> = found
        .agents
        .iter()
        .filter_map(|a| a.view.as_ref().ok())
        .filter_map(|v| Some((v.slot?, v)))
        .filter(|(slot, v)| slots.get(usize::from(*slot)).is_some_and(|s| s.holder.as_deref() == Some(&v.node)))
        .collect();
    let shoots = found
        .shoots
        .iter()
        .map(|(shoot, address)| ShootRow {
            shoot: shoot.clone(),
            address: address.clone(),
            gateways: gateways
                .iter()
                .filter_map(|(slot, v)| {
                    let p = v.peers.iter().find(|p| &p.shoot == shoot)?;
                    Some(GatewaySide {
                        slot: *slot,
                        handshake_age_seconds: p.handshake_age_seconds,
                        rx_bytes: p.rx_bytes,
                        tx_bytes: p.tx_bytes,
                    })
                })
                .collect(),
        })
        .collect();
    let nodes = found.agents.iter().map(node_row).collect();
    SeedView {
        seed: found.seed,
        namespace: found.namespace,
        cidr: found.cidr,
        slot_count: found.slot_count,
        slots,
        nodes,
        shoots,
        problems: found.problems,
    }
}

fn node_row(a: &AgentFound) -> NodeRow {
    let view = a.view.as_ref().ok();
    NodeRow {
        node: a.node.clone(),
        pod: a.pod.clone(),
        ip: a.ip.clone(),
        role: view.map(|v| v.role.clone()),
        slot: view.and_then(|v| v.slot),
        ready: view.map(|v| v.ready),
        not_ready: view.and_then(|v| v.not_ready.clone()),
        routes: view.map(|v| v.routes.clone()).unwrap_or_default(),
        error: a.view.as_ref().err().cloned(),
    }
}

/// Columns padded to their widest cell, two spaces apart.
fn table(rows: &[Vec<String>]) -> String {
    let mut widths = Vec::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if widths.len() <= i {
                widths.push(0);
            }
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        out += line.join("  ").trim_end();
        out.push('\n');
    }
    out
}

fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

fn yes_no(v: Option<bool>) -> String {
    match v {
        Some(true) => "yes".into(),
        Some(false) => "no".into(),
        None => "?".into(),
    }
}

/// Bytes in binary units, one decimal.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

fn age(seconds: Option<u64>) -> String {
    match seconds {
        None => "never".into(),
        Some(s) if s < 120 => format!("{s}s ago"),
        Some(s) if s < 7200 => format!("{}m ago", s / 60),
        Some(s) => format!("{}h ago", s / 3600),
    }
}

/// Routes summed up by next hop: `4 (2 via 10.0.0.1, 2 via 10.0.0.2)`.
fn route_summary(routes: &[RouteView]) -> String {
    if routes.is_empty() {
        return "-".into();
    }
    let mut via: BTreeMap<String, usize> = BTreeMap::new();
    for r in routes {
        *via.entry(or_dash(r.via)).or_default() += 1;
    }
    let parts: Vec<String> = via.iter().map(|(hop, n)| format!("{n} via {hop}")).collect();
    format!("{} ({})", routes.len(), parts.join(", "))
}

pub fn render_text(v: &SeedView) -> String {
    let mut out = String::new();
    let cidr = v.cidr.as_deref().unwrap_or("(no SeedTunnel)");
    let _ = writeln!(out, "seed {}  namespace {}  cidr {cidr}  slots {}\n", v.seed, v.namespace, v.slot_count);
    let mut slots = vec![
        ["SLOT", "HOLDER", "NODE IP", "ENDPOINT", "READY", "SHOOTS", "CONNECTED", "RENEWED", "DROPPED S/SEED/NODE"]
            .map(String::from)
            .to_vec(),
    ];
    for s in &v.slots {
        slots.push(vec![
            s.slot.to_string(),
            s.holder.clone().unwrap_or_else(|| "(none)".into()),
            or_dash(s.node_ip.as_ref()),
            or_dash(s.endpoint.as_ref()),
            yes_no(s.ready),
            s.peers.to_string(),
            s.connected.to_string(),
            s.renewed_seconds_ago.map_or_else(|| "-".into(), |a| format!("{a}s ago")),
            s.dropped.map_or_else(
                || "-".into(),
                |d| format!("{}/{}/{}", d.shoot_to_shoot, d.shoot_to_seed, d.shoot_to_node),
            ),
        ]);
    }
    out += &table(&slots);
    out.push('\n');
    let mut nodes = vec![["NODE", "IP", "ROLE", "SLOT", "READY", "ROUTES"].map(String::from).to_vec()];
    for n in &v.nodes {
        let ready = match (&n.error, &n.not_ready) {
            (Some(e), _) => format!("? ({e})"),
            (None, Some(why)) => format!("no ({why})"),
            (None, None) => yes_no(n.ready),
        };
        nodes.push(vec![
            n.node.clone(),
            or_dash(n.ip.as_ref()),
            or_dash(n.role.as_ref()),
            or_dash(n.slot),
            ready,
            route_summary(&n.routes),
        ]);
    }
    out += &table(&nodes);
    out.push('\n');
    let mut header = vec!["SHOOT".to_string(), "ADDRESS".to_string()];
    header.extend(v.slots.iter().map(|s| format!("SLOT {} HANDSHAKE", s.slot)));
    header.push("RX / TX".into());
    let mut shoots = vec![header];
    for s in &v.shoots {
        let mut row = vec![s.shoot.clone(), s.address.clone()];
        for slot in &v.slots {
            let side = s.gateways.iter().find(|g| g.slot == slot.slot);
            row.push(side.map_or_else(|| "-".into(), |g| age(g.handshake_age_seconds)));
        }
        let (rx, tx) = s.gateways.iter().fold((0, 0), |(r, t), g| (r + g.rx_bytes, t + g.tx_bytes));
        row.push(format!("{} / {}", bytes(rx), bytes(tx)));
        shoots.push(row);
    }
    out += &table(&shoots);
    for p in &v.problems {
        let _ = writeln!(out, "\nproblem: {p}");
    }
    out
}

/// The first address of a ShootPeer's text, for display (`192.168.128.2`, without a prefix length).
pub fn address_text(address: &str) -> String {
    address.parse::<IpNet>().map(|n| n.addr().to_string()).unwrap_or_else(|_| address.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::view::PeerView;

    fn gateway(node: &str, slot: u8, peers: Vec<PeerView>) -> NodeView {
        NodeView {
            node: node.into(),
            role: "gateway".into(),
            slot: Some(slot),
            ready: true,
            endpoint: Some(format!("10.0.0.{}:51820", 100 + slot)),
            public_key: Some(format!("key{slot}")),
            peers,
            dropped: Some(Drops { shoot_to_shoot: 3, shoot_to_seed: 5, shoot_to_node: 7 + u64::from(slot) }),
            ..NodeView::default()
        }
    }

    fn peer(shoot: &str, age: Option<u64>, rx: u64) -> PeerView {
        PeerView {
            shoot: shoot.into(),
            handshake_age_seconds: age,
            rx_bytes: rx,
            tx_bytes: 2 * rx,
            ..PeerView::default()
        }
    }

    fn lease(holder: &str, ip: &str, ago: i64, now: k8s_openapi::jiff::Timestamp) -> Option<SlotLease> {
        Some(SlotLease {
            holder: Some(holder.into()),
            renewed: Some(now - k8s_openapi::jiff::SignedDuration::from_secs(ago)),
            acquired: None,
            duration: std::time::Duration::from_secs(4),
            node_ip: Some(ip.into()),
        })
    }

    fn found() -> Found {
        let now = k8s_openapi::jiff::Timestamp::now();
        let router = NodeView {
            node: "n2".into(),
            role: "router".into(),
            ready: true,
            routes: vec![
                RouteView { destination: "192.168.128.2/32".parse().unwrap(), via: Some("10.0.0.11".parse().unwrap()) },
                RouteView { destination: "192.168.128.3/32".parse().unwrap(), via: Some("10.0.0.12".parse().unwrap()) },
            ],
            ..NodeView::default()
        };
        let agent = |n: &str, ip: &str, view: Result<NodeView, String>| AgentFound {
            pod: format!("kubelink-agent-{n}"),
            node: n.into(),
            ip: Some(ip.into()),
            view,
        };
        Found {
            seed: "local".into(),
            namespace: "kubelink".into(),
            cidr: Some("192.168.128.0/22".into()),
            slot_count: 2,
            leases: vec![lease("n0", "10.0.0.11", 1, now), lease("n1", "10.0.0.12", 0, now)],
            agents: vec![
                agent(
                    "n0",
                    "10.0.0.11",
                    Ok(gateway("n0", 0, vec![peer("dev/a", Some(5), 1536), peer("dev/b", None, 0)])),
                ),
                agent("n1", "10.0.0.12", Ok(gateway("n1", 1, vec![peer("dev/a", Some(300), 10)]))),
                agent("n2", "10.0.0.13", Ok(router)),
                agent("n3", "10.0.0.14", Err("connection refused".into())),
            ],
            shoots: vec![("dev/a".into(), "192.168.128.2".into()), ("dev/b".into(), "192.168.128.3".into())],
            problems: vec![],
            now,
        }
    }

    #[test]
    fn slots_shoots_and_routes_come_from_the_holders_and_routers() {
        let v = build(found());
        assert_eq!(v.slots[0].holder.as_deref(), Some("n0"));
        assert_eq!((v.slots[0].peers, v.slots[0].connected), (2, 1), "dev/b never shook hands");
        assert_eq!((v.slots[1].peers, v.slots[1].connected), (1, 0), "300 s is past the session lifetime");
        assert_eq!(v.slots[1].endpoint.as_deref(), Some("10.0.0.101:51820"));
        let a = &v.shoots[0];
        assert_eq!(
            a.gateways.iter().map(|g| (g.slot, g.handshake_age_seconds)).collect::<Vec<_>>(),
            [(0, Some(5)), (1, Some(300))]
        );
        assert_eq!(v.nodes[2].routes.len(), 2);
        assert_eq!(v.nodes[3].error.as_deref(), Some("connection refused"));
    }

    #[test]
    fn a_node_claiming_a_slot_it_does_not_hold_is_not_counted_as_its_gateway() {
        let mut f = found();
        f.leases[1] = None;
        let v = build(f);
        assert_eq!((v.slots[1].holder.as_deref(), v.slots[1].peers), (None, 0));
        assert!(v.shoots[0].gateways.iter().all(|g| g.slot == 0), "{:?}", v.shoots[0].gateways);
    }

    #[test]
    fn the_text_reads_at_a_glance() {
        let text = render_text(&build(found()));
        println!("{text}");
        assert!(text.starts_with("seed local  namespace kubelink  cidr 192.168.128.0/22  slots 2\n"), "{text}");
        let line =
            |start: &str| text.lines().find(|l| l.starts_with(start)).unwrap_or_else(|| panic!("{start}: {text}"));
        let slot0 = line("0 ");
        assert!(slot0.contains("n0") && slot0.contains("10.0.0.100:51820") && slot0.contains("1s ago"), "{slot0}");
        assert!(slot0.ends_with("3/5/7"), "the holder's drops: {slot0}");
        assert!(line("n2").contains("2 (1 via 10.0.0.11, 1 via 10.0.0.12)"), "{text}");
        assert!(line("n3").contains("? (connection refused)"), "{text}");
        let a = line("dev/a");
        assert!(a.contains("5s ago") && a.contains("5m ago") && a.contains("1.5 KiB / 3.0 KiB"), "{a}");
        assert!(line("dev/b").contains("never"), "{text}");
    }

    #[test]
    fn bytes_use_binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }
}
