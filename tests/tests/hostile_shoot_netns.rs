//! Issue 26, the data path: a hostile shoot against the gateway's firewall, in network namespaces with
//! real packets, once with an IPv4 and once with an IPv6 WireGuard CIDR.
//!
//! The gateway runs `kubelink run` (userspace WireGuard) from a file made of the agent's own gateway
//! state (`agent::gateway_desired` for slot 0 with two shoots), so its nftables table is exactly what
//! the agent writes; the test checks the kernel's listing against `firewall::desired` of that spec.
//! Shoot A is an ordinary shoot. Shoot M is its owner with its private key: `AllowedIPs = 0.0.0.0/0,
//! ::/0` and, as a full-tunnel client sets it up, everything but its own WireGuard packets routed into
//! the tunnel. A seed pod sits behind the gateway on a link of its own.
//!
//! M must reach no other shoot, no seed pod and no listener of the gateway node (on its node address
//! and on the slot address), each drop counted by the table; the seed's traffic to the shoots, the
//! node's own probe of a shoot and M's probe of the slot address (the sidecar's) still work, and what
//! the filter drops never shows as a forwarding fault. Then the filter chains are flushed by hand: some
//! of the same attempts get through (so they were real), and a shoot's packet to another shoot leaves the
//! gateway with the sender's own address, never the slot address the victim trusts (SNAT is for the
//! seed side only), so shoot A's WireGuard refuses it.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use kubelink::agent::datapath;
use kubelink::firewall::{Drops, FirewallSpec, Ruleset};
use kubelink_ipam::keys::PrivateKey;
use kubelink_tests::netns::{self, Netns, Proc, Segment};

/// Listeners of the gateway node: the agent's health server, the kubelet, a node port.
const NODE_PORTS: [u16; 3] = [8093, 10250, 30080];
/// A TCP listener in each shoot and in the pod; a UDP socket in shoot A.
const TCP: u16 = 7000;
const UDP: u16 = 9000;
/// M routes everything but its own WireGuard packets (this mark) into the tunnel.
const MARK: &str = "51820";
/// A dropped attempt fails within this; one TCP SYN is sent (the first retransmission is at 1 s).
const ATTEMPT: Duration = Duration::from_millis(700);

/// The addresses of one run: tunnel CIDR, shoots, pod link, and the gateway's node address.
struct Net {
    cidr: IpNet,
    shoot_a: IpAddr,
    shoot_m: IpAddr,
    pod: IpAddr,
    pod_gateway: IpAddr,
    pod_prefix: u8,
    node: IpAddr,
    any: IpAddr,
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn v4() -> Net {
    Net {
        cidr: "192.168.128.0/22".parse().unwrap(),
        shoot_a: ip("192.168.128.10"),
        shoot_m: ip("192.168.128.11"),
        pod: ip("100.64.1.1"),
        pod_gateway: ip("100.64.1.254"),
        pod_prefix: 24,
        node: ip("10.250.0.11"),
        any: ip("0.0.0.0"),
    }
}

fn v6() -> Net {
    Net {
        cidr: "fd00:128::/64".parse().unwrap(),
        shoot_a: ip("fd00:128::10"),
        shoot_m: ip("fd00:128::11"),
        pod: ip("fd00:64::1"),
        pod_gateway: ip("fd00:64::fe"),
        pod_prefix: 64,
        node: ip("fd00:250::11"),
        any: ip("::"),
    }
}

/// The IPv4 underlay all WireGuard packets take, in both runs.
const GW_UNDERLAY: &str = "10.250.0.11";

struct Hosts {
    gw: Netns,
    a: Netns,
    m: Netns,
    pod: Netns,
    _links: [Segment; 2],
}

/// Namespaces and links: gateway, shoots A and M on the underlay; the pod on a link to the gateway.
fn hosts(net: &Net) -> Hosts {
    let (lan, pods) = (Segment::new("lan").unwrap(), Segment::new("pods").unwrap());
    let [gw, a, m, pod] = ["gw", "shoota", "shootm", "pod"].map(|r| Netns::new(r).unwrap());
    // No duplicate address detection: the address events it ends with, a second or two after the
    // links come up, would wake the gateway's daemon, which repairs the control phase's hand edit.
    for ns in [&gw, &a, &m, &pod] {
        for conf in ["all", "default"] {
            ns.sysctl(&format!("net.ipv6.conf.{conf}.accept_dad"), "0").unwrap();
        }
    }
    for (ns, addr) in [(&gw, GW_UNDERLAY), (&a, "10.250.0.21"), (&m, "10.250.0.22")] {
        lan.attach(ns, "eth0", &format!("{addr}/24")).unwrap();
    }
    let v6 = net.cidr.addr().is_ipv6();
    for ns in [&gw, &a, &m, &pod] {
        ns.sysctl("net.ipv6.conf.all.disable_ipv6", "0").unwrap();
    }
    if v6 {
        gw.ip(&["addr", "add", &format!("{}/64", net.node), "dev", "eth0", "nodad"]).unwrap();
        pods.attach(&gw, "eth1", "100.64.1.254/24").unwrap();
        pods.attach(&pod, "eth0", "100.64.1.1/24").unwrap();
        for (ns, dev, addr) in [(&gw, "eth1", net.pod_gateway), (&pod, "eth0", net.pod)] {
            ns.ip(&["addr", "add", &format!("{addr}/{}", net.pod_prefix), "dev", dev, "nodad"]).unwrap();
        }
        gw.sysctl("net.ipv6.conf.all.forwarding", "1").unwrap();
    } else {
        pods.attach(&gw, "eth1", &format!("{}/{}", net.pod_gateway, net.pod_prefix)).unwrap();
        pods.attach(&pod, "eth0", &format!("{}/{}", net.pod, net.pod_prefix)).unwrap();
        gw.sysctl("net.ipv4.ip_forward", "1").unwrap();
    }
    pod.ip(&["route", "add", "default", "via", &net.pod_gateway.to_string()]).unwrap();
    Hosts { gw, a, m, pod, _links: [lan, pods] }
}

/// The agent's gateway state for slot 0 with shoots A and M, as a `kubelink run` file, and its
/// firewall spec.
fn gateway_file(
    net: &Net,
    device: &str,
    key: &PrivateKey,
    shoots: [(&PrivateKey, IpAddr); 2],
) -> (String, FirewallSpec) {
    let peers: BTreeSet<kubelink::agent::ShootPeer> = shoots
        .iter()
        .map(|(k, addr)| kubelink::agent::ShootPeer {
            public_key: k.public_key(),
            address: *addr,
            shoot: format!("garden/{addr}"),
            control_plane: format!("shoot--garden--{addr}"),
            vpn_server: None,
        })
        .collect();
    kubelink_tests::gateway_file::slot0(device, net.cidr, key, &peers)
}

/// A shoot's `kubelink run` file: its address, the gateway as its one peer; `extra` device fields.
fn shoot_file(
    net: &Net,
    device: &str,
    key: &PrivateKey,
    addr: IpAddr,
    gw: &PrivateKey,
    allowed: &str,
    extra: &str,
) -> String {
    format!(
        "device:\n  name: {device}\n  privateKey: {}\n{extra}  addresses: [{addr}/{}]\n  peers:\n  - publicKey: {}\n    endpoint: {GW_UNDERLAY}:51820\n    allowedIPs: [{allowed}]\n",
        key.expose_base64().as_str(),
        net.cidr.prefix_len(),
        gw.public_key()
    )
}

fn start(ns: &Netns, dir: &std::path::Path, name: &str, text: &str) -> Proc {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    let config = path.to_string_lossy().into_owned();
    // No timed resync: the control phase's hand edit stays until something else wakes the daemon.
    let args =
        ["run", "--wg-backend", "userspace", "--on-exit", "remove", "--resync-interval", "1h", "--config", &config];
    netns::start_kubelink(ns, dir, name, &args)
}

/// A full-tunnel client for `AllowedIPs = 0.0.0.0/0, ::/0`: everything not marked as the device's own
/// WireGuard packet goes into the tunnel, the node address of the gateway included. Once the device
/// is up (a route needs that).
fn route_everything_into_the_tunnel(m: &Netns, device: &str) -> bool {
    let routed = netns::wait_for(Duration::from_secs(10), || {
        ["-4", "-6"].iter().all(|fam| m.ip(&[fam, "route", "replace", "default", "dev", device, "table", MARK]).is_ok())
    });
    routed.is_some()
        && ["-4", "-6"]
            .iter()
            .all(|fam| m.ip(&[fam, "rule", "add", "not", "fwmark", MARK, "table", MARK, "priority", "10"]).is_ok())
}

fn tcp_listener(ns: &Netns, any: IpAddr, port: u16) -> TcpListener {
    ns.run_in(move || {
        let l = TcpListener::bind(SocketAddr::new(any, port)).unwrap();
        l.set_nonblocking(true).unwrap();
        l
    })
    .unwrap()
}

fn udp_socket(ns: &Netns, any: IpAddr, port: u16) -> UdpSocket {
    ns.run_in(move || {
        let s = UdpSocket::bind(SocketAddr::new(any, port)).unwrap();
        s.set_nonblocking(true).unwrap();
        s
    })
    .unwrap()
}

/// Connections waiting on a listener.
fn accepted(l: &TcpListener) -> Vec<SocketAddr> {
    std::iter::from_fn(|| l.accept().ok().map(|(_, from)| from)).collect()
}

fn accept_within(l: &TcpListener, timeout: Duration) -> Option<(TcpStream, SocketAddr)> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Ok(c) = l.accept() {
            return Some(c);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// The source of the first datagram, waiting up to `timeout`.
fn received_from(s: &UdpSocket, timeout: Duration) -> Option<IpAddr> {
    let start = Instant::now();
    let mut buf = [0u8; 64];
    loop {
        if let Ok((_, from)) = s.recv_from(&mut buf) {
            return Some(from.ip());
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// An attempt from a namespace; `true` when it got through (an answer, a connection).
#[derive(Debug, Clone, Copy)]
enum Try {
    /// Three echoes, as the sidecar's probe sends them, from `source`.
    Ping(IpAddr, IpAddr),
    Tcp(SocketAddr),
    /// One datagram: whether it arrives shows at the receiver only (never `true` here).
    Udp(SocketAddr),
}

fn attempt(ns: &Netns, t: Try) -> bool {
    ns.run_in(move || match t {
        Try::Ping(dst, source) => {
            kubelink::probe::ping_burst(dst, Some(source), kubelink::probe::BURST, ATTEMPT).is_ok()
        }
        Try::Tcp(dst) => TcpStream::connect_timeout(&dst, ATTEMPT).is_ok(),
        Try::Udp(dst) => {
            let s = UdpSocket::bind(SocketAddr::new(if dst.is_ipv4() { ip("0.0.0.0") } else { ip("::") }, 0)).unwrap();
            s.send_to(b"from a shoot", dst).unwrap();
            false
        }
    })
    .unwrap()
}

/// All attempts at once (each waits for its own timeout); which got through, in order.
fn attempts(ns: &Netns, tries: &[Try]) -> Vec<bool> {
    std::thread::scope(|s| {
        let handles: Vec<_> = tries.iter().map(|t| s.spawn(move || attempt(ns, *t))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// The UDP flow to `port` as the gateway's connection tracking has it: where its replies go, i.e. the
/// source it left with (its own, or the address SNAT gave it).
fn translated_to(gw: &Netns, cidr: IpNet, port: u16) -> Option<IpAddr> {
    let family = if cidr.addr().is_ipv4() { "ipv4" } else { "ipv6" };
    let out = gw.sh(&["conntrack", "-L", "-f", family, "-p", "udp", "--dport", &port.to_string()]).ok()?;
    let flow = out.lines().next()?;
    flow.split_whitespace().filter_map(|w| w.strip_prefix("dst=")).nth(1)?.parse().ok()
}

fn table(gw: &Netns) -> Ruleset {
    let out = gw.sh(&["nft", "-j", "list", "table", "inet", "kubelink"]).unwrap();
    Ruleset::from_listing(&serde_json::from_str(&out).unwrap()).unwrap()
}

/// What the drop counters grew by (zero when the table was rewritten meanwhile: a fresh table
/// counts from zero, and the assertions then fail instead of passing on a wrapped count).
fn minus(after: Drops, before: Drops) -> Drops {
    Drops {
        shoot_to_shoot: after.shoot_to_shoot.saturating_sub(before.shoot_to_shoot),
        shoot_to_seed: after.shoot_to_seed.saturating_sub(before.shoot_to_seed),
        shoot_to_node: after.shoot_to_node.saturating_sub(before.shoot_to_node),
    }
}

/// The pod opens a TCP connection to `dst` and exchanges a line with whoever accepts on `l`.
fn tcp_exchange(pod: &Netns, l: &TcpListener, dst: SocketAddr) -> Result<(), String> {
    let client = pod.run_in(move || TcpStream::connect_timeout(&dst, Duration::from_secs(2))).unwrap();
    let mut client = client.map_err(|e| format!("connect {dst}: {e}"))?;
    let (mut server, _) = accept_within(l, Duration::from_secs(2)).ok_or("nothing accepted")?;
    server.set_nonblocking(false).map_err(|e| e.to_string())?;
    client.write_all(b"ping\n").map_err(|e| e.to_string())?;
    let mut buf = [0u8; 5];
    server.read_exact(&mut buf).map_err(|e| e.to_string())?;
    server.write_all(b"pong\n").map_err(|e| e.to_string())?;
    client.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
    client.read_exact(&mut buf).map_err(|e| e.to_string())?;
    (&buf == b"pong\n").then_some(()).ok_or_else(|| format!("got {buf:?}"))
}

/// A running scenario: the hosts, the gateway's firewall spec, the three daemons.
struct Run {
    h: Hosts,
    net: Net,
    spec: FirewallSpec,
    _daemons: [Proc; 3],
}

/// Hosts, daemons, M's routing; both shoots' probes of the slot address, exactly as the sidecar sends
/// them (they also make the handshakes); the gateway's table is the agent's.
fn start_all(test: &str, net: Net) -> Run {
    let dir = netns::workdir(test);
    let h = hosts(&net);
    let [gw_key, a_key, m_key] = [(); 3].map(|_| PrivateKey::generate());
    let [gw_dev, a_dev, m_dev] = ["g", "a", "m"].map(netns::unique);
    let (gw_text, spec) = gateway_file(&net, &gw_dev, &gw_key, [(&a_key, net.shoot_a), (&m_key, net.shoot_m)]);
    let slot = spec.snat_to;
    let gw = start(&h.gw, &dir, "gateway", &gw_text);
    // Shoots start once the gateway's device listens with its peers: a first handshake sent earlier
    // would be retried only after 5 s.
    let peers = || netns::status(&h.gw, &gw_dev).ok().and_then(|s| s["peers"].as_array().map(Vec::len));
    let ready = netns::wait_for(Duration::from_secs(10), || peers() == Some(2));
    assert!(ready.is_some(), "the gateway's device has no peers; logs in {}", dir.display());
    let a_text = shoot_file(&net, &a_dev, &a_key, net.shoot_a, &gw_key, &format!("{slot}/{}", slot_prefix(slot)), "");
    let a = start(&h.a, &dir, "shoot-a", &a_text);
    // A fixed MTU: `auto` would follow the route to the endpoint, which now points into the tunnel.
    let extra = format!("  fwmark: {MARK}\n  mtu: 1420\n");
    let m_text = shoot_file(&net, &m_dev, &m_key, net.shoot_m, &gw_key, "\"0.0.0.0/0\", \"::/0\"", &extra);
    let m = start(&h.m, &dir, "shoot-m", &m_text);
    let routed = route_everything_into_the_tunnel(&h.m, &m_dev);
    assert!(routed, "shoot M's device did not come up; logs in {}", dir.display());
    for (ns, own) in [(&h.a, net.shoot_a), (&h.m, net.shoot_m)] {
        let probed = netns::wait_for(Duration::from_secs(10), || attempt(ns, Try::Ping(slot, own)));
        assert!(probed.is_some(), "{own}: no answer to the probe of {slot}; logs in {}", dir.display());
    }
    let have = table(&h.gw);
    assert_eq!(have.diff(&kubelink::firewall::desired(&spec)), Vec::<String>::new(), "not the agent's table");
    println!("{test}: drops before the attempts (probes, handshakes) {:?}", have.drops);
    Run { h, net, spec, _daemons: [gw, a, m] }
}

/// The seed's traffic: the pod to both shoots (ICMP, and TCP both ways to M), the node's own probe of
/// a shoot from the slot address (the agent's data-path check).
fn seed_side_passes(r: &Run, m_tcp: &TcpListener) {
    let (h, net, slot) = (&r.h, &r.net, r.spec.snat_to);
    assert!(attempt(&h.pod, Try::Ping(net.shoot_m, net.pod)), "pod -> shoot M");
    assert!(attempt(&h.pod, Try::Ping(net.shoot_a, net.pod)), "pod -> shoot A");
    tcp_exchange(&h.pod, m_tcp, SocketAddr::new(net.shoot_m, TCP))
        .unwrap_or_else(|e| panic!("pod -> shoot M over TCP: {e}"));
    assert!(attempt(&h.gw, Try::Ping(net.shoot_m, slot)), "gateway node -> shoot M");
}

/// What the hostile shoot tries: another shoot, the seed pod, the gateway node's listeners on its
/// node address and on the slot address, an echo to the node address.
fn hostile_tries(net: &Net, slot: IpAddr) -> Vec<(&'static str, Try)> {
    let mut tries = vec![
        ("ping shoot A", Try::Ping(net.shoot_a, net.shoot_m)),
        ("TCP to shoot A", Try::Tcp(SocketAddr::new(net.shoot_a, TCP))),
        ("UDP to shoot A", Try::Udp(SocketAddr::new(net.shoot_a, UDP))),
        ("ping the seed pod", Try::Ping(net.pod, net.shoot_m)),
        ("TCP to the seed pod", Try::Tcp(SocketAddr::new(net.pod, TCP))),
        ("ping the node address", Try::Ping(net.node, net.shoot_m)),
    ];
    for p in NODE_PORTS {
        tries.push(("TCP to the node address", Try::Tcp(SocketAddr::new(net.node, p))));
        tries.push(("TCP to the slot address", Try::Tcp(SocketAddr::new(slot, p))));
    }
    tries
}

fn hostile_shoot(test: &str, net: Net) {
    if !netns::require(test, &["ip", "nft", "conntrack"]) {
        return;
    }
    let begin = Instant::now();
    let r = start_all(test, net);
    let (h, net, slot) = (&r.h, &r.net, r.spec.snat_to);
    let node: Vec<TcpListener> = NODE_PORTS.iter().map(|p| tcp_listener(&h.gw, net.any, *p)).collect();
    let (a_tcp, a_udp) = (tcp_listener(&h.a, net.any, TCP), udp_socket(&h.a, net.any, UDP));
    let (pod_tcp, m_tcp) = (tcp_listener(&h.pod, net.any, TCP), tcp_listener(&h.m, net.any, TCP));
    seed_side_passes(&r, &m_tcp);

    // The hostile shoot's attempts, all at once: none gets through, no listener accepts.
    let hostile = hostile_tries(net, slot);
    let tries: Vec<Try> = hostile.iter().map(|(_, t)| *t).collect();
    let filtered = table(&h.gw);
    let got = attempts(&h.m, &tries);
    let after = table(&h.gw);
    let through: Vec<String> =
        hostile.iter().zip(&got).filter(|(_, g)| **g).map(|((what, t), _)| format!("{what} {t:?}")).collect();
    assert!(through.is_empty(), "the hostile shoot got through: {through:?}");
    let reached: Vec<SocketAddr> = node.iter().chain([&a_tcp, &pod_tcp]).flat_map(accepted).collect();
    assert!(reached.is_empty(), "connections accepted from the hostile shoot: {reached:?}");
    assert_eq!(received_from(&a_udp, Duration::ZERO), None, "shoot A received M's datagram");

    // Each drop counted where it was going: shoot A 3 echoes + 1 SYN + 1 datagram; the pod 3 + 1; the
    // node 3 echoes + 3 SYNs to its address and 3 to the slot address. More is noise of M's own.
    let drops = minus(after.drops, filtered.drops);
    println!("{test}: drops during the attempts {drops:?}; table total {:?}", after.drops);
    assert!(drops.shoot_to_shoot >= 5 && drops.shoot_to_seed >= 4 && drops.shoot_to_node >= 9, "{drops:?}");
    // The filter runs before the forwarding counters: what it drops is no forwarding fault.
    let from_tunnel = |r: &Ruleset| r.counters.from_tunnel;
    let grew = |i: fn(&(u64, u64)) -> u64| i(&from_tunnel(&after)).saturating_sub(i(&from_tunnel(&filtered)));
    let (entered, left) = (grew(|c| c.0), grew(|c| c.1));
    println!("{test}: forwarded out of the tunnel meanwhile: {entered} entered, {left} left");
    assert_eq!(datapath::dropped(&filtered.counters, &after.counters), None);
    assert_eq!(entered, left, "a dropped packet was counted as forwarded");
    assert!(attempt(&h.m, Try::Ping(slot, net.shoot_m)), "shoot M's probe after the attempts");

    control(h, net, slot, &a_udp);
    println!("{test}: {:.1} s", begin.elapsed().as_secs_f64());
}

/// The filter flushed by hand: some of the same attempts get through (they were real), and M's
/// datagram to shoot A leaves the gateway with M's own address: SNAT never lends a shoot the slot
/// address, so A's WireGuard (whose one peer is its gateway's address) refuses it. The gateway's
/// daemon repairs the table on its next pass; a round it repaired in the middle is run again.
fn control(h: &Hosts, net: &Net, slot: IpAddr, a_udp: &UdpSocket) {
    let flushed = || table(&h.gw).rules.get("shoot_forward").is_none_or(Vec::is_empty);
    for _ in 0..3 {
        for chain in ["shoot_forward", "shoot_input"] {
            h.gw.sh(&["nft", "flush", "chain", "inet", "kubelink", chain]).unwrap();
        }
        let open = [
            Try::Tcp(SocketAddr::new(net.node, NODE_PORTS[0])),
            Try::Tcp(SocketAddr::new(slot, NODE_PORTS[1])),
            Try::Ping(net.pod, net.shoot_m),
        ];
        let got = attempts(&h.m, &open);
        attempt(&h.m, Try::Udp(SocketAddr::new(net.shoot_a, UDP)));
        if !flushed() {
            println!("control: the daemon repaired the table meanwhile; again");
            continue;
        }
        netns::wait_for(Duration::from_secs(2), || translated_to(&h.gw, net.cidr, UDP).is_some());
        let source = translated_to(&h.gw, net.cidr, UDP);
        assert_eq!(got, [true; 3], "without the filter the attempts get through: {open:?}");
        assert_eq!(source, Some(net.shoot_m), "the hairpin left with another source");
        assert_eq!(received_from(a_udp, Duration::from_millis(300)), None, "shoot A took a datagram from M");
        return;
    }
    panic!("the gateway's daemon repaired every control round");
}

fn slot_prefix(slot: IpAddr) -> u8 {
    if slot.is_ipv4() { 32 } else { 128 }
}

#[test]
fn a_hostile_shoot_reaches_nothing_but_its_replies_and_the_probe_ipv4() {
    hostile_shoot("hostile_shoot_ipv4", v4());
}

#[test]
fn a_hostile_shoot_reaches_nothing_but_its_replies_and_the_probe_ipv6() {
    hostile_shoot("hostile_shoot_ipv6", v6());
}
