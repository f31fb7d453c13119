//! `kubelink-landscape`: the local landscape in network namespaces, with live status until Ctrl-C.
//! A test tool, not part of the product: the seed is a real kube-apiserver and etcd built from their
//! Go modules (`scripts/k8s-tools`), gardenlet's part played by its stand-in; it runs the `kubelink`
//! binary built beside it.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use kubelink::wg::BackendChoice;
use kubelink_tests::landscape::preflight;
use kubelink_tests::landscape::seed::SeedLandscape;
use kubelink_tests::landscape::standalone::Landscape;
use kubelink_tests::netns;

/// The local landscape: seed nodes and shoots in network namespaces on this machine.
#[derive(Parser)]
#[command(name = "kubelink-landscape", version)]
pub struct LandscapeArgs {
    /// Number of shoots.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=50))]
    pub shoots: u8,
    /// Build, check every shoot once, print, tear down; exit non-zero when a shoot is unreachable.
    #[arg(long)]
    pub once: bool,
    /// The small landscape from static configs (`kubelink run`: one gateway, one worker) instead of
    /// the seed with agents, the extension controller and shoot sidecars against the seed's real
    /// kube-apiserver.
    #[arg(long)]
    pub standalone: bool,
    /// WireGuard implementation for the standalone hosts.
    #[arg(long, value_enum, default_value = "auto")]
    pub wg_backend: BackendChoice,
    /// How often to print the status.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
}

fn main() -> std::process::ExitCode {
    let args = LandscapeArgs::parse();
    let result =
        tokio::runtime::Runtime::new().context("starting the async runtime").and_then(|rt| rt.block_on(run(args)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kubelink-landscape: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: LandscapeArgs) -> anyhow::Result<()> {
    preflight::check(!args.standalone).await.map_err(anyhow::Error::msg)?;
    let bin = netns::find_kubelink().map_err(anyhow::Error::msg)?;
    let dir = std::env::temp_dir().join(format!("kubelink-landscape-{}", std::process::id()));
    netns::sweep_stale();
    if args.standalone { standalone(&args, &dir, &bin).await } else { seed(&args, &dir, &bin).await }
}

async fn seed(args: &LandscapeArgs, dir: &std::path::Path, bin: &std::path::Path) -> anyhow::Result<()> {
    let mut l = SeedLandscape::build(args.shoots.into(), dir, bin).await.map_err(anyhow::Error::msg)?;
    l.start().await.map_err(anyhow::Error::msg)?;
    let version = l.seed.version().await.map_err(anyhow::Error::msg)?;
    println!("landscape starting; the seed runs kube-apiserver {version} with etcd; logs in {}", dir.display());
    l.wait_for_shoots(Duration::from_secs(90)).await;
    let all = report_seed(&l).await;
    // "up" only when every part answered: both slots held, no request refused, every shoot reached.
    if all {
        println!(
            "landscape up: the seed on kube-apiserver {version} (TLS, Node,RBAC, the chart installed by helm as gardenlet \
             configures it), gardenlet's stand-in with the seed's and each shoot's Extension, 3 seed nodes with agents \
             (2 gateway slots behind 2 load balancers), the extension controller, {} shoot(s) with sidecars",
            args.shoots
        );
    } else {
        println!("landscape NOT up: see the lines above; logs in {}", dir.display());
    }
    if args.once {
        l.stop();
        anyhow::ensure!(all, "a shoot is unreachable; logs in {}", dir.display());
        return Ok(());
    }
    every_until_stopped(args.interval, async || {
        l.sync_shoots().await;
        report_seed(&l).await;
    })
    .await?;
    l.stop();
    println!("landscape removed");
    Ok(())
}

/// Runs `tick` every `interval` until Ctrl-C or SIGTERM.
async fn every_until_stopped(interval: Duration, mut tick: impl AsyncFnMut()) -> anyhow::Result<()> {
    println!("Ctrl-C tears everything down.");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = term.recv() => return Ok(()),
            _ = tokio::time::sleep(interval) => tick().await,
        }
    }
}

/// Prints who holds which slot, the routes of the probing node and a probe to every shoot.
async fn report_seed(l: &SeedLandscape) -> bool {
    let holders = l.holders().await;
    println!("gateway slots: {holders:?}");
    let mut all = holders.len() == l.slots;
    if !all {
        println!("gateway slots held: {} of {}", holders.len(), l.slots);
    }
    let refused = l.refused();
    if !refused.is_empty() {
        println!("requests the API servers refused (RBAC): {refused:#?}");
    }
    if let Some(node) = l.nodes.last()
        && let Ok(routes) = node.ip(&["route", "show", "proto", "107"])
    {
        println!("routes of the probing node (proto 107): {}", routes.lines().count());
    }
    all &= refused.is_empty();
    for (i, s) in l.shoots.iter().enumerate() {
        let addr = s.address.map(|a| a.to_string()).unwrap_or_else(|| "(no address yet)".into());
        match l.probe(i, Duration::from_secs(2)) {
            Ok(rtt) => println!("pod -> {} {addr}: reply in {:.2} ms", s.name, rtt.as_secs_f64() * 1000.0),
            Err(e) => {
                all = false;
                println!("pod -> {} {addr}: {e}", s.name);
            }
        }
    }
    all
}

async fn standalone(args: &LandscapeArgs, dir: &std::path::Path, bin: &std::path::Path) -> anyhow::Result<()> {
    let backend = format!("{:?}", args.wg_backend).to_lowercase();
    let mut l = Landscape::build(args.shoots.into(), dir, bin, &backend).map_err(anyhow::Error::msg)?;
    l.start_all().map_err(anyhow::Error::msg)?;
    println!("landscape starting; configs and logs in {}", dir.display());
    let reachable = report(&l, Duration::from_secs(15));
    match reachable {
        true => println!("landscape up: gateway, worker, {} shoot(s)", args.shoots),
        false => println!("landscape NOT up: see the lines above; logs in {}", dir.display()),
    }
    if args.once {
        l.stop_all();
        anyhow::ensure!(reachable, "a shoot is unreachable; logs in {}", dir.display());
        return Ok(());
    }
    every_until_stopped(args.interval, async || {
        report(&l, Duration::from_secs(2));
    })
    .await?;
    l.stop_all();
    println!("landscape removed");
    Ok(())
}

/// Prints every device and a probe to every shoot; true when all shoots answered.
fn report(l: &Landscape, timeout: Duration) -> bool {
    for host in std::iter::once(&l.gateway).chain(l.shoots.iter()) {
        match host.ns.sh(&[&netns::kubelink_bin().to_string_lossy(), "status", "--device", &host.device]) {
            Ok(text) => print!("[{}] {text}", host.ns.name),
            Err(e) => println!("[{}] status failed: {e}", host.ns.name),
        }
    }
    let mut all = true;
    for (i, s) in l.shoots.iter().enumerate() {
        let dst = s.tunnel.map(|t| t.to_string()).unwrap_or_default();
        match l.probe_shoot(i, timeout) {
            Ok(rtt) => println!("worker pod -> shoot-{i} {dst}: reply in {:.2} ms", rtt.as_secs_f64() * 1000.0),
            Err(e) => {
                all = false;
                println!("worker pod -> shoot-{i} {dst}: {e}");
            }
        }
    }
    all
}
