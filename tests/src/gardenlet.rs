//! A stand-in for gardenlet's part in an extension's life, for tests on a real kube-apiserver with
//! Gardener's CRDs: gardenlet cannot run here, so this does what gardenlet v1.149's code does to an
//! `Extension` of one type and to the objects around it, and no more. It knows nothing of kubelink:
//! Gardener's objects are plain JSON.
//!
//! | step | gardener v1.149 |
//! |---|---|
//! | [`extension_ready`] | `checkExtensionObject` (`pkg/utils/kubernetes/health/extensions.go`) |
//! | [`Gardenlet::prepare_shoot`] | `SyncClusterResourceToSeed` (`pkg/extensions/cluster.go`), `Botanist.DeployControlPlaneNamespace` |
//! | [`Gardenlet::reconcile_extension`] | `extension.deploy` + `WaitUntilExtensionObjectReady` |
//! | [`Gardenlet::migrate`] | `MigrateExtensionObject`, `WaitUntilExtensionObjectMigrated`, `shootstate.computeExtensionsDataAndResources`, `DeleteExtensionObject`, `WaitUntilExtensionObjectDeleted`, `Botanist.WaitUntilShootManagedResourcesDeleted` |
//! | [`Gardenlet::restore`] | `RestoreExtensionWithDeployFunction` (`pkg/extensions/customresources.go`) |
//!
//! What it deliberately leaves out is listed in docs/testing.md ("gardenlet stand-in").

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::core::{ApiResource, GroupVersionKind};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// `gardener.cloud/operation`: what gardenlet asks of the extension.
pub const OPERATION: &str = "gardener.cloud/operation";
/// `gardener.cloud/timestamp`: when gardenlet asked.
pub const TIMESTAMP: &str = "gardener.cloud/timestamp";
/// `confirmation.gardener.cloud/deletion`: set to `"true"` before every delete.
pub const CONFIRM_DELETION: &str = "confirmation.gardener.cloud/deletion";
/// The values of [`OPERATION`].
pub mod operation {
    pub const RECONCILE: &str = "reconcile";
    pub const MIGRATE: &str = "migrate";
    pub const RESTORE: &str = "restore";
    pub const WAIT_FOR_STATE: &str = "wait-for-state";
}
/// Prefix of the control-plane namespace's label per required extension type.
pub const EXTENSION_LABEL_PREFIX: &str = "extensions.gardener.cloud/";

const EXTENSIONS_API: &str = "extensions.gardener.cloud/v1alpha1";
const CORE_API: &str = "core.gardener.cloud/v1beta1";

// ---------------------------------------------------------------------------------------------
// Readiness, as gardenlet judges it (pure).

/// Why an Extension is not ready, in gardenlet's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    /// The Extension does not exist (gardenlet keeps waiting).
    NotFound,
    /// The timestamp annotation is not the one this gardenlet wrote last (`ObjectHasAnnotationWithValue`).
    TimestampAnnotation { expected: String, actual: Option<String> },
    /// `status.lastError` is set.
    LastError { description: String, codes: Vec<String> },
    /// `status.observedGeneration` differs from `metadata.generation`.
    GenerationOutdated { observed: i64, generation: i64 },
    /// The operation annotation is still there: the extension has not picked the request up.
    OperationPending(String),
    /// No `status.lastOperation`.
    NoLastOperation,
    /// `status.lastOperation.state` is not `Succeeded`.
    NotSucceeded(String),
    /// The timestamp annotation is no RFC 3339 time.
    BadTimestamp { value: String, reason: String },
    /// `status.lastOperation.lastUpdateTime` is older than the request (to the second).
    NotReconciledSince { requested: String, last_update: String },
    /// A field has the wrong type, or a time is unreadable (gardenlet would fail to decode the object).
    Malformed(String),
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotReady::NotFound => write!(f, "the Extension does not exist"),
            NotReady::TimestampAnnotation { expected, actual: None } => {
                write!(f, "object does not have {TIMESTAMP:?} annotation (expected {expected:?})")
            }
            NotReady::TimestampAnnotation { expected, actual: Some(actual) } => {
                write!(f, "object's {TIMESTAMP:?} annotation is not {expected:?} but {actual:?}")
            }
            NotReady::LastError { description, codes } if codes.is_empty() => {
                write!(f, "error during reconciliation: {description}")
            }
            NotReady::LastError { description, codes } => {
                write!(f, "error during reconciliation: {description} (codes {})", codes.join(", "))
            }
            NotReady::GenerationOutdated { observed, generation } => {
                write!(f, "observed generation outdated ({observed}/{generation})")
            }
            NotReady::OperationPending(op) => write!(f, "gardener operation {op:?} is not yet picked up by controller"),
            NotReady::NoLastOperation => write!(f, "extension did not record a last operation yet"),
            NotReady::NotSucceeded(state) => write!(f, "extension state is not succeeded but {state}"),
            NotReady::BadTimestamp { value, reason } => {
                write!(f, "cannot parse {TIMESTAMP} annotation {value:?}: {reason}")
            }
            NotReady::NotReconciledSince { requested, last_update } => write!(
                f,
                "extension is not reconciled yet - reconciliation requested at {requested}, last update time is: {last_update}"
            ),
            NotReady::Malformed(what) => write!(f, "malformed object: {what}"),
        }
    }
}

impl std::error::Error for NotReady {}

/// Whether an extension object is ready, by gardenlet's rule (`checkExtensionObject`), checked in
/// its order: no `lastError`; `observedGeneration == generation`; no operation annotation; a
/// `lastOperation` in state `Succeeded`; and, when the timestamp annotation is there, a
/// `lastUpdateTime` not before it (truncated to the second).
pub fn extension_ready(obj: &Value) -> Result<(), NotReady> {
    let status = &obj["status"];
    if let Some(last_error) = status.get("lastError").filter(|e| !e.is_null()) {
        let description = last_error["description"].as_str().unwrap_or_default().to_string();
        let codes = last_error["codes"]
            .as_array()
            .map(|c| c.iter().filter_map(Value::as_str).map(String::from).collect())
            .unwrap_or_default();
        return Err(NotReady::LastError { description, codes });
    }
    let generation = int_field(obj, "/metadata/generation")?;
    let observed = int_field(obj, "/status/observedGeneration")?;
    if observed != generation {
        return Err(NotReady::GenerationOutdated { observed, generation });
    }
    if let Some(op) = obj["metadata"]["annotations"].get(OPERATION) {
        return Err(NotReady::OperationPending(op.as_str().unwrap_or_default().to_string()));
    }
    let last_operation = match status.get("lastOperation") {
        Some(op) if !op.is_null() => op,
        _ => return Err(NotReady::NoLastOperation),
    };
    let state = last_operation["state"].as_str().unwrap_or_default();
    if state != "Succeeded" {
        return Err(NotReady::NotSucceeded(state.to_string()));
    }
    let Some(requested) = obj["metadata"]["annotations"].get(TIMESTAMP) else { return Ok(()) };
    let requested = requested.as_str().unwrap_or_default();
    let requested_at: Timestamp = requested
        .parse()
        .map_err(|e: jiff::Error| NotReady::BadTimestamp { value: requested.to_string(), reason: e.to_string() })?;
    let requested_at = Timestamp::from_second(requested_at.as_second()).expect("a truncated timestamp is in range");
    // An absent lastUpdateTime is Go's zero time, 0001-01-01T00:00:00Z: older than any request.
    let last_update = match last_operation["lastUpdateTime"].as_str() {
        Some(t) => t.parse::<Timestamp>().map_err(|e| NotReady::Malformed(format!("lastUpdateTime {t:?}: {e}")))?,
        None => Timestamp::from_second(-62_135_596_800).expect("year 1 is in range"),
    };
    if requested_at > last_update {
        return Err(NotReady::NotReconciledSince {
            requested: seconds(requested_at),
            last_update: seconds(last_update),
        });
    }
    Ok(())
}

/// [`extension_ready`] after the check gardenlet puts first while it waits: the timestamp
/// annotation must be the one it wrote last (`expected`), so an older, ready state does not count.
pub fn extension_ready_since(obj: &Value, expected: Option<&str>) -> Result<(), NotReady> {
    if let Some(expected) = expected {
        let actual = obj["metadata"]["annotations"][TIMESTAMP].as_str();
        if actual != Some(expected) {
            return Err(NotReady::TimestampAnnotation {
                expected: expected.to_string(),
                actual: actual.map(String::from),
            });
        }
    }
    extension_ready(obj)
}

/// Whether an extension object is migrated (`WaitUntilExtensionObjectMigrated`): its last operation
/// is a `Migrate` that `Succeeded`. A missing object counts as migrated too; that is for the caller.
pub fn extension_migrated(obj: &Value) -> bool {
    let op = &obj["status"]["lastOperation"];
    op["type"] == "Migrate" && op["state"] == "Succeeded"
}

/// A time as gardenlet writes the timestamp annotation: Go's `RFC3339Nano` in UTC (fraction
/// without trailing zeros, none when zero).
pub fn gardener_timestamp(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.fZ").to_string()
}

/// Go's `RFC3339` in UTC, as gardenlet's messages print times.
fn seconds(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn int_field(obj: &Value, pointer: &str) -> Result<i64, NotReady> {
    match obj.pointer(pointer) {
        None | Some(Value::Null) => Ok(0),
        Some(v) => v.as_i64().ok_or_else(|| NotReady::Malformed(format!("{pointer} is {v}"))),
    }
}

// ---------------------------------------------------------------------------------------------
// The shoot, its seed and its cloud profile, as the garden serves them.

/// A realistic minimal Shoot (`core.gardener.cloud/v1beta1`) as the garden serves it to gardenlet:
/// one worker pool, its networks, hibernation, annotations and `spec.extensions`, and the status
/// gardenlet reads (`uid`, `technicalID`, `seedName`, `hibernated`).
#[derive(Debug, Clone)]
pub struct ShootFixture {
    pub project: String,
    pub name: String,
    pub seed: String,
    pub provider_type: String,
    pub networking_type: String,
    pub nodes: Option<String>,
    pub pods: Option<String>,
    pub services: Option<String>,
    pub hibernated: bool,
    pub annotations: Map<String, Value>,
    /// `spec.extensions[]` entries (`{"type": ..., "providerConfig": ..., "disabled": ...}`).
    pub extensions: Vec<Value>,
}

impl ShootFixture {
    /// Shoot `name` of `project` on `seed`, with Gardener's default shoot networks.
    pub fn new(project: &str, name: &str, seed: &str) -> Self {
        ShootFixture {
            project: project.into(),
            name: name.into(),
            seed: seed.into(),
            provider_type: "local".into(),
            networking_type: "calico".into(),
            nodes: Some("10.250.0.0/16".into()),
            pods: Some("100.96.0.0/11".into()),
            services: Some("100.64.0.0/13".into()),
            hibernated: false,
            annotations: Map::new(),
            extensions: Vec::new(),
        }
    }

    /// Adds a `spec.extensions[]` entry of `ext_type`.
    pub fn with_extension(mut self, ext_type: &str, provider_config: Option<Value>) -> Self {
        self.extensions.push(extension_entry(ext_type, provider_config));
        self
    }

    /// The Shoot as JSON.
    pub fn to_json(&self) -> Value {
        let uid = fake_uid(&format!("shoot/{}/{}", self.project, self.name));
        let mut networking = json!({"type": self.networking_type, "ipFamilies": ["IPv4"]});
        for (key, cidr) in [("nodes", &self.nodes), ("pods", &self.pods), ("services", &self.services)] {
            if let Some(cidr) = cidr {
                networking[key] = json!(cidr);
            }
        }
        json!({
            "apiVersion": CORE_API,
            "kind": "Shoot",
            "metadata": {
                "name": self.name,
                "namespace": format!("garden-{}", self.project),
                "uid": uid,
                "generation": 1,
                "annotations": self.annotations,
            },
            "spec": {
                "cloudProfile": {"kind": "CloudProfile", "name": self.provider_type},
                "credentialsBindingName": self.provider_type,
                "region": "local",
                "seedName": self.seed,
                "purpose": "evaluation",
                "kubernetes": {"version": "1.34.3"},
                "networking": networking,
                "provider": {
                    "type": self.provider_type,
                    "workers": [{
                        "name": "worker",
                        "machine": {"type": "local", "image": {"name": "local", "version": "1.0.0"}},
                        "minimum": 1,
                        "maximum": 2,
                        "zones": ["0"],
                    }],
                },
                "hibernation": {"enabled": self.hibernated},
                "extensions": self.extensions,
            },
            "status": {
                "uid": uid,
                "technicalID": format!("shoot--{}--{}", self.project, self.name),
                "seedName": self.seed,
                "hibernated": self.hibernated,
            },
        })
    }
}

/// A `spec.extensions[]` entry of a Shoot or Seed.
fn extension_entry(ext_type: &str, provider_config: Option<Value>) -> Value {
    let mut entry = json!({"type": ext_type});
    if let Some(config) = provider_config {
        entry["providerConfig"] = config;
    }
    entry
}

/// A realistic minimal Seed (`core.gardener.cloud/v1beta1`): provider, networks, ingress and
/// `spec.extensions[]`.
#[derive(Debug, Clone)]
pub struct SeedFixture {
    pub name: String,
    pub provider_type: String,
    /// `spec.extensions[]` entries.
    pub extensions: Vec<Value>,
    /// `spec.backup` when set (the namespace's backup-provider label follows it).
    pub backup: Option<Value>,
}

impl SeedFixture {
    pub fn new(name: &str) -> Self {
        SeedFixture { name: name.into(), provider_type: "local".into(), extensions: Vec::new(), backup: None }
    }

    /// Adds a `spec.extensions[]` entry of `ext_type`.
    pub fn with_extension(mut self, ext_type: &str, provider_config: Option<Value>) -> Self {
        self.extensions.push(extension_entry(ext_type, provider_config));
        self
    }

    /// The Seed as JSON.
    pub fn to_json(&self) -> Value {
        let mut spec = json!({
            "provider": {"type": self.provider_type, "region": "local"},
            "networks": {"nodes": "172.18.0.0/16", "pods": "10.1.0.0/16", "services": "10.2.0.0/16",
                         "ipFamilies": ["IPv4"]},
            "ingress": {"domain": format!("ingress.{}.seed.local.gardener.cloud", self.name),
                        "controller": {"kind": "nginx"}},
            "extensions": self.extensions,
        });
        if let Some(backup) = &self.backup {
            spec["backup"] = backup.clone();
        }
        json!({
            "apiVersion": CORE_API,
            "kind": "Seed",
            "metadata": {"name": self.name, "uid": fake_uid(&format!("seed/{}", self.name)), "generation": 1},
            "spec": spec,
        })
    }
}

/// A minimal CloudProfile named `name` for `provider_type`, offering what [`ShootFixture`] uses.
pub fn cloud_profile_json(name: &str, provider_type: &str) -> Value {
    json!({
        "apiVersion": CORE_API,
        "kind": "CloudProfile",
        "metadata": {"name": name},
        "spec": {
            "type": provider_type,
            "kubernetes": {"versions": [{"version": "1.34.3"}]},
            "machineImages": [{"name": "local", "versions": [{"version": "1.0.0"}]}],
            "machineTypes": [{"name": "local", "cpu": "1", "gpu": "0", "memory": "1Gi", "usable": true}],
            "regions": [{"name": "local", "zones": [{"name": "0"}]}],
        },
    })
}

/// A stable made-up UID, so the same fixture always has the same one.
fn fake_uid(seed: &str) -> String {
    // FNV-1a, twice with different bases: 128 bits shaped as a version-4 UUID.
    let fnv = |basis: u64| seed.bytes().fold(basis, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let (a, b) = (fnv(0xcbf2_9ce4_8422_2325), fnv(0x8422_2325_cbf2_9ce4));
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

/// What gardenlet knows of a shoot when it prepares the seed for it.
#[derive(Debug, Clone)]
pub struct ShootInput {
    /// The project's name (`shoot--<project>--<name>` when the Shoot has no `status.technicalID`).
    pub project: String,
    /// The Shoot (`core.gardener.cloud/v1beta1`).
    pub shoot: Value,
    /// The Seed (`core.gardener.cloud/v1beta1`).
    pub seed: Value,
    /// The CloudProfile (`core.gardener.cloud/v1beta1`).
    pub cloud_profile: Value,
    /// Extension types whose ControllerRegistration has `autoEnable: [shoot]` (gardenlet reads them
    /// from the garden; the shoot's `spec.extensions` can disable them).
    pub auto_enabled: Vec<String>,
}

impl ShootInput {
    /// `shoot` on `seed`, with [`cloud_profile_json`] for the profile the Shoot names.
    pub fn new(project: &str, shoot: Value, seed: Value) -> Self {
        let profile = shoot["spec"]["cloudProfile"]["name"].as_str().unwrap_or("local").to_string();
        let provider = shoot["spec"]["provider"]["type"].as_str().unwrap_or("local").to_string();
        ShootInput {
            project: project.into(),
            cloud_profile: cloud_profile_json(&profile, &provider),
            shoot,
            seed,
            auto_enabled: Vec::new(),
        }
    }

    /// From the fixtures.
    pub fn from_fixtures(shoot: &ShootFixture, seed: &SeedFixture) -> Self {
        ShootInput::new(&shoot.project, shoot.to_json(), seed.to_json())
    }

    /// The control-plane namespace: the Shoot's `status.technicalID`, else `shoot--<project>--<name>`
    /// (`ComputeTechnicalID`).
    pub fn control_plane_namespace(&self) -> Result<String, Error> {
        if let Some(id) = self.shoot["status"]["technicalID"].as_str().filter(|id| !id.is_empty()) {
            return Ok(id.to_string());
        }
        let name = self.shoot["metadata"]["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| Error::Invalid("the Shoot has no metadata.name".into()))?;
        Ok(format!("shoot--{}--{name}", self.project))
    }

    /// The extension types the namespace is labelled with (`getShootRequiredExtensionTypes`): the
    /// auto-enabled ones, then each `spec.extensions[]` entry added or, when `disabled`, removed.
    pub fn required_extension_types(&self) -> BTreeSet<String> {
        let mut types: BTreeSet<String> = self.auto_enabled.iter().cloned().collect();
        for ext in self.shoot["spec"]["extensions"].as_array().into_iter().flatten() {
            let Some(t) = ext["type"].as_str() else { continue };
            if ext["disabled"].as_bool() == Some(true) {
                types.remove(t);
            } else {
                types.insert(t.to_string());
            }
        }
        types
    }
}

/// The control-plane namespace's labels and annotations as `DeployControlPlaneNamespace` sets them
/// on `namespace` (the existing object, or a new one). Zones are not picked (see docs/testing.md).
fn label_control_plane_namespace(namespace: &mut Value, input: &ShootInput) {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let seed_provider = text(&input.seed["spec"]["provider"]["type"]);
    let metadata = object_entry(namespace, "metadata");
    let annotations = entry(metadata, "annotations");
    annotations.insert("shoot.gardener.cloud/uid".into(), json!(text(&input.shoot["status"]["uid"])));
    let failure_tolerance = text(&input.shoot["spec"]["controlPlane"]["highAvailability"]["failureTolerance"]["type"]);
    annotations.insert(
        "high-availability-config.resources.gardener.cloud/failure-tolerance-type".into(),
        json!(failure_tolerance),
    );

    let metadata = object_entry(namespace, "metadata");
    let labels = entry(metadata, "labels");
    labels.insert("gardener.cloud/role".into(), json!("shoot"));
    labels.insert("seed.gardener.cloud/provider".into(), json!(seed_provider));
    labels.insert("shoot.gardener.cloud/provider".into(), json!(text(&input.shoot["spec"]["provider"]["type"])));
    if let Some(networking) = input.shoot["spec"]["networking"]["type"].as_str() {
        labels.insert("networking.shoot.gardener.cloud/provider".into(), json!(networking));
    }
    labels.retain(|k, _| !k.starts_with(EXTENSION_LABEL_PREFIX));
    for t in input.required_extension_types() {
        labels.insert(format!("{EXTENSION_LABEL_PREFIX}{t}"), json!("true"));
    }
    let backup = match &input.seed["spec"]["backup"] {
        Value::Null => seed_provider,
        backup => text(&backup["provider"]),
    };
    labels.insert("backup.gardener.cloud/provider".into(), json!(backup));
    labels.insert("pod-security.kubernetes.io/enforce".into(), json!("privileged"));
    labels.insert("high-availability-config.resources.gardener.cloud/consider".into(), json!("true"));
}

/// A garden object as gardenlet embeds it in the Cluster: `apiVersion` and `kind` set, no
/// `managedFields`.
fn embedded(object: &Value, kind: &str) -> Value {
    let mut object = object.clone();
    if let Some(o) = object.as_object_mut() {
        o.insert("apiVersion".into(), json!(CORE_API));
        o.insert("kind".into(), json!(kind));
    }
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("managedFields");
    }
    object
}

// ---------------------------------------------------------------------------------------------
// What the ShootState carries of an Extension.

/// `autoscaling/v1` CrossVersionObjectReference, as `status.resources[].resourceRef` and the
/// ShootState's `spec.resources[]` name an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    #[serde(default)]
    pub api_version: String,
    pub kind: String,
    pub name: String,
}

/// One `status.resources[]` entry of an extension object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamedResourceReference {
    pub name: String,
    pub resource_ref: ObjectRef,
}

/// The ShootState's `spec.extensions[]` entry of an extension object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionResourceState {
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<NamedResourceReference>,
}

/// The ShootState's `spec.resources[]` entry: a referenced object without its system metadata, or
/// `null` when it was missing (gardenlet records it so; restoring it writes an object with no data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceData {
    #[serde(flatten)]
    pub reference: ObjectRef,
    pub data: Value,
}

/// What gardenlet persists of one Extension into the ShootState when the shoot leaves a seed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MigratedState {
    /// `None` when gardenlet records nothing: no `status.state` and no `status.resources`.
    pub extension: Option<ExtensionResourceState>,
    /// The objects `status.resources` references.
    pub resources: Vec<ResourceData>,
}

impl MigratedState {
    /// As the ShootState's `spec` would hold it (`extensions` and `resources`).
    pub fn shoot_state_spec(&self) -> Value {
        json!({"extensions": self.extension.iter().collect::<Vec<_>>(), "resources": self.resources})
    }
}

/// Metadata fields gardenlet drops from a referenced object (`systemMetadataFields`).
const SYSTEM_METADATA: [&str; 8] = [
    "ownerReferences",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
];

fn filter_metadata(content: &Value, extra: &[&str]) -> Value {
    let mut content = content.clone();
    if let Some(metadata) = content.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in SYSTEM_METADATA.iter().chain(extra) {
            metadata.remove(*field);
        }
    }
    content
}

/// `mergeObjectContents`: the persisted object's metadata merged into the existing one, its
/// `spec`, `data` and `stringData` replacing the existing ones (absent: removed). Nothing else
/// (not a Secret's `type`) is taken.
fn merge_object_contents(dest: &mut Value, src: &Value) {
    let Some(dest) = dest.as_object_mut() else { return };
    if let Some(src_metadata) = src.get("metadata").and_then(Value::as_object) {
        let merged = match dest.get("metadata").and_then(Value::as_object) {
            Some(dest_metadata) => merge_maps(dest_metadata, src_metadata),
            None => src_metadata.clone(),
        };
        dest.insert("metadata".into(), Value::Object(merged));
    }
    for key in ["spec", "data", "stringData"] {
        match src.get(key) {
            Some(v) => {
                dest.insert(key.into(), v.clone());
            }
            None => {
                dest.remove(key);
            }
        }
    }
}

/// `utils.MergeMaps`: `b` over `a`, maps merged key by key, anything else replaced.
fn merge_maps(a: &Map<String, Value>, b: &Map<String, Value>) -> Map<String, Value> {
    let mut merged = a.clone();
    for (k, v) in b {
        let value = match (a.get(k), v) {
            (Some(Value::Object(existing)), Value::Object(new)) => Value::Object(merge_maps(existing, new)),
            _ => v.clone(),
        };
        merged.insert(k.clone(), value);
    }
    merged
}

// ---------------------------------------------------------------------------------------------
// Errors.

/// What did not happen.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action}: {source}")]
    Api {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error("Extension {namespace}/{name} did not become ready within {waited:?}: {reason}")]
    NotReady { namespace: String, name: String, waited: Duration, reason: NotReady },
    #[error("Extension {namespace}/{name} still reports an error after {waited:?} (gardenlet gives up then): {reason}")]
    Failed { namespace: String, name: String, waited: Duration, reason: NotReady },
    #[error("Extension {namespace}/{name} was not migrated within {waited:?}: last operation {last_operation}")]
    NotMigrated { namespace: String, name: String, waited: Duration, last_operation: Value },
    #[error("Extension {namespace}/{name} is still present after {waited:?}{}",
        .last_error.as_ref().map(|e| format!(", last observed error: {e}")).unwrap_or_default())]
    NotDeleted { namespace: String, name: String, waited: Duration, last_error: Option<String> },
    #[error("shoot ManagedResources in {namespace} still present after {waited:?}: {names:?}")]
    ManagedResourcesRemain { namespace: String, waited: Duration, names: Vec<String> },
    /// gardenlet persists the ShootState in a branch of its migrate flow that is not ordered after
    /// the Extension's migration: what reaches the destination depends on timing.
    #[error(
        "Extension {namespace}/{name} changed what the ShootState records while migrating (gardenlet may persist either): before {before}, after {after}"
    )]
    StateChangedByMigrate { namespace: String, name: String, before: Value, after: Value },
    #[error("{0}")]
    Invalid(String),
}

fn during(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let action = action.into();
    move |source| Error::Api { action, source }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_not_found())
}

// ---------------------------------------------------------------------------------------------
// The stand-in.

/// How often and how long the stand-in polls. gardenlet polls every 5 s; the tests poll faster.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub interval: Duration,
    /// How long every wait lasts at most (gardenlet: 3 min for an Extension, `DefaultTimeout`).
    pub timeout: Duration,
    /// After this long a `lastError` ends the wait for readiness (gardenlet: 30 s,
    /// `DefaultSevereThreshold`); other reasons wait for the timeout.
    pub severe_threshold: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            interval: Duration::from_millis(200),
            timeout: Duration::from_secs(180),
            severe_threshold: Duration::from_secs(30),
        }
    }
}

/// gardenlet for one seed: one client to that seed's API server.
pub struct Gardenlet {
    client: kube::Client,
    timing: Timing,
    /// The timestamp this gardenlet last wrote on each Extension (namespace, name): gardenlet keeps
    /// the object it deployed in memory and waits for that timestamp.
    written: Mutex<HashMap<(String, String), String>>,
}

impl Gardenlet {
    pub fn new(client: kube::Client) -> Self {
        Gardenlet { client, timing: Timing::default(), written: Mutex::default() }
    }

    pub fn with_timing(mut self, timing: Timing) -> Self {
        self.timing = timing;
        self
    }

    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    fn extensions(&self, namespace: &str) -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk("extensions.gardener.cloud", "v1alpha1", "Extension");
        Api::namespaced_with(self.client.clone(), namespace, &ApiResource::from_gvk_with_plural(&gvk, "extensions"))
    }

    fn clusters(&self) -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk("extensions.gardener.cloud", "v1alpha1", "Cluster");
        Api::all_with(self.client.clone(), &ApiResource::from_gvk_with_plural(&gvk, "clusters"))
    }

    fn managed_resources(&self, namespace: &str) -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk("resources.gardener.cloud", "v1alpha1", "ManagedResource");
        Api::namespaced_with(
            self.client.clone(),
            namespace,
            &ApiResource::from_gvk_with_plural(&gvk, "managedresources"),
        )
    }

    fn namespaces(&self) -> Api<DynamicObject> {
        Api::all_with(self.client.clone(), &ApiResource::erase::<k8s_openapi::api::core::v1::Namespace>(&()))
    }

    fn remember(&self, namespace: &str, name: &str, timestamp: &str) {
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        written.insert((namespace.to_string(), name.to_string()), timestamp.to_string());
    }

    fn remembered(&self, namespace: &str, name: &str) -> Option<String> {
        let written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        written.get(&(namespace.to_string(), name.to_string())).cloned()
    }

    /// Prepares the seed for a shoot as gardenlet's shoot reconciliation starts: the `Cluster`
    /// (`SyncClusterResourceToSeed`: named after the control-plane namespace, `spec.shoot`,
    /// `spec.seed`, `spec.cloudProfile`), then the control-plane namespace with gardenlet's labels
    /// (`DeployControlPlaneNamespace`), each created or merge-patched. Returns the namespace.
    ///
    /// No `default` ServiceAccount: kube-controller-manager would add it (`k8s::Cluster::ensure_namespace`).
    pub async fn prepare_shoot(&self, input: &ShootInput) -> Result<String, Error> {
        let namespace = input.control_plane_namespace()?;
        let parts = [
            ("cloudProfile", embedded(&input.cloud_profile, "CloudProfile")),
            ("seed", embedded(&input.seed, "Seed")),
            ("shoot", embedded(&input.shoot, "Shoot")),
        ];
        let cluster = json!({"apiVersion": EXTENSIONS_API, "kind": "Cluster", "metadata": {"name": namespace}});
        create_or_merge_patch(&self.clusters(), &namespace, cluster, |c| {
            let spec = object_entry(c, "spec");
            for (key, value) in parts {
                spec.insert(key.into(), value);
            }
        })
        .await
        .map_err(during(format!("writing Cluster {namespace}")))?;
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
        create_or_merge_patch(&self.namespaces(), &namespace, ns, |ns| label_control_plane_namespace(ns, input))
            .await
            .map_err(during(format!("writing Namespace {namespace}")))?;
        Ok(namespace)
    }

    /// Creates or updates the Extension `ext_type` in `namespace` as gardenlet does (`extension.deploy`):
    /// named after its type; `spec.class` only on create (`None`: a shoot extension, whose class
    /// gardenlet leaves unset); annotations `operation` and `timestamp`; `spec.type`,
    /// `spec.providerConfig`. Returns the object the API server answered.
    async fn deploy(
        &self,
        namespace: &str,
        ext_type: &str,
        class: Option<&str>,
        provider_config: Option<Value>,
        op: &str,
    ) -> Result<Value, Error> {
        let timestamp = gardener_timestamp(Timestamp::now());
        let mut template = json!({"apiVersion": EXTENSIONS_API, "kind": "Extension",
            "metadata": {"name": ext_type, "namespace": namespace}, "spec": {"type": ext_type}});
        if let Some(class) = class {
            template["spec"]["class"] = json!(class);
        }
        let object = create_or_merge_patch(&self.extensions(namespace), ext_type, template, |ext| {
            let annotations = entry(object_entry(ext, "metadata"), "annotations");
            annotations.insert(OPERATION.into(), json!(op));
            annotations.insert(TIMESTAMP.into(), json!(timestamp));
            let spec = object_entry(ext, "spec");
            spec.insert("type".into(), json!(ext_type));
            match provider_config {
                Some(config) => spec.insert("providerConfig".into(), config),
                None => spec.remove("providerConfig"),
            };
        })
        .await
        .map_err(during(format!("writing Extension {namespace}/{ext_type}")))?;
        self.remember(namespace, ext_type, &timestamp);
        Ok(object)
    }

    /// Sets the operation annotation and a new timestamp (`AnnotateObjectWithOperation`).
    async fn annotate(&self, namespace: &str, name: &str, op: &str) -> Result<(), kube::Error> {
        let timestamp = gardener_timestamp(Timestamp::now());
        let patch = json!({"metadata": {"annotations": {OPERATION: op, TIMESTAMP: timestamp}}});
        self.extensions(namespace).patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        self.remember(namespace, name, &timestamp);
        Ok(())
    }

    /// gardenlet's reconcile of one Extension: [`Self::deploy`] with operation `reconcile`, then
    /// [`Self::wait_ready`].
    pub async fn reconcile_extension(
        &self,
        namespace: &str,
        ext_type: &str,
        class: Option<&str>,
        provider_config: Option<Value>,
    ) -> Result<(), Error> {
        self.deploy(namespace, ext_type, class, provider_config, operation::RECONCILE).await?;
        self.wait_ready(namespace, ext_type).await
    }

    /// Waits until the Extension is ready (`WaitUntilExtensionObjectReady`): polls
    /// [`extension_ready_since`] with the timestamp this gardenlet wrote last; a missing object
    /// keeps it waiting; a `lastError` after the severe threshold and anything at the timeout end
    /// it with the last reason.
    pub async fn wait_ready(&self, namespace: &str, ext_type: &str) -> Result<(), Error> {
        let expected = self.remembered(namespace, ext_type);
        let api = self.extensions(namespace);
        let start = Instant::now();
        loop {
            let object = get(&api, ext_type).await.map_err(api_err(namespace, ext_type))?;
            let reason = match object {
                None => NotReady::NotFound,
                Some(obj) => match extension_ready_since(&obj, expected.as_deref()) {
                    Ok(()) => return Ok(()),
                    Err(reason) => reason,
                },
            };
            let waited = start.elapsed();
            let (namespace, name) = (namespace.to_string(), ext_type.to_string());
            if matches!(reason, NotReady::LastError { .. }) && waited >= self.timing.severe_threshold {
                return Err(Error::Failed { namespace, name, waited, reason });
            }
            if waited >= self.timing.timeout {
                return Err(Error::NotReady { namespace, name, waited, reason });
            }
            tokio::time::sleep(self.timing.interval).await;
        }
    }

    /// The source seed's part of a control-plane migration for one Extension: annotate `migrate`
    /// (`MigrateExtensionObject`), wait until migrated (`WaitUntilExtensionObjectMigrated`), record
    /// what the ShootState keeps (`computeExtensionsDataAndResources`), delete the Extension
    /// ([`Self::delete_extension`]) and wait until no shoot ManagedResource (no `spec.class`) is left
    /// in the namespace (`WaitUntilShootManagedResourcesDeleted`).
    ///
    /// The record is also taken before the migration starts; when the two differ the migration
    /// fails with [`Error::StateChangedByMigrate`]: gardenlet persists the ShootState in a branch of
    /// its flow that is not ordered after the Extension's migration, so either may reach the
    /// destination.
    pub async fn migrate(&self, namespace: &str, ext_type: &str) -> Result<MigratedState, Error> {
        let before = self.record_state(namespace, ext_type).await?;
        match self.annotate(namespace, ext_type, operation::MIGRATE).await {
            Err(e) if !is_not_found(&e) => return Err(api_err(namespace, ext_type)(e)),
            _ => {}
        }
        self.wait_migrated(namespace, ext_type).await?;
        let after = self.record_state(namespace, ext_type).await?;
        if before != after {
            return Err(Error::StateChangedByMigrate {
                namespace: namespace.into(),
                name: ext_type.into(),
                before: before.shoot_state_spec(),
                after: after.shoot_state_spec(),
            });
        }
        self.delete_extension(namespace, ext_type).await?;
        self.wait_shoot_managed_resources_deleted(namespace).await?;
        Ok(after)
    }

    async fn wait_migrated(&self, namespace: &str, name: &str) -> Result<(), Error> {
        let api = self.extensions(namespace);
        let start = Instant::now();
        loop {
            let last_operation = match get(&api, name).await.map_err(api_err(namespace, name))? {
                None => return Ok(()),
                Some(obj) if extension_migrated(&obj) => return Ok(()),
                Some(obj) => obj["status"]["lastOperation"].clone(),
            };
            let waited = start.elapsed();
            if waited >= self.timing.timeout {
                return Err(Error::NotMigrated {
                    namespace: namespace.into(),
                    name: name.into(),
                    waited,
                    last_operation,
                });
            }
            tokio::time::sleep(self.timing.interval).await;
        }
    }

    /// What the ShootState records of Extension `name` (`computeExtensionsDataAndResources`):
    /// nothing when it is missing, being deleted, or has neither `status.state` nor
    /// `status.resources`; else its state, its resource references and each referenced object
    /// without system metadata (`null` when missing).
    async fn record_state(&self, namespace: &str, name: &str) -> Result<MigratedState, Error> {
        let Some(obj) = get(&self.extensions(namespace), name).await.map_err(api_err(namespace, name))? else {
            return Ok(MigratedState::default());
        };
        let state = obj["status"].get("state").filter(|s| !s.is_null()).cloned();
        let references: Vec<NamedResourceReference> = match obj["status"].get("resources") {
            None | Some(Value::Null) => Vec::new(),
            Some(r) => serde_json::from_value(r.clone())
                .map_err(|e| Error::Invalid(format!("Extension {namespace}/{name} status.resources: {e}")))?,
        };
        if obj["metadata"].get("deletionTimestamp").is_some_and(|t| !t.is_null())
            || (state.is_none() && references.is_empty())
        {
            return Ok(MigratedState::default());
        }
        let mut resources = Vec::new();
        for r in &references {
            let data = self.object_by_ref(&r.resource_ref, namespace).await?;
            let data = data.map(|d| filter_metadata(&d, &[])).unwrap_or(Value::Null);
            resources.push(ResourceData { reference: r.resource_ref.clone(), data });
        }
        let extension = ExtensionResourceState {
            kind: "Extension".into(),
            name: Some(name.into()),
            purpose: None,
            state,
            resources: references,
        };
        Ok(MigratedState { extension: Some(extension), resources })
    }

    /// The destination seed's part (`RestoreExtensionWithDeployFunction`): create the Extension with
    /// operation `wait-for-state`, restore `status.state` and `status.resources` (status
    /// subresource) and the referenced objects, unless the Extension already has a state
    /// (`RestoreExtensionObjectState`), annotate `restore`, then [`Self::wait_ready`].
    pub async fn restore(
        &self,
        namespace: &str,
        ext_type: &str,
        class: Option<&str>,
        provider_config: Option<Value>,
        state: &MigratedState,
    ) -> Result<(), Error> {
        let object = self.deploy(namespace, ext_type, class, provider_config, operation::WAIT_FOR_STATE).await?;
        self.restore_state(namespace, &object, state).await?;
        self.annotate(namespace, ext_type, operation::RESTORE).await.map_err(api_err(namespace, ext_type))?;
        self.wait_ready(namespace, ext_type).await
    }

    async fn restore_state(&self, namespace: &str, object: &Value, state: &MigratedState) -> Result<(), Error> {
        if object["status"].get("state").is_some_and(|s| !s.is_null()) {
            return Ok(());
        }
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let entry = state
            .extension
            .as_ref()
            .filter(|e| e.kind == "Extension" && e.name.as_deref() == Some(name) && e.purpose.is_none());
        let Some(entry) = entry else { return Ok(()) };
        let old = object.get("status").cloned().unwrap_or_else(|| json!({}));
        let mut new = old.clone();
        let status = as_object(&mut new);
        match &entry.state {
            Some(s) => status.insert("state".into(), s.clone()),
            None => status.remove("state"),
        };
        if entry.resources.is_empty() {
            status.remove("resources");
        } else {
            let resources = serde_json::to_value(&entry.resources).map_err(|e| Error::Invalid(e.to_string()))?;
            status.insert("resources".into(), resources);
        }
        let patch = json!({"status": merge_patch_diff(&old, &new)});
        self.extensions(namespace)
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(during(format!("restoring the status of Extension {namespace}/{name}")))?;
        for reference in entry.resources.iter().map(|r| &r.resource_ref) {
            if let Some(data) = state.resources.iter().find(|d| &d.reference == reference) {
                self.create_or_patch_by_ref(reference, namespace, &data.data).await?;
            }
        }
        Ok(())
    }

    /// Deletes the Extension as gardenlet does (`DeleteExtensionObject`: the deletion confirmation
    /// and a timestamp first, then DELETE; a missing one is fine) and waits until it is gone
    /// (`WaitUntilExtensionObjectDeleted`, naming the last `lastError`).
    pub async fn delete_extension(&self, namespace: &str, ext_type: &str) -> Result<(), Error> {
        let api = self.extensions(namespace);
        let timestamp = gardener_timestamp(Timestamp::now());
        let confirm = json!({"metadata": {"annotations": {CONFIRM_DELETION: "true", TIMESTAMP: timestamp}}});
        match api.patch(ext_type, &PatchParams::default(), &Patch::Merge(&confirm)).await {
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => return Err(api_err(namespace, ext_type)(e)),
            Ok(_) => {}
        }
        match api.delete(ext_type, &DeleteParams::default()).await {
            Err(e) if !is_not_found(&e) => return Err(api_err(namespace, ext_type)(e)),
            _ => {}
        }
        let start = Instant::now();
        let mut last_error = None;
        loop {
            let Some(obj) = get(&api, ext_type).await.map_err(api_err(namespace, ext_type))? else { return Ok(()) };
            if let Some(description) = obj["status"]["lastError"]["description"].as_str() {
                last_error = Some(description.to_string());
            }
            let waited = start.elapsed();
            if waited >= self.timing.timeout {
                return Err(Error::NotDeleted {
                    namespace: namespace.into(),
                    name: ext_type.into(),
                    waited,
                    last_error,
                });
            }
            tokio::time::sleep(self.timing.interval).await;
        }
    }

    /// Waits until no ManagedResource without a class (the shoot's, applied by the shoot's
    /// resource manager) is left in `namespace` (`WaitUntilShootManagedResourcesDeleted`).
    pub async fn wait_shoot_managed_resources_deleted(&self, namespace: &str) -> Result<(), Error> {
        let api = self.managed_resources(namespace);
        let start = Instant::now();
        loop {
            let list = api
                .list(&ListParams::default())
                .await
                .map_err(during(format!("listing ManagedResources in {namespace}")))?;
            let names: Vec<String> = list
                .items
                .iter()
                .filter(|mr| mr.data["spec"]["class"].as_str().unwrap_or_default().is_empty())
                .filter_map(|mr| mr.metadata.name.clone())
                .collect();
            if names.is_empty() {
                return Ok(());
            }
            let waited = start.elapsed();
            if waited >= self.timing.timeout {
                return Err(Error::ManagedResourcesRemain { namespace: namespace.into(), waited, names });
            }
            tokio::time::sleep(self.timing.interval).await;
        }
    }

    /// Deletes the shoot's Cluster, as gardenlet does when a shoot has left the seed or is gone
    /// (`DeleteClusterResourceFromSeed`); a missing one is fine.
    pub async fn delete_cluster(&self, namespace: &str) -> Result<(), Error> {
        match self.clusters().delete(namespace, &DeleteParams::default()).await {
            Err(e) if !is_not_found(&e) => Err(during(format!("deleting Cluster {namespace}"))(e)),
            _ => Ok(()),
        }
    }

    /// Deletes the control-plane namespace as gardenlet does at the end of a migration or deletion
    /// (`DeleteSeedNamespace`: foreground, 60 s grace; missing or conflicting is fine). It does not
    /// wait: without kube-controller-manager's namespace controller it stays `Terminating`.
    pub async fn delete_namespace(&self, namespace: &str) -> Result<(), Error> {
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Foreground),
            grace_period_seconds: Some(60),
            ..DeleteParams::default()
        };
        match self.namespaces().delete(namespace, &params).await {
            Err(kube::Error::Api(s)) if s.is_not_found() || s.is_conflict() => Ok(()),
            Err(e) => Err(during(format!("deleting Namespace {namespace}"))(e)),
            Ok(_) => Ok(()),
        }
    }

    /// The API for the kind `reference` names, from the server's discovery.
    async fn api_for(&self, reference: &ObjectRef, namespace: &str) -> Result<Api<DynamicObject>, Error> {
        let (group, version) = match reference.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", reference.api_version.as_str()),
        };
        let gvk = GroupVersionKind::gvk(group, version, &reference.kind);
        let (resource, _) = kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .map_err(during(format!("finding the API of {}/{}", reference.api_version, reference.kind)))?;
        Ok(Api::namespaced_with(self.client.clone(), namespace, &resource))
    }

    /// `GetObjectByRef`: the object in `namespace`, `None` when missing.
    async fn object_by_ref(&self, reference: &ObjectRef, namespace: &str) -> Result<Option<Value>, Error> {
        let api = self.api_for(reference, namespace).await?;
        get(&api, &reference.name)
            .await
            .map_err(during(format!("reading {} {namespace}/{}", reference.kind, reference.name)))
    }

    /// `CreateOrPatchObjectByRef`: the persisted content (without system metadata, name and
    /// namespace) merged into the existing object or a new one ([`merge_object_contents`]).
    async fn create_or_patch_by_ref(
        &self,
        reference: &ObjectRef,
        namespace: &str,
        content: &Value,
    ) -> Result<(), Error> {
        let api = self.api_for(reference, namespace).await?;
        // A `null` record (the object was missing) converts to an empty object, not to nothing.
        let content = if content.is_null() { json!({}) } else { filter_metadata(content, &["namespace", "name"]) };
        let template = json!({"apiVersion": reference.api_version, "kind": reference.kind,
            "metadata": {"name": reference.name, "namespace": namespace}});
        create_or_merge_patch(&api, &reference.name, template, |obj| merge_object_contents(obj, &content))
            .await
            .map_err(during(format!("restoring {} {namespace}/{}", reference.kind, reference.name)))?;
        Ok(())
    }
}

fn api_err(namespace: &str, name: &str) -> impl FnOnce(kube::Error) -> Error {
    during(format!("Extension {namespace}/{name}"))
}

// ---------------------------------------------------------------------------------------------
// Requests.

async fn get(api: &Api<DynamicObject>, name: &str) -> Result<Option<Value>, kube::Error> {
    Ok(api.get_opt(name).await?.map(to_value))
}

fn to_value(object: DynamicObject) -> Value {
    serde_json::to_value(object).unwrap_or(Value::Null)
}

/// `GetAndCreateOrMergePatch`: reads the object; when missing, creates `template` after `mutate`;
/// else sends the JSON merge patch from what it read to what `mutate` made of it (nothing when
/// equal). Returns the object the server answered.
async fn create_or_merge_patch(
    api: &Api<DynamicObject>,
    name: &str,
    template: Value,
    mutate: impl FnOnce(&mut Value),
) -> Result<Value, kube::Error> {
    match get(api, name).await? {
        None => {
            let mut object = template;
            mutate(&mut object);
            let object: DynamicObject = serde_json::from_value(object).map_err(kube::Error::SerdeError)?;
            Ok(to_value(api.create(&PostParams::default(), &object).await?))
        }
        Some(old) => {
            let mut new = old.clone();
            mutate(&mut new);
            let patch = merge_patch_diff(&old, &new);
            if patch.as_object().is_some_and(Map::is_empty) {
                return Ok(old);
            }
            Ok(to_value(api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?))
        }
    }
}

/// The RFC 7386 merge patch that turns `old` into `new` (what Go's `client.MergeFrom` sends).
fn merge_patch_diff(old: &Value, new: &Value) -> Value {
    let (Value::Object(old), Value::Object(new)) = (old, new) else { return new.clone() };
    let mut patch = Map::new();
    for (key, value) in new {
        match old.get(key) {
            Some(existing) if existing == value => {}
            Some(existing @ Value::Object(_)) if value.is_object() => {
                patch.insert(key.clone(), merge_patch_diff(existing, value));
            }
            _ => {
                patch.insert(key.clone(), value.clone());
            }
        }
    }
    for key in old.keys().filter(|k| !new.contains_key(*k)) {
        patch.insert(key.clone(), Value::Null);
    }
    Value::Object(patch)
}

/// `value` as a map, made one when it is not.
fn as_object(value: &mut Value) -> &mut Map<String, Value> {
    if !value.is_object() {
        *value = Value::Object(Map::new());
    }
    value.as_object_mut().expect("made an object above")
}

/// `value[key]` as a map, made one when missing or not a map.
fn object_entry<'a>(value: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    entry(as_object(value), key)
}

/// `map[key]` as a map, made one when missing or not a map.
fn entry<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    as_object(map.entry(key.to_string()).or_insert(Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Extension with `status.lastOperation` and `annotations`, as gardener's table builds one.
    fn ext(annotations: Value, status: Value) -> Value {
        json!({"metadata": {"annotations": annotations}, "status": status})
    }

    fn succeeded_at(time: &str) -> Value {
        json!({"lastOperation": {"state": "Succeeded", "lastUpdateTime": time}})
    }

    fn at(second: i64, nanos: i32) -> Timestamp {
        Timestamp::new(second, nanos).unwrap()
    }

    // 2023-05-10T10:58:28Z, the instant of gardener's "truncated timestamp" case.
    const T: i64 = 1_683_716_308;

    #[test]
    fn a_succeeded_extension_is_ready() {
        assert_eq!(extension_ready(&json!({"status": {"lastOperation": {"state": "Succeeded"}}})), Ok(()));
    }

    #[test]
    fn an_outdated_generation_is_not_ready() {
        let obj = json!({"metadata": {"generation": 1}, "status": {"lastOperation": {"state": "Succeeded"}}});
        assert_eq!(extension_ready(&obj), Err(NotReady::GenerationOutdated { observed: 0, generation: 1 }));
        assert_eq!(extension_ready(&obj).unwrap_err().to_string(), "observed generation outdated (0/1)");
        let caught_up = json!({"metadata": {"generation": 3},
            "status": {"observedGeneration": 3, "lastOperation": {"state": "Succeeded"}}});
        assert_eq!(extension_ready(&caught_up), Ok(()));
    }

    #[test]
    fn a_pending_operation_is_not_ready() {
        let obj = ext(json!({OPERATION: "reconcile"}), json!({"lastOperation": {"state": "Succeeded"}}));
        assert_eq!(extension_ready(&obj), Err(NotReady::OperationPending("reconcile".into())));
        assert_eq!(
            extension_ready(&obj).unwrap_err().to_string(),
            "gardener operation \"reconcile\" is not yet picked up by controller"
        );
    }

    #[test]
    fn a_last_error_is_not_ready_and_comes_first() {
        // Even with an outdated generation and a pending operation, lastError is the reason.
        let obj = json!({"metadata": {"generation": 2, "annotations": {OPERATION: "reconcile"}},
            "status": {"lastError": {"description": "something happened", "codes": ["ERR_INFRA_UNAUTHORIZED"]},
                       "lastOperation": {"state": "Succeeded"}}});
        let reason = extension_ready(&obj).unwrap_err();
        assert_eq!(
            reason,
            NotReady::LastError {
                description: "something happened".into(),
                codes: vec!["ERR_INFRA_UNAUTHORIZED".into()]
            }
        );
        assert!(reason.to_string().starts_with("error during reconciliation: something happened"), "{reason}");
    }

    #[test]
    fn no_last_operation_is_not_ready() {
        assert_eq!(extension_ready(&json!({})), Err(NotReady::NoLastOperation));
        assert_eq!(extension_ready(&json!({"status": {"lastOperation": null}})), Err(NotReady::NoLastOperation));
    }

    #[test]
    fn a_last_operation_not_succeeded_is_not_ready() {
        let obj = json!({"status": {"lastOperation": {"state": "Error"}}});
        assert_eq!(extension_ready(&obj), Err(NotReady::NotSucceeded("Error".into())));
        assert_eq!(extension_ready(&obj).unwrap_err().to_string(), "extension state is not succeeded but Error");
    }

    #[test]
    fn a_timestamp_before_the_last_update_is_ready() {
        let obj = ext(json!({TIMESTAMP: gardener_timestamp(at(T - 5, 0))}), succeeded_at("2023-05-10T10:58:28Z"));
        assert_eq!(extension_ready(&obj), Ok(()));
    }

    #[test]
    fn a_timestamp_in_the_same_second_as_the_last_update_is_ready() {
        let obj = ext(json!({TIMESTAMP: "2023-05-10T10:58:28.770312Z"}), succeeded_at("2023-05-10T10:58:28Z"));
        assert_eq!(extension_ready(&obj), Ok(()));
    }

    #[test]
    fn a_timestamp_after_the_last_update_is_not_ready() {
        let obj = ext(json!({TIMESTAMP: gardener_timestamp(at(T + 5, 0))}), succeeded_at("2023-05-10T10:58:28Z"));
        let reason = extension_ready(&obj).unwrap_err();
        assert_eq!(
            reason,
            NotReady::NotReconciledSince {
                requested: "2023-05-10T10:58:33Z".into(),
                last_update: "2023-05-10T10:58:28Z".into()
            }
        );
        assert_eq!(
            reason.to_string(),
            "extension is not reconciled yet - reconciliation requested at 2023-05-10T10:58:33Z, last update time is: 2023-05-10T10:58:28Z"
        );
        // Without a lastUpdateTime (Go's zero time) any request is newer.
        let no_time = ext(json!({TIMESTAMP: "2023-05-10T10:58:28Z"}), json!({"lastOperation": {"state": "Succeeded"}}));
        assert_eq!(
            extension_ready(&no_time),
            Err(NotReady::NotReconciledSince {
                requested: "2023-05-10T10:58:28Z".into(),
                last_update: "0001-01-01T00:00:00Z".into()
            })
        );
    }

    #[test]
    fn an_invalid_timestamp_is_not_ready() {
        let obj = ext(json!({TIMESTAMP: "not a valid value"}), succeeded_at("2023-05-10T10:58:28Z"));
        assert!(
            matches!(extension_ready(&obj), Err(NotReady::BadTimestamp { ref value, .. }) if value == "not a valid value")
        );
        let no_offset = ext(json!({TIMESTAMP: "2023-05-10T10:58:28"}), succeeded_at("2023-05-10T10:58:28Z"));
        assert!(matches!(extension_ready(&no_offset), Err(NotReady::BadTimestamp { .. })));
    }

    #[test]
    fn a_wait_needs_the_timestamp_it_wrote() {
        let obj = ext(json!({TIMESTAMP: "2023-05-10T10:58:28Z"}), succeeded_at("2023-05-10T10:58:28Z"));
        assert_eq!(extension_ready_since(&obj, Some("2023-05-10T10:58:28Z")), Ok(()));
        assert_eq!(extension_ready_since(&obj, None), Ok(()));
        let newer = "2023-05-10T10:59:00.5Z";
        assert_eq!(
            extension_ready_since(&obj, Some(newer)),
            Err(NotReady::TimestampAnnotation { expected: newer.into(), actual: Some("2023-05-10T10:58:28Z".into()) })
        );
        let none = ext(json!({}), succeeded_at("2023-05-10T10:58:28Z"));
        assert!(matches!(
            extension_ready_since(&none, Some(newer)),
            Err(NotReady::TimestampAnnotation { actual: None, .. })
        ));
    }

    #[test]
    fn migrated_means_a_succeeded_migrate() {
        let op = |t: &str, s: &str| json!({"status": {"lastOperation": {"type": t, "state": s}}});
        assert!(extension_migrated(&op("Migrate", "Succeeded")));
        assert!(!extension_migrated(&op("Migrate", "Processing")));
        assert!(!extension_migrated(&op("Reconcile", "Succeeded")));
        assert!(!extension_migrated(&json!({})));
    }

    #[test]
    fn timestamps_are_written_as_go_writes_rfc3339_nano() {
        assert_eq!(gardener_timestamp(at(T, 770_312_000)), "2023-05-10T10:58:28.770312Z");
        assert_eq!(gardener_timestamp(at(T, 0)), "2023-05-10T10:58:28Z");
        assert_eq!(gardener_timestamp(at(T, 1)), "2023-05-10T10:58:28.000000001Z");
        assert_eq!(gardener_timestamp(at(T, 500_000_000)), "2023-05-10T10:58:28.5Z");
        let now = Timestamp::now();
        assert_eq!(gardener_timestamp(now).parse::<Timestamp>().unwrap(), now);
    }

    #[test]
    fn the_merge_patch_sets_what_changed_and_nulls_what_went() {
        let old = json!({"metadata": {"name": "x", "labels": {"a": "1", "b": "2"}}, "spec": {"type": "t", "providerConfig": {"k": 1}}});
        let new = json!({"metadata": {"name": "x", "labels": {"a": "1", "c": "3"}}, "spec": {"type": "t"}});
        assert_eq!(
            merge_patch_diff(&old, &new),
            json!({"metadata": {"labels": {"b": null, "c": "3"}}, "spec": {"providerConfig": null}})
        );
        assert_eq!(merge_patch_diff(&old, &old), json!({}));
        // Lists are replaced whole.
        assert_eq!(merge_patch_diff(&json!({"l": [1, 2]}), &json!({"l": [2]})), json!({"l": [2]}));
    }

    #[test]
    fn a_restored_object_takes_metadata_spec_and_data_only() {
        let persisted = json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": "keys", "namespace": "old", "uid": "u", "resourceVersion": "9",
                         "labels": {"a": "1"}, "ownerReferences": [{"name": "o"}]},
            "data": {"key": "YQ=="}});
        let content = filter_metadata(&filter_metadata(&persisted, &[]), &["namespace", "name"]);
        let mut new = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "keys", "namespace": "new"}});
        merge_object_contents(&mut new, &content);
        assert_eq!(
            new,
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "keys", "namespace": "new", "labels": {"a": "1"}}, "data": {"key": "YQ=="}}),
            "no type, no system metadata, the destination's namespace"
        );
        let mut existing = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "keys", "namespace": "new", "labels": {"b": "2"}}, "data": {"other": "Yg=="}});
        merge_object_contents(&mut existing, &content);
        assert_eq!(existing["metadata"]["labels"], json!({"a": "1", "b": "2"}));
        assert_eq!(existing["data"], json!({"key": "YQ=="}), "data replaced whole");
        assert_eq!(existing["type"], "Opaque");
        // A record of a missing object (null) restores as an empty one: its data goes.
        merge_object_contents(&mut existing, &json!({}));
        assert_eq!(existing.get("data"), None);
    }

    #[test]
    fn the_namespace_gets_gardenlets_labels_and_drops_stale_extension_labels() {
        let shoot = ShootFixture::new("dev", "a", "s1")
            .with_extension("kubelink-wireguard", None)
            .with_extension("shoot-dns-service", None);
        let mut input = ShootInput::from_fixtures(&shoot, &SeedFixture::new("s1"));
        input.auto_enabled = vec!["shoot-networking-filter".into(), "shoot-dns-service".into()];
        input.shoot["spec"]["extensions"][1]["disabled"] = json!(true);
        assert_eq!(input.control_plane_namespace().unwrap(), "shoot--dev--a");
        let mut ns = json!({"metadata": {"name": "shoot--dev--a",
            "labels": {"extensions.gardener.cloud/gone": "true", "keep": "me"}}});
        label_control_plane_namespace(&mut ns, &input);
        let labels = &ns["metadata"]["labels"];
        assert_eq!(
            labels,
            &json!({
                "keep": "me",
                "gardener.cloud/role": "shoot",
                "seed.gardener.cloud/provider": "local",
                "shoot.gardener.cloud/provider": "local",
                "networking.shoot.gardener.cloud/provider": "calico",
                "extensions.gardener.cloud/kubelink-wireguard": "true",
                "extensions.gardener.cloud/shoot-networking-filter": "true",
                "backup.gardener.cloud/provider": "local",
                "pod-security.kubernetes.io/enforce": "privileged",
                "high-availability-config.resources.gardener.cloud/consider": "true",
            })
        );
        let annotations = &ns["metadata"]["annotations"];
        assert_eq!(annotations["shoot.gardener.cloud/uid"], input.shoot["status"]["uid"]);
        assert_eq!(annotations["high-availability-config.resources.gardener.cloud/failure-tolerance-type"], "");

        let mut seed = SeedFixture::new("s1");
        seed.backup = Some(json!({"provider": "aws", "region": "eu"}));
        let input = ShootInput::from_fixtures(&shoot, &seed);
        let mut ns = json!({});
        label_control_plane_namespace(&mut ns, &input);
        assert_eq!(ns["metadata"]["labels"]["backup.gardener.cloud/provider"], "aws");
    }

    #[test]
    fn the_namespace_is_the_technical_id_when_there_is_one() {
        let mut input = ShootInput::from_fixtures(&ShootFixture::new("dev", "a", "s"), &SeedFixture::new("s"));
        input.shoot["status"]["technicalID"] = json!("shoot-dev-a");
        assert_eq!(input.control_plane_namespace().unwrap(), "shoot-dev-a");
        input.shoot["status"]["technicalID"] = Value::Null;
        assert_eq!(input.control_plane_namespace().unwrap(), "shoot--dev--a");
    }

    #[test]
    fn the_cluster_embeds_typed_objects_without_managed_fields() {
        let shoot = json!({"metadata": {"name": "a", "managedFields": [{}]}, "spec": {}});
        let e = embedded(&shoot, "Shoot");
        assert_eq!(e, json!({"apiVersion": CORE_API, "kind": "Shoot", "metadata": {"name": "a"}, "spec": {}}));
    }

    #[test]
    fn the_migrated_state_reads_as_a_shoot_state_spec() {
        let state = MigratedState {
            extension: Some(ExtensionResourceState {
                kind: "Extension".into(),
                name: Some("kubelink-wireguard".into()),
                purpose: None,
                state: Some(json!({"address": "192.168.128.10"})),
                resources: vec![NamedResourceReference {
                    name: "keys".into(),
                    resource_ref: ObjectRef { api_version: "v1".into(), kind: "Secret".into(), name: "k".into() },
                }],
            }),
            resources: vec![ResourceData {
                reference: ObjectRef { api_version: "v1".into(), kind: "Secret".into(), name: "k".into() },
                data: json!({"data": {"a": "Yg=="}}),
            }],
        };
        assert_eq!(
            state.shoot_state_spec(),
            json!({
                "extensions": [{"kind": "Extension", "name": "kubelink-wireguard", "state": {"address": "192.168.128.10"},
                                "resources": [{"name": "keys", "resourceRef": {"apiVersion": "v1", "kind": "Secret", "name": "k"}}]}],
                "resources": [{"apiVersion": "v1", "kind": "Secret", "name": "k", "data": {"data": {"a": "Yg=="}}}],
            })
        );
        let back: MigratedState = serde_json::from_value(serde_json::to_value(&state).unwrap()).unwrap();
        assert_eq!(back, state);
    }

    #[test]
    fn fixture_uids_are_stable_and_uuid_shaped() {
        let a = fake_uid("shoot/dev/a");
        assert_eq!(a, fake_uid("shoot/dev/a"));
        assert_ne!(a, fake_uid("shoot/dev/b"));
        let parts: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12], "{a}");
    }
}
