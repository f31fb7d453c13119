//! The full local landscape: the seed's real kube-apiserver and etcd ([`crate::k8s`]) in a network
//! namespace of their own, with authentication and RBAC on and Gardener's seed CRDs; the chart
//! installed by the real helm CLI as gardenlet configures it ([`super::chart`]); gardenlet's part
//! played by its stand-in ([`crate::gardenlet`]): the seed's Extension, and per shoot its namespace,
//! Cluster and Extension; three seed nodes running `kubelink agent` with the args and env of the
//! rendered DaemonSet (two gateway slots, a load balancer per slot) with the agent's ServiceAccount
//! token; the extension controller as the rendered Deployment runs it; and shoots running the
//! `kubelink shoot` sidecar from the Secret each shoot's ManagedResource delivers (copied into a
//! directory per shoot, as gardener-resource-manager applies it and a kubelet mounts it). A "pod" on
//! the third node probes every shoot through the tunnel. Nothing of a garden runs: kubelink needs none.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use kubelink_ipam::contract::{Slot, names};
use kubelink_ipam::extension::objects::TYPE;
use serde_json::{Value, json};

use super::chart::{self, Workloads};
use super::lb;
use crate::gardenlet::{Gardenlet, SeedFixture, ShootFixture, ShootInput};
use crate::helm;
use crate::k8s::{self, Cluster};
use crate::netns::{Netns, Proc, Segment, unique};

mod memory;
pub mod migration;
pub mod ops;
mod pods;

/// The release namespace: the agents' Leases, slot Secrets and Pods, the controller's seed objects.
pub const AGENT_NS: &str = "kubelink";
pub const SEED: &str = "local";
/// The shoots' project (`shoot--<project>--<name>`).
pub const PROJECT: &str = "dev";
pub const CIDR: &str = "192.168.128.0/22";
/// Where the namespaces reach both API servers (each on a port of its own).
pub const API_IP: &str = "10.250.0.2";
pub const POD_IP: Ipv4Addr = Ipv4Addr::new(100, 64, 1, 1);
const NODES: usize = 3;
const PORT: u16 = 51820;
/// The agents' warm-up (chart value `agent.warmup`): shorter than the chart's default so that the
/// tests' take-overs settle sooner.
const AGENT_WARMUP: &str = "20s";

pub fn node_ip(i: usize) -> String {
    format!("10.250.0.{}", 11 + i)
}
pub fn lb_ip(slot: usize) -> String {
    format!("10.250.0.{}", 100 + slot)
}
/// Shoot `i`'s address on the segment (the internet it dials the seed's load balancers over).
fn shoot_cidr(i: usize) -> String {
    format!("10.250.0.{}/24", 21 + i)
}

pub struct ShootHost {
    pub name: String,
    pub ns: Netns,
    pub device: String,
    pub config_dir: PathBuf,
    pub proc: Option<Proc>,
    /// The tunnel address the IPAM gave it.
    pub address: Option<Ipv4Addr>,
    /// Its Shoot object was deleted: no sidecar is started any more.
    pub deleted: bool,
}

impl ShootHost {
    fn new(lan: &Segment, dir: &Path, i: usize, wired: bool) -> Result<Self, String> {
        let ns = Netns::new("shoot")?;
        let cidr = shoot_cidr(i);
        if wired {
            lan.attach_wired(&ns, "eth0", &cidr)?
        } else {
            lan.attach(&ns, "eth0", &cidr)?
        }
        let name = shoot_name(i);
        let config_dir = dir.join(&name);
        Ok(ShootHost { name, ns, device: unique("s"), config_dir, proc: None, address: None, deleted: false })
    }
}

pub struct SeedLandscape {
    /// The seed's name ([`SEED`] unless built with [`SeedLandscape::build_named`]).
    pub name: String,
    pub dir: PathBuf,
    bin: PathBuf,
    /// The seed cluster: the real kube-apiserver and etcd in `api_ns`.
    pub seed: Cluster,
    /// The seed's admin client, from this process.
    client: kube::Client,
    /// gardenlet's part, as the seed's admin.
    pub gardenlet: Gardenlet,
    /// The seed API server's URL as the namespaces reach it (https).
    pub api_url: String,
    /// What Helm rendered: the agents and the IPAM start from these.
    workloads: Workloads,
    lan: Segment,
    /// The API server's host; the extension controller runs here too.
    api_ns: Netns,
    /// Gateway slots: 1, or 2 for high availability.
    pub slots: usize,
    pub nodes: Vec<Netns>,
    pub devices: Vec<String>,
    pub agents: Vec<Option<Proc>>,
    controller: Option<Proc>,
    lbs: Vec<Arc<Netns>>,
    /// Where each slot's load balancer sends (the holder's node IP from the slot's EndpointSlice,
    /// while that node is ready).
    backends: lb::Backends,
    pub shoots: Vec<ShootHost>,
    /// Shoots reach the segment through wires ([`Segment::attach_wired`]).
    wired_shoots: bool,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// The seed's real control plane in `api_ns`, reached by the nodes on [`API_IP`], with Gardener's
/// seed CRDs and kubelink's; its https URL there.
async fn seed_cluster(api_ns: &Netns, seed: &str) -> Result<(Cluster, String), String> {
    let ip: std::net::IpAddr = API_IP.parse().map_err(|e| format!("{API_IP}: {e}"))?;
    // The cluster's work directory is named after it: two seeds of one process need two.
    let options =
        k8s::Options { name: format!("seed-{seed}"), netns: Some(api_ns.name.clone()), ips: vec![ip], crds: true };
    let seed = Cluster::start(options).await?;
    let url = seed.url_at(ip);
    Ok((seed, url))
}

impl SeedLandscape {
    /// Builds the namespaces and the API server, installs the chart, creates the agents' Pods and
    /// each shoot's namespace and Cluster. Two gateway slots.
    pub async fn build(shoots: usize, dir: &Path, bin: &Path) -> Result<Self, String> {
        Self::build_with_slots(shoots, 2, dir, bin).await
    }

    /// [`Self::build`] with `slots` gateway slots (1 or 2).
    pub async fn build_with_slots(shoots: usize, slots: usize, dir: &Path, bin: &Path) -> Result<Self, String> {
        Self::build_with(shoots, slots, false, dir, bin).await
    }

    /// [`Self::build_with_slots`]; `wired_shoots`: each shoot reaches the segment through a wire
    /// whose delay and loss the test sets ([`Segment::impair`]).
    pub async fn build_with(
        shoots: usize,
        slots: usize,
        wired_shoots: bool,
        dir: &Path,
        bin: &Path,
    ) -> Result<Self, String> {
        Self::build_named(SEED, shoots, slots, wired_shoots, dir, bin).await
    }

    /// [`Self::build_with`] for the seed `name` (a second seed of its own, for migrations).
    pub async fn build_named(
        name: &str,
        shoots: usize,
        slots: usize,
        wired_shoots: bool,
        dir: &Path,
        bin: &Path,
    ) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let lan = Segment::new("lan")?;
        let api_ns = Netns::new("api")?;
        lan.attach(&api_ns, "eth0", &format!("{API_IP}/24"))?;
        let (seed, api_url) = seed_cluster(&api_ns, name).await?;
        let client = seed.client().await?;
        let workloads = chart::install(&seed, AGENT_NS, chart_values(name, slots)).await?;
        let nodes = (0..NODES).map(|_| Netns::new("node")).collect::<Result<Vec<_>, _>>()?;
        for (i, n) in nodes.iter().enumerate() {
            lan.attach(n, "eth0", &format!("{}/24", node_ip(i)))?;
        }
        // The pod on the last node, and the other nodes' route to it (what a CNI provides).
        nodes[NODES - 1].ip(&["addr", "add", &format!("{POD_IP}/32"), "dev", "lo"])?;
        for n in &nodes[..NODES - 1] {
            n.ip(&["route", "add", &format!("{POD_IP}/32"), "via", &node_ip(NODES - 1)])?;
        }
        let lbs = (0..slots).map(|_| Netns::new("lb").map(Arc::new)).collect::<Result<Vec<_>, _>>()?;
        for (slot, l) in lbs.iter().enumerate() {
            lan.attach(l, "eth0", &format!("{}/24", lb_ip(slot)))?;
            l.sysctl("net.ipv4.ip_forward", "1")?;
        }
        let mut hosts = Vec::with_capacity(shoots);
        for i in 0..shoots {
            hosts.push(ShootHost::new(&lan, dir, i, wired_shoots)?);
        }
        let landscape = SeedLandscape {
            name: name.into(),
            dir: dir.into(),
            bin: bin.into(),
            seed,
            gardenlet: Gardenlet::new(client.clone()),
            client,
            api_url,
            workloads,
            lan,
            api_ns,
            slots,
            nodes,
            devices: (0..NODES).map(|_| unique("n")).collect(),
            agents: (0..NODES).map(|_| None).collect(),
            controller: None,
            lbs,
            backends: Default::default(),
            shoots: hosts,
            wired_shoots,
            stop: Arc::new(AtomicBool::new(false)),
            tasks: Vec::new(),
        };
        landscape.populate().await.map_err(|e| format!("creating the landscape's objects: {e}"))?;
        Ok(landscape)
    }

    /// The seed's admin client (from this process).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// gardenlet's part before the controller runs: each shoot's namespace and Cluster, and the
    /// `garden` namespace of the seed's Extension; the agents' Pods as the DaemonSet controller
    /// creates them.
    async fn populate(&self) -> Result<(), String> {
        self.seed.ensure_namespace("garden").await?;
        for i in 0..self.shoots.len() {
            self.prepare_shoot(i).await?;
        }
        for i in 0..NODES {
            create_agent_pod(&self.client(), &self.workloads.agent, i, &node_ip(i)).await?;
        }
        Ok(())
    }

    /// Shoot `i`'s control-plane namespace and Cluster, as gardenlet writes them.
    async fn prepare_shoot(&self, i: usize) -> Result<String, String> {
        prepare_shoot_on(&self.gardenlet, &self.name, i).await
    }

    /// gardenlet's reconcile of the seed's Extension with `slots` slots, each at its load balancer.
    pub async fn reconcile_seed_extension(&self, slots: usize) -> Result<(), String> {
        reconcile_seed_extension(&self.gardenlet, &slot_endpoints(slots)).await
    }

    /// gardenlet's reconcile of shoot `i`'s Extension (the controller allocates; `sync_shoots`
    /// starts its sidecar).
    async fn reconcile_shoot_extension(&self, i: usize) -> Result<(), String> {
        reconcile_shoot_extension(&self.gardenlet, i).await
    }

    /// Starts the extension controller, gardenlet's reconcile of the seed's and the shoots'
    /// Extensions, the agents and the load balancers. The node with the pod starts last, once the
    /// slots are taken, so that the pod's traffic is routed to the gateways.
    pub async fn start(&mut self) -> Result<(), String> {
        // The cloud's part: each slot's load balancer has its address before the agents come up.
        for slot in 0..self.slots {
            lb::assign_address(&self.client(), AGENT_NS, slot, &lb_ip(slot)).await?;
        }
        // Each node's credentials, as its kubelet mounts the agent Pod's ServiceAccount token: bound
        // to the Pod, so the API server knows the node (the chart's admission policy checks it).
        let account = chart::service_account(&self.workloads.agent)?;
        for i in 0..NODES {
            let who = (AGENT_NS, account.as_str(), Some(pod_name(i)));
            let who = (who.0, who.1, who.2.as_deref());
            chart::write_kubeconfig(&self.seed, &self.api_url, who, &self.agent_kubeconfig(i)).await?;
        }
        // The controller first: the seed's Extension ready means the SeedTunnel (the slot count) and
        // the slot Secrets the agents wait for are there.
        self.controller = Some(self.start_controller().await?);
        self.reconcile_seed_extension(self.slots).await?;
        for i in 0..self.shoots.len() {
            self.reconcile_shoot_extension(i).await?;
        }
        for i in 0..NODES - 1 {
            self.start_agent(i)?;
        }
        for _ in 0..100 {
            if self.holders().await.len() == self.slots {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.start_agent(NODES - 1)?;
        self.follow_load_balancers();
        Ok(())
    }

    /// Points each slot's load balancer at the ready endpoint of its EndpointSlice (the holder's
    /// node) until `stop` is set.
    fn follow_load_balancers(&self) {
        let runtime = tokio::runtime::Handle::current();
        let (lbs, backends) = (self.lbs.clone(), self.backends.clone());
        lb::follow(self.client(), runtime, AGENT_NS.into(), lbs, PORT, backends, self.stop.clone());
    }

    /// The extension controller as the rendered Deployment runs it, in the API server's namespace.
    async fn start_controller(&self) -> Result<Proc, String> {
        let kubeconfig = self.dir.join("controller.kubeconfig");
        let deployment = &self.workloads.controller;
        let account = chart::service_account(deployment)?;
        chart::write_kubeconfig(&self.seed, &self.api_url, (AGENT_NS, &account, None), &kubeconfig).await?;
        let volumes = self.dir.join("controller-volumes");
        let client = self.client();
        let c = chart::deployment_container(&client, deployment, "controller", AGENT_NS, &volumes, &kubeconfig).await?;
        let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
        self.api_ns.spawn_env(&self.bin, &args, &c.env, &self.dir.join("controller.log"))
    }

    /// Starts node `i`'s agent as the rendered DaemonSet runs it on that node: its init containers
    /// first (the chart's default switches IP forwarding on in the node's network namespace).
    pub fn start_agent(&mut self, i: usize) -> Result<(), String> {
        for command in chart::init_commands(&self.workloads.agent) {
            let words: Vec<&str> = command.iter().map(String::as_str).collect();
            self.nodes[i].sh(&words).map_err(|e| format!("node {i}: init container {command:?}: {e}"))?;
        }
        let log = self.dir.join(format!("agent-n{i}.log"));
        self.agents[i] = Some(self.spawn_agent(i, &log)?);
        Ok(())
    }

    /// Starts another agent on node `i`, as a second DaemonSet (or a copy run by hand) would.
    pub fn spawn_second_agent(&self, i: usize) -> Result<Proc, String> {
        self.spawn_agent(i, &self.dir.join(format!("agent-n{i}-second.log")))
    }

    /// Node `i`'s agent credentials (written by [`Self::start`]).
    fn agent_kubeconfig(&self, i: usize) -> PathBuf {
        self.dir.join(format!("agent-n{i}.kubeconfig"))
    }

    fn spawn_agent(&self, i: usize, log: &Path) -> Result<Proc, String> {
        let kubeconfig = self.agent_kubeconfig(i);
        let downward = helm::Downward {
            node_name: node_name(i),
            host_ip: node_ip(i),
            pod_name: pod_name(i),
            pod_namespace: AGENT_NS.into(),
        };
        let state = self.dir.join(format!("node-n{i}-state"));
        let c = chart::agent_container(&self.workloads.agent, &downward, &self.devices[i], &state, &kubeconfig)?;
        // With the container's capabilities only (`setpriv`), as the container runtime confines it.
        let confine = chart::confinement(&self.workloads.agent, "agent")?;
        eprintln!("node {i}: agent confined by {confine:?}");
        let bin = self.bin.to_string_lossy().to_string();
        let args: Vec<&str> = confine
            .iter()
            .skip(1)
            .map(String::as_str)
            .chain([bin.as_str()])
            .chain(c.args.iter().map(String::as_str))
            .collect();
        match confine.first() {
            Some(setpriv) => self.nodes[i].spawn_env(setpriv, &args, &c.env, log),
            None => self.nodes[i].spawn_env(&self.bin, &args[1..], &c.env, log),
        }
    }

    /// Copies each shoot's Secret into its config directory (as a kubelet would) and starts its sidecar
    /// once the Secret names its address and at least one gateway. Returns how many sidecars run.
    pub async fn sync_shoots(&mut self) -> usize {
        let client = self.client();
        for i in 0..self.shoots.len() {
            if self.shoots[i].deleted {
                continue;
            }
            let Some(files) = shoot_secret_files(&client, &self.shoots[i].name).await else { continue };
            // Like a kubelet, start the sidecar once the Secret is complete and restart it when it exits.
            let slot_done = |n: usize| {
                ["endpoint", "publicKey", "address"].iter().all(|f| files.contains_key(&format!("gateway-{n}-{f}")))
            };
            let ready = files.contains_key("address") && (0..self.slots).all(slot_done);
            let shoot = &mut self.shoots[i];
            shoot.address = files.get("address").and_then(|a| a.split('/').next()?.parse().ok());
            if let Err(e) = write_files(&shoot.config_dir, &files) {
                eprintln!("{}: {e}", shoot.name);
            }
            if shoot.proc.as_mut().is_some_and(|p| !p.is_running()) {
                eprintln!("{} sidecar exited; restarting it", shoot.name);
                shoot.proc = None;
            }
            if ready && shoot.proc.is_none() {
                let dir = shoot.config_dir.to_string_lossy().to_string();
                let args = ["shoot", "--config-dir", &dir, "--device", &shoot.device, "--health-listen", "127.0.0.1:0"];
                let log = self.dir.join(format!("{}.log", shoot.name));
                shoot.proc = shoot.ns.spawn(&self.bin, &args, &log).map_err(|e| eprintln!("{e}")).ok();
            }
        }
        self.shoots.iter().filter(|s| s.proc.is_some()).count()
    }

    /// Every request the API server refused (401/403), one line each (`seed user verb resource
    /// namespace/name`): what a component needed and its chart does not grant. Empty when the chart's
    /// RBAC covers everything the agents and the controller did. From the audit log.
    pub fn refused(&self) -> Vec<String> {
        refused(&self.seed)
    }

    /// `kubelink seed-status -o <output>` as an operator runs it in node `i`'s agent Pod: with the
    /// agent's ServiceAccount, on the node's network.
    pub fn seed_status(&self, i: usize, output: &str) -> Result<String, String> {
        let kubeconfig = self.dir.join(format!("agent-n{i}.kubeconfig"));
        let kubeconfig = kubeconfig.to_string_lossy();
        let args = [
            "seed-status",
            "--seed",
            &self.name,
            "--namespace",
            AGENT_NS,
            "--seed-kubeconfig",
            &kubeconfig,
            "-o",
            output,
        ];
        let out = crate::netns::run(self.nodes[i].command(&self.bin).args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// Slot -> holder node, from the Leases.
    pub async fn holders(&self) -> BTreeMap<usize, String> {
        let leases: Api<Lease> = Api::namespaced(self.client(), AGENT_NS);
        let mut out = BTreeMap::new();
        for slot in Slot::ALL.into_iter().take(self.slots) {
            let lease = leases.get_opt(&names::gateway(slot)).await.ok().flatten();
            if let Some(holder) = lease.and_then(|l| l.spec?.holder_identity) {
                out.insert(slot.index(), holder);
            }
        }
        out
    }

    /// Starts every shoot's sidecar (waiting for the controller) and waits until the pod reaches every shoot.
    pub async fn wait_for_shoots(&mut self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            self.sync_shoots().await;
            let live = |i: &usize| !self.shoots[*i].deleted;
            if (0..self.shoots.len()).filter(live).all(|i| self.probe(i, Duration::from_millis(500)).is_ok()) {
                return true;
            }
        }
        false
    }

    /// An ICMP probe from the pod to shoot `i`'s tunnel address.
    pub fn probe(&self, i: usize, timeout: Duration) -> Result<Duration, String> {
        let dst = self.shoots[i].address.ok_or("no address allocated yet")?;
        self.nodes[NODES - 1].run_in(move || {
            kubelink::probe::ping(dst.into(), Some(POD_IP.into()), timeout).map_err(|e| e.to_string())
        })?
    }

    /// A new shoot: its namespace on the LAN, then gardenlet's namespace, Cluster and Extension (the
    /// controller allocates, `sync_shoots` starts its sidecar). Returns its index.
    pub async fn add_shoot(&mut self) -> Result<usize, String> {
        let i = self.shoots.len();
        self.shoots.push(ShootHost::new(&self.lan, &self.dir, i, self.wired_shoots)?);
        self.prepare_shoot(i).await?;
        self.reconcile_shoot_extension(i).await?;
        Ok(i)
    }

    /// Deletes shoot `i`'s Extension as gardenlet does when the shoot is deleted (or leaves the
    /// extension) and stops its sidecar (the namespace stays, unused).
    pub async fn delete_shoot(&mut self, i: usize) -> Result<(), String> {
        let ns = control_plane_namespace(&shoot_name(i));
        self.gardenlet.delete_extension(&ns, TYPE).await.map_err(|e| e.to_string())?;
        self.shoots[i].deleted = true;
        if let Some(mut p) = self.shoots[i].proc.take() {
            p.stop(Duration::from_secs(5));
        }
        Ok(())
    }

    /// Cuts the API server off the network (its link goes down: requests hang, as in a partition)
    /// or reconnects it.
    pub fn api_reachable(&self, up: bool) -> Result<(), String> {
        self.api_ns.ip(&["link", "set", "eth0", if up { "up" } else { "down" }]).map(|_| ())
    }

    /// Kills node `i` as a power loss would: its agent with SIGKILL, then its LAN link down, so that
    /// nothing there answers or forwards any more.
    pub fn kill_node(&mut self, i: usize) -> Result<(), String> {
        if let Some(mut agent) = self.agents[i].take() {
            agent.kill();
        }
        self.nodes[i].ip(&["link", "set", "eth0", "down"]).map(|_| ())
    }

    /// Removes node `i` altogether: its agent and every other process there killed, its namespace
    /// deleted, so that its links, device and routes vanish with it.
    pub fn remove_node(&self, i: usize) -> Result<(), String> {
        self.nodes[i].remove()
    }

    /// The segment every host is on (nodes, load balancers, shoots, the API servers): its MTU and
    /// the shoots' wires stand for the underlay.
    pub fn lan(&self) -> &Segment {
        &self.lan
    }

    /// Every host of the landscape: nodes, load balancers, shoots.
    pub fn hosts(&self) -> Vec<&Netns> {
        let lbs = self.lbs.iter().map(|l| l.as_ref());
        self.nodes.iter().chain(lbs).chain(self.shoots.iter().map(|s| &s.ns)).collect()
    }

    /// Where each slot's load balancer sends now: a node IP, or `None` while it drops.
    pub fn backends(&self) -> Vec<Option<String>> {
        self.backends.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The HTTP status of node `i`'s agent `/readyz`, asked inside the node; `None`: no answer.
    pub fn readyz(&self, i: usize) -> Option<u16> {
        let ip = node_ip(i);
        self.nodes[i].run_in(move || lb::readyz(&ip)).ok().flatten()
    }

    /// Peers (public keys) on node `i`'s gateway device; empty when it has none.
    pub fn gateway_peers(&self, i: usize) -> Vec<String> {
        let out = self.nodes[i].sh(&["wg", "show", &self.devices[i], "peers"]).unwrap_or_default();
        out.lines().map(str::to_string).filter(|l| !l.is_empty()).collect()
    }

    /// The kubelink routes (protocol 107) on node `i`, one line each.
    pub fn routes(&self, i: usize) -> Vec<String> {
        let out = self.nodes[i].ip(&["route", "show", "proto", "107"]).unwrap_or_default();
        out.lines().map(str::to_string).filter(|l| !l.is_empty()).collect()
    }

    /// Stops everything: sidecars and agents with SIGTERM, then the background tasks.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let sidecars = self.shoots.iter_mut().filter_map(|s| s.proc.as_mut());
        for p in sidecars.chain(self.agents.iter_mut().flatten()).chain(self.controller.as_mut()) {
            p.stop(Duration::from_secs(5));
        }
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for SeedLandscape {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The chart's values for `slots` gateway slots, as a ControllerDeployment gives them (the
/// extension controller on, the garden-based IPAM off) with the `gardener` values gardenlet injects:
/// what `build` installs and [`SeedLandscape::upgrade_slots`] upgrades to.
pub(crate) fn chart_values(seed: &str, slots: usize) -> Value {
    // The slots are the seed's own setting: the Seed's kubelink-wireguard entry (whose providerConfig
    // gardenlet also gives the seed's Extension), not a chart value.
    let mut spec = seed_json_of(seed)["spec"].clone();
    spec["extensions"] = json!([{"type": TYPE, "providerConfig": seed_extension_config(&slot_endpoints(slots))}]);
    // The cluster has kubelink's CRDs already (`Options::crds`).
    json!({"controller": {"enabled": true}, "crds": {"enabled": false}, "agent": {"warmup": AGENT_WARMUP},
           "gardener": {"version": "1.149.0", "seed": {"name": seed, "spec": spec}}})
}

/// What shoots dial for `slots` slots: each slot's load balancer.
fn slot_endpoints(slots: usize) -> Vec<String> {
    (0..slots).map(|s| format!("{}:{PORT}", lb_ip(s))).collect()
}

/// The Seed as gardenlet describes it: its networks stay out of the WireGuard CIDR.
pub(crate) fn seed_json() -> Value {
    seed_json_of(SEED)
}

/// [`seed_json`] for the seed `name`.
fn seed_json_of(name: &str) -> Value {
    let mut seed = SeedFixture::new(name).to_json();
    seed["spec"]["networks"] = json!({"nodes": "10.250.0.0/16", "pods": "100.64.0.0/12", "services": "100.80.0.0/13"});
    seed
}

/// The seed Extension's providerConfig: the CIDR and one slot per endpoint (what its shoots dial).
fn seed_extension_config(endpoints: &[String]) -> Value {
    json!({"cidr": CIDR, "slots": endpoints.len(), "slotEndpoints": endpoints})
}

/// gardenlet's reconcile of the seed's Extension: one slot per endpoint.
pub(crate) async fn reconcile_seed_extension(gardenlet: &Gardenlet, endpoints: &[String]) -> Result<(), String> {
    let config = seed_extension_config(endpoints);
    gardenlet.reconcile_extension("garden", TYPE, Some("seed"), Some(config)).await.map_err(|e| e.to_string())
}

/// Shoot `i`'s control-plane namespace and Cluster, as gardenlet writes them; the namespace.
pub(crate) async fn prepare_shoot(gardenlet: &Gardenlet, i: usize) -> Result<String, String> {
    prepare_shoot_on(gardenlet, SEED, i).await
}

/// [`prepare_shoot`] on the seed `seed`.
async fn prepare_shoot_on(gardenlet: &Gardenlet, seed: &str, i: usize) -> Result<String, String> {
    let input =
        ShootInput::new(PROJECT, ShootFixture::new(PROJECT, &shoot_name(i), seed).to_json(), seed_json_of(seed));
    gardenlet.prepare_shoot(&input).await.map_err(|e| e.to_string())
}

/// gardenlet's reconcile of shoot `i`'s Extension: ready once the controller has allocated and
/// written the shoot's Secret.
pub(crate) async fn reconcile_shoot_extension(gardenlet: &Gardenlet, i: usize) -> Result<(), String> {
    let ns = control_plane_namespace(&shoot_name(i));
    gardenlet.reconcile_extension(&ns, TYPE, None, None).await.map_err(|e| e.to_string())
}

/// The agent Pod of node `i` as the DaemonSet controller creates it, and the kubelet's part: a
/// host-network Pod runs on its node's IP, `host_ip`. Its name is [`pod_name`].
pub(crate) async fn create_agent_pod(
    client: &kube::Client,
    daemonset: &Value,
    i: usize,
    host_ip: &str,
) -> Result<(), String> {
    let e = |e: kube::Error| e.to_string();
    let pods: Api<Pod> = Api::namespaced(client.clone(), AGENT_NS);
    let pod = chart::agent_pod(daemonset, &pod_name(i), &node_name(i));
    let pod = serde_json::from_value(pod).map_err(|e| e.to_string())?;
    pods.create(&PostParams::default(), &pod).await.map_err(e)?;
    let status = json!({"status": {"phase": "Running", "hostIP": host_ip, "podIP": host_ip}});
    pods.patch_status(&pod_name(i), &PatchParams::default(), &Patch::Merge(&status)).await.map_err(e)?;
    Ok(())
}

/// Every request `seed` refused (401/403), one line each (`seed user verb resource
/// namespace/name`), from its audit log.
pub(crate) fn refused(seed: &Cluster) -> Vec<String> {
    let mut out = Vec::new();
    for e in seed.audit().into_iter().filter(|e| !e.allowed()) {
        let o = e.object_ref.clone().unwrap_or_default();
        let sub = if o.subresource.is_empty() { String::new() } else { format!("/{}", o.subresource) };
        out.push(format!("seed {} {} {}{sub} {}/{}", e.user.username, e.verb, o.resource, o.namespace, o.name));
    }
    out
}

/// `shoot-00000`, `shoot-00001`, ...: names that sort like their numbers.
pub fn shoot_name(i: usize) -> String {
    format!("shoot-{i:05}")
}

/// The name of node `i` (its Lease holder identity).
pub fn node_name(i: usize) -> String {
    format!("n{i}")
}

/// The Pod of the agent DaemonSet on node `i`.
pub(crate) fn pod_name(i: usize) -> String {
    format!("kubelink-agent-n{i}")
}

/// The control-plane namespace of shoot `name` on the seed (`shoot--<project>--<name>`).
pub fn control_plane_namespace(name: &str) -> String {
    format!("shoot--{PROJECT}--{name}")
}

/// Shoot `name`'s sidecar Secret as files (key -> text), as gardener-resource-manager would apply it
/// in the shoot from the ManagedResource's Secret, once the controller has written it.
pub(crate) async fn shoot_secret_files(seed: &kube::Client, name: &str) -> Option<BTreeMap<String, String>> {
    let ns = control_plane_namespace(name);
    let secrets: Api<Secret> = Api::namespaced(seed.clone(), &ns);
    let delivered = secrets.get_opt(kubelink_ipam::contract::names::MANAGED_RESOURCE_SECRET).await.ok()??;
    let data = kubelink_ipam::managed::shoot_data_of(&delivered)?;
    Some(data.into_iter().filter_map(|(k, v)| Some((k, String::from_utf8(v.0).ok()?))).collect())
}

/// Writes changed files only, key file with mode 0600.
pub fn write_files(dir: &Path, files: &BTreeMap<String, String>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    for (name, text) in files {
        let path = dir.join(name);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            std::fs::write(&path, text)?;
            if name == "privateKey" {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            }
        }
    }
    Ok(())
}
