//! Subcommands. Each file parses its own arguments and calls into the library.

pub mod agent;
pub mod ipam;
pub mod keys;
pub mod landscape;
pub mod run;
pub mod shoot;
pub mod status;

use anyhow::Context;

/// A client from a plain URL, a kubeconfig file, or the ambient configuration.
pub async fn kube_client(server: Option<&str>, kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let config = match (server, kubeconfig) {
        (Some(url), _) => kube::Config::new(url.parse().with_context(|| format!("--server {url:?} is not a URL"))?),
        (None, Some(path)) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &Default::default())
                .await
                .with_context(|| format!("using kubeconfig {}", path.display()))?
        }
        (None, None) => {
            kube::Config::infer().await.context("no in-cluster config or kubeconfig; pass --kubeconfig or --server")?
        }
    };
    kube::Client::try_from(config).context("building the Kubernetes client")
}
