//! Issue 2's first scenario, with real kernel state and real packets: a seed gateway node, a seed
//! worker node and a shoot in network namespaces; gateway and shoot run userspace kubelink devices
//! from config files, the worker routes the WireGuard CIDR to the gateway.

use std::path::PathBuf;
use std::time::Duration;

use kubelink_tests::netns::{self, Netns, Proc, Segment};

const GW_IP: &str = "10.250.0.11";
const WORKER_IP: &str = "10.250.0.12";
const SHOOT_IP: &str = "10.250.0.21";
const GW_TUNNEL: &str = "192.168.128.1";
const SHOOT_TUNNEL: &str = "192.168.128.10";
/// The worker's "pod", the source of seed traffic into the tunnel.
const POD_IP: &str = "100.64.1.1";

struct Landscape {
    dir: PathBuf,
    _lan: Segment,
    gw: Netns,
    worker: Netns,
    shoot: Netns,
    gw_dev: String,
    shoot_dev: String,
    worker_dev: String,
    gw_key: (String, String),
    shoot_key: (String, String),
    extra_peer: String,
}

impl Landscape {
    fn new(test: &str) -> Self {
        let lan = Segment::new("lan").unwrap();
        let (gw, worker, shoot) = (Netns::new("gw").unwrap(), Netns::new("wk").unwrap(), Netns::new("sh").unwrap());
        lan.attach(&gw, "eth0", &format!("{GW_IP}/24")).unwrap();
        lan.attach(&worker, "eth0", &format!("{WORKER_IP}/24")).unwrap();
        lan.attach(&shoot, "eth0", &format!("{SHOOT_IP}/24")).unwrap();
        gw.sysctl("net.ipv4.ip_forward", "1").unwrap();
        // What the CNI would provide: the worker's pod address and the gateway's route to it.
        worker.ip(&["addr", "add", &format!("{POD_IP}/32"), "dev", "lo"]).unwrap();
        gw.ip(&["route", "add", "100.64.1.0/24", "via", WORKER_IP]).unwrap();
        Landscape {
            dir: netns::workdir(test),
            _lan: lan,
            gw,
            worker,
            shoot,
            gw_dev: netns::unique("g"),
            shoot_dev: netns::unique("s"),
            worker_dev: netns::unique("w"),
            gw_key: netns::keypair(),
            shoot_key: netns::keypair(),
            extra_peer: netns::keypair().1,
        }
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().to_string()
    }

    /// The gateway's config; `with_extra` adds a second (absent) shoot as a peer.
    fn gw_config(&self, with_extra: bool) -> String {
        let extra = if with_extra {
            format!("  - publicKey: {}\n    allowedIPs: [192.168.128.11/32]\n", self.extra_peer)
        } else {
            String::new()
        };
        let text = format!(
            "device:\n  name: {}\n  privateKey: {}\n  listenPort: 51820\n  addresses: [{GW_TUNNEL}/22]\n  peers:\n  - publicKey: {}\n    allowedIPs: [{SHOOT_TUNNEL}/32]\n{extra}",
            self.gw_dev, self.gw_key.0, self.shoot_key.1
        );
        self.write("gw.yaml", &text)
    }

    fn shoot_config(&self) -> String {
        let text = format!(
            "device:\n  name: {}\n  privateKey: {}\n  addresses: [{SHOOT_TUNNEL}/22]\n  peers:\n  - publicKey: {}\n    endpoint: {GW_IP}:51820\n    allowedIPs: [{GW_TUNNEL}/32, 100.64.0.0/16]\n    persistentKeepalive: 21\nroutes:\n- destination: 100.64.0.0/16\n  device: {}\n",
            self.shoot_dev, self.shoot_key.0, self.gw_key.1, self.shoot_dev
        );
        self.write("shoot.yaml", &text)
    }

    /// The worker runs kubelink only for its route (a device it does not use otherwise).
    fn worker_config(&self) -> String {
        let (key, _) = netns::keypair();
        let text = format!(
            "device:\n  name: {}\n  privateKey: {key}\nroutes:\n- destination: 192.168.128.0/22\n  gateway: {GW_IP}\n",
            self.worker_dev
        );
        self.write("worker.yaml", &text)
    }

    fn start(&self, ns: &Netns, log: &str, config: &str) -> Proc {
        netns::start_kubelink(ns, &self.dir, log, &["run", "--wg-backend", "userspace", "--config", config])
    }

    fn ping_shoot(&self, count: u32) -> (u32, u32) {
        self.worker.ping(SHOOT_TUNNEL, count, "0.05", Some(POD_IP))
    }

    fn worker_route(&self) -> String {
        self.worker.ip(&["route", "show", "192.168.128.0/22", "proto", "107"]).unwrap_or_default()
    }

    fn gw_peers(&self) -> Vec<String> {
        let status = netns::status(&self.gw, &self.gw_dev).unwrap();
        let peers = status["peers"].as_array().cloned().unwrap_or_default();
        peers.iter().filter_map(|p| p["publicKey"].as_str().map(String::from)).collect()
    }
}

#[test]
fn gateway_worker_shoot_traffic_drift_repair_peer_removal_and_adoption() {
    if !netns::require("gateway_worker_shoot", &["ip", "ping", "iperf3", "wg"]) {
        return;
    }
    let l = Landscape::new("three-hosts");
    let mut gw = l.start(&l.gw, "gw", &l.gw_config(true));
    let _shoot = l.start(&l.shoot, "shoot", &l.shoot_config());
    let _worker = l.start(&l.worker, "worker", &l.worker_config());

    // Traffic: from the worker's pod through the gateway into the tunnel, and a TCP transfer.
    let took = l.worker.wait_ping(SHOOT_TUNNEL, Some(POD_IP), Duration::from_secs(10));
    assert!(took.is_some(), "no ping through the tunnel; logs in {}", l.dir.display());
    println!("tunnel up after {:?}", took.unwrap());
    assert_eq!(l.ping_shoot(20), (20, 20));
    tcp_transfer(&l);

    // `wg show` sees the userspace device through its UAPI socket.
    let dump = l.gw.sh(&["wg", "show", &l.gw_dev, "dump"]).unwrap();
    assert!(dump.contains(&l.shoot_key.1) && dump.contains(&l.gw_key.1), "wg show dump: {dump}");

    // Drift: a route deleted by hand comes back.
    assert!(l.worker_route().contains(GW_IP));
    l.worker.ip(&["route", "del", "192.168.128.0/22", "proto", "107"]).unwrap();
    let back = netns::wait_for(Duration::from_secs(3), || l.worker_route().contains(GW_IP));
    println!("route repaired after {back:?}");
    assert!(back.is_some_and(|d| d < Duration::from_secs(1)), "route not back within 1 s: {back:?}");

    // Drift: a peer removed by hand comes back.
    l.gw.sh(&["wg", "set", &l.gw_dev, "peer", &l.extra_peer, "remove"]).unwrap();
    let back = netns::wait_for(Duration::from_secs(3), || l.gw_peers().contains(&l.extra_peer));
    println!("peer repaired after {back:?}");
    assert!(back.is_some_and(|d| d < Duration::from_secs(1)), "peer not back within 1 s: {back:?}");

    // Removing a peer from the file removes only that peer; traffic to the other goes on.
    let pinger = std::thread::scope(|s| {
        let pinger = s.spawn(|| l.ping_shoot(60));
        std::thread::sleep(Duration::from_millis(500));
        l.gw_config(false);
        let gone = netns::wait_for(Duration::from_secs(5), || !l.gw_peers().contains(&l.extra_peer));
        assert!(gone.is_some(), "the removed peer is still there");
        assert_eq!(l.gw_peers(), vec![l.shoot_key.1.clone()]);
        pinger.join().unwrap()
    });
    assert_eq!(pinger, (60, 60), "traffic to the remaining peer was disturbed");

    // Restart: the gateway's device is adopted (same ifindex), traffic resumes.
    let before = netns::ifindex(&l.gw, &l.gw_dev).expect("gateway device");
    gw.stop(Duration::from_secs(5));
    assert_eq!(netns::ifindex(&l.gw, &l.gw_dev), Some(before), "the tun must outlive the process");
    let _gw = l.start(&l.gw, "gw-restarted", &l.gw_config(false));
    let back = l.worker.wait_ping(SHOOT_TUNNEL, Some(POD_IP), Duration::from_secs(10));
    println!("traffic back {back:?} after the gateway restart");
    assert!(back.is_some(), "no traffic after restart");
    assert_eq!(netns::ifindex(&l.gw, &l.gw_dev), Some(before), "device was re-created, not adopted");
    assert!(_gw.log_text().contains("adopting the existing tun device"), "{}", _gw.log_text());
}

fn tcp_transfer(l: &Landscape) {
    let log = l.dir.join("iperf-server.log");
    let _server = l.shoot.spawn("iperf3", &["-s", "-1", "-B", SHOOT_TUNNEL], &log).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = l.worker.sh(&["iperf3", "-c", SHOOT_TUNNEL, "-B", POD_IP, "-n", "20M", "-J"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    // iperf3 exits non-zero unless the transfer completed; TCP delivered what it sent.
    let sent = v["end"]["sum_sent"]["bytes"].as_u64().unwrap_or(0);
    let bps = v["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0);
    println!("TCP transfer: {sent} bytes at {:.0} Mbit/s", bps / 1e6);
    assert!(sent >= 20 * 1024 * 1024, "TCP transfer incomplete: {sent} bytes");
}
