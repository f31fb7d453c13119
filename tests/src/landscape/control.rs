//! The seed's control plane alone, for the kernel scenario under qemu (`tests/qemu/scenarios/`
//! `60-agent-restart.sh`), where the nodes of the full landscape would cost too much: the real
//! kube-apiserver and etcd on this host's loopback, which the guest reaches over qemu's user network
//! at [`GUEST_HOST`]; the chart installed by the helm CLI as gardenlet configures it (one slot); the
//! extension controller in this process with its ServiceAccount's token; gardenlet's stand-in
//! reconciling the seed's Extension (its slot at the guest's gateway node) and one shoot. The agent
//! and the sidecar run in the guest, started by the scenario from what a kubelet would mount there
//! ([`ControlPlane::start`] writes it).

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use kubelink_ipam::extension::controller;

use super::chart;
use super::seed::{self, AGENT_NS, SEED};
use crate::gardenlet::Gardenlet;
use crate::k8s::{Cluster, Options};

/// The host as the guest sees it on qemu's user network (its loopback): the serving certificate
/// names it, the agent's kubeconfig points at it.
pub const GUEST_HOST: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 2, 2));
/// What the shoot dials: the gateway node's address in the scenario's `node` namespace and the
/// agent's listen port.
pub const GATEWAY_ENDPOINT: &str = "10.0.0.1:51820";
/// The guest's gateway node: the agent's Pod is bound to node [`seed::node_name`]`(NODE)`.
pub const NODE: usize = 0;
/// The one shoot ([`seed::shoot_name`]`(SHOOT)`).
pub const SHOOT: usize = 0;
/// Files written into the directory [`ControlPlane::start`] gets: the agent's kubeconfig, and the
/// shoot Secret's files in a directory of that name.
pub const AGENT_KUBECONFIG: &str = "agent.kubeconfig";

/// A running control plane; dropping it stops the controller and the API server.
pub struct ControlPlane {
    pub seed: Cluster,
    controller: tokio::task::JoinHandle<()>,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.controller.abort();
    }
}

impl ControlPlane {
    /// Starts the control plane and writes into `dir` the agent's kubeconfig (a token bound to its
    /// Pod, as the kubelet projects it: the chart's admission policy lets only such a token label the
    /// Pod) and the shoot's Secret as files in `dir/<shoot>/` (as the kubelet mounts it in the
    /// shoot); both are ready to use when this returns.
    pub async fn start(dir: &Path) -> Result<Self, String> {
        let options = Options { name: "qemu".into(), netns: None, ips: vec![GUEST_HOST], crds: true };
        let seed = Cluster::start(options).await?;
        let workloads = chart::install(&seed, AGENT_NS, seed::chart_values(SEED, 1)).await?;
        let admin = seed.client().await?;
        seed.ensure_namespace("garden").await?;
        let gardenlet = Gardenlet::new(admin.clone());
        seed::prepare_shoot(&gardenlet, SHOOT).await?;
        let (gateway_ip, _) = GATEWAY_ENDPOINT.split_once(':').ok_or("GATEWAY_ENDPOINT has no port")?;
        seed::create_agent_pod(&admin, &workloads.agent, NODE, gateway_ip).await?;
        let account = chart::service_account(&workloads.agent)?;
        let who = (AGENT_NS, account.as_str(), Some(seed::pod_name(NODE)));
        let url = seed.url_at(GUEST_HOST);
        chart::write_kubeconfig(&seed, &url, (who.0, who.1, who.2.as_deref()), &dir.join(AGENT_KUBECONFIG)).await?;
        let controller = spawn_controller(&seed, &chart::service_account(&workloads.controller)?).await?;
        let plane = ControlPlane { seed, controller };
        seed::reconcile_seed_extension(&gardenlet, &[GATEWAY_ENDPOINT.to_string()]).await?;
        seed::reconcile_shoot_extension(&gardenlet, SHOOT).await?;
        plane.write_shoot_secret(&admin, dir).await?;
        Ok(plane)
    }

    /// The shoot's Secret as files in `dir/<shoot>/`.
    async fn write_shoot_secret(&self, admin: &kube::Client, dir: &Path) -> Result<(), String> {
        let name = seed::shoot_name(SHOOT);
        let files = seed::shoot_secret_files(admin, &name).await.ok_or(format!("{name}: no Secret delivered"))?;
        seed::write_files(&dir.join(&name), &files).map_err(|e| format!("{name}'s Secret: {e}"))
    }

    /// Every request the API server refused (see [`seed::SeedLandscape::refused`]).
    pub fn refused(&self) -> Vec<String> {
        seed::refused(&self.seed)
    }
}

/// The extension controller in this process, as the rendered Deployment configures it (the seed's
/// name and spec from the chart's values), with a token of its ServiceAccount `account`: the chart's
/// grants, not the admin's.
async fn spawn_controller(seed: &Cluster, account: &str) -> Result<tokio::task::JoinHandle<()>, String> {
    let spec = serde_json::json!({"metadata": {"name": SEED}, "spec": seed::seed_json()["spec"]});
    let decoded =
        kubelink_ipam::decode::decode_value(&spec).map_err(|(field, why)| format!("the Seed: {field}: {why}"))?;
    let cfg = controller::Config {
        namespace: AGENT_NS.into(),
        seed_name: SEED.into(),
        seed: Some(decoded),
        resync: Duration::from_secs(300),
        // What the chart installed above deploys (`--deployed-slots` of its Deployment).
        deployed_slots: 1,
    };
    let client = seed.client_with_token(&seed.token_for(AGENT_NS, account).await?).await?;
    Ok(tokio::spawn(controller::run(client, cfg, std::sync::Arc::new(|_: &controller::Reconciled| {}))))
}
