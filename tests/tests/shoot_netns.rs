//! Issue 5: the shoot sidecar (`kubelink shoot`) against two seed gateways (`kubelink run`), each in
//! its own network namespace, with real WireGuard traffic. Gateway host names resolve through a
//! per-namespace hosts file (`ip netns exec` bind-mounts /etc/netns/<ns>/hosts), which the test
//! rewrites in place to move a gateway's "load balancer".

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kubelink_tests::netns::{self, Netns, Proc, Segment};

const SHOOT_TUNNEL: &str = "192.168.128.10";
const HEALTH: &str = "127.0.0.1:8093";
const RESOLVE_INTERVAL: Duration = Duration::from_secs(2);

struct Gateway {
    ns: Netns,
    device: String,
    tunnel: &'static str,
    key: (String, String),
    port: u16,
    proc: Option<Proc>,
}

impl Gateway {
    fn new(lan: &Segment, underlay: &str, tunnel: &'static str) -> Self {
        let ns = Netns::new("gw").unwrap();
        lan.attach(&ns, "eth0", &format!("{underlay}/24")).unwrap();
        // Removing the first address of a subnet would take the others with it.
        ns.sysctl("net.ipv4.conf.all.promote_secondaries", "1").unwrap();
        ns.sysctl("net.ipv4.conf.eth0.promote_secondaries", "1").unwrap();
        Gateway { ns, device: netns::unique("g"), tunnel, key: netns::keypair(), port: 51820, proc: None }
    }

    /// `kubelink run` with the shoot as a roaming peer.
    fn start(&mut self, dir: &Path, shoot_pub: &str, log: &str) {
        let config = format!(
            "device:\n  name: {}\n  privateKey: {}\n  listenPort: {}\n  addresses: [{}/22]\n  peers:\n  - publicKey: {shoot_pub}\n    allowedIPs: [{SHOOT_TUNNEL}/32]\n",
            self.device, self.key.0, self.port, self.tunnel
        );
        let path = dir.join(format!("{log}.yaml"));
        std::fs::write(&path, config).unwrap();
        let args = ["run", "--wg-backend", "userspace", "--on-exit", "remove", "--config", path.to_str().unwrap()];
        self.proc = Some(netns::start_kubelink(&self.ns, dir, log, &args));
    }

    fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop(Duration::from_secs(5));
        }
    }

    /// Seed-side traffic: the gateway pings the shoot's tunnel address (source: its slot address).
    fn reaches_shoot(&self, timeout: Duration) -> Option<Duration> {
        self.ns.wait_ping(SHOOT_TUNNEL, None, timeout)
    }
}

/// /etc/netns/<ns>/, removed again at the end.
struct EtcNetns(PathBuf);

impl EtcNetns {
    fn new(ns: &Netns) -> Self {
        let dir = PathBuf::from("/etc/netns").join(&ns.name);
        std::fs::create_dir_all(&dir).unwrap();
        EtcNetns(dir)
    }

    /// Rewrites the hosts file in place (same inode), so the bind mount of a running namespace sees it.
    fn hosts(&self, rows: &[(&str, &str)]) {
        let text: String = rows.iter().map(|(ip, name)| format!("{ip} {name}\n")).collect();
        let mut f =
            std::fs::OpenOptions::new().create(true).write(true).truncate(true).open(self.0.join("hosts")).unwrap();
        f.write_all(format!("127.0.0.1 localhost\n{text}").as_bytes()).unwrap();
    }
}

impl Drop for EtcNetns {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn http_get(ns: &Netns, path: &str) -> String {
    ns.http_get(HEALTH, path)
}

fn ready(ns: &Netns) -> bool {
    http_get(ns, "/readyz").starts_with("HTTP/1.1 200")
}

fn metric(ns: &Netns, line_start: &str) -> Option<String> {
    http_get(ns, "/metrics").lines().find(|l| l.starts_with(line_start)).map(String::from)
}

fn write_file(dir: &Path, name: &str, text: &str) {
    // In place, as a Secret volume update would look to a reader polling the content.
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn shoot_sidecar_two_gateways_endpoint_move_live_config_and_readiness() {
    if !netns::require("shoot_two_gateways", &["ip", "ping", "wg"]) {
        return;
    }
    let dir = netns::workdir("shoot-two-gateways");
    let lan = Segment::new("lan").unwrap();
    let mut gw0 = Gateway::new(&lan, "10.250.0.11", "192.168.128.1");
    let mut gw1 = Gateway::new(&lan, "10.250.0.12", "192.168.128.2");
    let shoot = Netns::new("shoot").unwrap();
    lan.attach(&shoot, "eth0", "10.250.0.21/24").unwrap();
    let etc = EtcNetns::new(&shoot);
    etc.hosts(&[("10.250.0.11", "gw0.seed.test"), ("10.250.0.12", "gw1.seed.test")]);

    let (shoot_key, shoot_pub) = netns::keypair();
    let secret = dir.join("secret");
    std::fs::create_dir_all(&secret).unwrap();
    for (name, text) in [
        ("privateKey", shoot_key.as_str()),
        ("address", "192.168.128.10/22"),
        ("gateway-0-endpoint", "gw0.seed.test:51820"),
        ("gateway-0-publicKey", gw0.key.1.as_str()),
        ("gateway-0-address", gw0.tunnel),
        ("gateway-1-endpoint", "gw1.seed.test:51820"),
        ("gateway-1-publicKey", gw1.key.1.as_str()),
        ("gateway-1-address", gw1.tunnel),
    ] {
        write_file(&secret, name, text);
    }
    gw0.start(&dir, &shoot_pub, "gw0");
    gw1.start(&dir, &shoot_pub, "gw1");
    let device = netns::unique("s");
    let interval = format!("{}s", RESOLVE_INTERVAL.as_secs());
    let args = [
        "shoot",
        "--config-dir",
        secret.to_str().unwrap(),
        "--device",
        &device,
        "--wg-backend",
        "userspace",
        "--resolve-interval",
        &interval,
        "--probe-interval",
        "1s",
        "--health-listen",
        HEALTH,
    ];
    let mut sidecar = netns::start_kubelink(&shoot, &dir, "shoot", &args);
    println!("logs in {}", dir.display());

    // Seed-side traffic reaches the shoot through either gateway.
    let t0 = gw0.reaches_shoot(Duration::from_secs(10));
    let t1 = gw1.reaches_shoot(Duration::from_secs(10));
    println!("seed -> shoot via gateway 0 after {t0:?}, via gateway 1 after {t1:?}");
    assert!(t0.is_some() && t1.is_some(), "no traffic via both gateways; shoot log:\n{}", sidecar.log_text());
    let became_ready = netns::wait_for(Duration::from_secs(5), || ready(&shoot));
    assert!(became_ready.is_some(), "/readyz not 200: {}", http_get(&shoot, "/readyz"));
    assert!(http_get(&shoot, "/healthz").starts_with("HTTP/1.1 200"));
    let handshake = metric(&shoot, "kubelink_shoot_gateway_last_handshake_timestamp_seconds{slot=\"1\"}");
    let at = handshake.as_deref().and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(at.is_some_and(|t| t <= now + 1.0 && now - t < 60.0), "handshake of slot 1 not recent: {handshake:?}");
    let received = metric(&shoot, "kubelink_shoot_gateway_receive_bytes_total{slot=\"1\"}");
    let bytes = received.as_deref().and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok());
    assert!(bytes.is_some_and(|b| b > 0), "traffic from gateway 1 counted: {received:?}");
    let ifindex = netns::ifindex(&shoot, &device).expect("shoot device");

    // Gateway 0's load balancer moves: new address, the old one gone, the name points to the new one.
    gw0.ns.ip(&["addr", "add", "10.250.0.31/24", "dev", "eth0"]).unwrap();
    gw0.ns.ip(&["addr", "del", "10.250.0.11/24", "dev", "eth0"]).unwrap();
    etc.hosts(&[("10.250.0.31", "gw0.seed.test"), ("10.250.0.12", "gw1.seed.test")]);
    let moved = Instant::now();
    let (back, via_gw1) = std::thread::scope(|s| {
        // Shoot-originated traffic to gateway 1 meanwhile: that peer must stay undisturbed.
        let other = s.spawn(|| shoot.ping(gw1.tunnel, 40, "0.1", Some(SHOOT_TUNNEL)));
        let back = shoot.wait_ping(gw0.tunnel, Some(SHOOT_TUNNEL), Duration::from_secs(20)).map(|_| moved.elapsed());
        (back, other.join().unwrap())
    });
    println!(
        "endpoint move: shoot -> gateway 0 back after {back:?} (re-resolution interval {RESOLVE_INTERVAL:?}); gateway 1 meanwhile {via_gw1:?} (sent, received)"
    );
    let bound = RESOLVE_INTERVAL + Duration::from_secs(6);
    assert!(back.is_some_and(|b| b < bound), "tunnel not back within {bound:?}: {back:?}\n{}", sidecar.log_text());
    assert_eq!(via_gw1.0, via_gw1.1, "traffic via gateway 1 was disturbed by gateway 0's move");
    let endpoints = shoot.sh(&["wg", "show", &device, "endpoints"]).unwrap();
    assert!(endpoints.contains(&format!("{}\t10.250.0.31:51820", gw0.key.1)), "wg show endpoints: {endpoints}");
    assert!(endpoints.contains(&format!("{}\t10.250.0.12:51820", gw1.key.1)), "wg show endpoints: {endpoints}");
    let changes = metric(&shoot, "kubelink_shoot_endpoint_changes_total{slot=\"0\"}");
    assert_eq!(changes.as_deref(), Some("kubelink_shoot_endpoint_changes_total{slot=\"0\"} 1"));
    assert!(metric(&shoot, "kubelink_shoot_endpoint_changes_total{slot=\"1\"}").is_none(), "slot 1 never moved");
    assert!(sidecar.log_text().contains("gateway endpoint changed"), "the change is logged");

    // Live config change: gateway 1 comes back with a new key and a new port; the Secret follows.
    gw1.stop();
    gw1.key = netns::keypair();
    gw1.port = 51821;
    gw1.start(&dir, &shoot_pub, "gw1-rekeyed");
    write_file(&secret, "gateway-1-publicKey", &gw1.key.1);
    write_file(&secret, "gateway-1-endpoint", "gw1.seed.test:51821");
    let applied = gw1.reaches_shoot(Duration::from_secs(15));
    println!("new gateway-1 key and port applied live; traffic after {applied:?}");
    assert!(applied.is_some(), "config change not applied\n{}", sidecar.log_text());
    let peers = shoot.sh(&["wg", "show", &device, "endpoints"]).unwrap();
    assert!(peers.contains(&format!("{}\t10.250.0.12:51821", gw1.key.1)), "wg show endpoints: {peers}");
    assert_eq!(peers.lines().count(), 2, "the old gateway-1 key is gone: {peers}");
    assert_eq!(netns::ifindex(&shoot, &device), Some(ifindex), "the device was re-created, not updated");
    assert!(sidecar.is_running(), "the sidecar restarted or died");

    // One gateway gone: ready through the other, traffic too.
    gw1.stop();
    let stayed = (0..10).all(|_| {
        std::thread::sleep(Duration::from_millis(500));
        ready(&shoot)
    });
    assert!(stayed, "readiness dropped with one gateway left: {}", http_get(&shoot, "/readyz"));
    assert!(gw0.reaches_shoot(Duration::from_secs(3)).is_some(), "no traffic via the surviving gateway");
    let up1 = metric(&shoot, "kubelink_shoot_gateway_up{slot=\"1\"}");
    assert_eq!(up1.as_deref(), Some("kubelink_shoot_gateway_up{slot=\"1\"} 0"), "gateway 1 is down");

    // Both gone: readiness flips.
    gw0.stop();
    let gone = Instant::now();
    let flipped = netns::wait_for(Duration::from_secs(15), || !ready(&shoot));
    println!("both gateways gone: /readyz 503 after {flipped:?} (probe every 1 s, grace 3 s)");
    assert!(flipped.is_some(), "still ready {:?} after both gateways left", gone.elapsed());
    assert!(http_get(&shoot, "/readyz").contains("not ready: no gateway"));

    // Graceful shutdown removes the device and its routes.
    assert!(sidecar.stop(Duration::from_secs(5)), "sidecar did not exit cleanly\n{}", sidecar.log_text());
    assert_eq!(netns::ifindex(&shoot, &device), None, "device left behind");
    let routes = shoot.ip(&["route", "show", "proto", "107"]).unwrap();
    assert!(routes.trim().is_empty(), "routes left behind: {routes}");
}

#[test]
fn shoot_sidecar_crash_leaves_nothing_that_breaks_the_next_start() {
    if !netns::require("shoot_crash_restart", &["ip", "ping"]) {
        return;
    }
    let dir = netns::workdir("shoot-crash");
    let lan = Segment::new("lan").unwrap();
    let mut gw = Gateway::new(&lan, "10.250.0.11", "192.168.128.1");
    let shoot = Netns::new("shoot").unwrap();
    lan.attach(&shoot, "eth0", "10.250.0.21/24").unwrap();
    let (shoot_key, shoot_pub) = netns::keypair();
    let secret = dir.join("secret");
    std::fs::create_dir_all(&secret).unwrap();
    write_file(&secret, "privateKey", &shoot_key);
    write_file(&secret, "address", "192.168.128.10/22");
    write_file(&secret, "gateway-0-endpoint", "10.250.0.11:51820");
    write_file(&secret, "gateway-0-publicKey", &gw.key.1);
    write_file(&secret, "gateway-0-address", gw.tunnel);
    gw.start(&dir, &shoot_pub, "gw");
    let device = netns::unique("s");
    let args = [
        "shoot",
        "--config-dir",
        secret.to_str().unwrap(),
        "--device",
        &device,
        "--wg-backend",
        "userspace",
        "--health-listen",
        HEALTH,
    ];
    let mut first = netns::start_kubelink(&shoot, &dir, "shoot", &args);
    assert!(gw.reaches_shoot(Duration::from_secs(10)).is_some(), "no tunnel\n{}", first.log_text());
    first.kill();
    let mut second = netns::start_kubelink(&shoot, &dir, "shoot-restarted", &args);
    let back = gw.reaches_shoot(Duration::from_secs(10));
    println!("after a crash (SIGKILL) and restart: traffic back after {back:?}");
    assert!(back.is_some(), "no tunnel after restart\n{}", second.log_text());
    assert!(second.log_text().contains("adopting the existing tun device"), "{}", second.log_text());
    assert!(second.stop(Duration::from_secs(5)));
    assert_eq!(netns::ifindex(&shoot, &device), None, "device left behind");
}

#[test]
fn shoot_bad_config_names_the_file_and_changes_nothing() {
    // Validation runs before the sidecar touches any namespace: no root needed.
    let dir = netns::workdir("shoot-bad-config");
    let secret = dir.join("secret");
    std::fs::create_dir_all(&secret).unwrap();
    let (key, _) = netns::keypair();
    let (_, gw_pub) = netns::keypair();
    write_file(&secret, "address", "192.168.128.10/22");
    write_file(&secret, "gateway-0-endpoint", "gw0.seed.test:51820");
    write_file(&secret, "gateway-0-publicKey", &gw_pub);
    write_file(&secret, "gateway-0-address", "10.0.0.1");
    let run = |extra: &[&str]| {
        let mut args = vec!["shoot", "--config-dir", secret.to_str().unwrap(), "--health-listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let out = std::process::Command::new(netns::kubelink_bin()).args(&args).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    // rows: what is wrong, what the error must name
    let (ok, err) = run(&[]);
    assert!(!ok && err.contains("privateKey: missing"), "missing file: {err}");
    write_file(&secret, "privateKey", "not-a-key");
    let (ok, err) = run(&[]);
    assert!(!ok && err.contains(&format!("{} (privateKey)", secret.join("privateKey").display())), "bad key: {err}");
    write_file(&secret, "privateKey", &key);
    let (ok, err) = run(&[]);
    assert!(!ok && err.contains("gateway-0-address") && err.contains("outside"), "address outside the CIDR: {err}");
    let (ok, err) = run(&["--gateway-0-address", "192.168.128.1", "--gateway-0-endpoint", "gw0.seed.test"]);
    assert!(!ok && err.contains("--gateway-0-endpoint (gateway-0-endpoint)") && err.contains("host:port"), "{err}");
    assert!(!err.contains(&key), "the private key leaked: {err}");
}
