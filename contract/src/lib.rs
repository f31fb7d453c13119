//! What kubelink's components agree on, in one place: object names, labels and annotations, the
//! gateway slot, the data keys of the Secrets one component writes and another reads, and defaults.
//!
//! Writers (the extension controller, the seed agent) and readers (the seed agent, the shoot sidecar) import
//! these instead of spelling the strings themselves, so a renamed key breaks the build, not a cluster.
//! The round-trip tests here and in the readers check that what is written reads back equal.
//!
//! The agent and the sidecar (package `kubelink`) and the extension controller (`kubelink-ipam`) both
//! depend on this crate; the agent's library does not depend on the controller's.

pub mod decode;
pub mod endpoint;
pub mod error;
pub mod keys;
pub mod projection;
pub mod secret;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::ByteString;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub use error::{InvalidValue, excerpt, shorten};
use keys::PrivateKey;

/// A gateway slot: `0..Slot::MAX`. A seed has one gateway per slot (GEP-14 high availability: two
/// gateways behind two load balancers); each slot has its own Lease, Secret, Service and address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot(u8);

/// A slot number out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("gateway slot {0} does not exist; slots are 0..{max}", max = Slot::MAX)]
pub struct SlotError(pub u64);

impl Slot {
    /// How many slots a seed can have.
    pub const MAX: u8 = 2;
    /// Every slot, in order.
    pub const ALL: [Slot; Slot::MAX as usize] = [Slot(0), Slot(1)];

    pub const fn new(n: u8) -> Result<Slot, SlotError> {
        if n < Self::MAX { Ok(Slot(n)) } else { Err(SlotError(n as u64)) }
    }

    /// The first `count` slots (a seed configured with fewer than [`Slot::MAX`]).
    pub fn first(count: u8) -> impl Iterator<Item = Slot> {
        Self::ALL.into_iter().take(usize::from(count))
    }

    pub const fn number(self) -> u8 {
        self.0
    }

    /// The slot as an index into per-slot lists.
    pub const fn index(self) -> usize {
        self.0 as usize
    }

    /// The slot's tunnel address in `cidr`: the network address plus the slot's number plus one (`.1`
    /// for slot 0, `.2` for slot 1). `None` when the range is too small. The controller reserves these
    /// addresses and the agent of the slot's holder puts its address there.
    pub fn address(self, cidr: IpNet) -> Option<IpAddr> {
        let offset = u128::from(self.0) + 1;
        let host_bits = u32::from(cidr.max_prefix_len() - cidr.prefix_len());
        if host_bits < 128 && offset >> host_bits != 0 {
            return None;
        }
        Some(match cidr.network() {
            IpAddr::V4(n) => IpAddr::V4((u32::from(n) + offset as u32).into()),
            IpAddr::V6(n) => IpAddr::V6((u128::from(n) + offset).into()),
        })
    }
}

impl TryFrom<u8> for Slot {
    type Error = SlotError;
    fn try_from(n: u8) -> Result<Slot, SlotError> {
        Slot::new(n)
    }
}

impl TryFrom<usize> for Slot {
    type Error = SlotError;
    fn try_from(n: usize) -> Result<Slot, SlotError> {
        u8::try_from(n).map_err(|_| SlotError(n as u64)).and_then(Slot::new)
    }
}

impl From<Slot> for u8 {
    fn from(s: Slot) -> u8 {
        s.0
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Object names. The slot's Lease, Secret, Service and EndpointSlice share one name.
pub mod names {
    use super::Slot;

    const GATEWAY_PREFIX: &str = "kubelink-gateway";

    /// `kubelink-gateway-<slot>`: the slot's Lease (election), Secret (key, endpoint), Service and
    /// EndpointSlice (the holder's node, written by the holder).
    pub fn gateway(slot: Slot) -> String {
        format!("{GATEWAY_PREFIX}-{slot}")
    }

    /// The Secret the shoot sidecar mounts (in the shoot's `kube-system`; written on the seed in the
    /// control-plane namespace, then delivered by the ManagedResource).
    pub const SHOOT_SECRET: &str = "kubelink-shoot";
    /// Where the sidecar's Secret lands in the shoot.
    pub const SHOOT_NAMESPACE: &str = "kube-system";
    /// The ManagedResource in the shoot's control-plane namespace.
    pub const MANAGED_RESOURCE: &str = "kubelink-shoot";
    /// The Secret it references (gardener-resource-manager's naming: `managedresource-<name>`).
    pub const MANAGED_RESOURCE_SECRET: &str = "managedresource-kubelink-shoot";
    /// The port of a slot's Service and EndpointSlice: UDP, the agents' WireGuard listen port.
    pub const SLOT_PORT: &str = "wireguard";
}

/// Labels and annotations.
pub mod labels {
    /// On every object the IPAM writes, so that one list finds them all.
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    pub const MANAGED_BY_IPAM: &str = "kubelink-ipam";
    /// On a slot's EndpointSlice: the Service it belongs to (Kubernetes' label; kube-proxy and cloud
    /// load balancers find a Service's endpoints by it).
    pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
    /// On a slot's EndpointSlice: who writes it (Kubernetes' label). A Service without a selector
    /// leaves its EndpointSlices to whoever writes them; Kubernetes' own controller manages only
    /// those that name it here.
    pub const SLICE_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
    /// The value of [`SLICE_MANAGED_BY`] on the EndpointSlices the agents write.
    pub const SLICE_MANAGER: &str = "agent.kubelink.gardener.cloud";
    /// The agent DaemonSet's Pods (the chart's template labels): routers check a slot Lease's node IP
    /// against the host IPs of the holder's Pod among them.
    pub const AGENT_PODS: &str = "app.kubernetes.io/name=kubelink,app.kubernetes.io/component=agent";
    /// On a slot Lease: the holder's node IP, where routers send the slot's traffic.
    pub const NODE_IP: &str = "kubelink.gardener.cloud/node-ip";
    /// On a Shoot: turns the tunnel on or off regardless of the Seed's default.
    pub const TUNNEL: &str = "alpha.featuregates.shoot.gardener.cloud/wireguard-tunnel";

    /// The managed-by label as a label map.
    pub fn managed() -> std::collections::BTreeMap<String, String> {
        [(MANAGED_BY.to_string(), MANAGED_BY_IPAM.to_string())].into()
    }
}

/// Defaults both sides assume when a value is not given.
pub mod defaults {
    /// WireGuard's usual keepalive behind NAT and load balancers (seconds).
    pub const KEEPALIVE: u16 = 21;
    /// The tunnel MTU when not given: from the underlay (the sidecar's and the agent's rule).
    pub const MTU: &str = "auto";
}

/// The shoot Secret's data keys (written by the IPAM, read by the sidecar as files of the mounted
/// Secret, each also a flag of `kubelink shoot`).
pub mod shoot_secret {
    use super::Slot;

    /// The shoot's WireGuard private key (base64).
    pub const PRIVATE_KEY: &str = "privateKey";
    /// The shoot's tunnel address in CIDR form with the WireGuard CIDR's prefix.
    pub const ADDRESS: &str = "address";
    /// Optional override of [`super::defaults::KEEPALIVE`]; never written by the IPAM.
    pub const KEEPALIVE: &str = "keepalive";
    /// Optional override of [`super::defaults::MTU`]: written by the extension controller when the
    /// seed's providerConfig sets `mtu`.
    pub const MTU: &str = "mtu";

    /// The three keys of one gateway slot: `gateway-<n>-endpoint|publicKey|address`.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct GatewayKeys {
        /// `host:port` the shoot dials.
        pub endpoint: String,
        /// The slot's WireGuard public key.
        pub public_key: String,
        /// The slot's tunnel address (no prefix).
        pub address: String,
    }

    pub fn gateway(slot: Slot) -> GatewayKeys {
        GatewayKeys {
            endpoint: format!("gateway-{slot}-endpoint"),
            public_key: format!("gateway-{slot}-publicKey"),
            address: format!("gateway-{slot}-address"),
        }
    }

    /// Every key a reader looks at.
    pub fn all() -> Vec<String> {
        let mut all: Vec<String> = [PRIVATE_KEY, ADDRESS, KEEPALIVE, MTU].map(String::from).into();
        for g in Slot::ALL.map(gateway) {
            all.extend([g.endpoint, g.public_key, g.address]);
        }
        all
    }
}

/// The slot Secret `kubelink-gateway-<n>`: created by the IPAM with a fresh key pair; the holding
/// agent only reads the private key (nothing of it is written by a node); the IPAM derives the
/// public half from the private key it generated.
pub mod gateway_secret {
    /// Read only by the agent holding the slot.
    pub const PRIVATE_KEY: &str = "privateKey";
    pub const PUBLIC_KEY: &str = "publicKey";
}

/// Secret data from text values.
pub fn secret_data<'a>(pairs: impl IntoIterator<Item = (&'a str, String)>) -> BTreeMap<String, ByteString> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), ByteString(v.into_bytes()))).collect()
}

/// A new slot Secret's data (IPAM).
pub fn new_gateway_secret_data(key: &PrivateKey) -> BTreeMap<String, ByteString> {
    secret_data([
        (gateway_secret::PRIVATE_KEY, key.expose_base64().to_string()),
        (gateway_secret::PUBLIC_KEY, key.public_key().to_base64()),
    ])
}

/// `namespace/name` of a Shoot: the key allocations are recorded under.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShootKey {
    pub namespace: String,
    pub name: String,
}

impl ShootKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), name: name.into() }
    }

    /// The key of a Shoot, or of an object named after it (its ShootState).
    pub fn of(meta: &ObjectMeta) -> Self {
        Self::new(meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
    }
}

impl fmt::Display for ShootKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl std::str::FromStr for ShootKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => Ok(Self::new(ns, name)),
            _ => Err(format!("{} is not namespace/name", crate::error::excerpt(s))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PublicKey;
    use crate::secret::text;
    use k8s_openapi::api::core::v1::Secret;

    #[test]
    fn slots_are_bounded_and_name_their_objects() {
        assert_eq!(Slot::ALL.map(Slot::number), [0, 1]);
        assert_eq!(Slot::new(2), Err(SlotError(2)));
        assert_eq!(Slot::try_from(300usize), Err(SlotError(300)));
        assert_eq!(Slot::first(1).collect::<Vec<_>>(), [Slot::ALL[0]]);
        assert_eq!(names::gateway(Slot::ALL[1]), "kubelink-gateway-1");
        let keys = shoot_secret::gateway(Slot::ALL[0]);
        assert_eq!(
            [keys.endpoint, keys.public_key, keys.address],
            ["gateway-0-endpoint", "gateway-0-publicKey", "gateway-0-address"]
        );
    }

    #[test]
    fn a_slot_has_the_address_after_the_network_address_and_the_slots_before_it() {
        let [s0, s1] = Slot::ALL;
        let v4: IpNet = "192.168.128.0/22".parse().unwrap();
        assert_eq!([s0, s1].map(|s| s.address(v4).unwrap().to_string()), ["192.168.128.1", "192.168.128.2"]);
        let v6: IpNet = "fd00:1::/120".parse().unwrap();
        assert_eq!(s1.address(v6).unwrap().to_string(), "fd00:1::2");
        let tiny: IpNet = "10.0.0.4/31".parse().unwrap();
        assert_eq!((s0.address(tiny), s1.address(tiny)), (Some("10.0.0.5".parse().unwrap()), None));
        assert_eq!(s0.address("10.0.0.4/32".parse().unwrap()), None);
        assert_eq!(s0.address("::/0".parse().unwrap()).unwrap().to_string(), "::1");
    }

    #[test]
    fn a_slot_secret_written_by_ipam_reads_back_in_the_agent() {
        let key = PrivateKey::generate();
        let secret = Secret { data: Some(new_gateway_secret_data(&key)), ..Default::default() };
        assert_eq!(text(&secret, gateway_secret::PRIVATE_KEY).unwrap().parse::<PrivateKey>().unwrap(), key);
        let public: PublicKey = text(&secret, gateway_secret::PUBLIC_KEY).unwrap().parse().unwrap();
        assert_eq!(public, key.public_key());
    }

    #[test]
    fn shoot_keys_round_trip_through_text() {
        let key = ShootKey::new("garden-dev", "a");
        assert_eq!(key.to_string().parse::<ShootKey>(), Ok(key.clone()));
        let meta = ObjectMeta { namespace: Some("garden-dev".into()), name: Some("a".into()), ..Default::default() };
        assert_eq!(ShootKey::of(&meta), key);
        assert!("a/b/c".parse::<ShootKey>().is_err());
    }
}
