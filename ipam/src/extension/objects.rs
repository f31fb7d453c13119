//! Gardener's extension objects as kubelink reads and writes them: `Extension` and `Cluster`
//! (`extensions.gardener.cloud/v1alpha1`), written by gardenlet on the seed. Only the fields kubelink
//! uses are typed; the CRDs themselves come from Gardener.

use std::collections::BTreeMap;

use kube::CustomResource;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The extension type, and the name gardenlet gives each of its Extension objects.
pub const TYPE: &str = "kubelink-wireguard";
/// `spec.class` of the seed's Extension (unset means a shoot's).
pub const CLASS_SEED: &str = "seed";
/// The seed's namespace of seed-class Extensions.
pub const SEED_NAMESPACE: &str = "garden";
/// kubelink's finalizer on the Extensions it reconciles, so that a deleted one releases its address.
pub const FINALIZER: &str = "extensions.gardener.cloud/kubelink-wireguard";

/// gardenlet's annotations on extension objects (`v1beta1constants.GardenerOperation`,
/// `GardenerTimestamp`) and the operations it asks for.
pub mod annotations {
    pub const OPERATION: &str = "gardener.cloud/operation";
    pub const TIMESTAMP: &str = "gardener.cloud/timestamp";
    pub const RECONCILE: &str = "reconcile";
    pub const MIGRATE: &str = "migrate";
    pub const RESTORE: &str = "restore";
    pub const WAIT_FOR_STATE: &str = "wait-for-state";
}

/// `spec` of an Extension.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "extensions.gardener.cloud",
    version = "v1alpha1",
    kind = "Extension",
    namespaced,
    status = "ExtensionStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionSpec {
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_config: Option<Value>,
}

/// The parts of Gardener's `DefaultStatus` kubelink reads back.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_operation: Option<LastOperation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LastOperation {
    #[serde(default, rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub state: String,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// `spec` of a Cluster (cluster-scoped, named after the shoot's control-plane namespace): the shoot,
/// its seed and cloud profile as gardenlet last wrote them.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(group = "extensions.gardener.cloud", version = "v1alpha1", kind = "Cluster", schema = "disabled")]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    #[serde(default)]
    pub shoot: Value,
    #[serde(default)]
    pub seed: Value,
    #[serde(default)]
    pub cloud_profile: Value,
}

/// What gardenlet asks of one Extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Reconcile,
    Migrate,
    Restore,
    /// gardenlet is still writing the state of a restore: touch nothing.
    WaitForState,
    /// Migrated away (the last operation is a successful Migrate): nothing to do here until a
    /// restore, and a deletion only drops the finalizer (Gardener's extension library does the same).
    Migrated,
    Delete,
}

impl Operation {
    /// The operation an Extension asks for: deletion first, then the annotation; no (or an unknown)
    /// annotation is a reconcile, as in Gardener's extension library.
    pub fn of(ext: &Extension) -> Self {
        if ext.metadata.deletion_timestamp.is_some() {
            return Self::Delete;
        }
        match annotation(ext, annotations::OPERATION) {
            Some(annotations::MIGRATE) => Self::Migrate,
            Some(annotations::RESTORE) => Self::Restore,
            Some(annotations::WAIT_FOR_STATE) => Self::WaitForState,
            _ if ext.is_migrated() => Self::Migrated,
            _ => Self::Reconcile,
        }
    }

    /// `lastOperation.type` as Gardener spells it.
    pub fn type_name(self) -> &'static str {
        match self {
            Self::Reconcile | Self::WaitForState => "Reconcile",
            Self::Migrate | Self::Migrated => "Migrate",
            Self::Restore => "Restore",
            Self::Delete => "Delete",
        }
    }
}

pub fn annotation<'a>(ext: &'a Extension, key: &str) -> Option<&'a str> {
    ext.metadata.annotations.as_ref()?.get(key).map(String::as_str)
}

impl Extension {
    pub fn is_seed_class(&self) -> bool {
        self.spec.class.as_deref() == Some(CLASS_SEED)
    }

    pub fn namespace_name(&self) -> (String, String) {
        (self.metadata.namespace.clone().unwrap_or_default(), self.metadata.name.clone().unwrap_or_default())
    }

    /// The last operation is a successful Migrate.
    pub fn is_migrated(&self) -> bool {
        let last = self.status.as_ref().and_then(|s| s.last_operation.as_ref());
        last.is_some_and(|l| l.type_ == "Migrate" && l.state == "Succeeded")
    }

    pub fn has_finalizer(&self) -> bool {
        self.metadata.finalizers.as_ref().is_some_and(|f| f.iter().any(|f| f == FINALIZER))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ext(meta: Value) -> Extension {
        serde_json::from_value(json!({"apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "Extension",
            "metadata": meta, "spec": {"type": TYPE}}))
        .unwrap()
    }

    #[test]
    fn the_operation_follows_deletion_then_the_annotation() {
        let with = |op: &str| ext(json!({"name": TYPE, "annotations": {annotations::OPERATION: op}}));
        assert_eq!(Operation::of(&ext(json!({"name": TYPE}))), Operation::Reconcile);
        assert_eq!(Operation::of(&with("reconcile")), Operation::Reconcile);
        assert_eq!(Operation::of(&with("migrate")), Operation::Migrate);
        assert_eq!(Operation::of(&with("restore")), Operation::Restore);
        assert_eq!(Operation::of(&with("wait-for-state")), Operation::WaitForState);
        assert_eq!(Operation::of(&with("banana")), Operation::Reconcile);
        let deleted = ext(json!({"name": TYPE, "deletionTimestamp": "2026-01-01T00:00:00Z",
            "annotations": {annotations::OPERATION: "migrate"}}));
        assert_eq!(Operation::of(&deleted), Operation::Delete);
        let mut migrated = ext(json!({"name": TYPE}));
        migrated.status =
            Some(serde_json::from_value(json!({"lastOperation": {"type": "Migrate", "state": "Succeeded"}})).unwrap());
        assert_eq!(Operation::of(&migrated), Operation::Migrated);
        migrated.metadata.annotations = Some([(annotations::OPERATION.to_string(), "restore".to_string())].into());
        assert_eq!(Operation::of(&migrated), Operation::Restore);
    }
}
