//! Issue 2's first scenario, with real kernel state and real packets: the local landscape (a seed
//! gateway node, a seed worker node, a shoot in network namespaces) running `kubelink run` from
//! config files with userspace devices; the worker routes the WireGuard CIDR to the gateway.

use std::time::Duration;

use ipnet::IpNet;
use kubelink_tests::landscape::standalone::{GATEWAY_IP, Landscape, POD_IP};
use kubelink_tests::netns;

fn tunnel(l: &Landscape) -> String {
    l.shoots[0].tunnel.expect("shoot tunnel address").to_string()
}

fn ping_shoot(l: &Landscape, count: u32) -> (u32, u32) {
    l.worker.ns.ping(&tunnel(l), count, "0.05", Some(&POD_IP.to_string()))
}

fn worker_route(l: &Landscape) -> String {
    l.worker.ns.ip(&["route", "show", "192.168.128.0/22", "proto", "107"]).unwrap_or_default()
}

fn gw_peers(l: &Landscape) -> Vec<String> {
    let status = netns::status(&l.gateway.ns, &l.gateway.device).unwrap();
    let peers = status["peers"].as_array().cloned().unwrap_or_default();
    peers.iter().filter_map(|p| p["publicKey"].as_str().map(String::from)).collect()
}

#[test]
fn gateway_worker_shoot_traffic_drift_repair_peer_changes_and_adoption() {
    if !netns::require("gateway_worker_shoot", &["ip", "ping", "iperf3", "wg"]) {
        return;
    }
    let dir = netns::workdir("three-hosts");
    let mut l = Landscape::build(1, &dir, &netns::kubelink_bin(), "userspace").unwrap();
    let extra: (kubelink::keys::PublicKey, IpNet) =
        (kubelink::keys::PrivateKey::generate().public_key(), "192.168.128.99/32".parse().unwrap());
    let mut gw = l.start(&l.gateway.ns, "gateway", &l.gateway_config(std::slice::from_ref(&extra)).unwrap()).unwrap();
    l.worker.proc = Some(l.start(&l.worker.ns, "worker", &l.worker_config().unwrap()).unwrap());
    l.shoots[0].proc = Some(l.start(&l.shoots[0].ns, "shoot", &l.shoot_config(0).unwrap()).unwrap());
    let shoot_ip = tunnel(&l);

    // Traffic: from the worker's pod through the gateway into the tunnel, and a TCP transfer.
    let took = l.worker.ns.wait_ping(&shoot_ip, Some(&POD_IP.to_string()), Duration::from_secs(10));
    assert!(took.is_some(), "no ping through the tunnel; logs in {}", dir.display());
    println!("tunnel up after {:?}", took.unwrap());
    assert_eq!(ping_shoot(&l, 20), (20, 20));
    tcp_transfer(&l, &shoot_ip);

    // `wg show` sees the userspace device through its UAPI socket.
    let dump = l.gateway.ns.sh(&["wg", "show", &l.gateway.device, "dump"]).unwrap();
    assert!(dump.contains(&l.shoots[0].public_key().to_base64()), "wg show dump: {dump}");

    // Drift: a route deleted by hand comes back.
    assert!(worker_route(&l).contains(&GATEWAY_IP.to_string()));
    l.worker.ns.ip(&["route", "del", "192.168.128.0/22", "proto", "107"]).unwrap();
    let back = netns::wait_for(Duration::from_secs(3), || worker_route(&l).contains(&GATEWAY_IP.to_string()));
    println!("route repaired after {back:?}");
    assert!(back.is_some_and(|d| d < Duration::from_secs(1)), "route not back within 1 s: {back:?}");

    // Drift: a peer removed by hand comes back.
    let extra_key = extra.0.to_base64();
    l.gateway.ns.sh(&["wg", "set", &l.gateway.device, "peer", &extra_key, "remove"]).unwrap();
    let back = netns::wait_for(Duration::from_secs(3), || gw_peers(&l).contains(&extra_key));
    println!("peer repaired after {back:?}");
    assert!(back.is_some_and(|d| d < Duration::from_secs(1)), "peer not back within 1 s: {back:?}");

    // Peers added to and removed from the file while traffic flows: only they change, no packet lost.
    let added = (kubelink::keys::PrivateKey::generate().public_key(), "192.168.128.98/32".parse().unwrap());
    let lost = std::thread::scope(|s| {
        let pinger = s.spawn(|| ping_shoot(&l, 60));
        std::thread::sleep(Duration::from_millis(500));
        l.gateway_config(&[extra, added]).unwrap();
        let there = netns::wait_for(Duration::from_secs(5), || gw_peers(&l).contains(&added.0.to_base64()));
        assert!(there.is_some(), "the added peer did not appear");
        l.gateway_config(&[]).unwrap();
        let gone = netns::wait_for(Duration::from_secs(5), || gw_peers(&l).len() == 1);
        assert!(gone.is_some(), "removed peers are still there: {:?}", gw_peers(&l));
        assert_eq!(gw_peers(&l), vec![l.shoots[0].public_key().to_base64()]);
        pinger.join().unwrap()
    });
    assert_eq!(lost, (60, 60), "traffic to the untouched peer was disturbed");

    // Restart: the gateway's device is adopted (same ifindex), traffic resumes.
    let before = netns::ifindex(&l.gateway.ns, &l.gateway.device).expect("gateway device");
    gw.kill();
    assert_eq!(netns::ifindex(&l.gateway.ns, &l.gateway.device), Some(before), "the tun must outlive the process");
    let restarted = l.start(&l.gateway.ns, "gateway-restarted", &l.gateway_config(&[]).unwrap()).unwrap();
    let back = l.worker.ns.wait_ping(&shoot_ip, Some(&POD_IP.to_string()), Duration::from_secs(10));
    println!("traffic back after {back:?} following a gateway crash and restart");
    assert!(back.is_some(), "no traffic after restart");
    assert_eq!(netns::ifindex(&l.gateway.ns, &l.gateway.device), Some(before), "device was re-created, not adopted");
    assert!(restarted.log_text().contains("adopting the existing tun device"), "{}", restarted.log_text());
}

fn tcp_transfer(l: &Landscape, shoot_ip: &str) {
    let log = l.dir.join("iperf-server.log");
    let _server = l.shoots[0].ns.spawn("iperf3", &["-s", "-1", "-B", shoot_ip], &log).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = l.worker.ns.sh(&["iperf3", "-c", shoot_ip, "-B", &POD_IP.to_string(), "-n", "20M", "-J"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    // iperf3 exits non-zero unless the transfer completed; TCP delivered what it sent.
    let sent = v["end"]["sum_sent"]["bytes"].as_u64().unwrap_or(0);
    let bps = v["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0);
    println!("TCP transfer: {sent} bytes at {:.0} Mbit/s", bps / 1e6);
    assert!(sent >= 20 * 1024 * 1024, "TCP transfer incomplete: {sent} bytes");
}

#[test]
fn landscape_command_reaches_every_shoot() {
    if !netns::require("landscape_command", &["ip"]) {
        return;
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubelink-landscape"))
        .args(["--once", "--shoots", "3"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "kubelink-landscape --once failed");
    assert_eq!(text.matches("reply in").count(), 3, "every shoot answers");
}

/// On a machine without nftables and conntrack the landscape does not start half-way: it stops before
/// building anything, with one line naming each missing tool and how to get it.
#[test]
fn landscape_refuses_to_start_naming_what_is_missing() {
    if !netns::require("landscape_preflight", &["ip", "ping", "sysctl"]) {
        return;
    }
    let bin = netns::workdir("landscape-preflight").join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["ip", "ping", "sysctl"] {
        let path = String::from_utf8(
            std::process::Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().unwrap().stdout,
        )
        .unwrap();
        let _ = std::os::unix::fs::symlink(path.trim(), bin.join(tool));
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubelink-landscape"))
        .args(["--once", "--standalone"])
        .env("PATH", &bin)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    for word in ["nft (nftables)", "conntrack (conntrack)", "scripts/landscape"] {
        assert!(stderr.contains(word), "{word} not named: {stderr}");
    }
    assert!(String::from_utf8_lossy(&out.stdout).is_empty(), "it started something");
}

/// IPv6 disabled on every host (`net.ipv6.conf.{all,default}.disable_ipv6=1`, as on nodes booted with
/// IPv6 off): `kubelink run` builds its devices, routes and peers without it, and traffic flows.
#[test]
fn ipv6_disabled_on_every_host_traffic_still_flows() {
    if !netns::require("ipv6_disabled", &["ip", "ping", "sysctl"]) {
        return;
    }
    let dir = netns::workdir("ipv6-disabled");
    let mut l = Landscape::build(1, &dir, &netns::kubelink_bin(), "userspace").unwrap();
    for ns in [&l.gateway.ns, &l.worker.ns, &l.shoots[0].ns] {
        ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1").unwrap();
        ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1").unwrap();
    }
    l.start_all().unwrap();
    let took = l.worker.ns.wait_ping(&tunnel(&l), Some(&POD_IP.to_string()), Duration::from_secs(10));
    println!("IPv6 disabled on every host: tunnel up after {took:?}");
    assert!(took.is_some(), "no traffic without IPv6; logs in {}", dir.display());
    assert_eq!(ping_shoot(&l, 20), (20, 20));
    let v6 = l.gateway.ns.ip(&["-6", "addr", "show", "dev", &l.gateway.device]).unwrap_or_default();
    assert!(v6.trim().is_empty(), "the gateway device has IPv6 addresses: {v6}");
    for (what, proc) in [("gateway", &l.gateway.proc), ("worker", &l.worker.proc), ("shoot", &l.shoots[0].proc)] {
        let log = proc.as_ref().map(|p| p.log_text()).unwrap_or_default();
        // gotatun's per-packet "No endpoint" (traffic before the shoot dialed in) is counted, not
        // logged (`telemetry::NoEndpoint`), so any ERROR line here is a real one.
        assert!(!log.contains("ERROR"), "{what} logged an error without IPv6:\n{log}");
    }
}
