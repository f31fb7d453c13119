//! The seed agent end to end, with real packets: three seed nodes running `kubelink agent` against the
//! Kubernetes API test server (served into the namespaces), two gateway slots behind two "load
//! balancers" (namespaces that DNAT to the node labelled with the slot, as a cloud LB follows its
//! Service's endpoints), four shoots dialling both slots. A pod on a non-gateway node reaches every
//! shoot; killing the gateway of slot 0 moves its shoots to slot 1.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use kube::api::PostParams;
use kubelink::keys::PrivateKey;
use kubelink::landscape::lb;
use kubelink_tests::apiserver::{self, ApiServer};
use kubelink_tests::netns::{self, Netns, Proc, Segment};
use serde_json::json;

const NS: &str = "garden";
const SEED: &str = "seed-a";
const CIDR: &str = "192.168.128.0/22";
const API_IP: &str = "10.250.0.2";
const POD_IP: &str = "100.64.1.1";

fn node_ip(i: usize) -> String {
    format!("10.250.0.{}", 11 + i)
}
fn lb_ip(slot: usize) -> String {
    format!("10.250.0.{}", 100 + slot)
}
fn shoot_tunnel(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 128, 10 + i as u8)
}

struct Seed {
    dir: PathBuf,
    rt: tokio::runtime::Runtime,
    server: ApiServer,
    api_url: String,
    _lan: Segment,
    _api_ns: Netns,
    nodes: Vec<Netns>,
    node_devices: Vec<String>,
    agents: Vec<Option<Proc>>,
    lbs: Vec<Arc<Netns>>,
    shoots: Vec<(Netns, PrivateKey, String)>,
    shoot_procs: Vec<Proc>,
    stop_lb: Arc<AtomicBool>,
}

impl Seed {
    fn build(shoots: usize) -> Seed {
        let dir = netns::workdir("agent");
        let rt = tokio::runtime::Runtime::new().unwrap();
        let server = rt.block_on(apiserver::start());
        let lan = Segment::new("lan").unwrap();
        let api_ns = Netns::new("api").unwrap();
        lan.attach(&api_ns, "eth0", &format!("{API_IP}/24")).unwrap();
        let listener = api_ns.run_in(|| std::net::TcpListener::bind((API_IP, 0))).unwrap().unwrap();
        let api_url = format!("http://{}", listener.local_addr().unwrap());
        let _guard = rt.enter();
        server.serve_also(listener).unwrap();
        drop(_guard);
        let nodes: Vec<Netns> = (0..3).map(|_| Netns::new("node").unwrap()).collect();
        for (i, n) in nodes.iter().enumerate() {
            lan.attach(n, "eth0", &format!("{}/24", node_ip(i))).unwrap();
        }
        // The pod on node 2, and the other nodes' route to it (what the CNI provides).
        nodes[2].ip(&["addr", "add", &format!("{POD_IP}/32"), "dev", "lo"]).unwrap();
        for n in &nodes[..2] {
            n.ip(&["route", "add", &format!("{POD_IP}/32"), "via", &node_ip(2)]).unwrap();
        }
        let lbs: Vec<Arc<Netns>> = (0..2).map(|_| Arc::new(Netns::new("lb").unwrap())).collect();
        for (slot, lb) in lbs.iter().enumerate() {
            lan.attach(lb, "eth0", &format!("{}/24", lb_ip(slot))).unwrap();
            lb.sysctl("net.ipv4.ip_forward", "1").unwrap();
        }
        let shoots = (0..shoots)
            .map(|i| {
                let ns = Netns::new("shoot").unwrap();
                lan.attach(&ns, "eth0", &format!("10.250.0.{}/24", 21 + i)).unwrap();
                (ns, PrivateKey::generate(), netns::unique("s"))
            })
            .collect();
        let node_devices = (0..3).map(|_| netns::unique("n")).collect();
        Seed {
            dir,
            rt,
            server,
            api_url,
            _lan: lan,
            _api_ns: api_ns,
            nodes,
            node_devices,
            agents: vec![None, None, None],
            lbs,
            shoots,
            shoot_procs: vec![],
            stop_lb: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A client of the API test server (kube's client needs the runtime's context to start).
    fn client(&self) -> kube::Client {
        let _guard = self.rt.enter();
        self.server.client()
    }

    /// The Seed, the agents' Pods and one ShootState per shoot, as Gardener and the IPAM leave them.
    fn populate(&self) {
        let client = self.client();
        self.rt.block_on(async {
            // The allocation table the IPAM keeps on the Seed: the authority for who has which address.
            let table: serde_json::Map<String, serde_json::Value> =
                (0..self.shoots.len()).map(|i| (format!("shoot--p--s{i}/s{i}"), json!(shoot_tunnel(i).to_string()))).collect();
            let annotations = json!({kubelink_ipam::table::TABLE_ANNOTATION: serde_json::to_string(&table).unwrap()});
            let seed = json!({"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Seed",
                "metadata": {"name": SEED, "annotations": annotations},
                "spec": {"networks": {"nodes": "10.250.0.0/24", "pods": "100.64.0.0/16", "services": "100.96.0.0/16"},
                         "wireguard": {"enabled": true, "cidr": CIDR}}});
            let seeds: Api<kubelink_ipam::gardener::Seed> = Api::all(client.clone());
            seeds.create(&PostParams::default(), &serde_json::from_value(seed).unwrap()).await.unwrap();
            let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
            for i in 0..3 {
                let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("kubelink-n{i}")}});
                pods.create(&PostParams::default(), &serde_json::from_value(pod).unwrap()).await.unwrap();
            }
            for (i, (_, key, _)) in self.shoots.iter().enumerate() {
                let ns = format!("shoot--p--s{i}");
                let state = json!({"apiVersion": "core.gardener.cloud/v1beta1", "kind": "ShootState",
                    "metadata": {"name": format!("s{i}"), "namespace": ns},
                    "spec": {"gardener": [{"name": "wireguard-tunnel", "type": "kubelink.gardener.cloud/wireguard-tunnel",
                        "data": {"address": shoot_tunnel(i).to_string(), "publicKey": key.public_key().to_base64(), "seed": SEED}}]}});
                let api: Api<kubelink_ipam::gardener::ShootState> = Api::namespaced(client.clone(), &ns);
                api.create(&PostParams::default(), &serde_json::from_value(state).unwrap()).await.unwrap();
            }
        });
    }

    fn start_agent(&mut self, i: usize) {
        let endpoints = format!("{}:51820,{}:51820", lb_ip(0), lb_ip(1));
        let (name, ip, pod) = (format!("n{i}"), node_ip(i), format!("kubelink-n{i}"));
        let args = [
            "agent",
            "--node-name",
            &name,
            "--node-ip",
            &ip,
            "--namespace",
            NS,
            "--pod-name",
            &pod,
            "--seed",
            SEED,
            "--slots",
            "2",
            "--server",
            &self.api_url,
            "--slot-endpoints",
            &endpoints,
            "--device",
            &self.node_devices[i],
            "--wg-backend",
            "userspace",
            "--health-listen",
            "127.0.0.1:0",
            "--warmup",
            "25s",
        ];
        self.agents[i] = Some(netns::start_kubelink(&self.nodes[i], &self.dir, &format!("agent-n{i}"), &args));
    }

    /// Slot -> holder node index, from the Leases.
    fn holders(&self) -> BTreeMap<usize, usize> {
        let leases: Api<Lease> = Api::namespaced(self.client(), NS);
        let mut out = BTreeMap::new();
        for slot in 0..2 {
            let lease = self.rt.block_on(leases.get_opt(&format!("kubelink-gateway-{slot}"))).unwrap();
            let holder = lease.and_then(|l| l.spec?.holder_identity);
            if let Some(n) = holder.and_then(|h| h.strip_prefix('n')?.parse().ok()) {
                out.insert(slot, n);
            }
        }
        out
    }

    fn slot_public_key(&self, slot: usize) -> Option<String> {
        let secrets: Api<Secret> = Api::namespaced(self.client(), NS);
        let s = self.rt.block_on(secrets.get_opt(&format!("kubelink-gateway-{slot}"))).ok()??;
        String::from_utf8(s.data?.get("publicKey")?.0.clone()).ok()
    }

    /// Each shoot runs the `kubelink shoot` sidecar from the files `kubelink ipam` puts in its Secret.
    fn start_shoots(&mut self) {
        let gw: Vec<String> = (0..2).map(|s| self.slot_public_key(s).expect("slot Secret")).collect();
        for (i, (ns, key, dev)) in self.shoots.iter().enumerate() {
            let dir = self.dir.join(format!("shoot-{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            let mut files = vec![
                ("privateKey".to_string(), key.expose_base64().to_string()),
                ("address".to_string(), format!("{}/22", shoot_tunnel(i))),
            ];
            for (slot, pk) in gw.iter().enumerate() {
                files.push((format!("gateway-{slot}-endpoint"), format!("{}:51820", lb_ip(slot))));
                files.push((format!("gateway-{slot}-publicKey"), pk.clone()));
                files.push((format!("gateway-{slot}-address"), format!("192.168.128.{}", slot + 1)));
            }
            for (name, text) in files {
                std::fs::write(dir.join(name), text).unwrap();
            }
            let args = [
                "shoot",
                "--config-dir",
                dir.to_str().unwrap(),
                "--device",
                dev,
                "--wg-backend",
                "userspace",
                "--health-listen",
                "127.0.0.1:0",
            ];
            self.shoot_procs.push(netns::start_kubelink(ns, &self.dir, &format!("shoot-{i}"), &args));
        }
    }

    /// The "cloud load balancer" of each slot, following the slot labels (see `landscape::lb`).
    fn run_load_balancers(&self) -> std::thread::JoinHandle<()> {
        let ip_of = |pod: &str| Some(node_ip(pod.strip_prefix("kubelink-n")?.parse().ok()?));
        let (client, handle, stop) = (self.client(), self.rt.handle().clone(), self.stop_lb.clone());
        lb::follow(client, handle, NS.into(), self.lbs.clone(), 51820, Box::new(ip_of), stop)
    }

    fn pod_ping(&self, shoot: usize, count: u32, interval: &str) -> (u32, u32) {
        self.nodes[2].ping(&shoot_tunnel(shoot).to_string(), count, interval, Some(POD_IP))
    }
}

impl Drop for Seed {
    fn drop(&mut self) {
        self.stop_lb.store(true, Ordering::Relaxed);
    }
}

fn wait<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

#[test]
fn three_nodes_two_slots_four_shoots_and_slot_failover() {
    if !netns::require("agent_two_slots", &["ip", "ping", "nft", "conntrack", "iperf3"]) {
        return;
    }
    let mut seed = Seed::build(4);
    seed.populate();
    seed.start_agent(0);
    seed.start_agent(1);
    let holders = wait(Duration::from_secs(15), || {
        let h = seed.holders();
        (h.len() == 2 && seed.slot_public_key(0).is_some() && seed.slot_public_key(1).is_some()).then_some(h)
    });
    let holders = holders.unwrap_or_else(|| panic!("two gateways elected; logs in {}", seed.dir.display()));
    let elected = Instant::now();
    println!("gateways: {holders:?}");
    seed.start_agent(2);
    let _lb = seed.run_load_balancers();
    seed.start_shoots();

    // Every shoot answers the pod on the non-gateway node, through the gateway its address prefers.
    for i in 0..4 {
        let took = wait(Duration::from_secs(20), || (seed.pod_ping(i, 1, "0.2").1 == 1).then_some(()));
        assert!(took.is_some(), "shoot {i} unreachable; logs in {}", seed.dir.display());
    }
    for i in 0..4 {
        assert_eq!(seed.pod_ping(i, 10, "0.05"), (10, 10), "shoot {i}");
    }
    let routes = seed.nodes[2].ip(&["route", "show", "proto", "107"]).unwrap();
    println!("routes on the non-gateway node:\n{routes}");
    assert_eq!(routes.lines().count(), 4, "one /32 per shoot with two slots");
    tcp_transfer(&seed, 1);

    // Kill slot 0's gateway (process and device) while both an even and an odd shoot are pinged. First
    // let the gateways warm up (25 s here), as gateways that have run for a while are.
    std::thread::sleep(Duration::from_secs(26).saturating_sub(elected.elapsed()));
    let dead = holders[&0];
    let mut victim = seed.agents[dead].take().unwrap();
    let (even, odd) = std::thread::scope(|s| {
        let even = s.spawn(|| seed.pod_ping(0, 150, "0.1"));
        let odd = s.spawn(|| seed.pod_ping(1, 150, "0.1"));
        std::thread::sleep(Duration::from_secs(2));
        victim.kill();
        seed.nodes[dead].ip(&["link", "del", &seed.node_devices[dead]]).unwrap();
        (even.join().unwrap(), odd.join().unwrap())
    });
    let gap = f64::from(even.0 - even.1) * 0.1;
    println!(
        "slot 0 killed: shoot via slot 0 lost {} of {} pings (gap about {gap:.1} s); via slot 1 lost {}",
        even.0 - even.1,
        even.0,
        odd.0 - odd.1
    );
    assert!(gap < 8.0, "failover gap {gap:.1} s (goal < 5 s, GEP-14 accepts 30-60 s)");
    assert_eq!(odd.0, odd.1, "the shoot on slot 1 must lose nothing");

    // The spare node takes slot 0; after its warm-up every shoot is still reachable.
    let new = wait(Duration::from_secs(10), || seed.holders().get(&0).copied().filter(|n| *n != dead));
    println!("slot 0 now on node {new:?}");
    assert!(new.is_some(), "slot 0 not taken over");
    std::thread::sleep(Duration::from_secs(30));
    for i in 0..4 {
        let got = seed.pod_ping(i, 5, "0.1");
        if got != (5, 5) {
            let wg = std::process::Command::new("wg").args(["show", "all"]).output().unwrap();
            println!("{}", String::from_utf8_lossy(&wg.stdout));
            println!("{}", seed.nodes[2].ip(&["route"]).unwrap());
        }
        assert_eq!(got, (5, 5), "shoot {i} after the take-over and warm-up; logs in {}", seed.dir.display());
    }
}

fn tcp_transfer(seed: &Seed, shoot: usize) {
    let ip = shoot_tunnel(shoot).to_string();
    let log = seed.dir.join("iperf.log");
    let _server = seed.shoots[shoot].0.spawn("iperf3", &["-s", "-1", "-B", &ip], &log).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = seed.nodes[2].sh(&["iperf3", "-c", &ip, "-B", POD_IP, "-n", "10M", "-J"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let sent = v["end"]["sum_sent"]["bytes"].as_u64().unwrap_or(0);
    println!("TCP transfer pod -> shoot {shoot}: {sent} bytes");
    assert!(sent >= 10 * 1024 * 1024);
}
