//! `kubelink shoot`: the sidecar in the shoot's vpn-shoot pod (see docs/shoot.md).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::cmd::run::{Common, reconciler};
use crate::shoot::config::{ADDRESS, KEEPALIVE, MTU, PRIVATE_KEY, slot_fields};
use crate::shoot::readvertise::ResolveTiming;
use crate::shoot::sidecar::DEFAULT_HANDSHAKE_WINDOW;
use crate::shoot::{Options, Sources};
use kubelink_contract::Slot;

#[derive(clap::Args)]
pub struct ShootArgs {
    /// The mounted Secret: privateKey, address, gateway-N-{endpoint,publicKey,address}, keepalive, mtu.
    #[arg(long, env = "KUBELINK_CONFIG_DIR", default_value = "/etc/kubelink")]
    pub config_dir: PathBuf,
    /// The WireGuard device in the pod's network namespace.
    #[arg(long, env = "KUBELINK_DEVICE", default_value = "kubelink0", value_parser = crate::config::parse_ifname)]
    pub device: crate::ifname::IfName,
    #[command(flatten)]
    pub common: Common,
    /// Read the private key from this file instead of <config-dir>/privateKey.
    #[arg(long, env = "KUBELINK_PRIVATE_KEY_FILE")]
    pub private_key_file: Option<PathBuf>,
    /// Overrides <config-dir>/address (CIDR form, e.g. 192.168.128.10/22).
    #[arg(long, env = "KUBELINK_ADDRESS")]
    pub address: Option<String>,
    /// Overrides <config-dir>/gateway-0-endpoint: `host:port` slot 0's gateway is dialed at.
    #[arg(long, env = "KUBELINK_GATEWAY_0_ENDPOINT")]
    pub gateway_0_endpoint: Option<String>,
    /// Overrides <config-dir>/gateway-0-publicKey: slot 0's gateway key (base64).
    #[arg(long, env = "KUBELINK_GATEWAY_0_PUBLIC_KEY")]
    pub gateway_0_public_key: Option<String>,
    /// Overrides <config-dir>/gateway-0-address: slot 0's tunnel address (probed through the tunnel).
    #[arg(long, env = "KUBELINK_GATEWAY_0_ADDRESS")]
    pub gateway_0_address: Option<String>,
    /// Overrides <config-dir>/gateway-1-endpoint: `host:port` slot 1's gateway is dialed at.
    #[arg(long, env = "KUBELINK_GATEWAY_1_ENDPOINT")]
    pub gateway_1_endpoint: Option<String>,
    /// Overrides <config-dir>/gateway-1-publicKey: slot 1's gateway key (base64).
    #[arg(long, env = "KUBELINK_GATEWAY_1_PUBLIC_KEY")]
    pub gateway_1_public_key: Option<String>,
    /// Overrides <config-dir>/gateway-1-address: slot 1's tunnel address (probed through the tunnel).
    #[arg(long, env = "KUBELINK_GATEWAY_1_ADDRESS")]
    pub gateway_1_address: Option<String>,
    /// Persistent keepalive in seconds (default 21; 0 turns it off).
    #[arg(long, env = "KUBELINK_KEEPALIVE")]
    pub keepalive: Option<String>,
    /// Overrides <config-dir>/mtu: the device's MTU, `auto` (default: from the route to the
    /// gateways, at most 1500, minus 80 bytes over IPv6 or 60 over IPv4) or 576..=65535 (1280 or
    /// more when the tunnel carries IPv6).
    #[arg(long, env = "KUBELINK_MTU")]
    pub mtu: Option<String>,
    /// Re-resolve gateway host names this often.
    #[arg(long, env = "KUBELINK_RESOLVE_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub resolve_interval: Duration,
    /// Re-read the device and routes this often (WireGuard peer changes raise no netlink event).
    #[arg(long, env = "KUBELINK_RESYNC_INTERVAL", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub resync_interval: Duration,
    /// Ping each slot address through the tunnel this often; `0s` turns probing off, and readiness
    /// then rests on handshakes alone. Two unanswered probes in a row start a new handshake.
    #[arg(long, env = "KUBELINK_PROBE_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub probe_interval: Duration,
    /// A gateway is up while its last handshake is younger than this.
    #[arg(long, env = "KUBELINK_HANDSHAKE_WINDOW", default_value = "180s", value_parser = humantime::parse_duration)]
    pub handshake_window: Duration,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "KUBELINK_HEALTH_LISTEN", default_value = "0.0.0.0:8093")]
    pub health_listen: SocketAddr,
    /// On SIGTERM: `remove` the device and routes (default; the pod's namespace is going away) or `keep`.
    #[arg(long, env = "KUBELINK_ON_EXIT", value_enum, default_value = "remove")]
    pub on_exit: crate::cmd::run::OnExit,
}

impl ShootArgs {
    fn overrides(&self) -> BTreeMap<String, (String, String)> {
        let [[e0, k0, a0], [e1, k1, a1]] = Slot::ALL.map(slot_fields);
        let rows = [
            (ADDRESS.to_string(), "--address", &self.address),
            (e0, "--gateway-0-endpoint", &self.gateway_0_endpoint),
            (k0, "--gateway-0-public-key", &self.gateway_0_public_key),
            (a0, "--gateway-0-address", &self.gateway_0_address),
            (e1, "--gateway-1-endpoint", &self.gateway_1_endpoint),
            (k1, "--gateway-1-public-key", &self.gateway_1_public_key),
            (a1, "--gateway-1-address", &self.gateway_1_address),
            (KEEPALIVE.to_string(), "--keepalive", &self.keepalive),
            (MTU.to_string(), "--mtu", &self.mtu),
        ];
        rows.into_iter().filter_map(|(field, flag, v)| v.clone().map(|v| (field, (flag.to_string(), v)))).collect()
    }
}

pub async fn run(args: ShootArgs) -> anyhow::Result<()> {
    let sources = Sources {
        dir: args.config_dir.clone(),
        overrides: args.overrides(),
        private_key_file: args.private_key_file.clone(),
    };
    let opts = Options {
        device: args.device.clone(),
        sources,
        timing: ResolveTiming { interval: args.resolve_interval, ..ResolveTiming::default() },
        resolve_timeout: Duration::from_secs(3),
        resync_interval: args.resync_interval,
        probe_interval: Some(args.probe_interval).filter(|d| !d.is_zero()),
        handshake_window: if args.handshake_window.is_zero() {
            DEFAULT_HANDSHAKE_WINDOW
        } else {
            args.handshake_window
        },
        health_listen: args.health_listen,
        remove_on_exit: args.on_exit == crate::cmd::run::OnExit::Remove,
    };
    // The key file, by flag or in the mounted Secret (whose volume should set `defaultMode: 0400`,
    // docs/shoot.md): warned about once at start if its group or others may read it.
    let key_file = args.private_key_file.clone().unwrap_or_else(|| args.config_dir.join(PRIVATE_KEY));
    crate::config::warn_if_others_may_read(&key_file);
    // Validate before touching the network namespace: a bad Secret changes nothing.
    opts.sources.parse(&opts.device)?;
    let rec = reconciler(&args.common).await?;
    crate::shoot::sidecar::run(opts, rec).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::{Args, Command};

    #[test]
    fn a_bad_device_is_refused_naming_the_flag_and_the_fix() {
        let cmd = || super::ShootArgs::augment_args(Command::new("shoot")).no_binary_name(true);
        for bad in ["a/b", "a-name-longer-than-15", ""] {
            let err = cmd().try_get_matches_from(["--device", bad]).expect_err(bad).to_string();
            assert!(err.contains("--device") && err.contains("1-15 bytes"), "{bad:?}: {err}");
        }
        let ok = cmd().try_get_matches_from(["--device", "wg0"]).unwrap();
        assert_eq!(ok.get_one::<crate::ifname::IfName>("device").map(|d| d.to_string()).as_deref(), Some("wg0"));
    }
}
