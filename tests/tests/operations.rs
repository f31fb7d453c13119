//! docs/operations.md's day-two procedures on the local landscape (`landscape::seed`), done as an
//! operator does them while the pod pings every shoot every 100 ms:
//!
//! - two slots: the IPAM's and a sidecar's `/metrics` are scraped and checked against what happened;
//!   then the key of slot 0 is rotated (Secret deleted, the IPAM makes a new key, the holder's device
//!   takes it within 15 s, the shoots' Secrets refreshed later);
//! - one slot: the same rotation, whose gap is printed and bounded; then the same landscape goes from
//!   one slot to two (`helm upgrade --set slots=2`).
//!
//! The two landscapes run one after the other (the machine's cores are few); each prints its timings.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kubelink_tests::landscape::seed::ops::{PingCount, Pinger, Window};
use kubelink_tests::landscape::seed::{CIDR, SeedLandscape};
use kubelink_tests::landscape::{self, Started, node_of};

/// One landscape at a time.
static SERIAL: Mutex<()> = Mutex::new(());
/// Seconds between two pings to a shoot.
const INTERVAL: f64 = 0.1;
const TOOLS: [&str; 5] = ["ip", "ping", "nft", "conntrack", "wg"];
/// When the shoots' Secrets are refreshed after the holder's device took the new key in the two-slot
/// rotation: well after, as a kubelet's refresh comes (about a minute there), and within the landscape's
/// warm-up (20 s), during which the holder routes the shoots it has no session with via the other
/// gateway.
const KUBELET_REFRESH: Duration = Duration::from_secs(8);
/// What one restart of a gateway's agent may cost the shoots it serves: its userspace device has
/// no engine from the old process's exit until the new one's first pass (docs/operations.md,
/// "Upgrade": well under 5 s, measured in agent_single_slot). In pings.
const RESTART_LOSS_BOUND: u32 = 50;
/// A shoot's traffic through a restarted gateway resumes when its next packet or probe re-handshakes,
/// after the agent says Ready: losses that late still belong to the restart.
const RESTART_SLACK: Duration = Duration::from_secs(1);
/// Pings a shoot may lose outside the agents' restarts per path change: one. When the pod's flow changes path (a
/// gateway stops routing a shoot via the warm gateway once the shoot has a session with it; the
/// pod's own node takes a slot), the flow's conntrack entry keeps the old path's NAT until the agent
/// resets the flows right after the route change; a ping sent in those milliseconds is lost. A
/// pinger at 10 per second hits that window at most once per change.
const PATH_CHANGE_LOSS: u32 = 1;

/// Waits up to `timeout` for `f`, checking every 100 ms; how long it took.
fn wait(timeout: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// The value of the series `name{labels}` (labels exactly as encoded), if present.
fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A pinger per live shoot, from the pod.
fn ping_every_shoot(l: &SeedLandscape) -> Vec<Pinger> {
    (0..l.shoots.len()).map(|i| l.ping_shoot(i, INTERVAL).expect("pinger")).collect()
}

/// Stops the pingers and prints, per shoot: sent, answered, the longest loss run (and its seconds).
fn counted(what: &str, l: &SeedLandscape, pingers: Vec<Pinger>) -> Vec<PingCount> {
    let counts: Vec<PingCount> = pingers.into_iter().map(Pinger::finish).collect();
    for (i, c) in counts.iter().enumerate() {
        println!(
            "{what}: {} ({}): {} sent, {} answered, longest loss run {} ({:.1} s)",
            l.shoots[i].name,
            l.shoots[i].address.map(|a| a.to_string()).unwrap_or_default(),
            c.sent,
            c.answered,
            c.longest_loss_run,
            f64::from(c.longest_loss_run) * INTERVAL
        );
    }
    counts
}

/// Until every shoot's sidecar says `kubelink_shoot_gateway_up{slot}` = 1 for every slot in `slots`.
fn all_gateways_up(l: &SeedLandscape, slots: &[usize]) -> bool {
    (0..l.shoots.len()).all(|i| {
        let m = l.scrape_sidecar(i);
        slots.iter().all(|s| value(&m, &format!("kubelink_shoot_gateway_up{{slot=\"{s}\"}}")) == Some(1.0))
    })
}

/// The slot key rotation of docs/operations.md on `slot`, with every shoot pinged throughout: the
/// slot Secret deleted (the IPAM writes a new key), the holder's device taking the new key by itself
/// (the holder reads its slot Secret again every 15 s; no restart), the shoots' Secret volumes
/// refreshed `refresh_after` that (the kubelet's part: about a minute on a cluster), and then until
/// every shoot has shaken hands with the new key and its sidecar reports every slot up. Returns the
/// pings.
fn rotate(rt: &tokio::runtime::Runtime, l: &mut SeedLandscape, slot: usize, refresh_after: Duration) -> Vec<PingCount> {
    let slots: Vec<usize> = (0..l.slots).collect();
    let holder = node_of(&rt.block_on(l.holders())[&slot]);
    let old = rt.block_on(l.slot_public_key(slot)).expect("the slot has a key");
    assert_eq!(l.device_public_key(holder).as_deref(), Some(old.as_str()), "the holder uses the slot's key");
    let pingers = ping_every_shoot(l);
    std::thread::sleep(Duration::from_secs(2));
    let start = Instant::now();
    rt.block_on(l.delete_slot_secret(slot)).expect("deleting the slot Secret");
    let new = rt.block_on(l.wait_slot_key(slot, &old, Duration::from_secs(10))).expect("the IPAM makes a new key");
    let keyed = start.elapsed();
    let switched = wait(Duration::from_secs(30), || l.device_public_key(holder).as_deref() == Some(new.as_str()))
        .map(|_| start.elapsed())
        .unwrap_or_else(|| panic!("the holder's device does not take the new key; logs in {}", l.dir.display()));
    std::thread::sleep(refresh_after);
    let file = format!("gateway-{slot}-publicKey");
    let refreshed = wait(Duration::from_secs(30), || {
        rt.block_on(l.sync_shoots());
        (0..l.shoots.len()).all(|i| l.shoot_file(i, &file).as_deref() == Some(new.as_str()))
    })
    .map(|_| start.elapsed())
    .expect("every shoot's Secret gets the new key");
    let since = unix_now() - start.elapsed().as_secs() - 1;
    let up = wait(Duration::from_secs(60), || {
        (0..l.shoots.len()).all(|i| l.shoot_handshake(i, &new).is_some_and(|t| t >= since))
            && all_gateways_up(l, &slots)
    })
    .map(|_| start.elapsed())
    .unwrap_or_else(|| {
        panic!("a sidecar does not report every gateway up after the rotation; logs in {}", l.dir.display())
    });
    // Pings after the sidecars are up again too: a late loss counts.
    std::thread::sleep(Duration::from_secs(3));
    println!(
        "slot {slot} rotation on node {holder}: new key {keyed:?} after the Secret's deletion, the holder's device \
         on it at {switched:?} (no restart), every shoot's Secret refreshed at {refreshed:?}, every shoot's \
         handshake with the new key and every sidecar's gateways up at {up:?}"
    );
    let counts = counted(&format!("{} slot(s), slot {slot} rotated", l.slots), l, pingers);

    // The new key is in use: the holder's device has it and every shoot has shaken hands with it.
    assert_ne!(new, old);
    assert_eq!(node_of(&rt.block_on(l.holders())[&slot]), holder, "the holder keeps the slot");
    assert_eq!(l.device_public_key(holder).as_deref(), Some(new.as_str()), "the holder's device uses the new key");
    let now = unix_now();
    for i in 0..l.shoots.len() {
        let at = l.shoot_handshake(i, &new);
        println!("{}: handshake with the new key of slot {slot} at {at:?} (now {now})", l.shoots[i].name);
        assert!(at.is_some_and(|t| t + 60 >= now), "{} has no recent handshake with the new key", l.shoots[i].name);
        assert!(l.shoot_handshake(i, &old).is_none(), "{} still has a peer with the old key", l.shoots[i].name);
    }
    counts
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[test]
fn two_slots_key_rotation_keeps_every_tunnel_and_metrics_match() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let Some(Started { rt, mut l, dir }) = landscape::start("ops-two-slots", &TOOLS, 4, 2) else { return };
    assert!(
        rt.block_on(l.wait_for_shoots(Duration::from_secs(60))),
        "a shoot is unreachable; logs in {}",
        dir.display()
    );
    assert_eq!(rt.block_on(l.holders()).len(), 2, "two gateways");
    println!("two-slot landscape with 4 shoots up in {:?}", started.elapsed());

    // Metrics first, while the gateways warm up.
    let t = Instant::now();
    scrape_controller_and_sidecar(&l);
    println!("scrapes took {:?}", t.elapsed());
    // Gateways that have run a while: both warm (as on a seed, where a rotation is not done right
    // after a take-over).
    rt.block_on(l.wait_gateways_warm(Duration::from_secs(60))).expect("warm gateways");
    println!("both gateways warm at {:?}", started.elapsed());

    let t = Instant::now();
    let counts = rotate(&rt, &mut l, 0, KUBELET_REFRESH);
    println!("two-slot rotation took {:?}", t.elapsed());
    // With two slots the rotation costs no shoot its tunnel: from the moment the holder's device has
    // the new key until a shoot has it too (its Secret refreshed seconds later), the holder routes
    // that shoot via the other (warm) gateway.
    // Two path changes for a shoot on slot 0: via the other gateway when the holder's device takes the
    // new key, back when the shoot has shaken hands with it; each may cost one ping.
    assert_restart_losses("two slots, slot 0 rotated", &l, &counts, &[], 2);

    assert_eq!(l.refused(), Vec::<String>::new(), "requests the API servers refused");
    l.stop();
    println!("two-slot scenario: {:?} in all", started.elapsed());
}

/// The extension controller's and shoot 0's sidecar's `/metrics` in the landscape, against what
/// happened.
fn scrape_controller_and_sidecar(l: &SeedLandscape) {
    let controller = l.scrape_controller();
    assert!(controller.starts_with("HTTP/1.1 200"), "the controller's /metrics: {controller:.300}");
    let cidr: ipnet::Ipv4Net = CIDR.parse().unwrap();
    // Every address of the CIDR but the network and broadcast addresses and the two slot addresses.
    let assignable = 2f64.powi(32 - i32::from(cidr.prefix_len())) - 4.0;
    let shoots = l.shoots.len() as f64;
    let read = |s: &str| value(&controller, s);
    let build = controller
        .lines()
        .find(|l| l.starts_with("kubelink_build_info{") && l.contains("role=\"extension\""))
        .unwrap_or_default();
    println!(
        "controller /metrics: pool size {:?} (assignable in {CIDR}: {assignable}), used {:?}, assigned {:?}, \
         build_info: {build}",
        read("kubelink_extension_pool_size_addresses"),
        read("kubelink_extension_pool_used_addresses"),
        read("kubelink_extension_assigned_total"),
    );
    assert_eq!(read("kubelink_extension_pool_size_addresses"), Some(assignable), "{controller}");
    assert_eq!(read("kubelink_extension_pool_used_addresses"), Some(shoots), "one address per shoot: {controller}");
    assert!(read("kubelink_extension_assigned_total").is_some_and(|n| n >= shoots), "{controller}");
    assert!(build.ends_with(" 1"), "kubelink_build_info of the controller: {controller}");

    // Shoot 0's sidecar: both gateways up, recent handshakes, and bytes from each gateway that grow
    // under traffic (pings from the pod go through the gateway of the shoot's preferred slot).
    let series = |m: &str, name: &str, slot: usize| value(m, &format!("{name}{{slot=\"{slot}\"}}"));
    // A sidecar just started counts a gateway up after a handshake and an answered probe.
    let mut before = String::new();
    let up = wait(Duration::from_secs(30), || {
        before = l.scrape_sidecar(0);
        (0..l.slots).all(|s| series(&before, "kubelink_shoot_gateway_up", s) == Some(1.0))
    });
    println!("shoot 0's sidecar reports every gateway up after {up:?}");
    assert!(
        before.starts_with("HTTP/1.1 200"),
        "shoot 0's sidecar /metrics ({:?}): {before:.300}",
        l.sidecar_health(0)
    );
    let now = unix_now() as f64;
    let mut via = BTreeMap::new();
    for slot in 0..l.slots {
        let up = series(&before, "kubelink_shoot_gateway_up", slot);
        let handshake = series(&before, "kubelink_shoot_gateway_last_handshake_timestamp_seconds", slot);
        let rx = series(&before, "kubelink_shoot_gateway_receive_bytes_total", slot);
        println!(
            "shoot 0 sidecar, slot {slot}: up {up:?}, last handshake {handshake:?} (now {now}), received {rx:?} bytes"
        );
        assert_eq!(up, Some(1.0), "{before}");
        // WireGuard re-keys every 120 s: a live session's handshake is never older than that (plus slack).
        assert!(handshake.is_some_and(|t| t <= now + 1.0 && now - t < 180.0), "{before}");
        via.insert(slot, rx.expect("receive bytes series"));
    }
    let dst = l.shoots[0].address.expect("allocated").to_string();
    let (sent, got) = l.nodes[2].ping(&dst, 20, "0.05", Some(&kubelink_tests::landscape::seed::POD_IP.to_string()));
    assert_eq!((sent, got), (20, 20), "pings to shoot 0 between the scrapes");
    // The sidecar reads its device once per pass (resync) and probe: poll until the counter moves.
    let mut after = String::new();
    let grew = wait(Duration::from_secs(10), || {
        after = l.scrape_sidecar(0);
        (0..l.slots)
            .map(|s| series(&after, "kubelink_shoot_gateway_receive_bytes_total", s).unwrap_or(0.0))
            .sum::<f64>()
            >= via.values().sum::<f64>() + 20.0 * 84.0
    });
    for slot in 0..l.slots {
        println!(
            "shoot 0 sidecar, slot {slot}: received {:?} -> {:?} bytes across 20 pings",
            via[&slot],
            series(&after, "kubelink_shoot_gateway_receive_bytes_total", slot)
        );
    }
    assert!(grew.is_some(), "the bytes shoot 0 received did not grow by 20 pings' worth: {after}");
}

#[test]
fn one_slot_key_rotation_gap_is_bounded_then_two_slots_lose_only_restarts() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let Some(Started { rt, mut l, dir }) = landscape::start("ops-one-slot", &TOOLS, 3, 1) else { return };
    assert!(
        rt.block_on(l.wait_for_shoots(Duration::from_secs(60))),
        "a shoot is unreachable; logs in {}",
        dir.display()
    );
    println!("one-slot landscape with 3 shoots up in {:?}", started.elapsed());

    // One slot: the shoots have no tunnel from the moment the holder's device has the new key until
    // their Secret carries it and they shake hands again.
    let t = Instant::now();
    let counts = rotate(&rt, &mut l, 0, Duration::ZERO);
    println!("one-slot rotation took {:?}", t.elapsed());
    for (i, c) in counts.iter().enumerate() {
        let gap = f64::from(c.longest_loss_run) * INTERVAL;
        println!("one slot, key rotated: {} longest gap {gap:.1} s ({} pings lost)", l.shoots[i].name, c.lost());
        assert!(gap <= GAP_BOUND, "shoot {i}: gap {gap:.1} s, bound {GAP_BOUND} s; logs in {}", dir.display());
        // The gap is one stretch: the pings before and after it arrive.
        assert_eq!(c.lost(), c.longest_loss_run, "shoot {i} lost pings outside its one gap");
    }

    // A seed that has run a while: the gateway is warm before the upgrade.
    rt.block_on(l.wait_gateways_warm(Duration::from_secs(60))).expect("a warm gateway");

    // From one slot to two, while every shoot is pinged.
    let pingers = ping_every_shoot(&l);
    std::thread::sleep(Duration::from_secs(2));
    let start = Instant::now();
    let upgrade = rt.block_on(l.upgrade_slots(2)).unwrap_or_else(|e| panic!("upgrade: {e}; logs in {}", dir.display()));
    println!("upgrade to two slots: {upgrade:?}");
    assert!(upgrade.created.iter().any(|o| o == "Service/kubelink-gateway-1"), "no second Service: {upgrade:?}");
    // The controller is told what the release deploys (`--deployed-slots`, from the seed's own
    // setting): its Deployment rolls; the agents' DaemonSet does not change.
    assert!(upgrade.controller_restarted, "the controller did not learn the deployed slots: {upgrade:?}");
    let taken = wait(Duration::from_secs(30), || rt.block_on(l.holders()).len() == 2).map(|_| start.elapsed());
    let published =
        wait(Duration::from_secs(30), || rt.block_on(l.published_slots()) == Some(2)).map(|_| start.elapsed());
    let keys = ["endpoint", "publicKey", "address"].map(|f| format!("gateway-1-{f}"));
    let secrets = wait(Duration::from_secs(30), || {
        rt.block_on(l.sync_shoots());
        (0..l.shoots.len()).all(|i| keys.iter().all(|k| l.shoot_file(i, k).is_some()))
    })
    .map(|_| start.elapsed());
    let up = wait(Duration::from_secs(60), || all_gateways_up(&l, &[0, 1])).map(|_| start.elapsed());
    std::thread::sleep(Duration::from_secs(3));
    let holders = rt.block_on(l.holders());
    println!(
        "one slot -> two: upgrade applied in {:?}; slot 1 taken at {taken:?} ({holders:?}), SeedTunnel with 2 slots \
         at {published:?}, every shoot's Secret with gateway-1-* at {secrets:?}, every sidecar with both gateways up \
         at {up:?}",
        upgrade.took
    );
    let counts = counted("one slot -> two", &l, pingers);
    assert!(taken.is_some(), "no node took slot 1; logs in {}", dir.display());
    assert_ne!(holders[&0], holders[&1], "two nodes hold the two slots");
    assert!(published.is_some(), "the IPAM does not publish two slots");
    assert!(secrets.is_some(), "a shoot's Secret has no gateway-1-*");
    assert!(up.is_some(), "a sidecar does not have both gateways up; logs in {}", dir.display());
    // The slot change itself loses nothing: the new holder warms up (routers leave it out, and it
    // routes the shoots it has no session with via slot 0's gateway) while the shoots' Secrets get
    // gateway-1-*. What the DaemonSet's rolling update costs (its template changed) is bounded.
    let restarts: Vec<Window> = upgrade.agents_restarted.iter().map(|(_, w)| *w).collect();
    assert_restart_losses("one slot -> two", &l, &counts, &restarts, 1);
    assert_eq!(l.refused(), Vec::<String>::new(), "requests the API servers refused");
    l.stop();
    println!("one-slot scenario: {:?} in all", started.elapsed());
}

/// The longest gap one shoot may see when the only slot's key is rotated, in seconds: from the
/// holder's device taking the new key, the test's poll of it (100 ms) and the Secret copy, then the
/// sidecar's next read of its Secret directory (every second; the kubelet's refresh is immediate here)
/// and a probe that re-handshakes (a burst, then a restart at most every 5 s under loss).
const GAP_BOUND: f64 = 7.0;

/// Prints and asserts, per shoot: at most [`PATH_CHANGE_LOSS`] per path change (`path_changes`) pings
/// lost outside the agents' restarts `restarts` (stop to Ready, plus [`RESTART_SLACK`]); within them at most
/// [`RESTART_LOSS_BOUND`] per restart.
fn assert_restart_losses(what: &str, l: &SeedLandscape, counts: &[PingCount], restarts: &[Window], path_changes: u32) {
    for (i, c) in counts.iter().enumerate() {
        let during = c.lost_within(restarts, RESTART_SLACK);
        let outside = c.lost() - during;
        println!(
            "{what}: {}: {} of {} pings lost, {during} during the {} agent restart(s), {outside} outside them",
            l.shoots[i].name,
            c.lost(),
            c.sent,
            restarts.len()
        );
        assert!(c.sent >= 30, "shoot {i}: the pinger ran {} pings only", c.sent);
        assert!(
            outside <= PATH_CHANGE_LOSS * path_changes,
            "{what}: shoot {i} lost {outside} pings outside the agents' restarts; logs in {}",
            l.dir.display()
        );
        assert!(
            during <= RESTART_LOSS_BOUND * restarts.len() as u32,
            "{what}: shoot {i} lost {during} pings in {} restart(s)",
            restarts.len()
        );
    }
}
