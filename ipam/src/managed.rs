//! Delivery of the shoot side the Gardener way: a `ManagedResource` (resources.gardener.cloud) in the
//! shoot's control-plane namespace on the seed, whose referenced Secret carries the objects that
//! gardener-resource-manager applies in the shoot. kubelink's one object there is the Secret that
//! `kubelink shoot` (the vpn-shoot sidecar) mounts, in the shoot's `kube-system`.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::CustomResource;
use kube::api::ObjectMeta;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::contract::{labels, names};

/// The subset of Gardener's ManagedResource that kubelink writes.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[kube(group = "resources.gardener.cloud", version = "v1alpha1", kind = "ManagedResource", namespaced)]
#[serde(rename_all = "camelCase")]
pub struct ManagedResourceSpec {
    pub secret_refs: Vec<SecretRef>,
    /// false: the objects are deleted from the shoot with the ManagedResource.
    #[serde(default)]
    pub keep_objects: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct SecretRef {
    pub name: String,
}

/// The data key of the referenced Secret (one YAML document per key, as Gardener's registry names them).
pub fn objects_key() -> String {
    format!("secret__{}__{}.yaml", names::SHOOT_NAMESPACE, names::SHOOT_SECRET)
}

/// The ManagedResource in `namespace`.
pub fn managed_resource(namespace: &str) -> ManagedResource {
    let spec = ManagedResourceSpec {
        secret_refs: vec![SecretRef { name: names::MANAGED_RESOURCE_SECRET.into() }],
        keep_objects: false,
    };
    let metadata = ObjectMeta {
        name: Some(names::MANAGED_RESOURCE.into()),
        namespace: Some(namespace.into()),
        labels: Some(labels::managed()),
        ..Default::default()
    };
    ManagedResource { metadata, spec }
}

/// The referenced Secret's data: the shoot's Secret (with `data` as the sidecar reads it) as YAML.
pub fn objects_data(shoot_data: &BTreeMap<String, ByteString>) -> BTreeMap<String, ByteString> {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(names::SHOOT_SECRET.into()),
            namespace: Some(names::SHOOT_NAMESPACE.into()),
            labels: Some(labels::managed()),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(shoot_data.clone()),
        ..Default::default()
    };
    let mut doc = serde_json::to_value(&secret).unwrap_or_default();
    doc["apiVersion"] = "v1".into();
    doc["kind"] = "Secret".into();
    let yaml = serde_yaml_ng::to_string(&doc).unwrap_or_default();
    [(objects_key(), ByteString(yaml.into_bytes()))].into()
}

/// The shoot-side Secret's data inside a ManagedResource Secret (what gardener-resource-manager would
/// apply in the shoot); `None` when it is not there or does not decode.
pub fn shoot_data_of(mr_secret: &Secret) -> Option<BTreeMap<String, ByteString>> {
    let yaml = mr_secret.data.as_ref()?.get(&objects_key())?;
    let secret: Secret = serde_yaml_ng::from_slice(&yaml.0).ok()?;
    secret.data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shoot_secret_round_trips_through_the_managed_resource_secret() {
        let data: BTreeMap<String, ByteString> =
            [("address".to_string(), ByteString(b"192.168.128.10/22".to_vec()))].into();
        let objects = objects_data(&data);
        let yaml = String::from_utf8(objects[&objects_key()].0.clone()).unwrap();
        assert!(yaml.contains("kind: Secret") && yaml.contains("namespace: kube-system"), "{yaml}");
        let mr_secret = Secret { data: Some(objects), ..Default::default() };
        assert_eq!(shoot_data_of(&mr_secret), Some(data));
        let mr = managed_resource("shoot--dev--a");
        assert_eq!(mr.spec.secret_refs[0].name, names::MANAGED_RESOURCE_SECRET);
    }
}
