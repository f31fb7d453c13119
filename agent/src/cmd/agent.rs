//! `kubelink agent`: the seed node agent.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Notify;

use crate::agent::Settings;
use crate::agent::cluster::Cluster;
use crate::agent::run::Agent;
use crate::agent::slot_endpoints::{Node, SlotEndpoints};
use crate::election::Timing;
use crate::election::kube::LeaseElection;
use crate::health::Health;
use crate::ifname::IfName;

#[derive(clap::Args)]
pub struct AgentArgs {
    #[command(flatten)]
    pub seed: super::SeedArgs,
    #[command(flatten)]
    pub api: super::SeedApi,
    /// This node's name (downward API `spec.nodeName`): the Lease holder identity.
    #[arg(long, env = "KUBELINK_NODE_NAME")]
    pub node_name: String,
    /// This node's IP (downward API `status.hostIP`): where other nodes route shoot traffic.
    #[arg(long, env = "KUBELINK_NODE_IP")]
    pub node_ip: IpAddr,
    /// The agent's Pod (downward API `metadata.name`). With it the agent is a Pod of the DaemonSet: as
    /// a slot holder it writes the slot's EndpointSlice, and it checks each slot Lease's node IP
    /// against the holder's agent Pod. Without it, neither (there are no Pods to check against).
    #[arg(long, env = "KUBELINK_POD_NAME")]
    pub pod_name: Option<String>,
    /// How long a new slot holder gets no router traffic while the shoots re-handshake with it (used
    /// only while another gateway is live).
    #[arg(long, env = "KUBELINK_WARMUP", default_value = "45s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// A gateway whose device, routes or nftables table keep failing this long gives its slot up, so
    /// that a healthy node takes it.
    #[arg(long, env = "KUBELINK_GIVE_UP_AFTER", default_value = "5s", value_parser = humantime::parse_duration)]
    pub give_up_after: Duration,
    /// How long a node that gave its slot up takes no slot.
    #[arg(long, env = "KUBELINK_STANDBY", default_value = "60s", value_parser = humantime::parse_duration)]
    pub standby: Duration,
    /// The gateway's WireGuard device.
    #[arg(long, env = "KUBELINK_DEVICE", default_value = "kubelink0", value_parser = crate::config::parse_ifname)]
    pub device: IfName,
    /// The gateway's WireGuard UDP port (what the slot's load balancer forwards to).
    #[arg(long, env = "KUBELINK_LISTEN_PORT", default_value_t = 51820)]
    pub listen_port: u16,
    /// The gateway device's MTU: `auto` (from the node's underlay route: its MTU, at most 1500,
    /// minus 80 bytes over IPv6 or 60 over IPv4) or 576..=65535; never below 1280 on an IPv6 CIDR.
    #[arg(long, env = "KUBELINK_MTU", default_value = "auto", value_parser = crate::config::parse_mtu)]
    pub mtu: crate::mtu::MtuSetting,
    /// How long a slot Lease is valid without renewal: a dead gateway's slot is taken over after
    /// this plus one retry period.
    #[arg(long, env = "KUBELINK_LEASE_DURATION", default_value = "4s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,
    /// A holder that cannot renew within this keeps its data path but stops counting on the Lease.
    #[arg(long, env = "KUBELINK_RENEW_DEADLINE", default_value = "3s", value_parser = humantime::parse_duration)]
    pub renew_deadline: Duration,
    /// How often the election runs (and the pass after a failed one).
    #[arg(long, env = "KUBELINK_RETRY_PERIOD", default_value = "1s", value_parser = humantime::parse_duration)]
    pub retry_period: Duration,
    /// How often the node-local state of the last pass (device, peers, routes) is checked and repaired
    /// between passes.
    #[arg(long, env = "KUBELINK_RESYNC_INTERVAL", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub resync_interval: Duration,
    /// Address of /healthz, /readyz, /metrics and /status: `ip:port` or `[ip]:port`. The chart passes
    /// the node's own address (the Pod's host IP). The default is loopback, never every address: on the
    /// host network that would include the tunnel and slot addresses.
    #[arg(long, env = "KUBELINK_HEALTH_LISTEN", default_value = "127.0.0.1:8093", value_parser = crate::health::parse_listen)]
    pub health_listen: SocketAddr,
    #[command(flatten)]
    pub common: crate::cmd::run::Common,
}

/// The slot EndpointSlices this agent writes as a holder: only as a Pod of the DaemonSet.
fn slot_endpoints(args: &AgentArgs, client: kube::Client, namespace: &str) -> Option<SlotEndpoints> {
    if args.pod_name.is_none() {
        tracing::warn!(
            "no --pod-name: this agent is no Pod of the DaemonSet, so it writes no slot EndpointSlice and takes \
             the slot Leases' node IPs as written (no agent Pods to check them against)"
        );
        return None;
    }
    let node = Node { name: args.node_name.clone(), ip: args.node_ip, port: args.listen_port };
    Some(SlotEndpoints::new(client, namespace, node))
}

pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.renew_deadline < args.lease_duration,
        "--renew-deadline ({:?}) must be shorter than --lease-duration ({:?})",
        args.renew_deadline,
        args.lease_duration
    );
    // Before anything touches the node: a second agent here would fight the first over its device,
    // routes and slot.
    let identity = crate::node_lock::identity(&args.node_name, args.pod_name.as_deref());
    let _lock = crate::node_lock::acquire(crate::node_lock::AGENT_LOCK, identity).await?;
    let client = args.api.client().await?;
    let endpoints = slot_endpoints(&args, client.clone(), &args.seed.namespace.namespace);
    let timing =
        Timing { lease_duration: args.lease_duration, renew_deadline: args.renew_deadline, retry: args.retry_period };
    // No slot is contended for until the SeedTunnel says how many there are.
    let namespace = &args.seed.namespace.namespace;
    let election = LeaseElection::new(client.clone(), namespace, &args.node_name, &args.node_ip.to_string(), 0, timing);
    let wake = Arc::new(Notify::new());
    let events = crate::agent::events::Events::new(client.clone(), namespace, &args.node_name);
    let scope = crate::agent::local_pods::Scope::start(client.clone(), &args.node_name, args.node_ip, wake.clone());
    let cluster = Cluster::start(client, namespace, &args.seed.seed, args.pod_name.clone(), wake.clone());
    let rec = crate::cmd::run::reconciler(&args.common).await?;
    crate::monitor::spawn(wake.clone()).context("starting the netlink monitor")?;
    let settings = Settings {
        device: args.device.clone(),
        listen_port: args.listen_port,
        mtu: args.mtu,
        warmup: args.warmup,
        give_up_after: args.give_up_after,
        standby: args.standby,
        resync: args.resync_interval.max(Duration::from_millis(50)),
    };
    let mut agent = Agent::new(election, cluster, rec, settings);
    agent.endpoints = endpoints;
    agent.events = Some(events);
    agent.scope = Some(scope);
    let mut registry = prometheus_client::registry::Registry::default();
    agent.status.register(&mut registry);
    agent.rec.firewall.drop_metrics().register(&mut registry);
    let status = agent.status.clone();
    let view = agent.status.clone();
    let health = Health {
        ready: Arc::new(move || status.ready()),
        registry: Arc::new(Mutex::new(registry)),
        status: Some(Arc::new(move || serde_json::to_value(view.node_view()).unwrap_or_default())),
    };
    let bound = health.serve(args.health_listen).await?;
    tracing::info!(node = %args.node_name, seed = %args.seed.seed, health = %bound, "agent started");
    let signals = crate::driver::os_signals().context("installing the signal handlers")?;
    agent.run(wake, signals).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::mtu::MtuSetting;
    use clap::{Args, Command};

    fn parse(extra: &[&str]) -> Result<clap::ArgMatches, String> {
        let cmd = super::AgentArgs::augment_args(Command::new("agent")).no_binary_name(true);
        let base = ["--seed", "s", "--node-name", "n", "--node-ip", "10.0.0.1"];
        cmd.try_get_matches_from(base.iter().chain(extra)).map_err(|e| e.to_string())
    }

    #[test]
    fn bad_flags_are_refused_at_parse_time_naming_the_flag_and_the_fix() {
        // rows: flags, the flag the error must name, a word of the fix
        let rows: &[(&[&str], &str, &str)] = &[
            (&["--device", "a-name-longer-than-15"], "--device", "1-15 bytes"),
            (&["--device", "wg/0"], "--device", "1-15 bytes"),
            (&["--device", ""], "--device", "1-15 bytes"),
            (&["--mtu", "575"], "--mtu", "576..=65535"),
            (&["--mtu", "70000"], "--mtu", "576..=65535"),
            (&["--mtu", "big"], "--mtu", "`auto`"),
        ];
        for (flags, flag, fix) in rows {
            let err = parse(flags).expect_err(&format!("{flags:?} should be refused"));
            assert!(err.contains(flag) && err.contains(fix), "{flags:?}: {err}");
        }
        let ok = parse(&["--mtu", "1280"]).unwrap();
        // Endpoints are the extension controller's: no node is told one.
        assert!(parse(&["--slot-endpoints", "lb0.example.org:51820"]).is_err());
        assert_eq!(ok.get_one::<MtuSetting>("mtu"), Some(&MtuSetting::Fixed(1280)));
        assert_eq!(parse(&[]).unwrap().get_one::<MtuSetting>("mtu"), Some(&MtuSetting::Auto));
    }
}
