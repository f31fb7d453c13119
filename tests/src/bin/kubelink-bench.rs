//! `kubelink-bench`: the userspace data-path benchmark (`scripts/bench`). Builds two network
//! namespaces over veth, runs each engine in turn, round after round, and prints the medians, the
//! min–max over rounds and kubelink's ratios to every baseline measured in the same run.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use kubelink_tests::bench::{self, Engine, Plan};
use kubelink_tests::netns;

/// Throughput, latency and memory of kubelink's userspace WireGuard against its baselines.
#[derive(Parser)]
#[command(name = "kubelink-bench", version)]
struct Args {
    /// Seconds per iperf3 measurement.
    #[arg(long, default_value_t = 3)]
    seconds: u32,
    /// Rounds; every engine is measured once per round, in a rotating order.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Pings per latency measurement (20 ms apart).
    #[arg(long, default_value_t = 50)]
    pings: u32,
    /// Engines, comma-separated: veth, kubelink, wireguard-go, kubelink-plain.
    #[arg(long, value_delimiter = ',', default_value = "veth,kubelink,wireguard-go,kubelink-plain")]
    engines: Vec<String>,
    /// Where configs and daemon logs go (kept after the run).
    #[arg(long, default_value = "target/bench")]
    dir: PathBuf,
    /// Instead of the data path: agent memory on a one-slot seed landscape that goes from one
    /// shoot to this many (the gateway's peers, the routers' routes), each agent's peak RSS before
    /// and after.
    #[arg(long)]
    agents: Option<usize>,
}

fn main() -> std::process::ExitCode {
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kubelink-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    if let Some(shoots) = args.agents {
        return agents(shoots.max(2));
    }
    if !netns::require("kubelink-bench", bench::TOOLS) {
        return Err("missing root or tools (see above)".into());
    }
    let engines = args
        .engines
        .iter()
        .map(|e| Engine::parse(e).ok_or_else(|| format!("unknown engine {e:?}")))
        .collect::<Result<Vec<_>, _>>()?;
    let dir = std::path::absolute(&args.dir).map_err(|e| format!("{}: {e}", args.dir.display()))?;
    let plan = Plan {
        engines,
        rounds: args.rounds.max(1),
        seconds: args.seconds.max(1),
        pings: args.pings.max(1),
        kubelink: netns::find_kubelink()?,
        dir,
    };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("{} cores, load average before: {}", cores, load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    println!(
        "single-core ChaCha20-Poly1305 seal, 1420-byte packets: {:.1} Gbit/s",
        bench::crypto_ceiling(Duration::from_secs(1))
    );
    let samples = bench::run(&plan)?;
    println!("\n{} rounds of {} s per iperf3 run; median (min–max)\n", plan.rounds, plan.seconds);
    print!("{}", bench::table(&samples));
    println!();
    print!("{}", bench::ratios(&samples));
    Ok(())
}

/// `--agents N`: the agents' memory on a seed landscape going from one shoot to `shoots`.
fn agents(shoots: usize) -> Result<(), String> {
    const TOOLS: [&str; 5] = ["ip", "ping", "nft", "conntrack", "wg"];
    let Some(mut started) = kubelink_tests::landscape::start("kubelink-bench-agents", &TOOLS, 1, 1) else {
        return Err("missing root, tools or Helm (see above)".into());
    };
    let rt = &started.rt;
    if !rt.block_on(started.l.wait_for_shoots(Duration::from_secs(60))) {
        return Err(format!("the shoot is unreachable; logs in {}", started.dir.display()));
    }
    let report = rt.block_on(started.l.measure_agent_memory(shoots));
    started.l.stop();
    print!("{}", report?);
    Ok(())
}
