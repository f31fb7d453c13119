//! Subcommands. Each file parses its own arguments and calls into the library.

pub mod agent;
pub mod ipam;
pub mod keys;
pub mod landscape;
pub mod run;
pub mod shoot;
pub mod status;

use std::path::PathBuf;

use anyhow::Context;

/// The Seed a process serves and kubelink's namespace in the seed cluster.
#[derive(clap::Args, Clone, Debug)]
pub struct SeedArgs {
    /// The Seed this process serves (its name in the garden).
    #[arg(long, env = "KUBELINK_SEED")]
    pub seed: String,
    #[command(flatten)]
    pub namespace: NamespaceArg,
}

#[derive(clap::Args, Clone, Debug)]
pub struct NamespaceArg {
    /// kubelink's namespace in the seed cluster: the Leases, the slot Secrets, the agent Pods, the
    /// SeedTunnel and the ShootPeers.
    #[arg(long, env = "KUBELINK_NAMESPACE", default_value = "kubelink")]
    pub namespace: String,
}

/// How to reach the seed cluster.
#[derive(clap::Args, Clone, Debug)]
pub struct SeedApi {
    /// Kubeconfig of the seed cluster. Default: $KUBECONFIG or ~/.kube/config, else the Pod's
    /// in-cluster ServiceAccount. Never the garden's.
    #[arg(long, env = "KUBELINK_SEED_KUBECONFIG", conflicts_with = "seed_server")]
    pub seed_kubeconfig: Option<PathBuf>,
    /// Plain URL of the seed's API server, without credentials (the API test server), instead of a
    /// kubeconfig.
    #[arg(long, env = "KUBELINK_SEED_SERVER")]
    pub seed_server: Option<String>,
}

/// How to reach the garden cluster (only the IPAM controller does).
#[derive(clap::Args, Clone, Debug)]
pub struct GardenApi {
    /// Kubeconfig of the garden cluster (this Seed, its Shoots and their ShootStates). Required: the
    /// garden is never taken from the seed's or the ambient configuration.
    #[arg(
        long,
        env = "KUBELINK_GARDEN_KUBECONFIG",
        required_unless_present = "garden_server",
        conflicts_with = "garden_server"
    )]
    pub garden_kubeconfig: Option<PathBuf>,
    /// Plain URL of the garden's API server, without credentials (the API test server), instead of a
    /// kubeconfig.
    #[arg(long, env = "KUBELINK_GARDEN_SERVER")]
    pub garden_server: Option<String>,
}

impl SeedApi {
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        kube_client("--seed-server", self.seed_server.as_deref(), self.seed_kubeconfig.as_deref())
            .await
            .context("the seed cluster")
    }
}

impl GardenApi {
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let kubeconfig = self.garden_kubeconfig.as_deref();
        anyhow::ensure!(self.garden_server.is_some() || kubeconfig.is_some(), "set --garden-kubeconfig");
        kube_client("--garden-server", self.garden_server.as_deref(), kubeconfig).await.context("the garden cluster")
    }
}

/// A client from a plain URL, a kubeconfig file, or the ambient configuration.
async fn kube_client(
    flag: &str,
    server: Option<&str>,
    kubeconfig: Option<&std::path::Path>,
) -> anyhow::Result<kube::Client> {
    let config = match (server, kubeconfig) {
        (Some(url), _) => kube::Config::new(url.parse().with_context(|| format!("{flag} {url:?} is not a URL"))?),
        (None, Some(path)) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &Default::default())
                .await
                .with_context(|| format!("using kubeconfig {}", path.display()))?
        }
        (None, None) => kube::Config::infer().await.context("no kubeconfig and no in-cluster configuration")?,
    };
    kube::Client::try_from(config).context("building the Kubernetes client")
}
