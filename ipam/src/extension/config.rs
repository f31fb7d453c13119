//! The seed's configuration: the `providerConfig` of the seed-class Extension, checked against the
//! seed's networks, Gardener's reserved ranges and (when a Gardener has it) the Seed's own
//! `spec.wireguard` (GEP-14's field). Pure.

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;

use crate::contract::Slot;
use crate::error::IpamError;
use crate::gardener::Seed;
use crate::validate;

use super::objects::{Extension, SEED_NAMESPACE, TYPE};

/// How the providerConfig is written, for messages about it.
pub const EXAMPLE: &str =
    "e.g. {cidr: 192.168.128.0/22, slots: 2, slotEndpoints: [gw0.seed.example:51820, gw1.seed.example:51820]}";

/// The seed-class Extension's `spec.providerConfig`, as written.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedProviderConfig {
    #[serde(default)]
    pub cidr: Option<String>,
    #[serde(default)]
    pub slots: Option<u64>,
    #[serde(default)]
    pub slot_endpoints: Vec<String>,
    #[serde(default)]
    pub mtu: Option<u64>,
}

/// The seed's configuration after every rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedConfig {
    /// Where the CIDR was read from, for messages.
    pub field: String,
    pub cidr: IpNet,
    pub slots: u8,
    /// Each slot's endpoint (`host:port`) as configured; `None` where the slot has none.
    pub endpoints: Vec<Option<String>>,
    pub mtu: Option<u16>,
}

impl SeedConfig {
    pub fn endpoint(&self, slot: Slot) -> Option<&str> {
        self.endpoints.get(slot.index()).and_then(|e| e.as_deref())
    }
}

/// Why shoots get no endpoint for the slots in `missing` (neither configured nor given by the slot
/// Service's load balancer), naming the field and the fix; `None` when every slot has one. There is
/// no fallback to a node's address: the controller decides endpoints, never a node.
pub fn missing_endpoints(namespace: &str, missing: &[Slot]) -> Option<String> {
    let each: Vec<String> = missing
        .iter()
        .map(|slot| {
            let n = slot.number();
            format!(
                "slot {n} has no endpoint: set {} or give Service {namespace}/{} (type LoadBalancer) an address in \
                 status.loadBalancer.ingress; shoots do not dial slot {n} until then",
                field(&format!("slotEndpoints[{n}]")),
                crate::contract::names::gateway(*slot),
            )
        })
        .collect();
    (!each.is_empty()).then(|| each.join("; "))
}

fn object() -> String {
    format!("Extension {SEED_NAMESPACE}/{TYPE}")
}

fn field(name: &str) -> String {
    format!("{} spec.providerConfig.{name}", object())
}

/// Reads and checks the seed's configuration. `seed` is the Seed as gardenlet describes it (its
/// networks and blocked ranges); `parent` the WireGuard CIDR of the seed hosting this one, if known.
pub fn seed_config(ext: &Extension, seed: &Seed, parent: Option<(&str, &str)>) -> Result<SeedConfig, IpamError> {
    let raw = ext.spec.provider_config.clone().unwrap_or(Value::Object(Default::default()));
    let config: SeedProviderConfig =
        crate::decode::decode_value(&raw).map_err(|(path, reason)| IpamError::WrongType {
            object: object(),
            field: if path.starts_with('(') {
                "spec.providerConfig".into()
            } else {
                format!("spec.providerConfig.{path}")
            },
            reason,
            fix: EXAMPLE.into(),
        })?;
    let (field, value) = cidr_source(&config, seed)?;
    let cidr = validate::wireguard_cidr(&field, &value, seed, parent)?;
    let slots = slots(config.slots)?;
    let endpoints = endpoints(&config.slot_endpoints, slots)?;
    let mtu = mtu(config.mtu)?;
    Ok(SeedConfig { field, cidr, slots, endpoints, mtu })
}

/// The providerConfig's CIDR, else the Seed's `spec.wireguard.cidr` (a Gardener with GEP-14's field).
fn cidr_source(config: &SeedProviderConfig, seed: &Seed) -> Result<(String, String), IpamError> {
    if let Some(cidr) = &config.cidr {
        return Ok((field("cidr"), cidr.clone()));
    }
    let name = seed.metadata.name.as_deref().unwrap_or_default();
    match seed.spec.wireguard.as_ref().and_then(|wg| wg.cidr.clone()) {
        Some(cidr) => Ok((format!("Seed {name} spec.wireguard.cidr"), cidr)),
        None => Err(IpamError::Missing {
            field: field("cidr"),
            fix: "set it to a range of the seed's own, e.g. 192.168.128.0/22 (about 1000 shoots)".into(),
        }),
    }
}

/// The seed's slots must be ones its kubelink release deployed (`deployed`: the chart's slots, which
/// gardenlet's render takes from this same providerConfig): a slot without its load-balancer Service
/// and without the agents' grant for its Lease would be published to shoots and never served.
pub fn within_release(config: SeedConfig, deployed: u8) -> Result<SeedConfig, IpamError> {
    if config.slots <= deployed {
        return Ok(config);
    }
    Err(IpamError::InvalidValue(crate::error::InvalidValue {
        field: field("slots"),
        value: config.slots.to_string(),
        reason: format!(
            "kubelink's release on this seed deploys {deployed} slot(s) (load-balancer Services, the agents' Lease \
             grants); gardenlet renders the chart with this providerConfig's slots, so reconcile the seed's \
             ControllerInstallation, or set the chart value slots to {} where it is set by hand",
            config.slots
        ),
    }))
}

fn slots(value: Option<u64>) -> Result<u8, IpamError> {
    match value {
        None => Ok(Slot::MAX),
        Some(n @ 1..=2) => Ok(n as u8),
        Some(n) => Err(IpamError::InvalidValue(crate::error::InvalidValue {
            field: field("slots"),
            value: n.to_string(),
            reason: "must be 1, or 2 for two gateways".into(),
        })),
    }
}

fn endpoints(values: &[String], slots: u8) -> Result<Vec<Option<String>>, IpamError> {
    if values.len() > usize::from(slots) {
        return Err(IpamError::InvalidValue(crate::error::InvalidValue {
            field: field("slotEndpoints"),
            value: format!("{} entries", values.len()),
            reason: format!("at most one per slot ({slots})"),
        }));
    }
    let mut out: Vec<Option<String>> = vec![None; usize::from(slots)];
    for (i, value) in values.iter().enumerate() {
        crate::contract::endpoint::check(value).map_err(|reason| {
            IpamError::InvalidValue(crate::error::InvalidValue {
                field: field(&format!("slotEndpoints[{i}]")),
                value: value.clone(),
                reason,
            })
        })?;
        out[i] = Some(value.trim().to_string());
    }
    Ok(out)
}

fn mtu(value: Option<u64>) -> Result<Option<u16>, IpamError> {
    match value {
        None => Ok(None),
        Some(n @ 1280..=9000) => Ok(Some(n as u16)),
        Some(n) => Err(IpamError::InvalidValue(crate::error::InvalidValue {
            field: field("mtu"),
            value: n.to_string(),
            reason: "must be 1280 to 9000 (IPv6 needs at least 1280); leave it out to derive it from the route".into(),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn seed_ext(config: Value) -> Extension {
        serde_json::from_value(json!({"metadata": {"name": TYPE, "namespace": SEED_NAMESPACE},
            "spec": {"type": TYPE, "class": "seed", "providerConfig": config}}))
        .unwrap()
    }

    fn seed(extra: Value) -> Seed {
        let mut spec = json!({"networks": {"nodes": "10.250.0.0/16", "pods": "100.96.0.0/11",
            "services": "100.64.0.0/13", "blockCIDRs": ["169.254.169.254/32"]}});
        if let Some(wg) = extra.get("wireguard") {
            spec["wireguard"] = wg.clone();
        }
        serde_json::from_value(json!({"metadata": {"name": "s1"}, "spec": spec})).unwrap()
    }

    #[test]
    fn more_slots_than_the_release_deploys_are_refused_naming_the_field() {
        let c = seed_config(&seed_ext(json!({"cidr": "192.168.128.0/22", "slots": 2})), &seed(json!({})), None);
        let err = within_release(c.clone().unwrap(), 1).unwrap_err().to_string();
        assert!(err.contains("spec.providerConfig.slots") && err.contains("deploys 1 slot"), "{err}");
        assert_eq!(within_release(c.clone().unwrap(), 2).unwrap(), c.unwrap());
    }

    #[test]
    fn a_slot_without_an_endpoint_names_the_field_and_the_service() {
        assert_eq!(missing_endpoints("kubelink", &[]), None);
        let m = missing_endpoints("kubelink", &[Slot::ALL[1]]).unwrap();
        assert!(m.starts_with("slot 1 has no endpoint"), "{m}");
        assert!(m.contains("Extension garden/kubelink-wireguard spec.providerConfig.slotEndpoints[1]"), "{m}");
        assert!(m.contains("Service kubelink/kubelink-gateway-1") && m.contains("status.loadBalancer.ingress"), "{m}");
        let both = missing_endpoints("kubelink", &Slot::ALL).unwrap();
        assert!(both.contains("slot 0 ") && both.contains("; slot 1 "), "{both}");
    }

    #[test]
    fn a_full_config_reads_back() {
        let ext = seed_ext(json!({"cidr": "192.168.128.0/22", "slots": 2,
            "slotEndpoints": ["gw0.seed.example:51820", "[fd00::1]:51821"], "mtu": 1380}));
        let c = seed_config(&ext, &seed(json!({})), None).unwrap();
        assert_eq!(c.cidr.to_string(), "192.168.128.0/22");
        assert_eq!((c.slots, c.mtu), (2, Some(1380)));
        assert_eq!(c.endpoint(Slot::ALL[1]), Some("[fd00::1]:51821"));
        let c =
            seed_config(&seed_ext(json!({"cidr": "192.168.128.0/22", "slots": 1})), &seed(json!({})), None).unwrap();
        assert_eq!((c.slots, c.endpoints.len(), c.mtu), (1, 1, None));
    }

    #[test]
    fn the_seeds_own_field_is_honoured_when_the_extension_sets_no_cidr() {
        let s = seed(json!({"wireguard": {"enabled": true, "cidr": "192.168.64.0/22"}}));
        let c = seed_config(&seed_ext(json!({})), &s, None).unwrap();
        assert_eq!((c.field.as_str(), c.cidr.to_string().as_str()), ("Seed s1 spec.wireguard.cidr", "192.168.64.0/22"));
        let c = seed_config(&seed_ext(json!({"cidr": "192.168.128.0/22"})), &s, None).unwrap();
        assert_eq!(c.cidr.to_string(), "192.168.128.0/22", "the Extension's own setting wins");
    }

    #[test]
    fn every_error_names_the_field_and_the_fix() {
        let s = seed(json!({}));
        let cases = [
            (json!({}), "spec.providerConfig.cidr is not set; set it to a range"),
            (json!({"cidr": "10.250.1.0/24"}), "overlaps spec.networks.nodes 10.250.0.0/16"),
            (json!({"cidr": "241.0.0.0/22"}), "overlaps Gardener's reserved range 241.0.0.0/8"),
            (json!({"cidr": "fd8f:6d53:b97a:1::/112"}), "reserved VPN transfer range"),
            (json!({"cidr": "192.168.128.0/33"}), "spec.providerConfig.cidr: \"192.168.128.0/33\" is not a valid CIDR"),
            (json!({"cidr": "192.168.128.0/22", "slots": 3}), "spec.providerConfig.slots: \"3\" is invalid: must be 1"),
            (json!({"cidr": "192.168.128.0/22", "slots": "two"}), "spec.providerConfig.slots: invalid type"),
            (json!({"cidr": "192.168.128.0/22", "slotEndpoints": ["gw0"]}), "slotEndpoints[0]: \"gw0\" is invalid"),
            (json!({"cidr": "192.168.128.0/22", "slotEndpoints": ["a:1", "b:0"]}), "the port must be 1 to 65535"),
            (json!({"cidr": "192.168.128.0/22", "slots": 1, "slotEndpoints": ["a:1", "b:1"]}), "at most one per slot"),
            (json!({"cidr": "192.168.128.0/22", "mtu": 600}), "spec.providerConfig.mtu: \"600\" is invalid"),
            (json!({"cidr": "192.168.128.0/22", "banana": 1}), "unknown field `banana`"),
            (json!("cidr"), "spec.providerConfig: invalid type"),
        ];
        for (config, want) in cases {
            let err = seed_config(&seed_ext(config.clone()), &s, None).unwrap_err().to_string();
            assert!(err.contains(want), "{config}: {err}");
            assert!(
                err.contains("Extension garden/kubelink-wireguard") || err.contains("spec.providerConfig"),
                "{err}"
            );
        }
        let err = seed_config(&seed_ext(json!({"cidr": "192.168.128.0/22"})), &s, Some(("parent", "192.168.128.0/24")));
        assert!(err.unwrap_err().to_string().contains("parent seed parent"));
    }
}
