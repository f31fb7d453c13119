//! The seed agent under change and faults, in the local landscape with two slots: state deleted by hand
//! comes back; shoots come and go while traffic to the others flows; the API server is cut off for 60 s
//! while traffic flows (the gateways stay Ready and in their load balancers, which follow readiness),
//! and the agents catch up with what changed meanwhile; then a gateway's node stops forwarding and the
//! gateway gives its slot up within the bound; then the other gateway's node gets a rule that drops
//! everything forwarded, and that gateway gives its slot up within the bound too.

use std::time::{Duration, Instant};

use kubelink_tests::landscape::seed::{POD_IP, SeedLandscape, node_ip};
use kubelink_tests::landscape::{self, Started, node_of};
use kubelink_tests::netns;
use kubelink_tests::netns::ping_in;

const POD_NODE: usize = 2;

/// Pings each of `shoots` from the pod in its own thread; join for (sent, received) each.
fn ping_all(
    l: &SeedLandscape,
    shoots: &[usize],
    count: u32,
    interval: &str,
) -> Vec<std::thread::JoinHandle<(u32, u32)>> {
    shoots
        .iter()
        .map(|i| {
            let (ns, dst) = (l.nodes[POD_NODE].name.clone(), l.shoots[*i].address.expect("allocated").to_string());
            let interval = interval.to_string();
            std::thread::spawn(move || ping_in(&ns, &dst, count, &interval, Some(&POD_IP.to_string())))
        })
        .collect()
}

fn assert_nothing_lost(what: &str, shoots: &[usize], pings: Vec<std::thread::JoinHandle<(u32, u32)>>) {
    for (i, p) in shoots.iter().zip(pings) {
        let (sent, got) = p.join().unwrap();
        println!("{what}: shoot {i} answered {got} of {sent} pings");
        assert!(sent > 0 && sent == got, "{what}: shoot {i} lost {} of {sent} pings", sent - got);
    }
}

/// Shoot `i`'s public key as the gateways list it (from its Secret's key file).
fn shoot_key(l: &SeedLandscape, i: usize) -> String {
    let private = std::fs::read_to_string(l.shoots[i].config_dir.join("privateKey")).expect("shoot key file");
    let key: kubelink_ipam::keys::PrivateKey = private.trim().parse().expect("shoot key");
    key.public_key().to_string()
}

fn on_gateways(l: &SeedLandscape, gateways: &[usize], key: &str) -> usize {
    gateways.iter().filter(|g| l.gateway_peers(**g).iter().any(|p| p == key)).count()
}

/// Syncs sidecars until every live shoot answers, up to `limit`; returns how long it took.
fn until_reachable(rt: &tokio::runtime::Runtime, l: &mut SeedLandscape, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    rt.block_on(l.wait_for_shoots(limit)).then(|| start.elapsed())
}

/// The agents' --give-up-after (chart default) and retry period: a gateway that stops forwarding is
/// found at the next check (each retry period, a probe waits up to 1 s) and gives up after this.
const GIVE_UP_AFTER: Duration = Duration::from_secs(5);
/// The stated bound from the fault to the released Lease: give-up-after plus a check period and a
/// probe timeout, plus one Lease read by the test.
const GIVE_UP_BOUND: Duration = Duration::from_secs(GIVE_UP_AFTER.as_secs() + 3);
/// The same for dropped forwarded packets: the table's counters are compared between two checks, so
/// the first check after the drop rule may still see packets that left before it: one period more.
const DROP_BOUND: Duration = Duration::from_secs(GIVE_UP_BOUND.as_secs() + 1);

/// Samples every second while `until` is false: each gateway's /readyz and each slot's load balancer
/// backend. Returns (samples, samples with every gateway Ready and every slot on its gateway).
fn watch_readiness(
    l: &mut SeedLandscape,
    gateways: &[usize],
    mut until: impl FnMut(&mut SeedLandscape) -> bool,
) -> (u32, u32) {
    let want: Vec<Option<String>> = gateways.iter().map(|g| Some(node_ip(*g))).collect();
    let (mut samples, mut good) = (0, 0);
    while !until(l) {
        let ready = gateways.iter().all(|g| l.readyz(*g) == Some(200));
        let backends = l.backends();
        if !ready || backends != want {
            let codes: Vec<Option<u16>> = gateways.iter().map(|g| l.readyz(*g)).collect();
            println!("sample {samples}: /readyz {codes:?}, load balancers {backends:?} (want {want:?})");
        }
        samples += 1;
        good += u32::from(ready && backends == want);
        std::thread::sleep(Duration::from_secs(1));
    }
    (samples, good)
}

#[test]
fn drift_churn_api_outage_and_forwarding_off() {
    let tools = ["ip", "ping", "nft", "conntrack", "wg", "sysctl"];
    let Some(Started { rt, mut l, dir }) = landscape::start("agent-churn", &tools, 4, 2) else { return };
    let holders = rt.block_on(l.holders());
    let gateways: Vec<usize> = holders.values().map(|h| node_of(h)).collect();
    println!("gateways: {holders:?}");
    assert_eq!(gateways.len(), 2);
    assert!(!gateways.contains(&POD_NODE), "the pod's node starts last and routes");
    assert!(until_reachable(&rt, &mut l, Duration::from_secs(60)).is_some(), "logs in {}", dir.display());

    // A route deleted by hand on the pod's node, and a peer removed by hand on a gateway.
    let addr = l.shoots[3].address.unwrap().to_string();
    l.nodes[POD_NODE].ip(&["route", "del", &format!("{addr}/32")]).unwrap();
    let back = netns::wait_for(Duration::from_secs(3), || l.routes(POD_NODE).iter().any(|r| r.starts_with(&addr)));
    println!("route to shoot 3 deleted by hand: back after {back:?}");
    assert!(back.is_some_and(|t| t < Duration::from_secs(1)), "route not back within 1 s: {back:?}");
    let key = shoot_key(&l, 3);
    let g = gateways[0];
    l.nodes[g].sh(&["wg", "set", &l.devices[g], "peer", &key, "remove"]).unwrap();
    let back = netns::wait_for(Duration::from_secs(3), || l.gateway_peers(g).contains(&key));
    println!("peer of shoot 3 removed by hand on node {g}: back after {back:?}");
    assert!(back.is_some_and(|t| t < Duration::from_secs(1)), "peer not back within 1 s: {back:?}");
    let again = until_reachable(&rt, &mut l, Duration::from_secs(30));
    println!("every shoot reachable again {again:?} later (the removed peer lost its session)");
    assert!(again.is_some(), "logs in {}", dir.display());

    // Churn: two shoots added, two deleted, while shoots 0 and 1 are pinged 20 times a second.
    let steady = [0, 1];
    let pings = ping_all(&l, &steady, 300, "0.05");
    std::thread::sleep(Duration::from_secs(1));
    let added = [rt.block_on(l.add_shoot()).unwrap(), rt.block_on(l.add_shoot()).unwrap()];
    let created = Instant::now();
    let (gone2, gone3) = (shoot_key(&l, 2), shoot_key(&l, 3));
    for i in [2, 3] {
        rt.block_on(l.delete_shoot(i)).unwrap();
    }
    let removed = netns::wait_for(Duration::from_secs(5), || {
        on_gateways(&l, &gateways, &gone2) + on_gateways(&l, &gateways, &gone3) == 0
    });
    println!("deleted shoots' peers gone from both gateways after {removed:?}");
    assert!(removed.is_some(), "a deleted shoot's peer stays");
    let reachable = until_reachable(&rt, &mut l, Duration::from_secs(30));
    let on_both = added.iter().all(|i| on_gateways(&l, &gateways, &shoot_key(&l, *i)) == 2);
    println!("added shoots reachable {:?} after their Shoots were created", reachable.map(|_| created.elapsed()));
    assert!(on_both && reachable.is_some(), "added shoots not served; logs in {}", dir.display());
    assert_nothing_lost("churn", &steady, pings);

    // The API server is cut off for 60 s. Meanwhile a shoot is added (the IPAM, which still reaches
    // the API server, allocates it) and one is deleted. Traffic to the others must not notice; the
    // gateways stay Ready and their load balancers, which follow readiness, keep sending to them.
    let steady = [0, 1, added[0]];
    let pings = ping_all(&l, &steady, 660, "0.1");
    std::thread::sleep(Duration::from_secs(2));
    l.api_reachable(false).unwrap();
    let cut = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let late = rt.block_on(l.add_shoot()).unwrap();
    rt.block_on(l.delete_shoot(added[1])).unwrap();
    let gone = shoot_key(&l, added[1]);
    let mut synced = Instant::now();
    let (samples, good) = watch_readiness(&mut l, &gateways, |l| {
        if synced.elapsed() > Duration::from_secs(5) {
            rt.block_on(l.sync_shoots());
            synced = Instant::now();
        }
        cut.elapsed() >= Duration::from_secs(60)
    });
    println!("API server cut off for 60 s: gateways Ready and in their load balancers in {good} of {samples} samples");
    assert!(samples >= 50 && good == samples, "a gateway left Ready or its load balancer; logs in {}", dir.display());
    assert_eq!(on_gateways(&l, &gateways, &gone), 2, "a cut-off agent must not have seen the deletion");
    l.api_reachable(true).unwrap();
    let healed = Instant::now();
    let key = shoot_key(&l, late);
    let caught_up = netns::wait_for(Duration::from_secs(60), || {
        on_gateways(&l, &gateways, &key) == 2 && on_gateways(&l, &gateways, &gone) == 0
    });
    println!("API server back: gateways caught up (new peer on both, deleted peer gone) after {caught_up:?}");
    assert!(caught_up.is_some(), "agents did not catch up; logs in {}", dir.display());
    let reachable = until_reachable(&rt, &mut l, Duration::from_secs(30));
    println!(
        "shoot added during the outage reachable {:?} after the API server came back",
        reachable.map(|_| healed.elapsed())
    );
    assert!(reachable.is_some(), "logs in {}", dir.display());
    assert_nothing_lost("API server cut off for 60 s", &steady, pings);
    assert_eq!(rt.block_on(l.holders()), holders, "the outage must not move a slot");

    forwarding_off(&rt, &l, &gateways, &steady, &dir);
    forward_drop_rule(&rt, &l, &gateways, &steady, &dir);
    // Everything the agents and the IPAM did, the charts' RBAC allowed.
    assert_eq!(l.refused(), Vec::<String>::new(), "requests the API servers refused");
    l.stop();
}

/// Slot 0's gateway node stops forwarding (net.ipv4.ip_forward=0): its agent must see it, leave Ready
/// and give the slot up within [`GIVE_UP_BOUND`]; the shoots it carried come back through slot 1 (the
/// routers follow the released Lease), the ones on slot 1 hardly notice.
fn forwarding_off(
    rt: &tokio::runtime::Runtime,
    l: &SeedLandscape,
    gateways: &[usize],
    shoots: &[usize],
    dir: &std::path::Path,
) {
    let g = gateways[0];
    let via = format!("via {} ", node_ip(g));
    let routes = l.routes(POD_NODE);
    let on_slot0 = |i: &usize| {
        let addr = format!("{} ", l.shoots[*i].address.unwrap());
        routes.iter().any(|r| r.starts_with(&addr) && r.contains(&via))
    };
    let (slot0, slot1): (Vec<usize>, Vec<usize>) = shoots.iter().copied().partition(|i| on_slot0(i));
    println!("shoots routed via slot 0 (node {g}): {slot0:?}; via slot 1: {slot1:?}");
    assert!(!slot0.is_empty(), "no shoot routed via slot 0: {routes:?}");
    let (p0, p1) = (ping_all(l, &slot0, 250, "0.1"), ping_all(l, &slot1, 250, "0.1"));
    std::thread::sleep(Duration::from_secs(2));
    l.nodes[g].sysctl("net.ipv4.ip_forward", "0").unwrap();
    let off = Instant::now();
    // Sampled together: when /readyz stops answering 200, the Lease is released, the load balancer moves.
    let (mut unready, mut released, mut lb_moved) = (None, None, None);
    while off.elapsed() < Duration::from_secs(15) && (unready.is_none() || released.is_none() || lb_moved.is_none()) {
        let at = Some(off.elapsed());
        if unready.is_none() && l.readyz(g) != Some(200) {
            unready = at;
        }
        if lb_moved.is_none() && l.backends()[0] != Some(node_ip(g)) {
            lb_moved = at;
        }
        if released.is_none() && rt.block_on(l.holders()).get(&0).is_none_or(|h| node_of(h) != g) {
            released = at;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "node {g} stopped forwarding: /readyz not 200 after {unready:?}, slot 0 released after {released:?} \
         (bound {GIVE_UP_BOUND:?}), its load balancer off node {g} after {lb_moved:?}"
    );
    let gap = |what: &str, shoots: &[usize], pings: Vec<std::thread::JoinHandle<(u32, u32)>>| -> f64 {
        let lost: Vec<u32> = pings.into_iter().map(|p| p.join().unwrap()).map(|(sent, got)| sent - got).collect();
        let worst = f64::from(lost.iter().copied().max().unwrap_or(0)) * 0.1;
        println!("{what}: shoots {shoots:?} lost {lost:?} of 250 pings (gap about {worst:.1} s)");
        worst
    };
    let (gap0, gap1) = (gap("via slot 0", &slot0, p0), gap("via slot 1", &slot1, p1));
    let log = std::fs::read_to_string(dir.join(format!("agent-n{g}.log"))).unwrap_or_default();
    assert!(unready.is_some(), "node {g} stays Ready without forwarding; logs in {}", dir.display());
    assert!(released.is_some_and(|t| t <= GIVE_UP_BOUND), "slot 0 kept past the bound; logs in {}", dir.display());
    assert!(log.contains("IP forwarding is off") && log.contains("giving the slot up"), "node {g} did not say why");
    assert!(lb_moved.is_some(), "the load balancer of slot 0 still sends to node {g}");
    assert!(gap0 <= GIVE_UP_BOUND.as_secs_f64() + 2.0, "gap via slot 0 {gap0:.1} s; logs in {}", dir.display());
    assert!(gap1 <= 1.0, "the other slot's shoots lost {gap1:.1} s; logs in {}", dir.display());
}

/// Slot 1's gateway node gets an nftables rule that drops every forwarded packet (forwarding stays
/// on, and the gateway's own probes still pass, since they never cross the forward hook). Its
/// table's counters see the routers' packets enter and none leave: it must leave Ready and give the
/// slot up within [`DROP_BOUND`]. Seen from slot 0's former gateway, now a router (standby after
/// [`forwarding_off`]), whose pings to a shoot of slot 1 cross the broken node.
fn forward_drop_rule(
    rt: &tokio::runtime::Runtime,
    l: &SeedLandscape,
    gateways: &[usize],
    shoots: &[usize],
    dir: &std::path::Path,
) {
    let (router, g) = (gateways[0], gateways[1]);
    let via = format!("via {} ", node_ip(g));
    let routed = netns::wait_for(Duration::from_secs(30), || {
        let routes = l.routes(router);
        shoots.iter().any(|i| {
            routes.iter().any(|r| r.starts_with(&format!("{} ", l.shoots[*i].address.unwrap())) && r.contains(&via))
        })
    });
    assert!(routed.is_some(), "node {router} routes no shoot via node {g}: {:?}", l.routes(router));
    let routes = l.routes(router);
    let shoot = *shoots
        .iter()
        .find(|i| {
            routes.iter().any(|r| r.starts_with(&format!("{} ", l.shoots[**i].address.unwrap())) && r.contains(&via))
        })
        .expect("a shoot via slot 1");
    let dst = l.shoots[shoot].address.unwrap().to_string();
    let (ns, dst_ping) = (l.nodes[router].name.clone(), dst.clone());
    let pings = std::thread::spawn(move || ping_in(&ns, &dst_ping, 250, "0.1", None));
    std::thread::sleep(Duration::from_secs(2));
    let breakage = [
        "add table inet breakage",
        "add chain inet breakage everything { type filter hook forward priority 0; policy drop; }",
    ];
    for command in breakage {
        l.nodes[g].sh(&["nft", command]).unwrap();
    }
    let broken = Instant::now();
    let (mut unready, mut released) = (None, None);
    while broken.elapsed() < Duration::from_secs(15) && (unready.is_none() || released.is_none()) {
        if unready.is_none() && l.readyz(g) != Some(200) {
            unready = Some(broken.elapsed());
        }
        if released.is_none() && rt.block_on(l.holders()).get(&1).is_none_or(|h| node_of(h) != g) {
            released = Some(broken.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (sent, got) = pings.join().unwrap();
    let gap = f64::from(sent - got) * 0.1;
    println!(
        "node {g} drops everything forwarded (nft rule): /readyz not 200 after {unready:?}, slot 1 released after \
         {released:?} (bound {DROP_BOUND:?}); shoot {shoot} seen from router node {router} lost {} of {sent} pings \
         (gap about {gap:.1} s)",
        sent - got
    );
    l.nodes[g].sh(&["nft", "delete table inet breakage"]).unwrap();
    let log = std::fs::read_to_string(dir.join(format!("agent-n{g}.log"))).unwrap_or_default();
    assert!(unready.is_some(), "node {g} stays Ready while dropping; logs in {}", dir.display());
    assert!(released.is_some_and(|t| t <= DROP_BOUND), "slot 1 kept past the bound; logs in {}", dir.display());
    assert!(log.contains("none left the node") && log.contains("giving the slot up"), "node {g} did not say why");
    assert!(gap <= DROP_BOUND.as_secs_f64() + 2.0, "gap {gap:.1} s; logs in {}", dir.display());
}
