//! One gateway slot, in the local landscape (`landscape::seed` with one slot and one load balancer):
//! the gateway's agent (userspace WireGuard) is killed and restarted on the same node, then the whole
//! gateway node dies and another node takes the slot over; then the new gateway restarts unable to
//! build its device (its port is taken) and gives the slot up to the last node. Packets lost are
//! printed for each; routes on every node follow the slot.

use std::time::{Duration, Instant};

const PROJECT_NS: &str = "garden-dev";
use kubelink_tests::landscape::seed::{AGENT_NS, CIDR, POD_IP, SeedLandscape, node_ip, node_name};
use kubelink_tests::landscape::{self, Started, node_of};
use kubelink_tests::netns;
use kubelink_tests::netns::ping_in;

const INTERVAL: f64 = 0.1;

/// The slot's holder node, waiting up to 15 s for one other than `not`.
fn holder(rt: &tokio::runtime::Runtime, l: &SeedLandscape, not: Option<usize>) -> Option<usize> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        let h = rt.block_on(l.holders()).get(&0).map(|h| node_of(h));
        if h.is_some() && h != not {
            return h;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// Every node but the gateway (and the dead ones) routes the CIDR to the gateway node.
fn assert_routes_follow(l: &SeedLandscape, gateway: usize, dead: &[usize]) {
    for n in (0..l.nodes.len()).filter(|n| *n != gateway && !dead.contains(n)) {
        let want = format!("{CIDR} via {} ", node_ip(gateway));
        let start = Instant::now();
        while !l.routes(n).iter().any(|r| r.starts_with(&want)) && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let routes = l.routes(n);
        println!("node {n} routes: {routes:?}");
        assert!(routes.iter().any(|r| r.starts_with(&want)), "node {n} does not route {CIDR} to node {gateway}");
        assert_eq!(routes.len(), 1, "one route for the CIDR with one slot");
    }
}

/// Pings shoot `i` from the pod `count` times while `during` runs (after 2 s); returns pings lost.
fn lost_while(l: &mut SeedLandscape, i: usize, count: u32, during: impl FnOnce(&mut SeedLandscape)) -> u32 {
    let (pod_ns, dst) = (l.nodes[2].name.clone(), l.shoots[i].address.expect("allocated").to_string());
    let pinger =
        std::thread::spawn(move || ping_in(&pod_ns, &dst, count, &INTERVAL.to_string(), Some(&POD_IP.to_string())));
    std::thread::sleep(Duration::from_secs(2));
    during(l);
    let (sent, got) = pinger.join().unwrap();
    assert_eq!(sent, count, "ping did not run");
    sent - got
}

#[test]
fn single_slot_gateway_restart_and_node_loss() {
    let tools = ["ip", "ping", "nft", "conntrack", "wg", "wireguard-go"];
    let Some(Started { rt, mut l, dir }) = landscape::start("agent-single-slot", &tools, 3, 1) else { return };
    let gw = holder(&rt, &l, None).expect("a gateway is elected");
    println!("gateway: node {gw}");
    assert!(
        rt.block_on(l.wait_for_shoots(Duration::from_secs(60))),
        "a shoot is unreachable; logs in {}",
        dir.display()
    );
    assert_routes_follow(&l, gw, &[]);
    let before = assert_gateway_metrics(&l, gw);
    assert_shoot_traffic_is_dropped_and_counted(&l, gw);

    // A second agent on the gateway's node (a second DaemonSet, a copy run by hand) refuses to start,
    // naming the agent that holds the node; the first one carries on without losing a ping.
    let mut second_exit = None;
    let lost = lost_while(&mut l, 0, 30, |l| {
        let mut second = l.spawn_second_agent(gw).unwrap();
        second_exit = second.wait_exit(Duration::from_secs(10)).map(|status| (status, second.log_text()));
    });
    let (status, log) = second_exit.expect("a second agent on the node kept running");
    let first = l.agents[gw].as_ref().unwrap().pid();
    println!("second agent on node {gw}: exited {status} ({lost} of 30 pings lost meanwhile)");
    assert!(!status.success(), "a second agent started beside the first:\n{log}");
    assert!(log.contains(&format!("pid {first}")), "the refusal does not name the holder (pid {first}):\n{log}");
    assert_eq!(lost, 0, "the first agent was disturbed by the second");
    assert_eq!(holder(&rt, &l, None), Some(gw), "the slot moved");
    assert!(l.agents[gw].as_mut().unwrap().is_running(), "the first agent stopped");

    // The gateway's agent crashes and comes back on the same node: it keeps the slot (its own Lease),
    // and as a userspace gateway rebuilds the device with the endpoints it remembered.
    let lost = lost_while(&mut l, 0, 100, |l| {
        l.agents[gw].take().unwrap().kill();
        l.start_agent(gw).unwrap();
    });
    println!(
        "userspace gateway agent killed and restarted: {lost} of 100 pings lost (gap about {:.1} s)",
        f64::from(lost) * INTERVAL
    );
    assert_eq!(holder(&rt, &l, None), Some(gw), "a restarted gateway keeps its slot");
    assert!(f64::from(lost) * INTERVAL < 5.0, "restart cost {lost} pings; logs in {}", dir.display());

    // The gateway node dies (agent SIGKILLed, node off the network). Another node takes the slot, the
    // load balancer follows the Pod label, the shoots re-key with the new holder, routes follow.
    let killed = Instant::now();
    let lost = lost_while(&mut l, 0, 300, |l| l.kill_node(gw).unwrap());
    let next = holder(&rt, &l, Some(gw)).expect("slot taken over");
    println!(
        "gateway node {gw} killed: node {next} holds the slot; {lost} of 300 pings lost (gap about {:.1} s)",
        f64::from(lost) * INTERVAL
    );
    assert!(f64::from(lost) * INTERVAL < 15.0, "take-over gap too long; logs in {}", dir.display());
    assert_routes_follow(&l, next, &[gw]);
    for i in 0..l.shoots.len() {
        let probe = l.probe(i, Duration::from_secs(2));
        assert!(probe.is_ok(), "shoot {i} after the take-over: {probe:?}; logs in {}", dir.display());
    }
    println!("all shoots reachable {:?} after the node died", killed.elapsed());
    // The new holder counts its take-over; its own per-shoot counters start from its own device.
    let after = assert_gateway_metrics(&l, next);
    println!("shoot 0 bytes received: {before} on node {gw} before, {after} on node {next} after the take-over");

    // Gateway health: the new gateway's agent restarts and finds its WireGuard port taken by another
    // WireGuard on the node (wireguard-go), so it cannot build its device. It must give the slot up.
    let (mut broken, mut took_over, mut squatter) = (Instant::now(), None, None);
    let lost = lost_while(&mut l, 0, 300, |l| {
        l.agents[next].take().unwrap().kill();
        squatter = Some(squat_port(l, next));
        l.start_agent(next).unwrap();
        broken = Instant::now();
        took_over = holder(&rt, l, Some(next)).map(|n| (n, broken.elapsed()));
    });
    drop(squatter);
    let (last, after) = took_over.expect("the broken gateway kept its slot");
    println!(
        "gateway on node {next} restarted without its UDP port: node {last} took the slot {after:?} later; \
         {lost} of 300 pings lost (gap about {:.1} s)",
        f64::from(lost) * INTERVAL
    );
    let log = std::fs::read_to_string(dir.join(format!("agent-n{next}.log"))).unwrap_or_default();
    assert!(log.contains("giving the slot up"), "node {next} did not say why it left the slot");
    // And the slot's Lease tells the story as Events: taken, given up by node `next`, taken by `last`.
    let events = rt.block_on(lease_events(&l));
    println!("Events on Lease kubelink-gateway-0: {events:#?}");
    let by = |reason: &str, n: usize| events.iter().any(|(r, note)| r == reason && note.contains(&node_name(n)));
    assert!(by("SlotGivenUp", next) && by("SlotTaken", last) && by("SlotTaken", next), "{events:?}");
    assert!(f64::from(lost) * INTERVAL < 20.0, "gap too long; logs in {}", dir.display());
    assert_routes_follow(&l, last, &[gw]);
    // Everything the agents and the IPAM did, the charts' RBAC allowed.
    assert_eq!(l.refused(), Vec::<String>::new(), "requests the API servers refused");
    l.stop();
}

/// (reason, note) of every Event on the slot 0 Lease.
async fn lease_events(l: &SeedLandscape) -> Vec<(String, String)> {
    use k8s_openapi::api::events::v1::Event;
    let api = kube::Api::<Event>::namespaced(l.client(), AGENT_NS);
    let list = api.list(&Default::default()).await.expect("listing Events");
    list.items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("kubelink-gateway-0"))
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

/// `/metrics` of node `n`'s agent, read from node `n`'s network namespace (its health port).
fn scrape(l: &SeedLandscape, n: usize) -> String {
    let addr = format!("{}:{}", node_ip(n), kubelink_tests::landscape::lb::HEALTH_PORT);
    l.nodes[n].http_get(&addr, "/metrics")
}

/// The value of the series `name{labels}` (labels exactly as encoded), if present.
fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Gateway `gw` says it holds slot 0, counts taking it once, has one peer series per shoot, and
/// the bytes it received from shoot 0 grow under traffic. Returns those bytes after the traffic.
fn assert_gateway_metrics(l: &SeedLandscape, gw: usize) -> f64 {
    let metrics = scrape(l, gw);
    let samples = metrics.lines().filter(|l| !l.starts_with('#') && !l.starts_with("HTTP") && l.contains(' ')).count();
    println!("gateway n{gw} /metrics: {} bytes, {samples} sample lines, {} shoots", metrics.len(), l.shoots.len());
    assert_eq!(value(&metrics, "kubelink_agent_slot_held{slot=\"0\"}"), Some(1.0), "{metrics}");
    let changes = value(&metrics, "kubelink_agent_slot_changes_total{slot=\"0\",change=\"taken\"}");
    assert_eq!(changes, Some(1.0), "taking the slot is counted once: {metrics}");
    let peers = metrics.lines().filter(|l| l.starts_with("kubelink_gateway_peer_receive_bytes_total{")).count();
    assert_eq!(peers, l.shoots.len(), "one peer series per shoot: {metrics}");
    assert_eq!(value(&metrics, "kubelink_agent_peers"), Some(l.shoots.len() as f64), "{metrics}");
    let shoot = l.shoots[0].name.clone();
    let series = format!("kubelink_gateway_peer_receive_bytes_total{{shoot=\"{PROJECT_NS}/{shoot}\",slot=\"0\"}}");
    let first = value(&metrics, &series);
    assert!(first.is_some(), "no {series} in\n{metrics}");
    let probe = l.probe(0, Duration::from_secs(2));
    assert!(probe.is_ok(), "shoot 0 through gateway {gw}: {probe:?}");
    // The metrics follow the device with the data-path check, once per retry period.
    let start = Instant::now();
    loop {
        let now = value(&scrape(l, gw), &series).unwrap_or_default();
        if now > first.unwrap_or_default() {
            return now;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "{series} did not grow under traffic: {now}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Shoot 0 sends what a shoot may not: datagrams to the slot address's port 9 (the gateway node
/// itself; the sidecar's peer config lets it reach no other address of the seed). None is answered,
/// and the gateway's `kubelink_agent_tunnel_dropped_packets_total{towards="gateway_node"}` grows by at
/// least the datagrams sent (the metric follows the table's counters with each data-plane pass).
fn assert_shoot_traffic_is_dropped_and_counted(l: &SeedLandscape, gw: usize) {
    let series = "kubelink_agent_tunnel_dropped_packets_total{towards=\"gateway_node\"}";
    let before = value(&scrape(l, gw), series);
    assert!(before.is_some(), "the gateway exports its drops: no {series}");
    let slot = kubelink_ipam::contract::Slot::new(0).unwrap();
    let target =
        std::net::SocketAddr::new(slot.address(kubelink_tests::landscape::seed::CIDR.parse().unwrap()).unwrap(), 9);
    const SENT: usize = 5;
    let sent = l.shoots[0]
        .ns
        .run_in(move || {
            let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            (0..SENT)
                .filter(|_| {
                    std::thread::sleep(Duration::from_millis(100));
                    socket.send_to(b"not for the gateway", target).is_ok()
                })
                .count()
        })
        .unwrap();
    assert_eq!(sent, SENT, "shoot 0 could not send to {target}");
    let start = Instant::now();
    loop {
        let now = value(&scrape(l, gw), series).unwrap_or_default();
        if now >= before.unwrap_or_default() + SENT as f64 {
            println!(
                "shoot 0 sent {SENT} datagrams to {target}: gateway n{gw} dropped towards its node {before:?} -> {now}"
            );
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{series} stayed at {now} (before {before:?})");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Another WireGuard on node `n` holding UDP 51820: wireguard-go, set to the port with `wg`.
fn squat_port(l: &SeedLandscape, n: usize) -> netns::Proc {
    let device = netns::unique("q");
    let env_log = l.dir.join("squatter.log");
    let proc = l.nodes[n].spawn("wireguard-go", &["-f", &device], &env_log).unwrap();
    let start = Instant::now();
    while l.nodes[n].sh(&["wg", "set", &device, "listen-port", "51820"]).is_err() {
        assert!(start.elapsed() < Duration::from_secs(5), "wireguard-go did not take UDP 51820");
        std::thread::sleep(Duration::from_millis(50));
    }
    proc
}
