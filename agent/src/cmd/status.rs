//! `kubelink status`: a device as kubelink reads it back, from the kernel or over the UAPI socket.

use anyhow::Context;
use serde::Serialize;

use crate::link::Link;
use crate::wg::{self, BackendKind, ObservedDevice, ObservedPeer};

#[derive(clap::Args)]
pub struct StatusArgs {
    /// The WireGuard device to show.
    #[arg(long, short, env = "KUBELINK_DEVICE", default_value = "kubelink0")]
    pub device: String,
    /// Print JSON instead of text.
    #[arg(long, env = "KUBELINK_JSON")]
    pub json: bool,
}

/// The machine-readable status of one device.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceStatus {
    pub name: String,
    pub backend: BackendKind,
    pub ifindex: u32,
    pub public_key: Option<String>,
    pub listen_port: u16,
    pub fwmark: Option<u32>,
    pub peers: Vec<ObservedPeer>,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let status = read(&args.device).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print_text(&status);
    }
    Ok(())
}

pub async fn read(name: &str) -> anyhow::Result<DeviceStatus> {
    let link = Link::open()?;
    let state = link.get(name).await?.with_context(|| format!("device {name} does not exist"))?;
    let backend = match state.kind.as_deref() {
        Some("wireguard") => BackendKind::Kernel,
        Some("tun") => BackendKind::Userspace,
        other => anyhow::bail!("{name} is a {other:?} link, not a kubelink WireGuard device"),
    };
    let name_owned = name.to_string();
    let observed: ObservedDevice = tokio::task::spawn_blocking(move || wg::read_any(&name_owned, backend)).await??;
    Ok(DeviceStatus {
        name: name.to_string(),
        backend,
        ifindex: state.index,
        public_key: observed.public_key.map(|k| k.to_base64()),
        listen_port: observed.listen_port,
        fwmark: observed.fwmark,
        peers: observed.peers.into_values().collect(),
    })
}

fn print_text(s: &DeviceStatus) {
    println!("device {} ({:?}, ifindex {})", s.name, s.backend, s.ifindex);
    println!("  public key  {}", s.public_key.as_deref().unwrap_or("(none)"));
    println!("  listen port {}", s.listen_port);
    for p in &s.peers {
        let ips: Vec<String> = p.spec.allowed_ips.iter().map(ToString::to_string).collect();
        let hs = p.last_handshake.map(|d| format!("{}s ago", d.as_secs())).unwrap_or_else(|| "never".into());
        let ep = p.spec.endpoint.map(|e| e.to_string()).unwrap_or_else(|| "(roaming)".into());
        println!(
            "  peer {}  {}  allowed {}  handshake {}  rx {} tx {}",
            p.spec.public_key,
            ep,
            ips.join(","),
            hs,
            p.rx_bytes,
            p.tx_bytes
        );
    }
}
