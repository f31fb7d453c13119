//! `kubelink ipam`: tunnel address allocation for shoots (`controller`) and what it handed out (`list`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use kubelink_ipam::controller::{Config, Controller};
use kubelink_ipam::store::list_allocations;

#[derive(clap::Args)]
pub struct IpamArgs {
    #[command(subcommand)]
    command: IpamCommand,
}

#[derive(clap::Subcommand)]
enum IpamCommand {
    /// Allocate, record and release tunnel addresses and keys for the shoots of one seed.
    Controller(ControllerArgs),
    /// Show every allocation of a seed: shoot, address, public key, state.
    List(ListArgs),
}

/// Where the garden API (Seeds, Shoots, ShootStates) is.
#[derive(clap::Args)]
struct GardenApi {
    /// The Seed whose shoots to serve.
    #[arg(long, env = "KUBELINK_SEED")]
    seed: String,
    /// Kubeconfig of the garden cluster; default: in-cluster config, then $KUBECONFIG or ~/.kube/config.
    #[arg(long, conflicts_with = "server")]
    kubeconfig: Option<PathBuf>,
    /// Plain URL of an API server without authentication (the test server), instead of a kubeconfig.
    #[arg(long)]
    server: Option<String>,
}

#[derive(clap::Args)]
struct ControllerArgs {
    #[command(flatten)]
    garden: GardenApi,
    /// Kubeconfig of the seed cluster (shoot Secrets, gateway Secrets); default: the garden's.
    #[arg(long, conflicts_with = "seed_server")]
    seed_kubeconfig: Option<PathBuf>,
    /// Plain URL of the seed's API server, instead of a kubeconfig.
    #[arg(long)]
    seed_server: Option<String>,
    /// Namespace of the gateway Secrets `kubelink-gateway-<slot>` on the seed.
    #[arg(long, default_value = "kubelink")]
    gateway_namespace: String,
    /// Gateway slots (1 or 2).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=2))]
    slots: u8,
    /// Full pass at least this often, e.g. `5m`.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    resync: Duration,
    /// Run one pass, print what it did, and exit (non-zero when the seed's configuration is unusable).
    #[arg(long)]
    once: bool,
}

#[derive(clap::Args)]
struct ListArgs {
    #[command(flatten)]
    garden: GardenApi,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: IpamArgs) -> anyhow::Result<()> {
    match args.command {
        IpamCommand::Controller(a) => controller(a).await,
        IpamCommand::List(a) => list(a).await,
    }
}

async fn controller(a: ControllerArgs) -> anyhow::Result<()> {
    let garden = super::kube_client(a.garden.server.as_deref(), a.garden.kubeconfig.as_deref()).await?;
    let seed = match (&a.seed_server, &a.seed_kubeconfig) {
        (None, None) => garden.clone(),
        (server, kubeconfig) => super::kube_client(server.as_deref(), kubeconfig.as_deref()).await?,
    };
    let mut cfg = Config::new(a.garden.seed);
    cfg.gateway_namespace = a.gateway_namespace;
    cfg.slots = a.slots;
    cfg.resync = a.resync;
    let controller = Controller::new(garden, seed, cfg);
    if !a.once {
        return controller.run().await.context("the ipam controller stopped");
    }
    let report = controller.reconcile().await.context("ipam pass")?;
    println!(
        "shoots with an address: {}, newly assigned: {}, released: {}, waiting (exhausted): {}, rejected: {}, objects written: {}",
        report.table.len(),
        report.assigned.len(),
        report.released.len(),
        report.exhausted.len(),
        report.rejected.len(),
        report.writes
    );
    for (shoot, e) in &report.rejected {
        println!("rejected {shoot}: {e}");
    }
    for p in &report.problems {
        println!("skipped: {p}");
    }
    match report.seed_error {
        Some(e) => Err(anyhow::anyhow!(e)).context("the seed's WireGuard configuration is unusable"),
        None => Ok(()),
    }
}

async fn list(a: ListArgs) -> anyhow::Result<()> {
    let client = super::kube_client(a.garden.server.as_deref(), a.garden.kubeconfig.as_deref()).await?;
    let allocations = list_allocations(&client, &a.garden.seed).await.context("listing allocations")?;
    if a.json {
        for e in &allocations.entries {
            let key = e.public_key.map(|k| k.to_string());
            let line = serde_json::json!({"shoot": e.shoot.to_string(), "address": e.address.to_string(),
                                          "publicKey": key, "state": e.state()});
            println!("{line}");
        }
    } else {
        println!("{:<40} {:<40} {:<45} STATE", "SHOOT", "ADDRESS", "PUBLIC KEY");
        for e in &allocations.entries {
            let key = e.public_key.map(|k| k.to_string()).unwrap_or_else(|| "-".into());
            println!("{:<40} {:<40} {:<45} {}", e.shoot.to_string(), e.address.to_string(), key, e.state());
        }
    }
    for p in &allocations.problems {
        eprintln!("skipped: {p}");
    }
    Ok(())
}
