//! Interop on the host, in network namespaces, against WireGuard code kubelink did not write:
//! kubelink's userspace device (gotatun) with Debian's `wireguard-go` as the peer, each side dialling
//! once, with handshake, pings, a TCP transfer and a real time-based rekey; and `wg show`/`wg set` from
//! wireguard-tools working on kubelink's device through its UAPI socket.
//!
//! Needs root, `wireguard-go`, `wg`, `ip`, `ping`, `iperf3`: fails under CI=true without them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kubelink_tests::netns::{self, Netns, Proc, unique};

const KL_UNDERLAY: &str = "10.0.0.1";
const GO_UNDERLAY: &str = "10.0.0.2";
const KL_TUNNEL: &str = "10.98.0.1";
const GO_TUNNEL: &str = "10.98.0.2";
const PORT: u16 = 51820;
/// WireGuard's REKEY_AFTER_TIME is 120 s: the session's initiator starts a new handshake when it
/// sends after that. Pinging this long crosses it with margin.
const REKEY_WATCH: Duration = Duration::from_secs(135);
const TOOLS: &[&str] = &["ip", "ping", "wg", "wireguard-go", "iperf3"];

/// Two namespaces joined by veth: `kl` runs kubelink, `go` runs wireguard-go.
struct Hosts {
    kl: Netns,
    go: Netns,
    dir: PathBuf,
}

impl Hosts {
    fn new(test: &str) -> Hosts {
        let kl = Netns::new("ikl").unwrap();
        let go = Netns::new("igo").unwrap();
        kl.ip(&["link", "add", "veth0", "type", "veth", "peer", "name", "veth0", "netns", &go.name]).unwrap();
        for (ns, addr) in [(&kl, KL_UNDERLAY), (&go, GO_UNDERLAY)] {
            ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "veth0"]).unwrap();
            ns.ip(&["link", "set", "veth0", "up"]).unwrap();
        }
        Hosts { kl, go, dir: netns::workdir(test) }
    }
}

/// The work directory (configs, keys, logs) stays only when the test failed.
impl Drop for Hosts {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// One side's identity: device name and key pair.
struct Side {
    dev: String,
    private: String,
    public: String,
}

impl Side {
    fn new(role: &str) -> Side {
        let (private, public) = netns::keypair();
        Side { dev: unique(role), private, public }
    }
}

/// `kubelink run` with a userspace device whose only peer is `peer`.
fn start_kubelink(h: &Hosts, me: &Side, peer: &Side, endpoint: Option<&str>, extra: &[&str]) -> Proc {
    let mut peer_json = serde_json::json!({"publicKey": peer.public, "allowedIPs": [format!("{GO_TUNNEL}/32")]});
    if let Some(ep) = endpoint {
        peer_json["endpoint"] = ep.into();
    }
    let config = serde_json::json!({"device": {
        "name": me.dev, "privateKey": me.private, "listenPort": PORT,
        "addresses": [format!("{KL_TUNNEL}/24")], "peers": [peer_json],
    }});
    let path = h.dir.join(format!("{}.json", me.dev));
    std::fs::write(&path, config.to_string()).unwrap();
    let mut args = vec!["run", "--config", path.to_str().unwrap(), "--wg-backend", "userspace", "--on-exit", "remove"];
    args.extend_from_slice(extra);
    let proc = netns::start_kubelink(&h.kl, &h.dir, &me.dev, &args);
    let up = netns::wait_for(Duration::from_secs(20), || netns::status(&h.kl, &me.dev).is_ok());
    assert!(up.is_some(), "kubelink device {} never appeared:\n{}", me.dev, proc.log_text());
    proc
}

/// Debian's wireguard-go in the foreground, configured with `wg set` over its UAPI socket.
fn start_wireguard_go(h: &Hosts, me: &Side, peer: &Side, endpoint: Option<&str>) -> Proc {
    let log = h.dir.join(format!("{}.log", me.dev));
    let proc = h.go.spawn("wireguard-go", &["-f", &me.dev], &log).unwrap();
    let sock = uapi_socket(&me.dev);
    let up = netns::wait_for(Duration::from_secs(10), || sock.exists());
    assert!(up.is_some(), "wireguard-go made no {}:\n{}", sock.display(), proc.log_text());
    let key = h.dir.join(format!("{}.key", me.dev));
    std::fs::write(&key, &me.private).unwrap();
    let port = PORT.to_string();
    let allowed = format!("{KL_TUNNEL}/32");
    let mut set = vec!["wg", "set", &me.dev, "private-key", key.to_str().unwrap(), "listen-port", &port];
    set.extend(["peer", &peer.public, "allowed-ips", &allowed]);
    if let Some(ep) = endpoint {
        set.extend(["endpoint", ep]);
    }
    h.go.sh(&set).unwrap();
    h.go.ip(&["addr", "add", &format!("{GO_TUNNEL}/24"), "dev", &me.dev]).unwrap();
    h.go.ip(&["link", "set", &me.dev, "up"]).unwrap();
    proc
}

fn uapi_socket(dev: &str) -> PathBuf {
    Path::new("/var/run/wireguard").join(format!("{dev}.sock"))
}

/// SIGTERM; wireguard-go then removes its socket (kubelink with `--on-exit remove` its device).
fn stop(mut proc: Proc, what: &str) {
    let log = proc.log_text();
    assert!(proc.stop(Duration::from_secs(10)), "{what} did not exit cleanly on SIGTERM:\n{log}");
}

/// The newest handshake (unix seconds) `wg show` reports for `dev`, 0 when none.
fn latest_handshake(ns: &Netns, dev: &str) -> u64 {
    let out = ns.sh(&["wg", "show", dev, "latest-handshakes"]).unwrap();
    out.lines().filter_map(|l| l.split_whitespace().nth(1)?.parse().ok()).max().unwrap_or(0)
}

/// iperf3 for two seconds from the kubelink side to the wireguard-go side; returns the bytes received.
/// The client's JSON report and the server's log stay in the work directory.
fn tcp_transfer(h: &Hosts) -> u64 {
    let server_log = h.dir.join("iperf3-server.log");
    let server = h.go.spawn("iperf3", &["-s", "-1", "-B", GO_TUNNEL, "--forceflush"], &server_log).unwrap();
    let listening = netns::wait_for(Duration::from_secs(10), || {
        h.go.sh(&["ss", "-Hltn", "sport", "=", ":5201"]).is_ok_and(|out| !out.trim().is_empty())
    });
    assert!(listening.is_some(), "iperf3 server did not listen:\n{}", server.log_text());
    let report = h.kl.sh(&["iperf3", "-c", GO_TUNNEL, "-t", "2", "-J"]);
    drop(server);
    let report = report.unwrap_or_else(|e| panic!("iperf3 through the tunnel failed: {e}"));
    std::fs::write(h.dir.join("iperf3-client.json"), &report).unwrap();
    let v: serde_json::Value = serde_json::from_str(&report).unwrap();
    let sum = &v["end"]["sum_received"];
    println!("iperf3 kubelink -> wireguard-go: {:.0} Mbit/s", sum["bits_per_second"].as_f64().unwrap_or(0.0) / 1e6);
    let bytes = sum["bytes"].as_u64().unwrap_or(0);
    let server_text = std::fs::read_to_string(&server_log).unwrap_or_default();
    assert!(bytes > 1_000_000, "only {bytes} bytes crossed; client report:\n{report}\nserver:\n{server_text}");
    bytes
}

/// Pings across WireGuard's rekey time; the session must carry every packet and both sides must show
/// a newer handshake afterwards.
fn rekey_keeps_the_session(h: &Hosts, kl: &Side, go: &Side) {
    let before = (latest_handshake(&h.kl, &kl.dev), latest_handshake(&h.go, &go.dev));
    let count = (REKEY_WATCH.as_millis() / 200) as u32;
    let start = Instant::now();
    let (sent, received) = h.kl.ping(GO_TUNNEL, count, "0.2", None);
    let after = (latest_handshake(&h.kl, &kl.dev), latest_handshake(&h.go, &go.dev));
    println!("rekey watch {:?}: {received}/{sent} pings, handshakes {before:?} -> {after:?}", start.elapsed());
    assert_eq!((sent, received), (count, count), "packets lost across the rekey");
    assert!(after.0 > before.0, "kubelink side shows no new handshake: {before:?} -> {after:?}");
    assert!(after.1 > before.1, "wireguard-go side shows no new handshake: {before:?} -> {after:?}");
}

/// Handshake (one side dials, the other learns the endpoint), pings both ways, TCP, rekey.
fn interop(test: &str, kubelink_dials: bool) {
    if !netns::require(test, TOOLS) {
        return;
    }
    let h = Hosts::new(test);
    let (kl, go) = (Side::new("kli"), Side::new("gop"));
    let kl_ep = format!("{KL_UNDERLAY}:{PORT}");
    let go_ep = format!("{GO_UNDERLAY}:{PORT}");
    let agent = start_kubelink(&h, &kl, &go, kubelink_dials.then_some(go_ep.as_str()), &[]);
    let wggo = start_wireguard_go(&h, &go, &kl, (!kubelink_dials).then_some(kl_ep.as_str()));

    let (dialer, target) = if kubelink_dials { (&h.kl, GO_TUNNEL) } else { (&h.go, KL_TUNNEL) };
    let took = dialer.wait_ping(target, None, Duration::from_secs(15));
    assert!(took.is_some(), "no handshake/ping; logs in {}:\n{}", h.dir.display(), agent.log_text());
    println!("first ping after {:?}", took.unwrap());
    assert_eq!(h.kl.ping(GO_TUNNEL, 5, "0.1", None), (5, 5));
    assert_eq!(h.go.ping(KL_TUNNEL, 5, "0.1", None), (5, 5));
    assert!(latest_handshake(&h.kl, &kl.dev) > 0 && latest_handshake(&h.go, &go.dev) > 0);

    tcp_transfer(&h);
    let status = netns::status(&h.kl, &kl.dev).unwrap();
    assert_eq!(status["backend"], "userspace");
    assert!(status["peers"][0]["rxBytes"].as_u64().unwrap_or(0) > 0, "kubelink counted no rx: {status}");

    rekey_keeps_the_session(&h, &kl, &go);
    stop(wggo, "wireguard-go");
    stop(agent, "kubelink");
}

#[test]
fn kubelink_dials_wireguard_go() {
    interop("kubelink_dials_wireguard_go", true);
}

#[test]
fn wireguard_go_dials_kubelink() {
    interop("wireguard_go_dials_kubelink", false);
}

/// The peers of `wg show <dev> dump` as (key, endpoint, allowed-ips) rows, sorted.
fn wg_peers(ns: &Netns, dev: &str) -> Vec<(String, String, String)> {
    let dump = ns.sh(&["wg", "show", dev, "dump"]).unwrap();
    let mut rows: Vec<_> = dump
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].to_string(), f[2].to_string(), f[3].to_string())
        })
        .collect();
    rows.sort();
    rows
}

/// The same rows from `kubelink status --json`.
fn kl_peers(ns: &Netns, dev: &str) -> Vec<(String, String, String)> {
    let status = netns::status(ns, dev).unwrap();
    let mut rows: Vec<_> = status["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let ips: Vec<&str> = p["allowedIPs"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
            let ep = p["endpoint"].as_str().unwrap_or("(none)").to_string();
            (
                p["publicKey"].as_str().unwrap().to_string(),
                ep,
                if ips.is_empty() { "(none)".into() } else { ips.join(",") },
            )
        })
        .collect();
    rows.sort();
    rows
}

/// `wg show` reads kubelink's userspace device like kubelink does; `wg set` changes it: an endpoint
/// set by hand on a peer the config does not pin survives kubelink's next reconcile pass and carries
/// traffic; a peer added by hand shows up, and the next pass removes it (it is not in the config).
#[test]
fn wg_show_and_wg_set_on_kubelink_userspace_device() {
    if !netns::require("wg_show_and_wg_set", TOOLS) {
        return;
    }
    let h = Hosts::new("wg-uapi");
    let (kl, go) = (Side::new("klw"), Side::new("gow"));
    // A long resync: reconcile passes happen only when this test sends SIGHUP.
    let agent = start_kubelink(&h, &kl, &go, None, &["--resync-interval", "1h"]);
    let wggo = start_wireguard_go(&h, &go, &kl, None);

    assert_eq!(h.kl.sh(&["wg", "show", &kl.dev, "private-key"]).unwrap().trim(), kl.private);
    assert_eq!(h.kl.sh(&["wg", "show", &kl.dev, "public-key"]).unwrap().trim(), kl.public);
    assert_eq!(h.kl.sh(&["wg", "show", &kl.dev, "listen-port"]).unwrap().trim(), PORT.to_string());
    assert_eq!(wg_peers(&h.kl, &kl.dev), kl_peers(&h.kl, &kl.dev));
    assert_eq!(wg_peers(&h.kl, &kl.dev), vec![(go.public.clone(), "(none)".into(), format!("{GO_TUNNEL}/32"))]);

    // Neither side knows an endpoint: `wg set` gives kubelink's device one.
    let go_ep = format!("{GO_UNDERLAY}:{PORT}");
    h.kl.sh(&["wg", "set", &kl.dev, "peer", &go.public, "endpoint", &go_ep]).unwrap();
    assert_eq!(kl_peers(&h.kl, &kl.dev)[0].1, go_ep, "kubelink does not read back the endpoint wg set");
    assert!(h.kl.wait_ping(GO_TUNNEL, None, Duration::from_secs(15)).is_some(), "no ping after wg set endpoint");

    let (_, extra) = netns::keypair();
    h.kl.sh(&["wg", "set", &kl.dev, "peer", &extra, "allowed-ips", "10.98.0.99/32"]).unwrap();
    assert!(wg_peers(&h.kl, &kl.dev).iter().any(|p| p.0 == extra), "wg show lacks the peer wg set added");
    assert_eq!(wg_peers(&h.kl, &kl.dev), kl_peers(&h.kl, &kl.dev));

    // One reconcile pass: the hand-added peer goes, the learned endpoint stays and still carries traffic.
    // SAFETY: kill(2) with a pid of our own child process.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGHUP) };
    let gone = netns::wait_for(Duration::from_secs(10), || wg_peers(&h.kl, &kl.dev).len() == 1);
    assert!(gone.is_some(), "hand-added peer still there after SIGHUP:\n{}", agent.log_text());
    assert_eq!(wg_peers(&h.kl, &kl.dev), vec![(go.public.clone(), go_ep.clone(), format!("{GO_TUNNEL}/32"))]);
    assert_eq!(h.kl.ping(GO_TUNNEL, 5, "0.1", None), (5, 5));

    stop(wggo, "wireguard-go");
    stop(agent, "kubelink");
}
