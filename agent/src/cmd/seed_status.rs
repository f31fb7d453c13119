//! `kubelink seed-status`: the whole seed at a glance ([`crate::seed_view`]). Reads the seed-local
//! objects an agent may read (SeedTunnel, slot Leases, agent Pods, ShootPeers) and asks every agent
//! for its `/status` on its node's health port. Inside an agent Pod it needs no flags: the Pod's
//! ServiceAccount allows exactly these reads, and the host network reaches every node.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use kubelink_contract::decode::{self, Raw};
use kubelink_contract::projection::{SeedTunnel, ShootPeer};
use kubelink_contract::{Slot, names};

use crate::agent::view::NodeView;
use crate::seed_view::{self, AgentFound, Found};

#[derive(clap::Args)]
pub struct SeedStatusArgs {
    #[command(flatten)]
    pub seed: super::SeedArgs,
    #[command(flatten)]
    pub api: super::SeedApi,
    /// `text` (tables), `json` or `yaml` (every field, every route).
    #[arg(long, short, env = "KUBELINK_OUTPUT", value_enum, default_value = "text")]
    pub output: Output,
    /// The agents' health port on their nodes (chart value `agent.healthPort`), where each serves
    /// `/status`.
    #[arg(long, env = "KUBELINK_AGENT_PORT", default_value_t = 8093)]
    pub agent_port: u16,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
    Yaml,
}

/// How long one agent may take to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// The most of an agent's `/status` answer that is read: a gateway's has one entry per shoot, a few
/// hundred bytes each.
pub const MAX_STATUS_ANSWER: usize = 4 << 20;

/// How much of a deserializer's message about an answer is kept: it can quote the answer.
const MAX_MESSAGE: usize = 300;

pub async fn run(args: SeedStatusArgs) -> anyhow::Result<()> {
    let client = args.api.query_client().await?;
    let found = read(&client, &args.seed.seed, &args.seed.namespace.namespace, args.agent_port).await?;
    let view = seed_view::build(found);
    match args.output {
        Output::Text => print!("{}", seed_view::render_text(&view)),
        Output::Json => println!("{}", serde_json::to_string_pretty(&view)?),
        Output::Yaml => print!("{}", serde_yaml_ng::to_string(&view)?),
    }
    Ok(())
}

async fn read(client: &kube::Client, seed: &str, namespace: &str, port: u16) -> anyhow::Result<Found> {
    let mut problems = Vec::new();
    let tunnel = read_tunnel(client, seed, namespace).await?;
    if tunnel.is_none() {
        problems.push(format!("no SeedTunnel {seed} in namespace {namespace}: the extension controller has not written it (is the seed's kubelink-wireguard Extension ready?)"));
    }
    let cidr = tunnel.as_ref().map(|t| t.spec.cidr.clone());
    let slot_count = tunnel.as_ref().map_or(0, |t| t.spec.slots.clamp(1, 2));
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let mut slot_leases = Vec::new();
    for slot in Slot::ALL.into_iter().take(usize::from(slot_count)) {
        let lease = leases
            .get_opt(&names::gateway(slot))
            .await
            .with_context(|| format!("reading Lease {}", names::gateway(slot)))?;
        slot_leases.push(lease.as_ref().map(crate::election::kube::view));
    }
    let agents = read_agents(client, namespace, port).await?;
    let (shoots, skipped) = read_shoots(client, namespace).await?;
    problems.extend(skipped);
    problems.extend(agents.iter().filter_map(|a| a.view.as_ref().err().map(|e| format!("agent {}: {e}", a.pod))));
    Ok(Found {
        seed: seed.into(),
        namespace: namespace.into(),
        cidr,
        slot_count,
        leases: slot_leases,
        agents,
        shoots,
        problems,
        now: k8s_openapi::jiff::Timestamp::now(),
    })
}

/// By a field selector, as the agents read it (their Role lists only this name).
async fn read_tunnel(client: &kube::Client, seed: &str, namespace: &str) -> anyhow::Result<Option<SeedTunnel>> {
    let api: Api<Raw<SeedTunnel>> = Api::namespaced(client.clone(), namespace);
    let list = api
        .list(&ListParams::default().fields(&format!("metadata.name={seed}")))
        .await
        .with_context(|| format!("listing SeedTunnels in namespace {namespace}"))?;
    match list.items.into_iter().next() {
        None => Ok(None),
        Some(raw) => decode::typed(&raw).map(Some).map_err(|s| anyhow::anyhow!("SeedTunnel {seed}: {s}")),
    }
}

/// Every ShootPeer as (shoot, address), by shoot; what does not decode is named.
async fn read_shoots(client: &kube::Client, namespace: &str) -> anyhow::Result<(Vec<(String, String)>, Vec<String>)> {
    let api: Api<Raw<ShootPeer>> = Api::namespaced(client.clone(), namespace);
    let list = api.list(&ListParams::default()).await.with_context(|| format!("listing ShootPeers in {namespace}"))?;
    let (peers, skipped) = decode::split(list.items);
    let mut shoots: Vec<(String, String)> =
        peers.iter().map(|p| (p.spec.shoot.clone(), seed_view::address_text(&p.spec.address))).collect();
    shoots.sort();
    Ok((shoots, skipped.iter().map(ToString::to_string).collect()))
}

/// The agent Pods (the DaemonSet's), each asked for its `/status` at once.
async fn read_agents(client: &kube::Client, namespace: &str, port: u16) -> anyhow::Result<Vec<AgentFound>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = pods
        .list(&ListParams::default().labels("app.kubernetes.io/component=agent"))
        .await
        .with_context(|| format!("listing the agent Pods in {namespace}"))?;
    let asks = list.items.iter().map(|pod| {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        let ip = pod.status.as_ref().and_then(|s| s.host_ip.clone()).filter(|ip| !ip.is_empty());
        async move {
            let view = match &ip {
                Some(ip) => ask(ip, port).await,
                None => Err("the Pod has no host IP yet".into()),
            };
            AgentFound { pod: name, node, ip, view }
        }
    });
    let mut agents = futures::future::join_all(asks).await;
    agents.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(agents)
}

/// `GET /status` of the agent on `ip`.
async fn ask(ip: &str, port: u16) -> Result<NodeView, String> {
    let addr = SocketAddr::new(ip.parse().map_err(|_| format!("host IP {ip:?} is not an IP address"))?, port);
    match tokio::time::timeout(ASK_TIMEOUT, get_status(addr)).await {
        Ok(result) => result.map_err(|e| kubelink_contract::shorten(&format!("{addr}/status: {e:#}"), MAX_MESSAGE)),
        Err(_) => Err(format!("{addr}/status: no answer within {ASK_TIMEOUT:?}")),
    }
}

async fn get_status(addr: SocketAddr) -> anyhow::Result<NodeView> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request =
        hyper::Request::get("/status").header(hyper::header::HOST, addr.to_string()).body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    anyhow::ensure!(response.status().is_success(), "HTTP {} (an agent older than this command?)", response.status());
    let url = format!("http://{addr}/status");
    let body = super::bounded::limited(response.into_body(), url, MAX_STATUS_ANSWER)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!(e))?
        .to_bytes();
    // serde's message quotes a string where it wanted an object: cut to its beginning and end.
    serde_json::from_slice(&body).map_err(|e| {
        anyhow::anyhow!("not an agent's status: {}", kubelink_contract::shorten(&e.to_string(), MAX_MESSAGE))
    })
}

#[cfg(test)]
mod tests {
    use super::super::bounded::test_server::{answering, thirty_mib};
    use super::*;

    /// An agent (or whatever answers on its port) answering 30 MiB: read up to the limit, and the
    /// problem seed-status reports is one short line naming the URL and the limit.
    #[tokio::test]
    async fn a_huge_status_answer_is_cut_at_the_limit_and_reported_short() {
        let addr = answering("200 OK", thirty_mib(false)).await;
        let err = ask("127.0.0.1", addr.port()).await.unwrap_err();
        println!("30 MiB answer: {} bytes: {err}", err.len());
        assert!(err.len() < 300, "{} bytes: {}", err.len(), kubelink_contract::shorten(&err, 300));
        assert!(err.contains(&format!("http://{addr}/status")) && err.contains("larger than 4 MiB"), "{err}");
        // Under the limit, a JSON string where the status object belongs: serde quotes it whole.
        let mut body = thirty_mib(true);
        body.truncate(3 << 20);
        *body.last_mut().unwrap() = b'"';
        let addr = answering("200 OK", body).await;
        let err = ask("127.0.0.1", addr.port()).await.unwrap_err();
        assert!(err.len() <= MAX_MESSAGE + 40 && err.contains("not an agent's status"), "{} bytes: {err}", err.len());
    }
}
