//! `kubelink`: one binary, one subcommand per role.

use clap::{Parser, Subcommand};
use kubelink::cmd;

#[derive(Parser)]
#[command(name = "kubelink", version, about = "WireGuard reversed cluster VPN for Gardener seeds and shoots")]
struct Cli {
    /// Log filter (tracing env-filter syntax), e.g. `info,kubelink=debug`.
    #[arg(long, env = "KUBELINK_LOG", default_value = "info", global = true)]
    log: String,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "KUBELINK_LOG_JSON", global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The seed node agent: gateway election, the gateway's device and peers, routes on every node.
    Agent(Box<cmd::agent::AgentArgs>),
    /// Generate keys, derive public keys (compatible with `wg genkey | wg pubkey`).
    Keys(cmd::keys::KeysArgs),
    /// Standalone mode: reconcile a device, its peers and routes from a YAML/JSON file.
    Run(cmd::run::RunArgs),
    /// The shoot sidecar: dial the seed's gateways from a mounted Secret, keep their endpoints resolved.
    Shoot(Box<cmd::shoot::ShootArgs>),
    /// Show what a kubelink device looks like right now.
    Status(cmd::status::StatusArgs),
    /// Remove everything kubelink created on this host for a config (device, routes).
    Down(cmd::run::DownArgs),
    /// Tunnel address management for shoots (controller and listing).
    Ipam(cmd::ipam::IpamArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    kubelink::telemetry::init_logging(&cli.log, cli.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kubelink: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Agent(a) => cmd::agent::run(*a).await,
            Command::Keys(a) => cmd::keys::run(a),
            Command::Run(a) => cmd::run::run(a).await,
            Command::Shoot(a) => cmd::shoot::run(*a).await,
            Command::Status(a) => cmd::status::run(a).await,
            Command::Down(a) => cmd::run::down(a).await,
            Command::Ipam(a) => cmd::ipam::run(a).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kubelink: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
