//! The sidecar's configuration: files in a mounted Secret directory (written on the seed by
//! `kubelink ipam`; file names are the keys of [`kubelink_contract::shoot_secret`]), each
//! overridable by a flag or environment variable. Reading gathers the raw values with their origin;
//! parsing is pure and every error names the file (or flag) and the field.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use kubelink_contract::excerpt;
use kubelink_contract::keys::{PrivateKey, PublicKey};
use kubelink_contract::{Slot, defaults, shoot_secret};

pub use kubelink_contract::shoot_secret::{ADDRESS, KEEPALIVE, MTU, PRIVATE_KEY};

use crate::config::{Desired, RouteSpec};
use crate::endpoint::Endpoint;
use crate::ifname::IfName;
use crate::mtu::MtuSetting;
use crate::route::MAIN_TABLE;
use crate::wg::{DeviceSpec, PeerSpec};

/// The three files of gateway slot `slot`: endpoint, public key, address.
pub fn slot_fields(slot: Slot) -> [String; 3] {
    let keys = shoot_secret::gateway(slot);
    [keys.endpoint, keys.public_key, keys.address]
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShootConfigError {
    #[error("{origin}: cannot read {field}: {message}")]
    Read { origin: String, field: String, message: String },
    #[error("{field}: missing; {hint}")]
    Missing { field: String, hint: String },
    #[error("{origin} ({field}): {message}")]
    Invalid { origin: String, field: String, message: String },
}

/// One raw value and where it came from (a file path, or a flag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub origin: String,
    pub text: String,
}

/// The raw values by field name. Never printed whole: it holds the private key.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Inputs(pub BTreeMap<String, Input>);

impl std::fmt::Debug for Inputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// Where the values come from: the directory, and overrides from flags/env by field name.
#[derive(Debug, Clone)]
pub struct Sources {
    pub dir: PathBuf,
    /// Field name -> (flag name, value).
    pub overrides: BTreeMap<String, (String, String)>,
    /// A private key file given by flag instead of `<dir>/privateKey`.
    pub private_key_file: Option<PathBuf>,
}

impl Sources {
    /// Reads every field: override, else the file, else absent. A file that exists but cannot be
    /// read is an error; an absent file is not (the parser decides whether the field is needed).
    pub fn read(&self) -> Result<Inputs, ShootConfigError> {
        let mut inputs = BTreeMap::new();
        for field in shoot_secret::all() {
            if let Some((flag, value)) = self.overrides.get(&field) {
                inputs.insert(field, Input { origin: flag.clone(), text: value.clone() });
                continue;
            }
            let path = match (&self.private_key_file, field.as_str()) {
                (Some(file), PRIVATE_KEY) => file.clone(),
                _ => self.dir.join(&field),
            };
            if let Some(text) = read_optional(&path, &field)? {
                inputs.insert(field, Input { origin: path.display().to_string(), text });
            }
        }
        Ok(Inputs(inputs))
    }

    /// [`parse`] of what [`Self::read`] reads. A field found missing while the directory itself does
    /// not exist says so: the directory is what to fix, not the field.
    pub fn parse(&self, device: &IfName) -> Result<ShootConfig, ShootConfigError> {
        parse(&self.read()?, device).map_err(|e| missing_dir(e, &self.dir, self.dir.is_dir()))
    }
}

/// `err`, naming `dir` when it is a missing field and `dir` does not exist.
fn missing_dir(err: ShootConfigError, dir: &Path, exists: bool) -> ShootConfigError {
    match err {
        ShootConfigError::Missing { field, hint } if !exists => ShootConfigError::Missing {
            field,
            hint: format!(
                "the config directory {} does not exist: mount the shoot's Secret there or point --config-dir at it ({hint})",
                dir.display()
            ),
        },
        other => other,
    }
}

fn read_optional(path: &Path, field: &str) -> Result<Option<String>, ShootConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ShootConfigError::Read {
            origin: path.display().to_string(),
            field: field.into(),
            message: e.to_string(),
        }),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    /// The sidecar keys its per-slot state by it.
    pub slot: Slot,
    /// A host name (re-resolved) or a literal address, and a port.
    pub endpoint: Endpoint,
    pub public_key: PublicKey,
    /// The slot's tunnel address: the gateway SNATs seed traffic to it; the peer's AllowedIPs.
    pub address: IpAddr,
}

/// The validated configuration. `Debug` is safe: the private key redacts itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShootConfig {
    pub device: IfName,
    pub private_key: PrivateKey,
    /// The shoot's tunnel address with the WireGuard CIDR's prefix.
    pub address: IpNet,
    pub gateways: Vec<Gateway>,
    pub keepalive: u16,
    pub mtu: MtuSetting,
}

impl ShootConfig {
    /// The device state for the reconciler. `endpoints` are the current resolutions by slot; a slot
    /// not resolved yet gets its peer without an endpoint (configured, waiting for the address).
    pub fn desired(&self, endpoints: &BTreeMap<Slot, SocketAddr>) -> Desired {
        let peers = self
            .gateways
            .iter()
            .map(|g| {
                let peer = PeerSpec {
                    public_key: g.public_key,
                    endpoint: endpoints.get(&g.slot).copied(),
                    allowed_ips: [IpNet::from(g.address)].into(),
                    persistent_keepalive: Some(self.keepalive).filter(|k| *k > 0),
                };
                (g.public_key, peer)
            })
            .collect();
        // The address's prefix route already covers the slot addresses; these /32s say explicitly
        // which device carries each gateway, and survive an address written with a longer prefix.
        let routes = self
            .gateways
            .iter()
            .map(|g| RouteSpec {
                destination: IpNet::from(g.address),
                gateway: None,
                device: Some(self.device.clone()),
                table: MAIN_TABLE,
            })
            .collect();
        Desired {
            device: DeviceSpec {
                name: self.device.clone(),
                private_key: self.private_key.clone(),
                listen_port: None,
                fwmark: None,
                peers,
            },
            addresses: [self.address].into(),
            mtu: self.mtu,
            routes,
            // The shoot does no NAT: the gateways translate seed traffic to their slot addresses.
            firewall: None,
        }
    }
}

/// Parses and validates the inputs for device `device` (a flag, checked when it was parsed).
pub fn parse(inputs: &Inputs, device: &IfName) -> Result<ShootConfig, ShootConfigError> {
    let p = Parser { inputs };
    let private_key: PrivateKey = p.required(PRIVATE_KEY, "the shoot's WireGuard private key (base64)", |t| {
        t.parse::<PrivateKey>().map_err(|e| format!("{e}; write the key as `wg genkey` prints it"))
    })?;
    let address = p.required(ADDRESS, "the tunnel address in CIDR form, e.g. 192.168.128.10/22", parse_address)?;
    let keepalive = p.optional(KEEPALIVE, defaults::KEEPALIVE, |t| {
        t.parse::<u16>()
            .map_err(|_| format!("{} is not a number of seconds (0..65535; 0 turns keepalive off)", excerpt(t)))
    })?;
    let mtu = p.optional(MTU, MtuSetting::Auto, crate::config::parse_mtu)?;
    let mut gateways = Vec::new();
    for slot in Slot::ALL {
        if let Some(g) = p.gateway(slot, &address)? {
            gateways.push((slot, g));
        }
    }
    p.check_gateways(&gateways, &private_key)?;
    let gateways: Vec<Gateway> = gateways.into_iter().map(|(_, g)| g).collect();
    let carries_ipv6 = address.addr().is_ipv6() || gateways.iter().any(|g| g.address.is_ipv6());
    let mtu = mtu.check(carries_ipv6).map_err(|m| p.invalid(MTU, m))?;
    Ok(ShootConfig { device: device.clone(), private_key, address, gateways, keepalive, mtu })
}

fn parse_address(text: &str) -> Result<IpNet, String> {
    let net: IpNet = text
        .parse()
        .map_err(|_| format!("{} is not an address in CIDR form; write e.g. 192.168.128.10/22", excerpt(text)))?;
    if net.prefix_len() == net.max_prefix_len() {
        return Err(format!("{net} has no room for gateways; give the WireGuard CIDR's prefix, e.g. /22"));
    }
    if net.addr() == net.network() {
        return Err(format!("{net} is the network address, not a host address"));
    }
    Ok(net)
}

struct Parser<'a> {
    inputs: &'a Inputs,
}

impl Parser<'_> {
    fn invalid(&self, field: &str, message: impl Into<String>) -> ShootConfigError {
        let origin = self.inputs.0.get(field).map(|i| i.origin.clone()).unwrap_or_else(|| field.to_string());
        ShootConfigError::Invalid { origin, field: field.into(), message: message.into() }
    }

    fn text(&self, field: &str) -> Option<&str> {
        self.inputs.0.get(field).map(|i| i.text.trim())
    }

    fn required<T>(
        &self,
        field: &str,
        what: &str,
        f: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ShootConfigError> {
        let text = self.text(field).ok_or_else(|| ShootConfigError::Missing {
            field: field.into(),
            hint: format!("write {what} to the file {field} in the config directory, or pass it as a flag"),
        })?;
        f(text).map_err(|m| self.invalid(field, m))
    }

    fn optional<T>(
        &self,
        field: &str,
        default: T,
        f: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ShootConfigError> {
        match self.text(field) {
            None | Some("") => Ok(default),
            Some(text) => f(text).map_err(|m| self.invalid(field, m)),
        }
    }

    /// A slot is configured when any of its files exists; then all three must.
    fn gateway(&self, slot: Slot, address: &IpNet) -> Result<Option<Gateway>, ShootConfigError> {
        let [endpoint, key, addr] = slot_fields(slot);
        if [&endpoint, &key, &addr].iter().all(|f| self.text(f).is_none()) {
            return Ok(None);
        }
        let endpoint =
            self.required(&endpoint, "the gateway's host:port", |t| t.parse().map_err(|e| format!("{e}")))?;
        let public_key = self.required(&key, "the gateway's public key (base64)", |t| {
            t.parse::<PublicKey>().map_err(|e| format!("{e}; write the gateway's public key as `wg pubkey` prints it"))
        })?;
        let slot_address = self.required(&addr, "the slot's tunnel address, e.g. 192.168.128.1", |t| {
            t.parse::<IpAddr>()
                .map_err(|_| format!("{} is not an IP address; write e.g. 192.168.128.1 (no prefix)", excerpt(t)))
        })?;
        if !address.contains(&slot_address) || slot_address == address.network() {
            return Err(self.invalid(
                &addr,
                format!(
                    "{slot_address} is outside the shoot's WireGuard CIDR {}; both must come from the same seed",
                    address.trunc()
                ),
            ));
        }
        if slot_address == address.addr() {
            return Err(self.invalid(&addr, format!("{slot_address} is the shoot's own address ({ADDRESS})")));
        }
        Ok(Some(Gateway { slot, endpoint, public_key, address: slot_address }))
    }

    fn check_gateways(&self, gws: &[(Slot, Gateway)], key: &PrivateKey) -> Result<(), ShootConfigError> {
        let [s0, s1] = Slot::ALL;
        if gws.is_empty() {
            let [e, k, a] = slot_fields(s0);
            return Err(ShootConfigError::Missing {
                field: e.clone(),
                hint: format!(
                    "no gateway is configured; write {e}, {k} and {a} (and the same for slot 1 with two gateways)"
                ),
            });
        }
        if let [(_, a), (_, b)] = gws {
            if a.public_key == b.public_key {
                return Err(
                    self.invalid(&slot_fields(s1)[1], "the same public key as gateway 0; each slot has its own key")
                );
            }
            if a.address == b.address {
                return Err(self.invalid(&slot_fields(s1)[2], "the same address as gateway 0; each slot has its own"));
            }
        }
        if let Some((slot, _)) = gws.iter().find(|(_, g)| g.public_key == key.public_key()) {
            return Err(self.invalid(&slot_fields(*slot)[1], "this is the shoot's own public key, not the gateway's"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "YGnDgU5Ojh3HqRzZjVZ0Iv1mvdQ2p1JmS8mXQmoxY3s=";
    const GW0: &str = "GsA5xhJ9bXs6GHbLSWHyN0tQhz9VvHp3YZ9BnTU9dlw=";
    const GW1: &str = "HsA5xhJ9bXs6GHbLSWHyN0tQhz9VvHp3YZ9BnTU9dlw=";

    fn kl0() -> IfName {
        "kl0".parse().unwrap()
    }

    fn inputs(rows: &[(&str, &str)]) -> Inputs {
        Inputs(
            rows.iter()
                .map(|(f, t)| (f.to_string(), Input { origin: format!("/cfg/{f}"), text: format!("{t}\n") }))
                .collect(),
        )
    }

    fn full() -> Vec<(&'static str, &'static str)> {
        vec![
            (PRIVATE_KEY, KEY),
            (ADDRESS, "192.168.128.10/22"),
            ("gateway-0-endpoint", "gw0.example.org:51820"),
            ("gateway-0-publicKey", GW0),
            ("gateway-0-address", "192.168.128.1"),
            ("gateway-1-endpoint", "[fd00::2]:51821"),
            ("gateway-1-publicKey", GW1),
            ("gateway-1-address", "192.168.128.2"),
        ]
    }

    fn with(change: &[(&'static str, &'static str)], drop: &[&str]) -> Inputs {
        let mut rows: Vec<_> = full().into_iter().filter(|(f, _)| !drop.contains(f)).collect();
        for (f, t) in change {
            rows.retain(|(g, _)| g != f);
            rows.push((f, t));
        }
        inputs(&rows)
    }

    #[test]
    fn a_full_directory_gives_two_peers_with_defaults() {
        let c = parse(&inputs(&full()), &kl0()).unwrap();
        assert_eq!((c.keepalive, c.mtu), (21, MtuSetting::Auto));
        assert_eq!(c.gateways.len(), 2);
        assert_eq!((c.gateways[0].endpoint.host(), c.gateways[0].endpoint.port()), ("gw0.example.org", 51820));
        assert_eq!(c.gateways[1].endpoint.literal(), Some("[fd00::2]:51821".parse().unwrap()));
        let ep: BTreeMap<Slot, SocketAddr> = [(Slot::ALL[1], "[fd00::2]:51821".parse().unwrap())].into();
        let d = c.desired(&ep);
        let gw0 = &d.device.peers[&GW0.parse().unwrap()];
        assert_eq!(gw0.endpoint, None, "unresolved slot: peer configured, no endpoint yet");
        assert_eq!(gw0.allowed_ips, ["192.168.128.1/32".parse().unwrap()].into());
        assert_eq!(gw0.persistent_keepalive, Some(21));
        assert_eq!(d.device.peers[&GW1.parse().unwrap()].endpoint, ep.get(&Slot::ALL[1]).copied());
        assert_eq!(d.addresses, ["192.168.128.10/22".parse().unwrap()].into());
        assert_eq!(d.routes.len(), 2);
        assert_eq!(d.device.listen_port, None, "the shoot dials out; no fixed port");
    }

    #[test]
    fn one_gateway_seeds_and_options() {
        let c = parse(
            &with(
                &[(KEEPALIVE, "0"), (MTU, "1380")],
                &["gateway-1-endpoint", "gateway-1-publicKey", "gateway-1-address"],
            ),
            &kl0(),
        )
        .unwrap();
        assert_eq!(c.gateways.len(), 1);
        assert_eq!((c.keepalive, c.mtu), (0, MtuSetting::Fixed(1380)));
        assert_eq!(c.desired(&BTreeMap::new()).device.peers.values().next().unwrap().persistent_keepalive, None);
    }

    #[test]
    fn errors_name_the_file_and_field() {
        // rows: changed values, dropped files, what the error must contain (origin/field, a word of the fix)
        let rows: Vec<(Inputs, &str, &str)> = vec![
            (with(&[], &[PRIVATE_KEY]), "privateKey: missing", "config directory"),
            (with(&[(PRIVATE_KEY, "garbage")], &[]), "/cfg/privateKey (privateKey)", "wg genkey"),
            (with(&[(ADDRESS, "192.168.128.10")], &[]), "/cfg/address (address)", "CIDR"),
            (with(&[(ADDRESS, "192.168.128.10/32")], &[]), "/cfg/address", "prefix"),
            (with(&[("gateway-0-endpoint", "gw0.example.org")], &[]), "/cfg/gateway-0-endpoint", "host:port"),
            (with(&[("gateway-0-endpoint", "gw0:99999")], &[]), "/cfg/gateway-0-endpoint", "host:port"),
            (
                with(&[("gateway-0-publicKey", "AAAA")], &[]),
                "/cfg/gateway-0-publicKey (gateway-0-publicKey)",
                "wg pubkey",
            ),
            (with(&[("gateway-1-address", "10.0.0.2")], &[]), "/cfg/gateway-1-address", "outside"),
            (with(&[("gateway-1-address", "192.168.128.10")], &[]), "/cfg/gateway-1-address", "own address"),
            (with(&[("gateway-1-address", "192.168.128.1")], &[]), "/cfg/gateway-1-address", "same address"),
            (with(&[("gateway-1-publicKey", GW0)], &[]), "/cfg/gateway-1-publicKey", "own key"),
            (with(&[], &["gateway-1-publicKey"]), "gateway-1-publicKey: missing", "public key"),
            (with(&[(MTU, "9")], &[]), "/cfg/mtu (mtu)", "`auto`"),
            (with(&[(KEEPALIVE, "soon")], &[]), "/cfg/keepalive", "seconds"),
            (
                with(
                    &[],
                    &[
                        "gateway-0-endpoint",
                        "gateway-0-publicKey",
                        "gateway-0-address",
                        "gateway-1-endpoint",
                        "gateway-1-publicKey",
                        "gateway-1-address",
                    ],
                ),
                "gateway-0-endpoint: missing",
                "no gateway",
            ),
        ];
        for (i, (inp, names, hint)) in rows.iter().enumerate() {
            let err = parse(inp, &kl0()).unwrap_err().to_string();
            assert!(err.contains(names), "row {i}: {err:?} should contain {names:?}");
            assert!(err.contains(hint), "row {i}: {err:?} should say {hint:?}");
            assert!(!err.contains(KEY), "row {i}: error leaks the private key: {err}");
        }
        // A bad `--device` is refused by the flag's parser: `cmd::shoot::tests`.
    }

    #[test]
    fn endpoints_parse_names_and_literals() {
        // rows: text, expected host and port (None = rejected)
        let rows = [
            ("gw.example.org:51820", Some(("gw.example.org", 51820))),
            ("10.0.0.1:1", Some(("10.0.0.1", 1))),
            ("[fd00::1]:51820", Some(("fd00::1", 51820))),
            ("fd00::1:51820", None),
            ("gw.example.org:0", None),
            (":51820", None),
            ("gw example:51820", None),
            // found by fuzzing
            ("[[[[]]:4", None),
            ("[gw.example.org]:51820", None),
            ("gw..example.org:51820", None),
            ("gw/0:51820", None),
            ("lb-0_x.internal:51820", Some(("lb-0_x.internal", 51820))),
        ];
        for (text, want) in rows {
            let got = text.parse::<Endpoint>().ok().map(|e| (e.host().to_string(), e.port()));
            assert_eq!(got, want.map(|(h, p)| (h.to_string(), p)), "{text}");
        }
    }

    /// What the IPAM writes into the shoot Secret (mounted as one file per key) reads back equal.
    #[test]
    fn the_ipam_written_secret_reads_back_equal() {
        use kubelink_contract::secret::{KnownGateway as Written, shoot_secret_data};
        let key: PrivateKey = KEY.parse().unwrap();
        let address: IpNet = "192.168.128.10/22".parse().unwrap();
        let [s0, s1] = Slot::ALL;
        let written = [
            Written {
                slot: s0,
                address: Some("192.168.128.1".parse().unwrap()),
                endpoint: Some("gw0.example.org:51820".into()),
                public_key: Some(GW0.parse().unwrap()),
            },
            Written {
                slot: s1,
                address: Some("192.168.128.2".parse().unwrap()),
                endpoint: Some("[fd00::2]:51821".into()),
                public_key: Some(GW1.parse().unwrap()),
            },
        ];
        let dir = std::env::temp_dir().join(format!("kubelink-shoot-roundtrip-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sources = Sources { dir: dir.clone(), overrides: BTreeMap::new(), private_key_file: None };
        // With the seed's MTU, the sidecar takes it.
        for (file, value) in shoot_secret_data(&key, address, &written, Some(1380)) {
            std::fs::write(dir.join(file), value.0).unwrap();
        }
        let with_mtu = sources.read().map(|inputs| parse(&inputs, &kl0()).map(|c| c.mtu));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(with_mtu.unwrap().unwrap(), MtuSetting::Fixed(1380));
        std::fs::create_dir_all(&dir).unwrap();
        for (file, value) in shoot_secret_data(&key, address, &written, None) {
            std::fs::write(dir.join(file), value.0).unwrap();
        }
        let read = sources.read().map(|inputs| parse(&inputs, &kl0()));
        std::fs::remove_dir_all(&dir).unwrap();
        let config = read.unwrap().unwrap();
        assert_eq!((config.private_key, config.address), (key, address));
        assert_eq!((config.keepalive, config.mtu), (defaults::KEEPALIVE, MtuSetting::Auto), "not written: defaults");
        assert_eq!(defaults::MTU, MtuSetting::Auto.to_string(), "the contract's default is the reader's");
        let back: Vec<Written> = config
            .gateways
            .iter()
            .map(|g| Written {
                slot: g.slot,
                address: Some(g.address),
                endpoint: Some(g.endpoint.to_string()),
                public_key: Some(g.public_key),
            })
            .collect();
        assert_eq!(back, written);
    }

    #[test]
    fn a_missing_config_dir_is_named() {
        let dir = std::env::temp_dir().join(format!("kubelink-no-such-dir-{}", std::process::id()));
        let sources = Sources { dir: dir.clone(), overrides: BTreeMap::new(), private_key_file: None };
        let err = sources.parse(&kl0()).unwrap_err().to_string();
        assert!(err.contains(&format!("the config directory {} does not exist", dir.display())), "{err}");
        // An existing directory without the file: the field alone.
        std::fs::create_dir_all(&dir).unwrap();
        let err = sources.parse(&kl0()).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(err.contains("missing") && !err.contains("does not exist"), "{err}");
    }

    #[test]
    fn sources_prefer_flags_and_skip_absent_files() {
        let dir = std::env::temp_dir().join(format!("kubelink-shoot-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(ADDRESS), "192.168.128.10/22\n").unwrap();
        std::fs::write(dir.join(MTU), "1400").unwrap();
        let overrides = [(MTU.to_string(), ("--mtu".to_string(), "1300".to_string()))].into();
        let got = Sources { dir: dir.clone(), overrides, private_key_file: None }.read().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(got.0[ADDRESS].origin, dir.join(ADDRESS).display().to_string());
        assert_eq!(got.0[MTU], Input { origin: "--mtu".into(), text: "1300".into() });
        assert!(!got.0.contains_key(PRIVATE_KEY));
        assert!(!format!("{got:?}").contains("192.168"), "Debug shows field names only");
    }
}
