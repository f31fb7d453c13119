//! `kubelink run` / `kubelink down`: standalone mode from a config file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;

use crate::config::{self, Desired};
use crate::link::Link;
use crate::reconcile::Reconciler;
use crate::route::{self, Routes};
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
    /// packets merged into large writes). Falls back by itself where the kernel refuses offload.
    #[arg(long, value_enum, default_value = "off", env = "KUBELINK_WG_OFFLOAD")]
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
    let mut desired = config::load(&args.config)?;
    let rec = reconciler(&args.common).await?;
    let wake = Arc::new(Notify::new());
    crate::monitor::spawn(wake.clone()).context("starting the netlink monitor")?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(args.resync_interval);
    let mut file_check = tokio::time::interval(Duration::from_secs(1));
    let mut stamp = modified(&args.config);
    tracing::info!(device = %desired.device.name, backend = ?rec.wg.kind(), "reconciling {}", args.config.display());
    pass(&rec, &desired).await;
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = tick.tick() => {}
            _ = hup.recv() => reload(&args.config, &mut desired),
            _ = file_check.tick() => {
                let now = modified(&args.config);
                if now == stamp { continue; }
                stamp = now;
                reload(&args.config, &mut desired);
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
        pass(&rec, &desired).await;
    }
    if args.on_exit == OnExit::Remove {
        teardown(&rec, &desired).await?;
    } else {
        tracing::info!(device = %desired.device.name, "exiting; device and routes stay for the next start to adopt");
    }
    Ok(())
}

/// One reconcile pass; failures are logged and retried on the next wake-up.
pub(crate) async fn pass(rec: &Reconciler, desired: &Desired) {
    match rec.reconcile(desired).await {
        Ok(o) if o.changed() => tracing::info!(
            device = %desired.device.name,
            device_changes = o.device_changes.as_deref().unwrap_or("none"),
            routes_replaced = o.routes_replaced,
            routes_removed = o.routes_removed,
            firewall_written = o.firewall_written,
            "reconciled"
        ),
        Ok(_) => tracing::debug!("in sync"),
        Err(e) => {
            tracing::error!(device = %desired.device.name, "reconcile failed, will retry: {e}")
        }
    }
}

/// Keeps the previous desired state when the new file is bad: a typo must not tear the tunnel down.
fn reload(path: &Path, desired: &mut Desired) {
    match config::load(path) {
        Ok(new) if new == *desired => {}
        Ok(new) => {
            tracing::info!("{}: configuration changed", path.display());
            *desired = new;
        }
        Err(e) => tracing::error!("keeping the previous configuration: {e}"),
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

async fn teardown(rec: &Reconciler, desired: &Desired) -> anyhow::Result<()> {
    rec.teardown(desired).await.map_err(|errors| anyhow::anyhow!("cleanup incomplete: {}", errors.join("; ")))?;
    tracing::info!(device = %desired.device.name, "removed device and routes");
    Ok(())
}

pub async fn down(args: DownArgs) -> anyhow::Result<()> {
    let desired = config::load(&args.config)?;
    let rec = reconciler(&args.common).await?;
    teardown(&rec, &desired).await
}
