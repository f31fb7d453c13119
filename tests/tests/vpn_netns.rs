//! Issue 25, first step: Gardener's cluster VPN carried through kubelink's tunnel, in network
//! namespaces, for two shoots with the same networks.
//!
//! The gateway runs `kubelink run` (userspace WireGuard) from a file made of the agent's own gateway
//! state (`agent::gateway_desired` for slot 0; each ShootPeer with its `vpnServer`), so its nftables
//! table, the per-shoot DNAT among it, is exactly what the agent writes. Per shoot:
//!
//! - a "vpn-seed-server pod" namespace on the seed side, running Debian's `openvpn` with the
//!   configuration gardener/vpn2's seed-server renders from gardenlet's settings (non-HA: `tun0`, the
//!   IPv6 transfer network, the shoot networks mapped into 242/8, 243/8, 244/8, the seed's pod
//!   network into 241/8), and vpn2's firewall and NETMAP rules (in nft; see docs/testing.md);
//! - a "vpn-shoot pod" namespace in the shoot: its WireGuard peer of the gateway (`kubelink run`, as
//!   the other namespace tests run shoots) and `openvpn` as vpn2's shoot client (no HTTP proxy: it
//!   dials the slot address, TCP 1194, through the tunnel, where the gateway's DNAT sends it to its own
//!   server), with vpn2's client NETMAP and masquerade rules;
//! - the shoot's network behind the vpn-shoot pod: a host answering on a pod, a Service and a node
//!   address of the shoot (both shoots: pods 100.96.0.0/11, Services 100.64.0.0/13, nodes
//!   10.250.0.0/16), with its shoot's name in every answer.
//!
//! From each seed-server namespace (where kube-apiserver's HTTP CONNECT proxy runs) the test reaches
//! the three addresses and gets its own shoot's answers; nothing routes from the seed to a shoot but
//! kubelink's tunnel. Then shoot A tries shoot B's server (its OpenVPN client, and plain TCP) and
//! fails; the gateway counts the drops.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kubelink::firewall::Ruleset;
use kubelink_ipam::contract::Slot;
use kubelink_ipam::keys::PrivateKey;
use kubelink_tests::netns::{self, Netns, Proc, Segment};

const TEST: &str = "vpn_netns";
/// The WireGuard CIDR; slot 0's address is the first.
const CIDR: &str = "192.168.128.0/22";
/// The gateway's address on the shoots' side of the internet, where they dial WireGuard.
const GW_WAN: &str = "198.51.100.1";
/// The gateway node's address on the seed's pod network.
const GW_SEED: &str = "10.1.0.1";
/// The seed's pod network (SEED_POD_NETWORK).
const SEED_PODS: &str = "10.1.0.0/16";
/// Both shoots' networks, as gardenlet passes them (SHOOT_POD_NETWORKS, SHOOT_SERVICE_NETWORKS,
/// SHOOT_NODE_NETWORKS), and where vpn2 maps them (gardener v1.149.0's reserved ranges, NETMAP of
/// each network onto the first block of its size in the range).
const PODS: (&str, &str) = ("100.96.0.0/11", "244.0.0.0/11");
const SERVICES: (&str, &str) = ("100.64.0.0/13", "243.0.0.0/13");
const NODES: (&str, &str) = ("10.250.0.0/16", "242.0.0.0/16");
/// vpn2's IPv4 ranges for a non-HA server: the routes and iroutes of the shoot networks, and the
/// seed's pod network as the shoot sees it.
const MAPPED: [&str; 3] = ["242.0.0.0/8", "243.0.0.0/8", "244.0.0.0/8"];
const SEED_PODS_MAPPED: &str = "241.0.0.0/8";
/// Gardener's default VPN network (`DefaultVPNRangeV6`), the non-HA server's `server-ipv6`.
const VPN_NETWORK: &str = "fd8f:6d53:b97a:1::/96";
/// The addresses answering in each shoot: a pod, a Service, a node.
const POD: &str = "100.96.1.5";
const SERVICE: &str = "100.64.0.10";
const NODE: &str = "10.250.0.5";
/// The vpn-shoot pod's own address in the shoot.
const VPN_SHOOT: &str = "10.250.0.4";
const ANSWER_PORT: u16 = 8080;
const VPN_PORT: u16 = kubelink::firewall::plan::VPN_PORT;

/// One shoot of the test: its names and addresses.
struct Shoot {
    name: &'static str,
    tunnel: IpAddr,
    wan: &'static str,
    server: &'static str,
}

const SHOOTS: [Shoot; 2] = [
    Shoot { name: "shoot-a", tunnel: ip4(192, 168, 128, 10), wan: "198.51.100.21", server: "10.1.1.10" },
    Shoot { name: "shoot-b", tunnel: ip4(192, 168, 128, 11), wan: "198.51.100.22", server: "10.1.2.10" },
];

const fn ip4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Runs a shell script; panics with its output when it fails.
fn sh(script: &str) {
    let out = std::process::Command::new("sh").args(["-ec", script]).output().unwrap();
    assert!(
        out.status.success(),
        "{script}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What gardenlet's secrets manager gives vpn-seed-server and vpn-shoot, one set per shoot: a CA
/// (`ca-vpn`), the server's certificate (`vpn-seed-server`, server auth), the client's
/// (`vpn-shoot-client`, client auth: the name the server's client-config-dir file is looked up by)
/// and the tls-auth key (`vpn-seed-server-tlsauth`).
fn tls_material(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let d = dir.display();
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    sh(&format!(
        "cd {d}
         printf 'extendedKeyUsage=serverAuth\\nkeyUsage=digitalSignature,keyEncipherment\\n' > server.ext
         printf 'extendedKeyUsage=clientAuth\\nkeyUsage=digitalSignature\\n' > client.ext
         openssl req -x509 {ec} -keyout ca.key -out ca.crt -days 2 -subj /CN=ca-vpn 2>/dev/null
         for who in server:vpn-seed-server client:vpn-shoot-client; do
           f=${{who%%:*}}; cn=${{who#*:}}
           openssl req {ec} -keyout $f.key -out $f.csr -subj /CN=$cn 2>/dev/null
           openssl x509 -req -in $f.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out $f.crt -days 2 -extfile $f.ext 2>/dev/null
         done
         openvpn --genkey secret vpn.tlsauth"
    ));
}

/// vpn2's `server-config.template` as `vpn-server` renders it for a non-HA shoot
/// (`vpn_server.BuildValues`: device `tun0`, `server-ipv6` the VPN network, the shoot networks mapped,
/// `max-routes-per-client` the networks' host count capped at 2^20; no `tun-mtu`: OPENVPN_AUTO_MTU off).
/// Paths are the test's; the `up` script stands for `vpn-server firewall --mode up`.
fn server_config(dir: &Path) -> String {
    let d = dir.display();
    let shoot_networks = MAPPED.join(",");
    format!(
        "verb 3
mode server
tls-server
topology subnet
txqueuelen 1000
tcp-nodelay
data-ciphers AES-256-GCM:AES-256-CBC
port 1194
keepalive 10 30
max-routes-per-client 1048576
client-config-dir {d}/client-config-dir
key \"{d}/tls/server.key\"
cert \"{d}/tls/server.crt\"
ca \"{d}/tls/ca.crt\"
dh none
auth SHA256
tls-auth \"{d}/tls/vpn.tlsauth\" 0
proto tcp6-server
server-ipv6 {VPN_NETWORK}
dev tun0
script-security 2
up \"{d}/vpn-server-firewall --mode up --device tun0 --shoot-network={shoot_networks} --seed-pod-network={SEED_PODS}\"
status {d}/openvpn.status 15
status-version 2
"
    )
}

/// `server-for-client-config.template`: the `vpn-shoot-client` file of the client-config-dir.
fn server_for_client_config() -> String {
    MAPPED.iter().map(|n| format!("iroute {} 255.0.0.0\n", n.trim_end_matches("/8"))).collect()
}

/// The stand-in for `vpn-server firewall --mode up` (vpn2 `cmd/vpn_server/app/firewall.go`): input
/// from the tunnel only when established, the seed's pod network NETMAPped to 241/8 and back, a route
/// into the tunnel per shoot network. Called by openvpn with its arguments, the device last.
fn server_firewall_script() -> String {
    format!(
        "#!/bin/sh
set -e
nets=; dev=tun0
for a in \"$@\"; do case $a in --shoot-network=*) nets=${{a#*=}};; esac; done
nft -f - <<EOF
table inet vpn-server-firewall {{
  chain input {{
    type filter hook input priority 0; policy accept;
    iifname \"$dev\" ct state established,related accept
    iifname \"$dev\" drop
  }}
}}
table ip vpn-server-nat {{
  chain prerouting {{
    type nat hook prerouting priority -100; policy accept;
    iifname \"$dev\" ip daddr {SEED_PODS_MAPPED} dnat ip prefix to {SEED_PODS}
  }}
  chain postrouting {{
    type nat hook postrouting priority 100; policy accept;
    oifname \"$dev\" ip saddr {SEED_PODS} snat ip prefix to {SEED_PODS_MAPPED}
  }}
}}
EOF
for n in $(echo $nets | tr , ' '); do ip route replace $n dev $dev; done
"
    )
}

/// vpn2's `vpn_server.SetIPTableRules` (non-HA): what the seed side sends to a shoot network goes out
/// mapped. vpn2 matches only the envoy proxy's group (`--gid-owner`); here every local process is the
/// proxy.
fn server_nat() -> String {
    let rules: String = [PODS, SERVICES, NODES]
        .iter()
        .map(|(net, mapped)| format!("    ip daddr {net} dnat ip prefix to {mapped}\n"))
        .collect();
    format!(
        "table ip vpn-seed-server {{\n  chain output {{\n    type nat hook output priority -100; policy accept;\n{rules}  }}\n}}\n"
    )
}

/// vpn2's `client-config.template` for the non-HA shoot client (IP_FAMILIES IPv4: `tcp4-client`; the
/// seed's pod network as the shoot sees it, 241/8, routed into the tunnel), with one difference: no
/// `http-proxy` lines (no istio ingress: the client dials the slot address through kubelink's tunnel,
/// and OpenVPN's default port is vpn-seed-server's 1194). No `management` line: nothing here uses it.
fn client_config(dir: &Path, remote: IpAddr) -> String {
    let d = dir.display();
    format!(
        "verb 3
auth-nocache
txqueuelen 1000
tcp-nodelay
pull
data-ciphers AES-256-GCM
tls-client
connect-retry 1 5
auth SHA256
tls-auth \"{d}/tls/vpn.tlsauth\" 1
remote-cert-tls server
proto tcp4-client
key {d}/tls/client.key
cert {d}/tls/client.crt
ca {d}/tls/ca.crt
dev tun0
remote {remote}
script-security 2
up \"/bin/sh -c '/sbin/ip route replace {SEED_PODS_MAPPED} dev $1' -- \"
"
    )
}

/// vpn2's `vpn_client.SetIPTableRules` for a non-HA shoot client (IPv4): forward from the tunnel,
/// each mapped shoot network NETMAPped back to the real one coming in and the other way going out,
/// MSS clamping, masquerade out of the pod's interface.
fn client_nat() -> String {
    let mut pre = String::new();
    let mut post = String::new();
    for (net, mapped) in [PODS, SERVICES, NODES] {
        pre += &format!("    iifname \"tun0\" ip daddr {mapped} dnat ip prefix to {net}\n");
        post += &format!("    oifname \"tun0\" ip saddr {net} snat ip prefix to {mapped}\n");
    }
    format!(
        "table ip vpn-shoot {{
  chain forward {{
    type filter hook forward priority 0; policy accept;
    iifname \"tun0\" accept
  }}
  chain prerouting {{
    type nat hook prerouting priority -100; policy accept;
{pre}  }}
  chain mangle {{
    type filter hook postrouting priority -150; policy accept;
    tcp flags syn tcp option maxseg size set rt mtu
  }}
  chain postrouting {{
    type nat hook postrouting priority 100; policy accept;
{post}    oifname \"eth0\" masquerade
  }}
}}
"
    )
}

fn nft(ns: &Netns, dir: &Path, name: &str, text: &str) {
    let path = dir.join(format!("{name}.nft"));
    std::fs::write(&path, text).unwrap();
    ns.sh(&["nft", "-f", path.to_str().unwrap()]).unwrap_or_else(|e| panic!("{name}: {e}"));
}

/// The agent's gateway state for slot 0 with both shoots, each ShootPeer naming its own server, as a
/// `kubelink run` file; and the table that state must give.
fn gateway_file(device: &str, key: &PrivateKey, shoots: &[(PrivateKey, &Shoot)]) -> (String, Ruleset) {
    let peers: BTreeSet<kubelink::agent::ShootPeer> = shoots
        .iter()
        .map(|(k, s)| kubelink::agent::ShootPeer {
            public_key: k.public_key(),
            address: s.tunnel,
            shoot: format!("garden/{}", s.name),
            control_plane: format!("shoot--garden--{}", s.name),
            vpn_server: Some(ip(s.server)),
        })
        .collect();
    let (text, spec) = kubelink_tests::gateway_file::slot0(device, CIDR.parse().unwrap(), key, &peers);
    assert_eq!(spec.vpn_servers.len(), 2, "both shoots' servers in the gateway's state");
    (text, kubelink::firewall::desired(&spec))
}

fn start_kubelink(ns: &Netns, dir: &Path, name: &str, text: &str) -> Proc {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    let config = path.to_string_lossy().into_owned();
    let args = ["run", "--wg-backend", "userspace", "--on-exit", "remove", "--config", &config];
    netns::start_kubelink(ns, dir, name, &args)
}

/// Answers every TCP connection on `ANSWER_PORT` with the shoot's name and the address it was reached
/// at, until the flag is set.
fn answer(ns: &Netns, shoot: &'static str, stop: Arc<AtomicBool>) {
    let listener = ns
        .run_in(|| {
            let l = TcpListener::bind(("0.0.0.0", ANSWER_PORT)).unwrap();
            l.set_nonblocking(true).unwrap();
            l
        })
        .unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut c, _)) => {
                    let local = c.local_addr().map(|a| a.ip().to_string()).unwrap_or_default();
                    let _ = c.set_nonblocking(false);
                    let _ = c.write_all(format!("{shoot} {local}\n").as_bytes());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
}

/// A TCP exchange from `ns`: the answer line, or why there was none.
fn ask(ns: &Netns, dst: SocketAddr, timeout: Duration) -> Result<String, String> {
    ns.run_in(move || {
        let mut c = TcpStream::connect_timeout(&dst, timeout).map_err(|e| format!("connect {dst}: {e}"))?;
        c.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
        let mut out = String::new();
        c.read_to_string(&mut out).map_err(|e| format!("read {dst}: {e}"))?;
        Ok(out.trim().to_string())
    })
    .unwrap()
}

fn table(gw: &Netns) -> Ruleset {
    let out = gw.sh(&["nft", "-j", "list", "table", "inet", "kubelink"]).unwrap();
    Ruleset::from_listing(&serde_json::from_str(&out).unwrap()).unwrap()
}

/// The hosts of one shoot and its control plane's VPN server.
struct ShootHosts {
    server: Netns,
    vpn_shoot: Netns,
    network: Netns,
    _segment: Segment,
    dir: PathBuf,
}

#[test]
fn gardeners_vpn_runs_through_the_tunnel_each_shoot_to_its_own_server() {
    if !netns::require(TEST, &["ip", "nft", "openvpn", "openssl"]) {
        return;
    }
    let begin = Instant::now();
    let dir = netns::workdir(TEST);
    let (wan, seed) = (Segment::new("wan").unwrap(), Segment::new("seedpods").unwrap());
    let gw = Netns::new("gw").unwrap();
    wan.attach(&gw, "eth0", &format!("{GW_WAN}/24")).unwrap();
    seed.attach(&gw, "eth1", &format!("{GW_SEED}/16")).unwrap();
    gw.sysctl("net.ipv4.ip_forward", "1").unwrap();

    let hosts: Vec<ShootHosts> = SHOOTS
        .iter()
        .map(|s| {
            let [server, vpn_shoot, network] = ["srv", "vpnshoot", "shootnet"].map(|r| Netns::new(r).unwrap());
            // The vpn-seed-server pod: on the seed's pod network only, default route via the node.
            seed.attach(&server, "eth0", &format!("{}/16", s.server)).unwrap();
            server.ip(&["route", "add", "default", "via", GW_SEED]).unwrap();
            for ns in [&server, &vpn_shoot] {
                for conf in ["all", "default"] {
                    ns.sysctl(&format!("net.ipv6.conf.{conf}.disable_ipv6"), "0").unwrap();
                }
            }
            // The vpn-shoot pod: eth0 in the shoot, eth1 towards the internet (the gateway's LB).
            let segment = Segment::new("shoot").unwrap();
            segment.attach(&vpn_shoot, "eth0", &format!("{VPN_SHOOT}/16")).unwrap();
            wan.attach(&vpn_shoot, "eth1", &format!("{}/24", s.wan)).unwrap();
            vpn_shoot.sysctl("net.ipv4.ip_forward", "1").unwrap();
            for net in [PODS.0, SERVICES.0] {
                vpn_shoot.ip(&["route", "add", net, "via", NODE]).unwrap();
            }
            // The shoot's network: a node, and on it a pod and a Service address.
            segment.attach(&network, "eth0", &format!("{NODE}/16")).unwrap();
            for a in [POD, SERVICE] {
                network.ip(&["addr", "add", &format!("{a}/32"), "dev", "eth0"]).unwrap();
            }
            let d = dir.join(s.name);
            tls_material(&d.join("tls"));
            ShootHosts { server, vpn_shoot, network, _segment: segment, dir: d }
        })
        .collect();

    // The gateway, from the agent's state; each shoot's WireGuard peer, as the other tests run shoots.
    let gw_key = PrivateKey::generate();
    let keys: Vec<(PrivateKey, &Shoot)> = SHOOTS.iter().map(|s| (PrivateKey::generate(), s)).collect();
    let gw_dev = netns::unique("g");
    let (gw_text, want) = gateway_file(&gw_dev, &gw_key, &keys);
    let _gateway = start_kubelink(&gw, &dir, "gateway", &gw_text);
    let peers = || netns::status(&gw, &gw_dev).ok().and_then(|s| s["peers"].as_array().map(Vec::len));
    assert!(
        netns::wait_for(Duration::from_secs(10), || peers() == Some(2)).is_some(),
        "gateway: logs in {}",
        dir.display()
    );
    let slot = Slot::ALL[0].address(CIDR.parse().unwrap()).unwrap();
    let mut daemons = Vec::new();
    let wg_start = Instant::now();
    let mut devices = Vec::new();
    for ((key, s), h) in keys.iter().zip(&hosts) {
        let dev = netns::unique("s");
        // Shoot A's owner also sends the seed's pod network into the tunnel (the negative below).
        let hostile = if s.name == "shoot-a" { format!(", {SEED_PODS}") } else { String::new() };
        let text = format!(
            "device:\n  name: {dev}\n  privateKey: {}\n  addresses: [{}/22]\n  peers:\n  - publicKey: {}\n    endpoint: {GW_WAN}:51820\n    allowedIPs: [{slot}/32{hostile}]\n    persistentKeepalive: 21\n",
            key.expose_base64().as_str(),
            s.tunnel,
            gw_key.public_key()
        );
        daemons.push(start_kubelink(&h.vpn_shoot, &dir, &format!("{}-wg", s.name), &text));
        devices.push(dev);
    }
    for (s, h) in SHOOTS.iter().zip(&hosts) {
        let t = h.vpn_shoot.wait_ping(&slot.to_string(), Some(&s.tunnel.to_string()), Duration::from_secs(10));
        assert!(t.is_some(), "{}: no tunnel to the gateway; logs in {}", s.name, dir.display());
    }
    println!("{TEST}: both WireGuard tunnels up {:.2} s after the shoots started", wg_start.elapsed().as_secs_f64());
    let have = table(&gw);
    assert_eq!(have.diff(&want), Vec::<String>::new(), "not the agent's table");

    // Each shoot's network answers with its own name.
    let stop = Arc::new(AtomicBool::new(false));
    for (s, h) in SHOOTS.iter().zip(&hosts) {
        answer(&h.network, s.name, stop.clone());
    }

    // vpn-seed-server and vpn-shoot, as vpn2 configures them.
    let vpn_start = Instant::now();
    for (s, h) in SHOOTS.iter().zip(&hosts) {
        let d = &h.dir;
        std::fs::create_dir_all(d.join("client-config-dir")).unwrap();
        std::fs::write(d.join("client-config-dir/vpn-shoot-client"), server_for_client_config()).unwrap();
        let script = d.join("vpn-server-firewall");
        std::fs::write(&script, server_firewall_script()).unwrap();
        sh(&format!("chmod 755 {}", script.display()));
        std::fs::write(d.join("server.conf"), server_config(d)).unwrap();
        std::fs::write(d.join("client.conf"), client_config(d, slot)).unwrap();
        nft(&h.server, d, "vpn-seed-server", &server_nat());
        nft(&h.vpn_shoot, d, "vpn-shoot", &client_nat());
        let conf = d.join("server.conf");
        daemons.push(h.server.spawn("openvpn", &["--config", conf.to_str().unwrap()], &d.join("server.log")).unwrap());
        let conf = d.join("client.conf");
        daemons
            .push(h.vpn_shoot.spawn("openvpn", &["--config", conf.to_str().unwrap()], &d.join("client.log")).unwrap());
        println!(
            "{TEST}: {}: vpn-seed-server at {}:{VPN_PORT}, vpn-shoot dials {slot}:{VPN_PORT} from {}",
            s.name, s.server, s.tunnel
        );
    }
    for (s, h) in SHOOTS.iter().zip(&hosts) {
        let log = h.dir.join("client.log");
        let up = netns::wait_for(Duration::from_secs(30), || {
            std::fs::read_to_string(&log).is_ok_and(|t| t.contains("Initialization Sequence Completed"))
        });
        assert!(up.is_some(), "{}: the VPN did not come up; logs in {}", s.name, h.dir.display());
        println!(
            "{TEST}: {}: VPN up {:.2} s after the start of the VPN processes",
            s.name,
            vpn_start.elapsed().as_secs_f64()
        );
    }

    // From each vpn-seed-server's namespace: a pod, a Service and a node of its own shoot, with the
    // same addresses for both shoots.
    for (s, h) in SHOOTS.iter().zip(&hosts) {
        for (what, addr) in [("pod", POD), ("Service", SERVICE), ("node", NODE)] {
            let dst = SocketAddr::new(ip(addr), ANSWER_PORT);
            let t = Instant::now();
            let mut got = ask(&h.server, dst, Duration::from_secs(2));
            while got.is_err() && t.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(100));
                got = ask(&h.server, dst, Duration::from_secs(2));
            }
            let got =
                got.unwrap_or_else(|e| panic!("{}'s server -> {what} {addr}: {e}; logs in {}", s.name, dir.display()));
            println!(
                "{TEST}: {}'s vpn-seed-server -> {what} {addr}: {got:?} in {:.1} ms",
                s.name,
                t.elapsed().as_secs_f64() * 1000.0
            );
            assert_eq!(got, format!("{} {addr}", s.name), "{}'s server reached another shoot's {what}", s.name);
        }
        let t = Instant::now();
        let pinged = h.server.ping(POD, 5, "0.2", None);
        println!(
            "{TEST}: {}'s vpn-seed-server pings pod {POD}: {}/{} in {:.2} s",
            s.name,
            pinged.1,
            pinged.0,
            t.elapsed().as_secs_f64()
        );
        assert_eq!(pinged.1, pinged.0, "{}: pings of the pod lost", s.name);
    }
    // Each server's one client came from its own shoot's tunnel address: the DNAT is keyed on it.
    for (i, h) in hosts.iter().enumerate() {
        let log = std::fs::read_to_string(h.dir.join("server.log")).unwrap_or_default();
        let (own, other) = (SHOOTS[i].tunnel, SHOOTS[1 - i].tunnel);
        assert!(log.contains(&format!("{own}:")), "{}'s server saw no client from {own}:\n{log}", SHOOTS[i].name);
        assert!(!log.contains(&format!("{other}:")), "{}'s server saw {other}:\n{log}", SHOOTS[i].name);
    }
    // Nothing routes from the seed to a shoot but the tunnel: the server namespaces' routes to the
    // shoot networks are the VPN's (tun0), and the gateway has none.
    for h in &hosts {
        let routes = h.server.ip(&["-4", "route", "show"]).unwrap();
        for mapped in MAPPED {
            assert!(routes.contains(&format!("{mapped} dev tun0")), "{routes}");
        }
    }
    let gw_routes = gw.ip(&["-4", "route", "show"]).unwrap();
    for net in [PODS.0, SERVICES.0, NODES.0, PODS.1, SERVICES.1, NODES.1] {
        assert!(!gw_routes.contains(net), "the gateway routes {net}: {gw_routes}");
    }

    // Shoot A against shoot B's server: its OpenVPN client and plain TCP, to B's server address (no
    // DNAT for that) and to the slot address from an address that is not B's (DNAT keyed on the source).
    let (a, b) = (&hosts[0], &hosts[1]);
    a.vpn_shoot.ip(&["route", "add", SEED_PODS, "dev", &devices[0]]).unwrap();
    let before = table(&gw).drops;
    let other = SocketAddr::new(ip(SHOOTS[1].server), VPN_PORT);
    let d = a.dir.join("to-b");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("client.conf"), client_config(&a.dir, other.ip()).replace("dev tun0", "dev tun1")).unwrap();
    let conf = d.join("client.conf");
    let mut intruder =
        a.vpn_shoot.spawn("openvpn", &["--config", conf.to_str().unwrap()], &d.join("client.log")).unwrap();
    let tcp = ask(&a.vpn_shoot, other, Duration::from_secs(1));
    assert!(tcp.as_ref().is_err_and(|e| e.starts_with("connect")), "shoot A reached shoot B's server: {tcp:?}");
    std::thread::sleep(Duration::from_secs(3));
    let log = std::fs::read_to_string(d.join("client.log")).unwrap_or_default();
    intruder.stop(Duration::from_secs(1));
    assert!(!log.contains("Initialization Sequence Completed"), "shoot A's client connected to B's server:\n{log}");
    assert!(!log.contains("TCP connection established"), "shoot A's client reached B's server:\n{log}");
    let b_log = std::fs::read_to_string(b.dir.join("server.log")).unwrap_or_default();
    let from_a = format!("{}:", SHOOTS[0].tunnel);
    assert!(!b_log.contains(&from_a), "B's server saw shoot A:\n{b_log}");
    let after = table(&gw).drops;
    println!(
        "{TEST}: shoot A -> shoot B's server {other}: refused (client log: {} connection attempts); drops shoot to seed {} -> {}",
        log.matches("Attempting to establish TCP connection").count(),
        before.shoot_to_seed,
        after.shoot_to_seed
    );
    assert!(
        after.shoot_to_seed > before.shoot_to_seed,
        "the gateway did not count A's attempts: {before:?} -> {after:?}"
    );
    // Still each to its own after the attempt.
    assert_eq!(
        ask(&a.server, SocketAddr::new(ip(POD), ANSWER_PORT), Duration::from_secs(2)),
        Ok(format!("shoot-a {POD}"))
    );
    assert_eq!(
        ask(&b.server, SocketAddr::new(ip(POD), ANSWER_PORT), Duration::from_secs(2)),
        Ok(format!("shoot-b {POD}"))
    );
    stop.store(true, Ordering::Relaxed);
    println!("{TEST}: {:.1} s", begin.elapsed().as_secs_f64());
}
