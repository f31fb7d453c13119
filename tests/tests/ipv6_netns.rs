//! IPv6 end to end, in network namespaces with real WireGuard traffic: one seed gateway
//! (`kubelink run`, a dual-stack tunnel on a dual-stack underlay) and two shoots:
//!
//! - an IPv6-only shoot running the sidecar (`kubelink shoot`): IPv6 underlay only, an IPv6 tunnel
//!   address, the gateway's endpoint an IPv6 literal. It becomes ready through ICMPv6 probes, and
//!   10 MB of TCP over IPv6 cross the tunnel;
//! - a dual-stack shoot (`kubelink run`) dialling over the IPv4 underlay, with an IPv4 and an IPv6
//!   tunnel address: both families cross the tunnel.
//!
//! MTU `auto` on each device follows its transport: 1500 - 80 over IPv6, 1500 - 60 over IPv4, and the
//! gateway, whose shoots dial in over both, the smaller.

use std::path::Path;
use std::time::Duration;

use kubelink_tests::netns::{self, Netns, Segment};

const GW_V4: &str = "10.250.0.11";
const GW_V6: &str = "fd00:250::11";
const HEALTH: &str = "127.0.0.1:8093";

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

/// An underlay address without duplicate address detection, so that it is usable at once.
fn add_v6(ns: &Netns, cidr: &str) {
    ns.ip(&["addr", "add", cidr, "dev", "eth0", "nodad"]).unwrap();
}

#[test]
fn ipv6_only_and_dual_stack_shoots_through_one_gateway() {
    if !netns::require("ipv6_netns", &["ip", "ping", "iperf3"]) {
        return;
    }
    let dir = netns::workdir("ipv6-netns");
    let lan = Segment::new("lan").unwrap();
    let (gw, v6_shoot, dual_shoot) =
        (Netns::new("gw").unwrap(), Netns::new("shoot6").unwrap(), Netns::new("shoot46").unwrap());
    lan.attach(&gw, "eth0", &format!("{GW_V4}/24")).unwrap();
    add_v6(&gw, &format!("{GW_V6}/64"));
    lan.attach(&v6_shoot, "eth0", "fd00:250::21/64").unwrap();
    lan.attach(&dual_shoot, "eth0", "10.250.0.22/24").unwrap();
    add_v6(&dual_shoot, "fd00:250::22/64");
    for ns in [&v6_shoot, &dual_shoot] {
        ns.sysctl("net.ipv6.conf.all.disable_ipv6", "0").unwrap();
    }

    let (gw_key, gw_pub) = netns::keypair();
    let (v6_key, v6_pub) = netns::keypair();
    let (dual_key, dual_pub) = netns::keypair();
    let gw_dev = netns::unique("g");
    let gw_config = write(
        &dir,
        "gateway.yaml",
        &format!(
            "device:\n  name: {gw_dev}\n  privateKey: {gw_key}\n  listenPort: 51820\n  addresses: [192.168.128.1/22, fd00:128::1/64]\n  peers:\n  - publicKey: {v6_pub}\n    allowedIPs: [fd00:128::10/128]\n  - publicKey: {dual_pub}\n    allowedIPs: [192.168.128.11/32, fd00:128::11/128]\n"
        ),
    );
    let run = |ns: &Netns, log: &str, config: &str| {
        netns::start_kubelink(
            ns,
            &dir,
            log,
            &["run", "--wg-backend", "userspace", "--on-exit", "remove", "--config", config],
        )
    };
    let _gateway = run(&gw, "gateway", &gw_config);

    // The IPv6-only shoot: the sidecar from a Secret directory.
    let secret = dir.join("secret");
    std::fs::create_dir_all(&secret).unwrap();
    for (name, text) in [
        ("privateKey", v6_key.as_str()),
        ("address", "fd00:128::10/64"),
        ("gateway-0-endpoint", &format!("[{GW_V6}]:51820")),
        ("gateway-0-publicKey", gw_pub.as_str()),
        ("gateway-0-address", "fd00:128::1"),
    ] {
        write(&secret, name, text);
    }
    let v6_dev = netns::unique("s");
    let sidecar_args = [
        "shoot",
        "--config-dir",
        secret.to_str().unwrap(),
        "--device",
        &v6_dev,
        "--wg-backend",
        "userspace",
        "--probe-interval",
        "1s",
        "--health-listen",
        HEALTH,
    ];
    let sidecar = netns::start_kubelink(&v6_shoot, &dir, "shoot6", &sidecar_args);

    // The dual-stack shoot: `kubelink run` dialling the gateway over IPv4.
    let dual_dev = netns::unique("d");
    let dual_config = write(
        &dir,
        "dual.yaml",
        &format!(
            "device:\n  name: {dual_dev}\n  privateKey: {dual_key}\n  addresses: [192.168.128.11/22, fd00:128::11/64]\n  peers:\n  - publicKey: {gw_pub}\n    endpoint: {GW_V4}:51820\n    persistentKeepalive: 21\n    allowedIPs: [192.168.128.1/32, fd00:128::1/128]\n"
        ),
    );
    let _dual = run(&dual_shoot, "dual", &dual_config);
    println!("logs in {}", dir.display());

    let ready =
        netns::wait_for(Duration::from_secs(20), || v6_shoot.http_get(HEALTH, "/readyz").starts_with("HTTP/1.1 200"));
    println!("IPv6-only shoot: ready (an answered ICMPv6 probe) after {ready:?}");
    assert!(ready.is_some(), "sidecar not ready: {}\n{}", v6_shoot.http_get(HEALTH, "/readyz"), sidecar.log_text());

    for (what, dst) in [("IPv6-only shoot", "fd00:128::10"), ("dual-stack shoot, IPv4", "192.168.128.11")]
        .into_iter()
        .chain([("dual-stack shoot, IPv6", "fd00:128::11")])
    {
        let took = gw.wait_ping(dst, None, Duration::from_secs(10));
        let (sent, got) = gw.ping(dst, 20, "0.05", None);
        println!("gateway -> {what} ({dst}): first answer after {took:?}, then {got} of {sent}");
        assert!(took.is_some() && got == sent, "{what}: {got} of {sent}");
    }

    let mtus = [(&gw, &gw_dev), (&v6_shoot, &v6_dev), (&dual_shoot, &dual_dev)].map(|(ns, dev)| ns.link_mtu(dev));
    println!(
        "MTU auto: gateway {:?}, IPv6-only shoot {:?}, dual-stack shoot over IPv4 {:?}",
        mtus[0], mtus[1], mtus[2]
    );
    assert_eq!(mtus, [Some(1420), Some(1420), Some(1440)]);

    let log = dir.join("iperf.log");
    let _server = v6_shoot.spawn("iperf3", &["-s", "-1", "-B", "fd00:128::10"], &log).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = gw.sh(&["iperf3", "-6", "-c", "fd00:128::10", "-n", "10M", "-J"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let sent = v["end"]["sum_sent"]["bytes"].as_u64().unwrap_or(0);
    println!("TCP over IPv6 through the tunnel, gateway -> IPv6-only shoot: {sent} bytes");
    assert!(sent >= 10 << 20);
}
