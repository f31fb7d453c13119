//! A shoot's control plane migrated from one seed to another, each seed a landscape of its own
//! (`landscape::seed`: its own real API server, three nodes, one gateway slot, its extension
//! controller), gardenlet's part played by its stand-in: the shoot keeps its key (and here its
//! address, free on the second seed), its running sidecar takes the second seed's gateway from the
//! Secret delivered there, the tunnel comes up through the second seed's gateway, and the first seed
//! forgets the shoot (no peer on its gateway, no way through from its pod).

use std::time::{Duration, Instant};

use kubelink_tests::landscape::seed::SeedLandscape;
use kubelink_tests::landscape::{self, Started, node_of};
use kubelink_tests::netns::{self, ping_in};

const TOOLS: [&str; 5] = ["ip", "ping", "nft", "conntrack", "wg"];

/// The node holding `l`'s only slot.
fn gateway(rt: &tokio::runtime::Runtime, l: &SeedLandscape) -> usize {
    node_of(rt.block_on(l.holders()).get(&0).expect("slot 0 is held"))
}

/// The public key of shoot `i`'s device, and the keys of its peers (the gateways it dials).
fn shoot_keys(l: &SeedLandscape, i: usize) -> (String, Vec<String>) {
    let shoot = &l.shoots[i];
    let own = shoot.ns.sh(&["wg", "show", &shoot.device, "public-key"]).expect("wg show").trim().to_string();
    let peers = shoot.ns.sh(&["wg", "show", &shoot.device, "peers"]).expect("wg show");
    (own, peers.lines().map(str::to_string).collect())
}

/// Pings from `l`'s pod to `dst` answered, of `count`.
fn answered(l: &SeedLandscape, dst: &str, count: u32) -> u32 {
    let pod = kubelink_tests::landscape::seed::POD_IP.to_string();
    ping_in(&l.nodes[2].name, dst, count, "0.2", Some(&pod)).1
}

#[test]
fn a_migrated_shoot_keeps_its_key_and_its_tunnel_comes_up_on_the_second_seed() {
    let Some(Started { rt, l: mut one, dir }) = landscape::start("migration-seed-one", &TOOLS, 1, 1) else {
        return;
    };
    assert!(rt.block_on(one.wait_for_shoots(Duration::from_secs(60))), "shoot unreachable; logs in {}", dir.display());
    let dir_two = netns::workdir("migration-seed-two");
    let mut two = rt
        .block_on(SeedLandscape::build_named("two", 0, 1, false, &dir_two, &netns::kubelink_bin()))
        .unwrap_or_else(|e| panic!("building the second seed: {e}"));
    rt.block_on(two.start()).unwrap_or_else(|e| panic!("starting the second seed: {e}; logs in {}", dir_two.display()));

    let (key, gateways_one) = shoot_keys(&one, 0);
    let address = one.shoots[0].address.expect("allocated").to_string();
    let gw_one = gateway(&rt, &one);
    assert!(one.gateway_peers(gw_one).contains(&key), "the first seed's gateway serves the shoot");
    let sidecar = one.shoots[0].proc.as_ref().expect("sidecar runs").pid();

    let started = Instant::now();
    let moving = rt.block_on(one.migrate_shoot_out(0)).unwrap_or_else(|e| panic!("migrate: {e}"));
    let migrated = started.elapsed();
    let forgotten = netns::wait_for(Duration::from_secs(15), || !one.gateway_peers(gw_one).contains(&key));
    assert!(forgotten.is_some(), "the first seed's gateway still has the migrated shoot's peer");
    assert_eq!(answered(&one, &address, 5), 0, "the first seed's pod still reaches the migrated shoot");

    let restoring = Instant::now();
    rt.block_on(two.restore_shoot(moving)).unwrap_or_else(|e| panic!("restore: {e}; logs in {}", dir_two.display()));
    let restored = restoring.elapsed();
    assert!(
        rt.block_on(two.wait_for_shoots(Duration::from_secs(60))),
        "the migrated shoot is unreachable from the second seed; logs in {} and {}",
        dir.display(),
        dir_two.display()
    );
    let up = restoring.elapsed();
    println!(
        "migrate on seed one {migrated:.1?}, gateway forgot the peer {:.1?} later; restore on seed two {restored:.1?}, \
         tunnel up {up:.1?} after the restore began",
        forgotten.unwrap()
    );

    let (key_after, gateways_two) = shoot_keys(&two, 0);
    assert_eq!(key_after, key, "the shoot keeps its key");
    assert_eq!(two.shoots[0].address.map(|a| a.to_string()), Some(address.clone()), "the free address is kept");
    assert_ne!(gateways_two, gateways_one, "the shoot dials the second seed's gateway now");
    assert!(two.gateway_peers(gateway(&rt, &two)).contains(&key), "the second seed's gateway serves the shoot");
    let same_sidecar = two.shoots[0].proc.as_ref().map(|p| p.pid());
    assert_eq!(same_sidecar, Some(sidecar), "the running sidecar followed its Secret (no restart)");
    assert_eq!(answered(&two, &address, 10), 10, "pings from the second seed's pod");
    assert_eq!(answered(&one, &address, 5), 0, "the first seed still reaches nothing there");
    assert!(!one.gateway_peers(gateway(&rt, &one)).contains(&key), "the first seed forgot the shoot");
    two.stop();
    one.stop();
}
