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
    /// The whole seed at a glance: slot holders, the endpoints shoots dial, each shoot's handshakes
    /// and traffic on the gateways, the routers' routes.
    SeedStatus(cmd::seed_status::SeedStatusArgs),
    /// Remove everything kubelink created on this host for a config (device, routes).
    Down(cmd::run::DownArgs),
    /// Tunnel address management for shoots (controller and listing).
    Ipam(cmd::ipam::IpamArgs),
    /// The garden's validating webhook for Seeds and ManagedSeeds: a seed on a shoot must not use
    /// its parent seed's WireGuard CIDR (GEP-14).
    GardenAdmission(kubelink::garden_admission::GardenAdmissionArgs),
    /// The shoot webhook (served on the seed): gives each shoot's vpn-shoot the kubelink sidecar.
    ShootWebhook(kubelink::shoot_webhook::ShootWebhookArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // kube's client logs an answer it cannot decode whole, at warn (up to cmd::bounded::MAX_API_ANSWER);
    // the operator commands that read answers and exit report the error themselves, shortened.
    let log = match &cli.command {
        Command::SeedStatus(_) => format!("{},kube_client::client=error", cli.log),
        Command::Ipam(a) if a.is_list() => format!("{},kube_client::client=error", cli.log),
        _ => cli.log.clone(),
    };
    kubelink::telemetry::init_logging(&log, cli.log_json);
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
            Command::SeedStatus(a) => cmd::seed_status::run(a).await,
            Command::Down(a) => cmd::run::down(a).await,
            Command::Ipam(a) => cmd::ipam::run(a).await,
            Command::GardenAdmission(a) => kubelink::garden_admission::run(a).await,
            Command::ShootWebhook(a) => kubelink::shoot_webhook::run(a).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kubelink: {}", cmd::bounded::error_text(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every argument of every subcommand, with the path of the subcommand: `kubelink ipam list --json`.
    fn walk(cmd: &clap::Command, path: &str, out: &mut Vec<(String, clap::Arg)>) {
        for arg in cmd.get_arguments() {
            out.push((path.to_string(), arg.clone()));
        }
        for sub in cmd.get_subcommands() {
            walk(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_flag_of_every_subcommand_has_help() {
        let cli = super::Cli::command();
        cli.clone().debug_assert();
        let mut args = Vec::new();
        walk(&cli, "kubelink", &mut args);
        let missing: Vec<String> = args
            .iter()
            .filter(|(_, a)| a.get_help().is_none_or(|h| h.to_string().trim().is_empty()))
            .map(|(path, a)| format!("{path} {}", a.get_long().map_or(a.get_id().to_string(), |l| format!("--{l}"))))
            .collect();
        assert!(args.len() > 60, "too few arguments seen to mean anything: {}", args.len());
        assert!(missing.is_empty(), "arguments without help:\n{}", missing.join("\n"));
        let subcommands: Vec<_> =
            cli.get_subcommands().filter(|s| s.get_about().is_none()).map(|s| s.get_name()).collect();
        assert!(subcommands.is_empty(), "subcommands without help: {subcommands:?}");
    }
}
