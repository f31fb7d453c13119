//! `kubelink ipam`: the Gardener extension controller that allocates tunnel addresses and keys for shoots
//! (`extension`) and what it handed out (`list`).

use std::time::Duration;

use anyhow::Context;
use kubelink_ipam::store::list_allocations;

#[derive(clap::Args)]
pub struct IpamArgs {
    #[command(subcommand)]
    command: IpamCommand,
}

#[derive(clap::Subcommand)]
enum IpamCommand {
    /// The Gardener extension controller: reconciles the seed's and its shoots' `kubelink-wireguard`
    /// Extensions on the seed (no garden access).
    Extension(ExtensionArgs),
    /// Show every allocation on this seed (its ShootPeers): shoot, address, public key.
    List(ListArgs),
}

#[derive(clap::Args)]
struct ExtensionArgs {
    /// The seed's name (the chart passes gardenlet's `gardener.seed.name`) and kubelink's namespace.
    #[command(flatten)]
    seed: super::SeedArgs,
    #[command(flatten)]
    api: super::SeedApi,
    /// The Seed as gardenlet passes it to extensions (`gardener.seed.spec` of the chart's values), as
    /// JSON or YAML: the networks the seed's WireGuard CIDR must stay out of.
    #[arg(long, env = "KUBELINK_SEED_SPEC_FILE")]
    seed_spec_file: Option<std::path::PathBuf>,
    /// Every Extension is reconciled at least this often, e.g. `5m`.
    #[arg(long, env = "KUBELINK_RESYNC", default_value = "5m", value_parser = humantime::parse_duration)]
    resync: Duration,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "KUBELINK_HEALTH_LISTEN", default_value = "0.0.0.0:8093")]
    health_listen: std::net::SocketAddr,
    /// The gateway slots the release deployed (the chart passes its slots): a seed Extension asking
    /// for more is not ready, naming the setting.
    #[arg(long, env = "KUBELINK_DEPLOYED_SLOTS", default_value = "2", value_parser = clap::value_parser!(u8).range(1..=2))]
    deployed_slots: u8,
}

#[derive(clap::Args)]
struct ListArgs {
    #[command(flatten)]
    namespace: super::NamespaceArg,
    #[command(flatten)]
    api: super::SeedApi,
    /// Print JSON lines instead of a table.
    #[arg(long, env = "KUBELINK_JSON")]
    json: bool,
}

impl IpamArgs {
    /// `list`: reads one answer and exits (the extension controller watches for ever).
    pub fn is_list(&self) -> bool {
        matches!(self.command, IpamCommand::List(_))
    }
}

pub async fn run(args: IpamArgs) -> anyhow::Result<()> {
    match args.command {
        IpamCommand::Extension(a) => extension(a).await,
        IpamCommand::List(a) => list(a).await,
    }
}

async fn extension(a: ExtensionArgs) -> anyhow::Result<()> {
    use kubelink_ipam::extension::controller;
    let seed = match &a.seed_spec_file {
        Some(path) => Some(seed_of_spec_file(path, &a.seed.seed)?),
        None => None,
    };
    let (namespace, seed_name) = (a.seed.namespace.namespace, a.seed.seed);
    let cfg = controller::Config { namespace, seed_name, seed, resync: a.resync, deployed_slots: a.deployed_slots };
    let client = a.api.client().await?;
    let metrics = crate::extension_metrics::ExtensionMetrics::default();
    let bound = metrics.serve(a.health_listen).await?;
    tracing::info!(seed = %cfg.seed_name, namespace = %cfg.namespace, health = %bound, "extension controller started");
    controller::run(client, cfg, metrics.observer()).await;
    anyhow::bail!("the extension controller's watches ended")
}

/// A Seed named `name` with the spec in `path` (JSON or YAML); an error names the file and the field.
fn seed_of_spec_file(path: &std::path::Path, name: &str) -> anyhow::Result<kubelink_ipam::gardener::Seed> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let spec: serde_json::Value =
        serde_yaml_ng::from_str(&text).with_context(|| format!("{}: not JSON or YAML", path.display()))?;
    let seed = serde_json::json!({"metadata": {"name": name}, "spec": spec});
    kubelink_ipam::decode::decode_value(&seed)
        .map_err(|(field, reason)| anyhow::anyhow!("{}: {field}: {reason}", path.display()))
}

async fn list(a: ListArgs) -> anyhow::Result<()> {
    let client = a.api.query_client().await?;
    print_list(&client, &a.namespace.namespace, a.json).await
}

async fn print_list(client: &kube::Client, namespace: &str, json: bool) -> anyhow::Result<()> {
    let allocations = list_allocations(client, namespace).await.context("listing the ShootPeers")?;
    if json {
        for e in &allocations.entries {
            let line = serde_json::json!({"shoot": e.shoot.to_string(), "address": e.address.to_string(),
                                          "publicKey": e.public_key.to_string()});
            println!("{line}");
        }
    } else {
        println!("{:<40} {:<40} PUBLIC KEY", "SHOOT", "ADDRESS");
        for e in &allocations.entries {
            println!("{:<40} {:<40} {}", e.shoot.to_string(), e.address.to_string(), e.public_key);
        }
    }
    for p in &allocations.problems {
        eprintln!("skipped: {p}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::bounded::test_server::{answering, thirty_mib};
    use super::super::bounded::{error_text, query_client};
    use super::*;

    async fn list_against(status: &'static str, body: Vec<u8>) -> String {
        let addr = answering(status, body).await;
        let client = query_client(kube::Config::new(format!("http://{addr}").parse().unwrap())).unwrap();
        error_text(&print_list(&client, "kubelink", false).await.unwrap_err())
    }

    /// An API server (or a proxy in front of it) answering 30 MiB: read up to the limit, and the error
    /// on stderr is short and names the request and the limit; a huge error answer under the limit
    /// is cut too.
    #[tokio::test]
    async fn a_huge_api_answer_is_cut_at_the_limit_and_reported_short() {
        for status in ["200 OK", "500 Internal Server Error"] {
            let err = list_against(status, thirty_mib(false)).await;
            println!("{status}, 30 MiB: {} bytes: {err}", err.len());
            assert!(err.len() < 600, "{status}: {} bytes: {err}", err.len());
            assert!(err.contains("GET /apis/kubelink.gardener.cloud") && err.contains("larger than 16 MiB"), "{err}");
        }
        let mut body = thirty_mib(true);
        body.truncate(10 << 20);
        *body.last_mut().unwrap() = b'"';
        let err = list_against("500 Internal Server Error", body).await;
        assert!(err.len() <= 1100 && err.contains("listing the ShootPeers"), "{} bytes: {err}", err.len());
    }
}
