//! The standalone desired state: a YAML or JSON file with one device, its peers and routes. Parsing
//! and validation are pure; every error names the field and what to do about it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use kubelink_ipam::keys::{PrivateKey, PublicKey};
use serde::Deserialize;

use crate::route::MAIN_TABLE;
use crate::wg::{DeviceSpec, PeerSpec};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: {field}: {message}")]
    Field { path: PathBuf, field: String, message: String },
}

/// WireGuard's usual MTU: a 1500-byte underlay minus 80 bytes of IPv6 transport overhead.
pub const DEFAULT_MTU: u32 = 1420;

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FileConfig {
    pub device: FileDevice,
    #[serde(default)]
    pub routes: Vec<FileRoute>,
    /// Gateway only: source NAT into the tunnel (`inet kubelink` nftables table).
    pub snat: Option<FileSnat>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FileSnat {
    /// Traffic to this CIDR leaving through the device gets the source `to`.
    pub cidr: String,
    pub to: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FileDevice {
    pub name: String,
    pub private_key: Option<String>,
    pub private_key_file: Option<PathBuf>,
    pub listen_port: Option<u16>,
    #[serde(default)]
    pub addresses: Vec<String>,
    pub mtu: Option<u32>,
    pub fwmark: Option<u32>,
    #[serde(default)]
    pub peers: Vec<FilePeer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FilePeer {
    pub public_key: String,
    pub endpoint: Option<String>,
    #[serde(default, rename = "allowedIPs", alias = "allowedIps")]
    pub allowed_ips: Vec<String>,
    pub persistent_keepalive: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FileRoute {
    pub destination: String,
    pub gateway: Option<String>,
    pub device: Option<String>,
    pub table: Option<u32>,
}

/// A route as configured; the device name is resolved to an index when applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub destination: IpNet,
    pub gateway: Option<IpAddr>,
    pub device: Option<String>,
    pub table: u32,
}

/// The validated desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub device: DeviceSpec,
    pub addresses: BTreeSet<IpNet>,
    pub mtu: Option<u32>,
    pub routes: Vec<RouteSpec>,
    pub firewall: Option<crate::firewall::FirewallSpec>,
}

/// Reads, parses and validates a config file (YAML; JSON is YAML too).
pub fn load(path: &Path) -> Result<Desired, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
    parse(&text, path)
}

pub fn parse(text: &str, path: &Path) -> Result<Desired, ConfigError> {
    let file: FileConfig =
        serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Syntax { path: path.into(), message: e.to_string() })?;
    Validator { path }.desired(file)
}

struct Validator<'a> {
    path: &'a Path,
}

impl Validator<'_> {
    fn field(&self, field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Field { path: self.path.into(), field: field.into(), message: message.into() }
    }

    fn desired(&self, file: FileConfig) -> Result<Desired, ConfigError> {
        let d = file.device;
        validate_ifname(&d.name).map_err(|m| self.field("device.name", m))?;
        let private_key = self.private_key(&d)?;
        let addresses = d
            .addresses
            .iter()
            .enumerate()
            .map(|(i, a)| self.net(&format!("device.addresses[{i}]"), a, false))
            .collect::<Result<_, _>>()?;
        if let Some(mtu) = d.mtu.filter(|m| !(576..=65535).contains(m)) {
            return Err(
                self.field("device.mtu", format!("{mtu} is out of range; use 1280..65535 (1420 fits most underlays)"))
            );
        }
        let mut peers = BTreeMap::new();
        for (i, p) in d.peers.iter().enumerate() {
            let peer = self.peer(i, p)?;
            if peers.insert(peer.public_key, peer).is_some() {
                return Err(self.field(
                    format!("device.peers[{i}].publicKey"),
                    "the same public key appears twice; each peer once",
                ));
            }
        }
        let routes = file.routes.iter().enumerate().map(|(i, r)| self.route(i, r)).collect::<Result<Vec<_>, _>>()?;
        let firewall = file.snat.as_ref().map(|s| self.snat(s, &d.name)).transpose()?;
        let device = DeviceSpec { name: d.name, private_key, listen_port: d.listen_port, fwmark: d.fwmark, peers };
        Ok(Desired { device, addresses, mtu: Some(d.mtu.unwrap_or(DEFAULT_MTU)), routes, firewall })
    }

    fn private_key(&self, d: &FileDevice) -> Result<PrivateKey, ConfigError> {
        match (&d.private_key, &d.private_key_file) {
            (Some(text), None) => text.parse().map_err(|e| self.field("device.privateKey", format!("{e}"))),
            (None, Some(file)) => {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| self.field("device.privateKeyFile", format!("cannot read {}: {e}", file.display())))?;
                text.parse().map_err(|e| self.field("device.privateKeyFile", format!("{}: {e}", file.display())))
            }
            (Some(_), Some(_)) => Err(self.field("device.privateKey", "give privateKey or privateKeyFile, not both")),
            (None, None) => Err(self.field(
                "device.privateKey",
                "missing; set privateKey or privateKeyFile (create one with `kubelink keys genkey --out FILE`)",
            )),
        }
    }

    fn peer(&self, i: usize, p: &FilePeer) -> Result<PeerSpec, ConfigError> {
        let at = |f: &str| format!("device.peers[{i}].{f}");
        let public_key: PublicKey = p.public_key.parse().map_err(|e| self.field(at("publicKey"), format!("{e}")))?;
        let endpoint = match &p.endpoint {
            Some(e) => Some(resolve_endpoint(e).map_err(|m| self.field(at("endpoint"), m))?),
            None => None,
        };
        let allowed_ips = p
            .allowed_ips
            .iter()
            .enumerate()
            .map(|(j, a)| self.net(&at(&format!("allowedIPs[{j}]")), a, true))
            .collect::<Result<_, _>>()?;
        Ok(PeerSpec { public_key, endpoint, allowed_ips, persistent_keepalive: p.persistent_keepalive })
    }

    fn route(&self, i: usize, r: &FileRoute) -> Result<RouteSpec, ConfigError> {
        let at = |f: &str| format!("routes[{i}].{f}");
        let destination = self.net(&at("destination"), &r.destination, true)?;
        let gateway = match &r.gateway {
            Some(g) => Some(
                g.parse::<IpAddr>()
                    .map_err(|e| self.field(at("gateway"), format!("{g:?}: {e}; write an IP address")))?,
            ),
            None => None,
        };
        if gateway.is_none() && r.device.is_none() {
            return Err(self.field(at("gateway"), "a route needs a gateway, a device, or both"));
        }
        if let Some(g) = gateway.filter(|g| g.is_ipv4() != destination.addr().is_ipv4()) {
            return Err(self.field(at("gateway"), format!("{g} is not of the destination's address family")));
        }
        if let Some(dev) = &r.device {
            validate_ifname(dev).map_err(|m| self.field(at("device"), m))?;
        }
        Ok(RouteSpec { destination, gateway, device: r.device.clone(), table: r.table.unwrap_or(MAIN_TABLE) })
    }

    fn snat(&self, s: &FileSnat, device: &str) -> Result<crate::firewall::FirewallSpec, ConfigError> {
        let cidr = self.net("snat.cidr", &s.cidr, true)?;
        let to: IpAddr =
            s.to.parse()
                .map_err(|e| self.field("snat.to", format!("{:?}: {e}; write the slot's tunnel address", s.to)))?;
        if to.is_ipv4() != cidr.addr().is_ipv4() {
            return Err(self.field("snat.to", format!("{to} is not of the family of snat.cidr {cidr}")));
        }
        Ok(crate::firewall::FirewallSpec { device: device.to_string(), cidr, snat_to: to })
    }

    /// A CIDR. `network` demands host bits be zero (routes, allowed IPs); addresses keep them.
    fn net(&self, field: &str, text: &str, network: bool) -> Result<IpNet, ConfigError> {
        let net: IpNet = text.parse().map_err(|_| {
            self.field(field, format!("{text:?} is not a CIDR; write e.g. 192.168.128.0/22 or fd00::/64"))
        })?;
        if network && net.trunc() != net {
            return Err(self.field(field, format!("{net} has host bits set; did you mean {}?", net.trunc())));
        }
        Ok(net)
    }
}

/// Interface names: 1 to 15 bytes, no '/', no whitespace, not "." or "..".
pub fn validate_ifname(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} is not a valid interface name (1-15 characters, no '/', ':' or spaces)"))
    }
}

/// `host:port` or `[v6]:port`; host names resolved now (the first address wins).
pub fn resolve_endpoint(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    if text.rsplit_once(':').is_none_or(|(_, port)| port.parse::<u16>().is_err()) {
        return Err(format!("{text:?} needs the form host:port, e.g. gw.example.org:51820"));
    }
    let mut addrs = text.to_socket_addrs().map_err(|e| format!("cannot resolve {text:?}: {e}"))?;
    addrs.next().ok_or_else(|| format!("{text:?} resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "YGnDgU5Ojh3HqRzZjVZ0Iv1mvdQ2p1JmS8mXQmoxY3s=";
    const PUB: &str = "GsA5xhJ9bXs6GHbLSWHyN0tQhz9VvHp3YZ9BnTU9dlw=";

    fn parse_str(text: &str) -> Result<Desired, ConfigError> {
        parse(text, Path::new("test.yaml"))
    }

    fn base(extra_peer: &str, routes: &str) -> String {
        format!(
            "device:\n  name: kl0\n  privateKey: {KEY}\n  listenPort: 51820\n  addresses: [192.168.128.1/22]\n  peers:\n  - publicKey: {PUB}\n    allowedIPs: [192.168.128.10/32]\n{extra_peer}{routes}"
        )
    }

    #[test]
    fn a_valid_file_parses() {
        let d = parse_str(&base(
            "    endpoint: 10.0.0.2:51820\n    persistentKeepalive: 21\n",
            "routes:\n- destination: 192.168.128.0/22\n  gateway: 10.0.0.1\n",
        ))
        .unwrap();
        assert_eq!(d.device.name, "kl0");
        assert_eq!(d.device.peers.len(), 1);
        let peer = d.device.peers.values().next().unwrap();
        assert_eq!(peer.endpoint, Some("10.0.0.2:51820".parse().unwrap()));
        assert_eq!(peer.persistent_keepalive, Some(21));
        assert_eq!(d.routes[0].table, MAIN_TABLE);
        assert_eq!(d.addresses.len(), 1);
    }

    #[test]
    fn json_is_accepted() {
        let json = format!(r#"{{"device": {{"name": "kl0", "privateKey": "{KEY}"}}}}"#);
        assert!(parse_str(&json).unwrap().device.peers.is_empty());
    }

    #[test]
    fn errors_name_the_field() {
        // rows: file text, the field the error must name, a word of the fix
        let rows = [
            (base("", "").replace("name: kl0", "name: this-name-is-far-too-long"), "device.name", "1-15"),
            (base("", "").replace(KEY, "garbage"), "device.privateKey", "genkey"),
            (base("", "").replace(PUB, "AAAA"), "device.peers[0].publicKey", "32"),
            (base("", "").replace("192.168.128.10/32", "192.168.128.300/32"), "device.peers[0].allowedIPs[0]", "CIDR"),
            (
                base("", "").replace("192.168.128.10/32", "192.168.128.10/24"),
                "device.peers[0].allowedIPs[0]",
                "did you mean",
            ),
            (base("    endpoint: nohostport\n", ""), "device.peers[0].endpoint", "host:port"),
            (base("", "routes:\n- destination: 10.0.0.0/8\n"), "routes[0].gateway", "gateway, a device"),
            (base("", "routes:\n- destination: 10.0.0.0/8\n  gateway: fd00::1\n"), "routes[0].gateway", "family"),
            (base("", "").replace("  privateKey: ", "  privateKeyFile: /nonexistent/key\n  x: "), "", "unknown field"),
        ];
        for (text, field, hint) in rows {
            let err = parse_str(&text).unwrap_err().to_string();
            assert!(err.contains(field), "{err:?} should name {field}");
            assert!(err.contains(hint), "{err:?} should say {hint}");
            assert!(!err.contains(KEY), "error leaks the private key: {err}");
        }
    }

    #[test]
    fn missing_key_file_is_named() {
        let text = base("", "").replace(&format!("privateKey: {KEY}"), "privateKeyFile: /nonexistent/kubelink.key");
        let err = parse_str(&text).unwrap_err().to_string();
        assert!(err.contains("device.privateKeyFile") && err.contains("/nonexistent/kubelink.key"), "{err}");
    }

    #[test]
    fn duplicate_peers_are_rejected() {
        let text = format!("{}  - publicKey: {PUB}\n", base("", ""));
        let err = parse_str(&text).unwrap_err().to_string();
        assert!(err.contains("device.peers[1].publicKey"), "{err}");
    }

    #[test]
    fn endpoints_resolve_literals_and_localhost() {
        assert_eq!(resolve_endpoint("[fd00::1]:51820").unwrap(), "[fd00::1]:51820".parse().unwrap());
        assert_eq!(resolve_endpoint("localhost:51820").unwrap().port(), 51820);
        assert!(resolve_endpoint("localhost").unwrap_err().contains("host:port"));
    }
}
