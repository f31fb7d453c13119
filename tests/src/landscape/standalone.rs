//! The standalone landscape: a seed gateway node, a seed worker node and shoots as network
//! namespaces on one L2 segment, each running `kubelink run` from a generated config. The worker's
//! "pod" reaches every shoot's tunnel address through the gateway.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use kubelink_ipam::keys::{PrivateKey, PublicKey};

use crate::netns::{self, Netns, Proc, Segment};

pub const GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 11);
pub const WORKER_IP: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 12);
pub const GATEWAY_TUNNEL: Ipv4Addr = Ipv4Addr::new(192, 168, 128, 1);
pub const WIREGUARD_CIDR: &str = "192.168.128.0/22";
/// The worker's pod: the source of seed traffic into the tunnel.
pub const POD_IP: Ipv4Addr = Ipv4Addr::new(100, 64, 1, 1);

/// One host of the landscape.
pub struct Host {
    pub ns: Netns,
    pub device: String,
    pub underlay: Ipv4Addr,
    pub tunnel: Option<Ipv4Addr>,
    pub key: PrivateKey,
    pub proc: Option<Proc>,
}

impl Host {
    fn new(role: &str, lan: &Segment, underlay: Ipv4Addr, tunnel: Option<Ipv4Addr>) -> Result<Self, String> {
        let ns = Netns::new(role)?;
        lan.attach(&ns, "eth0", &format!("{underlay}/24"))?;
        Ok(Host { ns, device: netns::unique(&role[..1]), underlay, tunnel, key: PrivateKey::generate(), proc: None })
    }

    pub fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }
}

pub struct Landscape {
    pub dir: PathBuf,
    bin: PathBuf,
    backend: String,
    _lan: Segment,
    pub gateway: Host,
    pub worker: Host,
    pub shoots: Vec<Host>,
}

impl Landscape {
    /// Builds the namespaces and wiring; starts nothing.
    pub fn build(shoots: usize, dir: &Path, bin: &Path, backend: &str) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let lan = Segment::new("lan")?;
        let gateway = Host::new("gw", &lan, GATEWAY_IP, Some(GATEWAY_TUNNEL))?;
        let worker = Host::new("worker", &lan, WORKER_IP, None)?;
        let shoots = (0..shoots as u8)
            .map(|i| {
                Host::new("shoot", &lan, Ipv4Addr::new(10, 250, 0, 21 + i), Some(Ipv4Addr::new(192, 168, 128, 10 + i)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        gateway.ns.sysctl("net.ipv4.ip_forward", "1")?;
        // What a CNI would provide: the worker's pod address and the gateway's route to it.
        worker.ns.ip(&["addr", "add", &format!("{POD_IP}/32"), "dev", "lo"])?;
        gateway.ns.ip(&["route", "add", "100.64.1.0/24", "via", &WORKER_IP.to_string()])?;
        Ok(Landscape { dir: dir.into(), bin: bin.into(), backend: backend.into(), _lan: lan, gateway, worker, shoots })
    }

    fn write(&self, name: &str, text: &str) -> Result<PathBuf, String> {
        let path = self.dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    }

    /// The gateway: one peer per shoot (roaming endpoints) plus `extra` peers.
    pub fn gateway_config(&self, extra: &[(PublicKey, IpNet)]) -> Result<PathBuf, String> {
        let g = &self.gateway;
        let mut text = device_head(g, Some(51820)).replacen(
            "device:",
            &format!("snat:\n  cidr: {WIREGUARD_CIDR}\n  to: {GATEWAY_TUNNEL}\ndevice:"),
            1,
        );
        for s in &self.shoots {
            text += &format!(
                "  - publicKey: {}\n    allowedIPs: [{}/32]\n",
                s.public_key(),
                s.tunnel.unwrap_or(GATEWAY_TUNNEL)
            );
        }
        for (key, net) in extra {
            text += &format!("  - publicKey: {key}\n    allowedIPs: [{net}]\n");
        }
        self.write("gateway.yaml", &text)
    }

    /// A shoot dials the gateway. Seed traffic arrives source-NATed to the gateway's tunnel address,
    /// so the gateway's /32 is all the shoot routes into the tunnel.
    pub fn shoot_config(&self, i: usize) -> Result<PathBuf, String> {
        let s = &self.shoots[i];
        let text = format!(
            "{}  - publicKey: {}\n    endpoint: {GATEWAY_IP}:51820\n    allowedIPs: [{GATEWAY_TUNNEL}/32]\n    persistentKeepalive: 21\n",
            device_head(s, None),
            self.gateway.public_key(),
        );
        self.write(&format!("shoot-{i}.yaml"), &text)
    }

    /// The worker has no tunnel of its own: only the route of the WireGuard CIDR to the gateway.
    pub fn worker_config(&self) -> Result<PathBuf, String> {
        let text = format!(
            "{}routes:\n- destination: {WIREGUARD_CIDR}\n  gateway: {GATEWAY_IP}\n",
            device_head(&self.worker, None).replace("  peers:\n", "")
        );
        self.write("worker.yaml", &text)
    }

    /// Starts `kubelink run` on `host` with `config`.
    pub fn start(&self, host: &Netns, log: &str, config: &Path) -> Result<Proc, String> {
        let config = config.to_string_lossy();
        let args = ["run", "--wg-backend", &self.backend, "--on-exit", "remove", "--config", &config];
        host.spawn(&self.bin, &args, &self.dir.join(format!("{log}.log")))
    }

    /// Writes every config and starts every host.
    pub fn start_all(&mut self) -> Result<(), String> {
        self.gateway.proc = Some(self.start(&self.gateway.ns, "gateway", &self.gateway_config(&[])?)?);
        self.worker.proc = Some(self.start(&self.worker.ns, "worker", &self.worker_config()?)?);
        for i in 0..self.shoots.len() {
            let proc = self.start(&self.shoots[i].ns, &format!("shoot-{i}"), &self.shoot_config(i)?)?;
            self.shoots[i].proc = Some(proc);
        }
        Ok(())
    }

    /// An ICMP probe from the worker's pod to a shoot's tunnel address.
    pub fn probe_shoot(&self, i: usize, timeout: Duration) -> Result<Duration, String> {
        let dst = self.shoots[i].tunnel.ok_or("shoot without tunnel address")?;
        self.worker.ns.run_in(move || {
            kubelink::probe::ping(dst.into(), Some(POD_IP.into()), timeout).map_err(|e| e.to_string())
        })?
    }

    /// Stops every kubelink (SIGTERM; they remove their devices and routes).
    pub fn stop_all(&mut self) {
        let hosts =
            std::iter::once(&mut self.gateway).chain(std::iter::once(&mut self.worker)).chain(self.shoots.iter_mut());
        for h in hosts {
            if let Some(mut p) = h.proc.take() {
                p.stop(Duration::from_secs(5));
            }
        }
    }
}

fn device_head(h: &Host, port: Option<u16>) -> String {
    let port = port.map(|p| format!("  listenPort: {p}\n")).unwrap_or_default();
    let addr = h.tunnel.map(|t| format!("  addresses: [{t}/22]\n")).unwrap_or_default();
    format!("device:\n  name: {}\n  privateKey: {}\n{port}{addr}  peers:\n", h.device, h.key.expose_base64().as_str())
}
