//! The subset of Gardener's `core.gardener.cloud/v1beta1` that kubelink reads and writes.
//!
//! Every struct keeps the fields it does not know in `extra`, so a read-modify-write never drops what
//! Gardener stored. CIDRs stay strings here: a malformed one must be reported by validation, naming the
//! field, instead of failing the whole decode.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::{ClusterResourceScope, NamespaceResourceScope};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use crate::contract::ShootKey;
use crate::contract::labels;

pub const GROUP: &str = "core.gardener.cloud";
pub const VERSION: &str = "v1beta1";
pub const API_VERSION: &str = "core.gardener.cloud/v1beta1";
/// The ranges Gardener reserves (`pkg/apis/core/v1beta1/constants/types_constants.go`, since v1.116):
/// the VPN's IPv6 transfer network and the kube-apiserver and NAT-mapping ranges. The WireGuard CIDR
/// must not overlap any of them. (`192.168.123.0/24`, the old OpenVPN range, is no longer reserved.)
pub const RESERVED_RANGES: [(&str, &str); 6] = [
    ("fd8f:6d53:b97a:1::/96", "Gardener's reserved VPN transfer range"),
    ("240.0.0.0/8", "Gardener's reserved range"),
    ("241.0.0.0/8", "Gardener's reserved range"),
    ("242.0.0.0/8", "Gardener's reserved range"),
    ("243.0.0.0/8", "Gardener's reserved range"),
    ("244.0.0.0/8", "Gardener's reserved range"),
];

type Extra = Map<String, Value>;

macro_rules! gardener_resource {
    ($ty:ident, $kind:literal, $plural:literal, $scope:ty) => {
        impl kube::Resource for $ty {
            type DynamicType = ();
            type Scope = $scope;
            fn kind(_: &()) -> Cow<'_, str> {
                $kind.into()
            }
            fn group(_: &()) -> Cow<'_, str> {
                GROUP.into()
            }
            fn version(_: &()) -> Cow<'_, str> {
                VERSION.into()
            }
            fn plural(_: &()) -> Cow<'_, str> {
                $plural.into()
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Seed {
    #[serde(default = "seed_api_version")]
    pub api_version: String,
    #[serde(default = "seed_kind")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: SeedSpec,
    #[serde(flatten)]
    pub extra: Extra,
}

fn seed_api_version() -> String {
    API_VERSION.into()
}
fn seed_kind() -> String {
    "Seed".into()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeedSpec {
    #[serde(default)]
    pub networks: SeedNetworks,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard: Option<WireguardSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<SeedSettings>,
    /// Gardener's real API: `spec.extensions[] {type, providerConfig}`. On a Gardener without the
    /// GEP's `spec.wireguard`, kubelink reads an entry of type [`EXTENSION_TYPE`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<Extension>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// How kubelink's settings are written, for messages about them.
pub const SETTINGS_FIX: &str = "e.g. {enabled: true, cidr: \"192.168.128.0/22\"}";

/// The `spec.extensions[].type` whose `providerConfig` holds kubelink's settings `{enabled, cidr}`.
pub const EXTENSION_TYPE: &str = "kubelink-wireguard";

/// One `spec.extensions[]` entry of a Seed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Extension {
    #[serde(default, rename = "type")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_config: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeedNetworks {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shoot_defaults: Option<ShootNetworkDefaults>,
    #[serde(default, rename = "blockCIDRs", skip_serializing_if = "Vec::is_empty")]
    pub block_cidrs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_families: Vec<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShootNetworkDefaults {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeedSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard: Option<WireguardSettings>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireguardSettings {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Seed {
    /// kubelink's settings with the field path they came from: `spec.wireguard` (the GEP's API), else
    /// `spec.settings.wireguard` (GEP-14's other spelling), else the `providerConfig` of the
    /// `spec.extensions[]` entry of type [`EXTENSION_TYPE`] (Gardener's real API). A providerConfig
    /// that does not decode is an error naming its field.
    pub fn wireguard(&self) -> Result<Option<(String, WireguardSettings)>, crate::IpamError> {
        if let Some(wg) = &self.spec.wireguard {
            return Ok(Some(("spec.wireguard".into(), wg.clone())));
        }
        if let Some(wg) = self.spec.settings.as_ref().and_then(|s| s.wireguard.as_ref()) {
            return Ok(Some(("spec.settings.wireguard".into(), wg.clone())));
        }
        let Some((i, ext)) = self.spec.extensions.iter().enumerate().find(|(_, e)| e.type_ == EXTENSION_TYPE) else {
            return Ok(None);
        };
        let field = format!("spec.extensions[{i}].providerConfig");
        let config = ext.provider_config.clone().unwrap_or(Value::Object(Map::new()));
        match crate::decode::decode_value::<WireguardSettings>(&config) {
            Ok(wg) => Ok(Some((field, wg))),
            Err((path, reason)) => Err(crate::IpamError::WrongType {
                object: format!("Seed {}", self.metadata.name.as_deref().unwrap_or_default()),
                field: if path.starts_with('(') { field } else { format!("{field}.{path}") },
                reason,
                fix: SETTINGS_FIX.into(),
            }),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Shoot {
    #[serde(default = "shoot_api_version")]
    pub api_version: String,
    #[serde(default = "shoot_kind")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ShootSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

fn shoot_api_version() -> String {
    API_VERSION.into()
}
fn shoot_kind() -> String {
    "Shoot".into()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShootSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networking: Option<ShootNetworking>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShootNetworking {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Shoot {
    pub fn key(&self) -> ShootKey {
        ShootKey::of(&self.metadata)
    }

    /// The annotation's override: `Ok(None)` when absent, an error naming it when it is not a boolean.
    pub fn tunnel_override(&self) -> Result<Option<bool>, crate::IpamError> {
        let Some(value) = self.metadata.annotations.as_ref().and_then(|a| a.get(labels::TUNNEL)) else {
            return Ok(None);
        };
        match value.trim() {
            "true" => Ok(Some(true)),
            "false" => Ok(Some(false)),
            _ => Err(crate::IpamError::InvalidValue(crate::error::InvalidValue {
                field: format!("metadata.annotations[{}]", labels::TUNNEL),
                value: value.clone(),
                reason: "must be \"true\" or \"false\"".into(),
            })),
        }
    }
}

gardener_resource!(Seed, "Seed", "seeds", ClusterResourceScope);
gardener_resource!(Shoot, "Shoot", "shoots", NamespaceResourceScope);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Raw, split, typed};
    use serde_json::json;

    #[test]
    fn a_bad_shoot_is_skipped_by_name_and_field_and_the_rest_decode() {
        let list = json!([
            {"metadata": {"name": "a", "namespace": "garden-dev"}, "spec": {"seedName": "s"}},
            {"metadata": {"name": "bad", "namespace": "garden-dev", "uid": "u1"}, "spec": {"seedName": "s", "networking": {"pods": 5}}},
            {"metadata": {"name": "broken-meta", "namespace": "garden-dev", "labels": {"x": 1}}, "spec": {}},
            {"metadata": {"name": "c", "namespace": "garden-dev"}},
        ]);
        let raws: Vec<Raw<Shoot>> = serde_json::from_value(list).unwrap();
        let (good, skipped) = split(raws);
        assert_eq!(good.iter().map(|s| s.key().name).collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(skipped.len(), 2);
        assert_eq!(
            (skipped[0].object().as_str(), skipped[0].field.as_str()),
            ("Shoot garden-dev/bad", "spec.networking.pods")
        );
        assert_eq!(skipped[0].uid.as_deref(), Some("u1"));
        assert!(skipped[0].to_string().contains("expected a string"), "{}", skipped[0]);
        assert_eq!((skipped[1].name.as_str(), skipped[1].field.as_str()), ("broken-meta", "metadata.labels.x"));
    }

    #[test]
    fn wrong_typed_seed_fields_are_named_by_path() {
        for (spec, field) in [
            (json!({"wireguard": {"cidr": 5}}), "spec.wireguard.cidr"),
            (json!({"wireguard": {"enabled": "yes"}}), "spec.wireguard.enabled"),
            (json!({"networks": {"blockCIDRs": ["10.0.0.0/8", 7]}}), "spec.networks.blockCIDRs[1]"),
        ] {
            let raw: Raw<Seed> = Raw::new(json!({"metadata": {"name": "s"}, "spec": spec}));
            let skipped = typed(&raw).unwrap_err();
            assert_eq!(skipped.field, field);
            assert!(!skipped.reason.contains("column"), "{}", skipped.reason);
        }
    }

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let doc = json!({
            "apiVersion": API_VERSION, "kind": "Seed",
            "metadata": {"name": "s"},
            "spec": {
                "networks": {"pods": "10.1.0.0/16", "blockCIDRs": ["169.254.169.254/32"], "future": 1},
                "settings": {"wireguard": {"enabled": true, "cidr": "192.168.128.0/22"}, "scheduling": {"visible": true}},
                "provider": {"type": "aws"},
            },
            "status": {"gardener": {"version": "1.100"}},
        });
        let seed: Seed = serde_json::from_value(doc.clone()).unwrap();
        assert_eq!(seed.wireguard().unwrap().unwrap().0, "spec.settings.wireguard");
        assert_eq!(serde_json::to_value(&seed).unwrap(), doc);
    }

    #[test]
    fn settings_come_from_an_extension_entry_on_a_gardener_without_spec_wireguard() {
        let with = |config: Value| -> Seed {
            serde_json::from_value(json!({"metadata": {"name": "s"}, "spec": {"extensions": [
                {"type": "other", "providerConfig": {"cidr": 1}},
                {"type": EXTENSION_TYPE, "providerConfig": config},
            ]}}))
            .unwrap()
        };
        let (field, wg) = with(json!({"enabled": true, "cidr": "192.168.128.0/22"})).wireguard().unwrap().unwrap();
        assert_eq!(field, "spec.extensions[1].providerConfig");
        assert!(wg.enabled);
        assert_eq!(wg.cidr.as_deref(), Some("192.168.128.0/22"));
        let err = with(json!({"enabled": "yes"})).wireguard().unwrap_err().to_string();
        assert!(err.contains("spec.extensions[1].providerConfig") && err.contains("enabled"), "{err}");
        let none: Seed = serde_json::from_value(json!({"metadata": {"name": "s"}})).unwrap();
        assert_eq!(none.wireguard(), Ok(None));
    }

    #[test]
    fn the_tunnel_annotation_must_be_a_boolean() {
        let with = |v: &str| -> Shoot {
            serde_json::from_value(json!({"metadata": {"name": "a", "annotations": {labels::TUNNEL: v}}})).unwrap()
        };
        assert_eq!(with("true").tunnel_override(), Ok(Some(true)));
        assert_eq!(with("false").tunnel_override(), Ok(Some(false)));
        let err = with("yes please").tunnel_override().unwrap_err().to_string();
        assert!(err.contains(labels::TUNNEL) && err.contains("\"true\" or \"false\""), "{err}");
    }
}
