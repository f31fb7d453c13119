//! `kubelink run` / `kubelink down`: standalone mode from a config file.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Notify;

use crate::config;
use crate::driver::{self, Schedule};
use crate::link::Link;
use crate::reconcile::Reconciler;
use crate::route::{self, Routes};
use crate::standalone::{self, Standalone};
use crate::wg::{self, BackendChoice, Offload};

#[derive(clap::Args)]
pub struct RunArgs {
    /// The desired state: YAML or JSON with `device` (and its `peers`) and `routes`.
    #[arg(long, short, env = "KUBELINK_CONFIG")]
    pub config: PathBuf,
    #[command(flatten)]
    pub common: Common,
    /// Re-read the device and routes this often, repairing drift that netlink does not announce
    /// (WireGuard peers): a peer removed by hand is back within this interval.
    #[arg(long, env = "KUBELINK_RESYNC_INTERVAL", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub resync_interval: Duration,
    /// On SIGTERM/SIGINT: `keep` the device and routes (a restart adopts them, kernel traffic keeps
    /// flowing) or `remove` them.
    #[arg(long, env = "KUBELINK_ON_EXIT", value_enum, default_value = "keep")]
    pub on_exit: OnExit,
}

#[derive(clap::Args)]
pub struct Common {
    /// WireGuard implementation: kernel if it can create a link, else userspace (gotatun).
    #[arg(long, value_enum, default_value = "auto", env = "KUBELINK_WG_BACKEND")]
    pub wg_backend: BackendChoice,
    /// The userspace engine's fast path: tun offload (64 KB reads split into packets, decrypted
    /// packets merged into large writes) and UDP GSO (one peer's packets sent as one datagram the
    /// kernel cuts). Falls back by itself where the kernel refuses either.
    #[arg(long, value_enum, default_value = "on", env = "KUBELINK_WG_OFFLOAD")]
    pub wg_offload: Offload,
    /// Route protocol number that marks kubelink's routes.
    #[arg(long, env = "KUBELINK_ROUTE_PROTOCOL", default_value_t = route::DEFAULT_PROTOCOL)]
    pub route_protocol: u8,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnExit {
    Keep,
    Remove,
}

#[derive(clap::Args)]
pub struct DownArgs {
    /// The config file `run` was started with: its device and routes are removed.
    #[arg(long, short, env = "KUBELINK_CONFIG")]
    pub config: PathBuf,
    #[command(flatten)]
    pub common: Common,
}

pub(crate) async fn reconciler(common: &Common) -> anyhow::Result<Reconciler> {
    let link = Link::open()?;
    let wg = wg::select(common.wg_backend, common.wg_offload, &link).await;
    let routes = Routes::new(link.handle().clone(), common.route_protocol);
    Ok(Reconciler::new(link, routes, wg))
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let desired = config::load(&args.config)?;
    let rec = reconciler(&args.common).await?;
    let wake = Arc::new(Notify::new());
    crate::monitor::spawn(wake.clone()).context("starting the netlink monitor")?;
    let mut signals = driver::os_signals().context("installing the signal handlers")?;
    tracing::info!(device = %desired.device.name, backend = ?rec.wg.kind(), "reconciling {}", args.config.display());
    let mut role = Standalone::new(args.config.clone(), rec, desired);
    let schedule = Schedule { poll: Some(standalone::POLL), ..Schedule::resync_every(args.resync_interval) };
    driver::run(&mut role, schedule, &wake, &mut signals).await;
    if args.on_exit == OnExit::Remove {
        role.teardown().await.map_err(cleanup_incomplete)?;
    } else {
        tracing::info!(device = %role.desired.device.name, "exiting; device and routes stay for the next start to adopt");
    }
    Ok(())
}

fn cleanup_incomplete(errors: Vec<String>) -> anyhow::Error {
    anyhow::anyhow!("cleanup incomplete: {}", errors.join("; "))
}

pub async fn down(args: DownArgs) -> anyhow::Result<()> {
    let desired = config::load(&args.config)?;
    let rec = reconciler(&args.common).await?;
    Standalone::new(args.config, rec, desired).teardown().await.map_err(cleanup_incomplete)
}
