//! Subcommands. Each file parses its own arguments and calls into the library.

pub mod agent;
pub mod bounded;
pub mod ipam;
pub mod keys;
pub mod run;
pub mod seed_status;
pub mod shoot;
pub mod status;

use std::path::PathBuf;

use anyhow::Context;

/// The Seed a process serves and kubelink's namespace in the seed cluster.
#[derive(clap::Args, Clone, Debug)]
pub struct SeedArgs {
    /// The Seed this process serves (gardenlet's `gardener.seed.name`).
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
    /// in-cluster ServiceAccount.
    #[arg(long, env = "KUBELINK_SEED_KUBECONFIG")]
    pub seed_kubeconfig: Option<PathBuf>,
}

impl SeedApi {
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let config = kube_config(self.seed_kubeconfig.as_deref()).await.context("the seed cluster")?;
        kube::Client::try_from(config).context("building the Kubernetes client")
    }

    /// The client of the operator commands that read a few answers and exit: every answer is read
    /// at most [`bounded::MAX_API_ANSWER`] far (not for watches, which are one long answer).
    pub async fn query_client(&self) -> anyhow::Result<kube::Client> {
        let config = kube_config(self.seed_kubeconfig.as_deref()).await.context("the seed cluster")?;
        bounded::query_client(config).context("building the Kubernetes client")
    }
}

/// The configuration from a kubeconfig file, or the ambient one.
async fn kube_config(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Config> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &Default::default())
                .await
                .with_context(|| format!("using kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer().await.context("no kubeconfig and no in-cluster configuration")?,
    };
    Ok(config)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use clap::{Args, Command};

    /// Same flag, different default, on purpose; each with the reason.
    const ROLE_DEFAULTS: &[(&str, &str)] = &[
        (
            "on-exit",
            "standalone `run` keeps the device for the next start to adopt; the sidecar's namespace goes away with its Pod",
        ),
        ("mtu", "the sidecar's flags override its mounted files, which carry the defaults"),
        (
            "health-listen",
            "the agent runs on the host network, where every address includes the tunnel and slot addresses:              loopback; the sidecar and the controller listen in their Pods' own namespaces, where the kubelet's              probes reach the Pod address",
        ),
    ];

    /// Every subcommand a deployment runs, with its flags (`keys` is an operator tool without
    /// settings to share).
    fn subcommands() -> Vec<Command> {
        let ipam = super::ipam::IpamArgs::augment_args(Command::new("ipam"));
        let mut out = vec![
            super::agent::AgentArgs::augment_args(Command::new("agent")),
            super::run::RunArgs::augment_args(Command::new("run")),
            super::run::DownArgs::augment_args(Command::new("down")),
            super::shoot::ShootArgs::augment_args(Command::new("shoot")),
            super::status::StatusArgs::augment_args(Command::new("status")),
            super::seed_status::SeedStatusArgs::augment_args(Command::new("seed-status")),
        ];
        out.extend(ipam.get_subcommands().cloned());
        out
    }

    #[test]
    fn every_flag_has_its_environment_variable_and_one_default_everywhere() {
        let mut defaults: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
        let mut problems = Vec::new();
        for cmd in subcommands() {
            for arg in cmd.get_arguments().filter(|a| a.get_long().is_some_and(|l| l != "help")) {
                let long = arg.get_long().unwrap_or_default();
                let want = format!("KUBELINK_{}", long.to_uppercase().replace('-', "_"));
                let env = arg.get_env().map(|e| e.to_string_lossy().to_string());
                if env.as_deref() != Some(want.as_str()) {
                    problems.push(format!("{} --{long}: env {env:?}, want {want}", cmd.get_name()));
                }
                let default: Vec<String> =
                    arg.get_default_values().iter().map(|v| v.to_string_lossy().into()).collect();
                let seen = defaults.entry(long.to_string()).or_insert((cmd.get_name().to_string(), default.clone()));
                if seen.1 != default && !ROLE_DEFAULTS.iter().any(|(f, _)| *f == long) {
                    problems.push(format!(
                        "--{long}: default {default:?} in {}, {:?} in {}",
                        cmd.get_name(),
                        seen.1,
                        seen.0
                    ));
                }
            }
        }
        assert!(defaults.len() > 40, "too few flags seen to mean anything: {}", defaults.len());
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    /// kubelink runs on the seed only: gardenlet mediates everything of the garden.
    #[test]
    fn no_subcommand_takes_garden_credentials() {
        for cmd in subcommands() {
            let garden: Vec<_> = cmd.get_arguments().filter(|a| a.get_id().as_str().contains("garden")).collect();
            assert!(garden.is_empty(), "{}: {garden:?}", cmd.get_name());
        }
    }
}
