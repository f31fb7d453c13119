//! The standalone desired state: a YAML or JSON file with one device, its peers and routes. Parsing
//! and validation are pure; every error names the field and what to do about it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use kubelink_contract::keys::{PrivateKey, PublicKey};
use kubelink_contract::{excerpt, shorten};
use serde::Deserialize;

use crate::endpoint::{Endpoint, EndpointError};
use crate::ifname::{IfName, IfNameError};
use crate::mtu::MtuSetting;
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

/// clap value parser of an MTU flag: `auto` or a number ([`crate::mtu`] has the one rule).
pub fn parse_mtu(text: &str) -> Result<MtuSetting, String> {
    text.parse()
}

/// A device name from a flag, the file or the shoot's `--device`: a valid Linux interface name.
pub fn parse_ifname(text: &str) -> Result<IfName, IfNameError> {
    text.parse()
}

/// How long a deserializer's message about a file may be: it can quote the input.
const MAX_MESSAGE: usize = 300;

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FileConfig {
    pub device: FileDevice,
    #[serde(default)]
    pub routes: Vec<FileRoute>,
    /// Gateway only: source NAT into the tunnel, and only replies and probes of the `to` address out
    /// of it (`inet kubelink` nftables table, see docs/security.md).
    pub snat: Option<FileSnat>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FileSnat {
    /// Traffic to this CIDR leaving through the device gets the source `to`.
    pub cidr: String,
    pub to: String,
    /// A shoot's tunnel address -> its VPN server's address: the shoot's TCP connection to `to`, port
    /// 1194, is forwarded there (docs/security.md).
    #[serde(default)]
    pub vpn_servers: BTreeMap<String, String>,
}

/// `Debug` is written by hand: `private_key` is the key's text as the file gives it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FileDevice {
    pub name: String,
    pub private_key: Option<String>,
    pub private_key_file: Option<PathBuf>,
    pub listen_port: Option<u16>,
    #[serde(default)]
    pub addresses: Vec<String>,
    /// `auto` or a number: read as any value, so that a wrong one is reported on its field.
    pub mtu: Option<serde_yaml_ng::Value>,
    pub fwmark: Option<u32>,
    #[serde(default)]
    pub peers: Vec<FilePeer>,
}

impl std::fmt::Debug for FileDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self { name, private_key, private_key_file, listen_port, addresses, mtu, fwmark, peers } = self;
        f.debug_struct("FileDevice")
            .field("name", name)
            .field("private_key", &private_key.as_ref().map(|_| "<redacted>"))
            .field("private_key_file", private_key_file)
            .field("listen_port", listen_port)
            .field("addresses", addresses)
            .field("mtu", mtu)
            .field("fwmark", fwmark)
            .field("peers", peers)
            .finish()
    }
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
    pub device: Option<IfName>,
    pub table: u32,
}

/// The validated desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub device: DeviceSpec,
    pub addresses: BTreeSet<IpNet>,
    pub mtu: MtuSetting,
    pub routes: Vec<RouteSpec>,
    pub firewall: Option<crate::firewall::FirewallSpec>,
}

impl Desired {
    /// Whether the tunnel carries IPv6 (an address or an allowed IP): its MTU may not go below 1280.
    pub fn carries_ipv6(&self) -> bool {
        carries_ipv6(&self.addresses, &self.device)
    }
}

fn carries_ipv6(addresses: &BTreeSet<IpNet>, device: &DeviceSpec) -> bool {
    let v6 = |n: &IpNet| matches!(n, IpNet::V6(_));
    addresses.iter().any(v6) || device.peers.values().any(|p| p.allowed_ips.iter().any(v6))
}

/// The warning for a private key file whose permission bits (`mode`) let its group or others at
/// it, naming the file and the fix; `None` for an owner-only file (0600, 0400).
pub fn key_file_warning(path: &Path, mode: u32) -> Option<String> {
    (mode & 0o077 != 0).then(|| {
        format!(
            "private key file {} has mode {:04o}: its group or others may read it; run `chmod 600 {}`",
            path.display(),
            mode & 0o7777,
            path.display()
        )
    })
}

/// Logs [`key_file_warning`] for `path` if it applies (a file that cannot be stat'ed is left to the
/// read, which names the error).
pub fn warn_if_others_may_read(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else { return };
    if let Some(warning) = key_file_warning(path, meta.permissions().mode()) {
        tracing::warn!("{warning}");
    }
}

/// Reads, parses and validates a config file (YAML; JSON is YAML too).
pub fn load(path: &Path) -> Result<Desired, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
    parse(&text, path)
}

pub fn parse(text: &str, path: &Path) -> Result<Desired, ConfigError> {
    let file: FileConfig = serde_yaml_ng::from_str(text)
        .map_err(|e| ConfigError::Syntax { path: path.into(), message: shorten(&e.to_string(), MAX_MESSAGE) })?;
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
        let name = parse_ifname(&d.name).map_err(|e| self.field("device.name", e.to_string()))?;
        let private_key = self.private_key(&d)?;
        let addresses = d
            .addresses
            .iter()
            .enumerate()
            .map(|(i, a)| self.net(&format!("device.addresses[{i}]"), a, false))
            .collect::<Result<_, _>>()?;
        let mut peers = BTreeMap::new();
        // Every allowed IP and where it was first given: WireGuard keeps an address on one peer only
        // (the last one set), so a second claim would silently take it from the first.
        let mut claimed: BTreeMap<IpNet, String> = BTreeMap::new();
        for (i, p) in d.peers.iter().enumerate() {
            let peer = self.peer(i, p)?;
            for (j, net) in p.allowed_ips.iter().enumerate() {
                let Ok(net) = net.parse::<IpNet>() else { continue };
                let here = format!("device.peers[{i}].allowedIPs[{j}]");
                match claimed.get(&net) {
                    Some(first) if !first.starts_with(&format!("device.peers[{i}].")) => {
                        return Err(self.field(
                            here,
                            format!(
                                "{net} is already allowed for {first}; WireGuard would keep it on one peer only and \
                                 silently take it from the other: give each address to one peer"
                            ),
                        ));
                    }
                    Some(_) => {}
                    None => _ = claimed.insert(net, here),
                }
            }
            if peers.insert(peer.public_key, peer).is_some() {
                return Err(self.field(
                    format!("device.peers[{i}].publicKey"),
                    "the same public key appears twice; each peer once",
                ));
            }
        }
        let routes = file.routes.iter().enumerate().map(|(i, r)| self.route(i, r)).collect::<Result<Vec<_>, _>>()?;
        let firewall = file.snat.as_ref().map(|s| self.snat(s, &name)).transpose()?;
        let device = DeviceSpec { name, private_key, listen_port: d.listen_port, fwmark: d.fwmark, peers };
        let mtu = self.mtu(d.mtu.as_ref(), carries_ipv6(&addresses, &device))?;
        Ok(Desired { device, addresses, mtu, routes, firewall })
    }

    fn mtu(&self, mtu: Option<&serde_yaml_ng::Value>, carries_ipv6: bool) -> Result<MtuSetting, ConfigError> {
        use serde_yaml_ng::Value;
        let setting = match mtu {
            None => Ok(MtuSetting::Auto),
            Some(Value::String(t)) => t.parse(),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(n) => MtuSetting::fixed(u32::try_from(n).unwrap_or(u32::MAX)),
                None => Err(format!("{n} is not a whole number; use `auto` or a number such as 1420")),
            },
            Some(_) => Err("must be `auto` or a number such as 1420".to_string()),
        };
        setting.and_then(|s| s.check(carries_ipv6)).map_err(|m| self.field("device.mtu", m))
    }

    fn private_key(&self, d: &FileDevice) -> Result<PrivateKey, ConfigError> {
        match (&d.private_key, &d.private_key_file) {
            (Some(text), None) => text.parse().map_err(|e| self.field("device.privateKey", format!("{e}"))),
            (None, Some(file)) => {
                warn_if_others_may_read(file);
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
            Some(e) => Some(resolve_endpoint(e).map_err(|e| self.field(at("endpoint"), e.to_string()))?),
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
                    .map_err(|e| self.field(at("gateway"), format!("{}: {e}; write an IP address", excerpt(g))))?,
            ),
            None => None,
        };
        if gateway.is_none() && r.device.is_none() {
            return Err(self.field(at("gateway"), "a route needs a gateway, a device, or both"));
        }
        if let Some(g) = gateway.filter(|g| g.is_ipv4() != destination.addr().is_ipv4()) {
            return Err(self.field(at("gateway"), format!("{g} is not of the destination's address family")));
        }
        let device = match &r.device {
            Some(dev) => Some(parse_ifname(dev).map_err(|e| self.field(at("device"), e.to_string()))?),
            None => None,
        };
        Ok(RouteSpec { destination, gateway, device, table: r.table.unwrap_or(MAIN_TABLE) })
    }

    fn snat(&self, s: &FileSnat, device: &IfName) -> Result<crate::firewall::FirewallSpec, ConfigError> {
        let cidr = self.net("snat.cidr", &s.cidr, true)?;
        let to: IpAddr = s
            .to
            .parse()
            .map_err(|e| self.field("snat.to", format!("{}: {e}; write the slot's tunnel address", excerpt(&s.to))))?;
        if to.is_ipv4() != cidr.addr().is_ipv4() {
            return Err(self.field("snat.to", format!("{to} is not of the family of snat.cidr {cidr}")));
        }
        let mut vpn_servers = BTreeMap::new();
        for (shoot, server) in &s.vpn_servers {
            let field = format!("snat.vpnServers[{}]", excerpt(shoot));
            let address = |text: &str| text.parse::<IpAddr>().ok().filter(|a| a.is_ipv4() == to.is_ipv4());
            let shoot_addr = address(shoot).filter(|a| cidr.contains(a)).ok_or_else(|| {
                self.field(&field, format!("{} is not an address in snat.cidr {cidr}", excerpt(shoot)))
            })?;
            let server_addr = address(server).ok_or_else(|| {
                self.field(&field, format!("{}: write an address of the family of snat.cidr {cidr}", excerpt(server)))
            })?;
            vpn_servers.insert(shoot_addr, server_addr);
        }
        Ok(crate::firewall::FirewallSpec { device: device.to_string(), cidr, snat_to: to, vpn_servers })
    }

    /// A CIDR. `network` demands host bits be zero (routes, allowed IPs); addresses keep them.
    fn net(&self, field: &str, text: &str, network: bool) -> Result<IpNet, ConfigError> {
        let net: IpNet = text.parse().map_err(|_| {
            self.field(field, format!("{} is not a CIDR; write e.g. 192.168.128.0/22 or fd00::/64", excerpt(text)))
        })?;
        if network && net.trunc() != net {
            return Err(self.field(field, format!("{net} has host bits set; did you mean {}?", net.trunc())));
        }
        Ok(net)
    }
}

/// `host:port` or `[v6]:port`, checked by the one endpoint parser, then resolved now: the file's
/// peers are pinned to an address (the first one wins).
pub fn resolve_endpoint(text: &str) -> Result<SocketAddr, EndpointError> {
    text.parse::<Endpoint>()?.resolve_now()
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
    fn vpn_servers_are_read_and_a_bad_one_names_its_shoot() {
        let snat = |servers: &str| {
            format!("snat:\n  cidr: 192.168.128.0/22\n  to: 192.168.128.1\n  vpnServers:\n{servers}{}", base("", ""))
        };
        let d = parse_str(&snat("    \"192.168.128.10\": 100.64.7.10\n")).unwrap();
        let servers = d.firewall.unwrap().vpn_servers;
        assert_eq!(servers, [("192.168.128.10".parse().unwrap(), "100.64.7.10".parse().unwrap())].into());
        for (bad, says) in [
            (
                "    \"10.0.0.1\": 100.64.7.10\n",
                "snat.vpnServers[\"10.0.0.1\"]: \"10.0.0.1\" is not an address in snat.cidr",
            ),
            (
                "    \"192.168.128.10\": fd00::1\n",
                "snat.vpnServers[\"192.168.128.10\"]: \"fd00::1\": write an address of",
            ),
        ] {
            let err = parse_str(&snat(bad)).unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        }
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
    fn debug_of_a_file_device_does_not_show_the_key() {
        let file: FileConfig = serde_yaml_ng::from_str(&base("", "")).unwrap();
        let debug = format!("{file:?} {:#?}", file.device);
        assert!(!debug.contains(KEY) && !debug.contains(&KEY[..20]), "Debug shows the private key: {debug}");
        assert!(debug.contains("<redacted>") && debug.contains("kl0") && debug.contains(PUB), "{debug}");
    }

    #[test]
    fn a_key_file_others_may_read_is_warned_about() {
        use std::os::unix::fs::PermissionsExt;
        let path = std::env::temp_dir().join(format!("kubelink-key-mode-{}", std::process::id()));
        std::fs::write(&path, KEY).unwrap();
        let mode_of = |mode: u32| {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            key_file_warning(&path, std::fs::metadata(&path).unwrap().permissions().mode())
        };
        let warning = mode_of(0o644).expect("0644 is readable by everyone");
        assert!(warning.contains(&format!("chmod 600 {}", path.display())) && warning.contains("0644"), "{warning}");
        assert!(mode_of(0o640).is_some() && mode_of(0o604).is_some() && mode_of(0o620).is_some());
        assert_eq!(mode_of(0o600), None);
        assert_eq!(mode_of(0o400), None);
        // The file still loads: the warning is advice, not a refusal.
        let text = base("", "").replace(&format!("privateKey: {KEY}"), &format!("privateKeyFile: {}", path.display()));
        mode_of(0o644);
        assert!(parse_str(&text).is_ok());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn duplicate_peers_are_rejected() {
        let text = format!("{}  - publicKey: {PUB}\n", base("", ""));
        let err = parse_str(&text).unwrap_err().to_string();
        assert!(err.contains("device.peers[1].publicKey"), "{err}");
    }

    #[test]
    fn one_address_on_two_peers_is_refused() {
        const OTHER: &str = "HsA5xhJ9bXs6GHbLSWHyN0tQhz9VvHp3YZ9BnTU9dlw=";
        let second = |nets: &str| format!("{}  - publicKey: {OTHER}\n    allowedIPs: [{nets}]\n", base("", ""));
        let err = parse_str(&second("10.1.0.0/16, 192.168.128.10/32")).unwrap_err().to_string();
        assert!(
            err.contains("device.peers[1].allowedIPs[1]") && err.contains("device.peers[0].allowedIPs[0]"),
            "{err}"
        );
        assert!(err.contains("one peer"), "{err}");
        // A longer or shorter prefix is routing, not a contradiction; a repeat on the same peer is harmless.
        assert!(parse_str(&second("192.168.128.0/24")).is_ok());
        let text = base("", "").replace("[192.168.128.10/32]", "[192.168.128.10/32, 192.168.128.10/32]");
        assert!(parse_str(&text).is_ok());
    }

    #[test]
    fn the_mtu_rule_is_the_one_its_message_states() {
        let with = |mtu: &str| parse_str(&base("", "").replace("  listenPort", &format!("  mtu: {mtu}\n  listenPort")));
        for bad in ["575", "65536", "99999999999", "-1", "1.5", "big", "[1]"] {
            let err = with(bad).unwrap_err().to_string();
            assert!(err.contains("device.mtu") && err.contains("`auto`"), "{bad}: {err}");
        }
        assert_eq!(with("1280").unwrap().mtu, MtuSetting::Fixed(1280));
        assert_eq!(with("65535").unwrap().mtu, MtuSetting::Fixed(65535));
        assert_eq!(with("auto").unwrap().mtu, MtuSetting::Auto);
        assert_eq!(parse_str(&base("", "")).unwrap().mtu, MtuSetting::Auto, "auto when not given");
        // The IPv4-only tunnel of `base` may go down to 576; one that carries IPv6 not below 1280.
        assert_eq!(with("576").unwrap().mtu, MtuSetting::Fixed(576));
        let v6 = base("", "")
            .replace("addresses: [192.168.128.1/22]", "mtu: 1220\n  addresses: [192.168.128.1/22, fd00::1/64]");
        let err = parse_str(&v6).unwrap_err().to_string();
        assert!(err.contains("device.mtu") && err.contains("carries IPv6"), "{err}");
        assert_eq!(parse_mtu("auto"), Ok(MtuSetting::Auto));
        assert!(parse_mtu("9k").unwrap_err().contains("neither `auto` nor a number"));
    }

    #[test]
    fn interface_names_follow_the_kernels_rule() {
        for good in ["kubelink0", "a", "fifteen-bytes15"] {
            assert_eq!(parse_ifname(good).as_deref(), Ok(good));
        }
        for bad in ["", "sixteen-bytes-16", "a/b", "a:b", "a b", ".", "..", "ääääääää"] {
            let err = parse_ifname(bad).unwrap_err().to_string();
            assert!(err.contains("1-15 bytes") && err.contains("kubelink0"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn a_huge_bad_file_is_quoted_only_in_part() {
        let huge = "not yaml at all ".repeat(100_000);
        let err = parse_str(&huge).unwrap_err().to_string();
        assert!(err.len() < 500, "{} bytes: {}", err.len(), &err[..200]);
        let long_name = "x".repeat(100_000);
        let err = parse_str(&base("", "").replace("name: kl0", &format!("name: {long_name}"))).unwrap_err().to_string();
        assert!(err.contains("device.name") && err.len() < 300, "{}", err.len());
        let err = parse_str(&base("", "").replace("192.168.128.10/32", &"9".repeat(100_000))).unwrap_err().to_string();
        assert!(err.contains("allowedIPs[0]") && err.len() < 300, "{}", err.len());
    }

    #[test]
    fn endpoints_resolve_literals_and_localhost() {
        assert_eq!(resolve_endpoint("[fd00::1]:51820").unwrap(), "[fd00::1]:51820".parse().unwrap());
        assert_eq!(resolve_endpoint("localhost:51820").unwrap().port(), 51820);
        assert!(resolve_endpoint("localhost").unwrap_err().to_string().contains("host:port"));
    }
}
