//! Type validation of every write, as the real API server does it, answered the real way:
//!
//! - Built-in kinds (core, apps, rbac, coordination, events, apiextensions) are decoded into their
//!   k8s-openapi types: a field of the wrong type is `400 BadRequest` "... cannot be handled as a
//!   Secret: ...", as the real server's decoder says. Missing required fields are left to the real
//!   server's validation, which this server does not model.
//! - Custom resources are checked against their CRD's OpenAPI v3 schema: the CustomResourceDefinition
//!   stored in this server when there is one (as a real cluster has it), else the one the repository's
//!   chart ships (`charts/kubelink/crds/`), or for Gardener's ManagedResource the subset kubelink
//!   writes. A wrong type or a missing required field is `422 Invalid` naming the field, as the real
//!   server's CRD validation answers. Unknown fields are kept, not pruned.
//! - The Gardener kinds (Seed, Shoot, ShootState) are served by an aggregated API server that decodes
//!   them into Go types; here a schema of the fields kubelink reads stands in for those types, and a
//!   wrong type is `400 BadRequest` like the decoder's.
//!
//! `metadata` is decoded into `ObjectMeta` for every kind.
//!
//! To plant an object that the API would refuse today (as a cluster may hold one written under an
//! older schema, or by a conversion bug), a test uses [`crate::Store::plant`], which skips this check.

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::kinds::ResourceKind;
use super::status::ApiError;

/// The longest message a rejection carries: serde's can quote the offending value whole.
const MAX_MESSAGE: usize = 400;

/// Checks `object` (with `apiVersion` and `kind` set) against the rules of its kind. `crd` is the
/// stored CustomResourceDefinition of a custom kind, if any.
pub fn validate(rk: &ResourceKind, name: &str, object: &Value, crd: Option<&Value>) -> Result<(), ApiError> {
    if let Some(meta) = object.get("metadata") {
        decode::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>(meta)
            .map_err(|e| cannot_handle(rk, &format!("metadata.{e}")))?;
    }
    if let Some(result) = built_in(rk, object) {
        return result.map_err(|e| cannot_handle(rk, &e));
    }
    if rk.group == "core.gardener.cloud" {
        let mut errors = Vec::new();
        check(&gardener_schema(rk.kind), object, "", &mut errors);
        return match errors.into_iter().next() {
            Some(e) => Err(cannot_handle(rk, &e.go_decoder(rk.kind))),
            None => Ok(()),
        };
    }
    let Some(schema) = custom_schema(rk, crd) else { return Ok(()) };
    let mut errors = Vec::new();
    check(&schema, object, "", &mut errors);
    if errors.is_empty() {
        return Ok(());
    }
    let listed: Vec<String> = errors.iter().map(Violation::crd_validation).collect();
    let message = if listed.len() == 1 { listed[0].clone() } else { format!("[{}]", listed.join(", ")) };
    Err(ApiError::invalid_custom(rk, name, kubelink_ipam::shorten(&message, MAX_MESSAGE)))
}

fn cannot_handle(rk: &ResourceKind, detail: &str) -> ApiError {
    ApiError::bad_request(kubelink_ipam::shorten(
        &format!("{} in version \"{}\" cannot be handled as a {}: {detail}", rk.kind, rk.version, rk.kind),
        MAX_MESSAGE,
    ))
}

/// Decodes, naming the path of the first wrong field. A missing required field is not a decode error.
fn decode<T: DeserializeOwned>(value: &Value) -> Result<(), String> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(_) => Ok(()),
        Err(e) if e.inner().to_string().starts_with("missing field") => Ok(()),
        Err(e) => Err(format!("{}: {}", e.path(), e.inner())),
    }
}

/// `Some` for the kinds k8s-openapi has a type for.
fn built_in(rk: &ResourceKind, object: &Value) -> Option<Result<(), String>> {
    use k8s_openapi::api::{apps, coordination, core, events, rbac};
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    Some(match (rk.group, rk.kind) {
        ("", "Namespace") => decode::<core::v1::Namespace>(object),
        ("", "Node") => decode::<core::v1::Node>(object),
        ("", "Pod") => decode::<core::v1::Pod>(object),
        ("", "Service") => decode::<core::v1::Service>(object),
        ("", "Secret") => decode::<core::v1::Secret>(object),
        ("", "ConfigMap") => decode::<core::v1::ConfigMap>(object),
        ("", "ServiceAccount") => decode::<core::v1::ServiceAccount>(object),
        ("", "Event") => decode::<core::v1::Event>(object),
        ("events.k8s.io", "Event") => decode::<events::v1::Event>(object),
        ("coordination.k8s.io", "Lease") => decode::<coordination::v1::Lease>(object),
        (_, "Role") => decode::<rbac::v1::Role>(object),
        (_, "RoleBinding") => decode::<rbac::v1::RoleBinding>(object),
        (_, "ClusterRole") => decode::<rbac::v1::ClusterRole>(object),
        (_, "ClusterRoleBinding") => decode::<rbac::v1::ClusterRoleBinding>(object),
        ("apps", "DaemonSet") => decode::<apps::v1::DaemonSet>(object),
        ("apps", "Deployment") => decode::<apps::v1::Deployment>(object),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => decode::<CustomResourceDefinition>(object),
        _ => return None,
    })
}

/// The chart's CRDs, as shipped.
const SHIPPED_CRDS: &[&str] = &[
    include_str!("../../../charts/kubelink/crds/kubelink.gardener.cloud_seedtunnels.yaml"),
    include_str!("../../../charts/kubelink/crds/kubelink.gardener.cloud_shootpeers.yaml"),
];

/// The CRD's `openAPIV3Schema` for the kind's version: from the stored CRD, else the shipped one.
fn custom_schema(rk: &ResourceKind, stored: Option<&Value>) -> Option<Value> {
    let shipped = || {
        let managed = (rk.group == "resources.gardener.cloud" && rk.kind == "ManagedResource").then(|| {
            let crd = <kubelink_ipam::managed::ManagedResource as kube::CustomResourceExt>::crd();
            serde_json::to_value(crd).unwrap_or_default()
        });
        managed.or_else(|| {
            SHIPPED_CRDS
                .iter()
                .filter_map(|text| serde_yaml_ng::from_str::<Value>(text).ok())
                .find(|crd| crd["spec"]["group"] == rk.group && crd["spec"]["names"]["kind"] == rk.kind)
        })
    };
    let crd = stored.cloned().or_else(shipped)?;
    let versions = crd.pointer("/spec/versions")?.as_array()?;
    let version = versions.iter().find(|v| v["name"] == rk.version)?;
    version.pointer("/schema/openAPIV3Schema").cloned()
}

/// One field that does not fit the schema.
#[derive(Debug, Clone, PartialEq)]
struct Violation {
    path: String,
    problem: Problem,
}

#[derive(Debug, Clone, PartialEq)]
enum Problem {
    Type { want: String, got: &'static str },
    Required,
    Range { bound: String },
}

impl Violation {
    /// As the real server's CRD validation words it.
    fn crd_validation(&self) -> String {
        let path = &self.path;
        match &self.problem {
            Problem::Type { want, got } => {
                format!("{path}: Invalid value: \"{got}\": {path} in body must be of type {want}: \"{got}\"")
            }
            Problem::Required => format!("{path}: Required value"),
            Problem::Range { bound } => format!("{path}: Invalid value: {path} in body should be {bound}"),
        }
    }

    /// As a Go JSON decoder words it.
    fn go_decoder(&self, kind: &str) -> String {
        match &self.problem {
            Problem::Type { want, got } => {
                let go = match want.as_str() {
                    "integer" => "int64",
                    "boolean" => "bool",
                    "object" => "struct",
                    "array" => "slice",
                    other => other,
                };
                let got = match *got {
                    "integer" => "number",
                    "boolean" => "bool",
                    other => other,
                };
                format!("json: cannot unmarshal {got} into Go struct field {kind}.{} of type {go}", self.path)
            }
            _ => self.crd_validation(),
        }
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() { field.to_string() } else { format!("{path}.{field}") }
}

/// The subset of OpenAPI v3 that structural CRD schemas use: `type`, `properties`,
/// `additionalProperties`, `items`, `required`, `minimum`/`maximum`, `x-kubernetes-int-or-string`.
/// `null` passes (the real server prunes it from fields that are not `nullable`).
fn check(schema: &Value, value: &Value, path: &str, errors: &mut Vec<Violation>) {
    if value.is_null() {
        return;
    }
    let got = type_name(value);
    if schema["x-kubernetes-int-or-string"] == true {
        if !matches!(got, "integer" | "string") {
            let want = "integer or string".to_string();
            errors.push(Violation { path: path.into(), problem: Problem::Type { want, got } });
        }
        return;
    }
    if let Some(want) = schema["type"].as_str() {
        let fits = match want {
            "number" => matches!(got, "integer" | "number"),
            other => other == got,
        };
        if !fits {
            errors.push(Violation { path: path.into(), problem: Problem::Type { want: want.into(), got } });
            return;
        }
    }
    match value {
        Value::Object(map) => {
            let properties = schema["properties"].as_object();
            for required in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                if !map.contains_key(required) {
                    errors.push(Violation { path: join(path, required), problem: Problem::Required });
                }
            }
            for (key, child) in map {
                let declared = properties.and_then(|p| p.get(key));
                let additional = schema.get("additionalProperties").filter(|a| a.is_object());
                if let Some(child_schema) = declared.or(additional) {
                    check(child_schema, child, &join(path, key), errors);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(item_schema, item, &format!("{path}[{i}]"), errors);
                }
            }
        }
        Value::Number(n) => {
            let n = n.as_f64().unwrap_or_default();
            if let Some(min) = schema["minimum"].as_f64().filter(|min| n < *min) {
                errors.push(Violation {
                    path: path.into(),
                    problem: Problem::Range { bound: format!("greater than or equal to {min}") },
                });
            }
            if let Some(max) = schema["maximum"].as_f64().filter(|max| n > *max) {
                errors.push(Violation {
                    path: path.into(),
                    problem: Problem::Range { bound: format!("less than or equal to {max}") },
                });
            }
        }
        _ => {}
    }
}

fn string() -> Value {
    json!({"type": "string"})
}

fn strings() -> Value {
    json!({"type": "array", "items": string()})
}

fn object(properties: Value) -> Value {
    json!({"type": "object", "properties": properties})
}

fn conditions() -> Value {
    let fields = ["type", "status", "reason", "message", "lastTransitionTime", "lastUpdateTime"];
    let properties: serde_json::Map<String, Value> = fields.iter().map(|f| (f.to_string(), string())).collect();
    json!({"type": "array", "items": {"type": "object", "properties": properties}})
}

/// The Gardener fields kubelink reads and writes, with their Go types.
fn gardener_schema(kind: &str) -> Value {
    let wireguard = object(json!({"enabled": {"type": "boolean"}, "cidr": string()}));
    let spec = match kind {
        "Seed" => object(json!({
            "networks": object(json!({
                "nodes": string(), "pods": string(), "services": string(),
                "shootDefaults": object(json!({"pods": string(), "services": string()})),
                "blockCIDRs": strings(), "ipFamilies": strings(),
            })),
            "wireguard": wireguard.clone(),
            "settings": object(json!({"wireguard": wireguard})),
            "extensions": {"type": "array", "items": object(json!({"type": string(), "providerConfig": {"type": "object"}}))},
        })),
        "Shoot" => object(json!({
            "seedName": string(),
            "networking": object(json!({"type": string(), "nodes": string(), "pods": string(), "services": string()})),
        })),
        "ShootState" => object(json!({
            "gardener": {"type": "array", "items": object(json!({"name": string(), "type": string()}))},
        })),
        _ => json!({"type": "object"}),
    };
    let status = object(json!({"conditions": conditions(), "technicalID": string()}));
    object(json!({"apiVersion": string(), "kind": string(), "spec": spec, "status": status}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::KINDS;

    fn kind(plural: &str) -> &'static ResourceKind {
        KINDS.iter().find(|k| k.plural == plural).unwrap()
    }

    fn typed(rk: &ResourceKind, mut object: Value) -> Value {
        object["apiVersion"] = json!(rk.api_version());
        object["kind"] = json!(rk.kind);
        object
    }

    #[test]
    fn wrong_types_are_refused_naming_the_field_as_the_real_server_does() {
        // rows: plural, object, code, words the message must hold
        let rows = [
            ("secrets", json!({"metadata": {"name": "s"}, "data": {"k": 5}}), 400, "data.k"),
            ("secrets", json!({"metadata": {"name": "s", "labels": {"a": 1}}}), 400, "metadata.labels.a"),
            ("configmaps", json!({"metadata": {"name": "c"}, "immutable": "yes"}), 400, "immutable"),
            (
                "leases",
                json!({"metadata": {"name": "l"}, "spec": {"leaseDurationSeconds": "4"}}),
                400,
                "spec.leaseDurationSeconds",
            ),
            (
                "shootpeers",
                json!({"metadata": {"name": "p"}, "spec": {"shoot": "a/b", "address": 5, "publicKey": "k"}}),
                422,
                "spec.address in body must be of type string: \"integer\"",
            ),
            (
                "shootpeers",
                json!({"metadata": {"name": "p"}, "spec": {"shoot": "a/b", "address": "x"}}),
                422,
                "spec.publicKey: Required value",
            ),
            (
                "seedtunnels",
                json!({"metadata": {"name": "t"}, "spec": {"seed": "s", "cidr": "c", "slots": 3}}),
                422,
                "spec.slots",
            ),
            (
                "managedresources",
                json!({"metadata": {"name": "m"}, "spec": {"secretRefs": [{"name": 1}]}}),
                422,
                "spec.secretRefs[0].name",
            ),
            (
                "seeds",
                json!({"metadata": {"name": "s"}, "spec": {"wireguard": {"cidr": 5}}}),
                400,
                "Seed.spec.wireguard.cidr of type string",
            ),
            (
                "seeds",
                json!({"metadata": {"name": "s"}, "spec": {"wireguard": {"enabled": "yes"}}}),
                400,
                "spec.wireguard.enabled of type bool",
            ),
            (
                "shoots",
                json!({"metadata": {"name": "a"}, "spec": {"networking": {"pods": ["x"]}}}),
                400,
                "spec.networking.pods",
            ),
            (
                "shootstates",
                json!({"metadata": {"name": "a"}, "spec": {"gardener": {"name": "x"}}}),
                400,
                "spec.gardener of type slice",
            ),
        ];
        for (plural, object, code, words) in rows {
            let rk = kind(plural);
            let err = validate(rk, "n", &typed(rk, object.clone()), None).expect_err(&format!("{plural}: {object}"));
            assert_eq!(err.code, code, "{plural}: {}", err.message);
            assert!(err.message.contains(words), "{plural}: {:?} should hold {words:?}", err.message);
        }
    }

    #[test]
    fn well_typed_objects_and_unknown_fields_pass() {
        let rows = [
            ("secrets", json!({"metadata": {"name": "s"}, "data": {"k": "dmFsdWU="}, "type": "Opaque"})),
            ("pods", json!({"metadata": {"name": "p"}})),
            (
                "shootpeers",
                json!({"metadata": {"name": "p"}, "spec": {"shoot": "a/b", "address": "x", "publicKey": "k", "future": 1}}),
            ),
            (
                "seeds",
                json!({"metadata": {"name": "s"}, "spec": {"wireguard": {"enabled": true, "cidr": "192.168.128.0/22"}, "provider": {"type": "aws"}}}),
            ),
            (
                "seeds",
                json!({"metadata": {"name": "s"}, "spec": {"extensions": [{"type": "x", "providerConfig": {"cidr": 5}}]}}),
            ),
            (
                "shootstates",
                json!({"metadata": {"name": "a"}, "spec": {"gardener": [{"name": "x", "data": {"any": [1]}}]}}),
            ),
        ];
        for (plural, object) in rows {
            let rk = kind(plural);
            assert_eq!(validate(rk, "n", &typed(rk, object.clone()), None), Ok(()), "{plural}: {object}");
        }
    }

    #[test]
    fn a_stored_crd_wins_over_the_shipped_one() {
        let rk = kind("shootpeers");
        let crd = json!({"spec": {"versions": [{"name": "v1alpha1", "schema": {"openAPIV3Schema":
            {"type": "object", "properties": {"spec": {"type": "object", "properties": {"address": {"type": "integer"}}}}}}}]}});
        let object = typed(rk, json!({"metadata": {"name": "p"}, "spec": {"address": 5}}));
        assert_eq!(validate(rk, "p", &object, Some(&crd)), Ok(()));
        assert!(validate(rk, "p", &object, None).is_err());
    }

    #[test]
    fn a_huge_bad_value_is_not_echoed_whole() {
        let rk = kind("secrets");
        let object = typed(rk, json!({"metadata": {"name": "s"}, "data": {"k": "!".repeat(1_000_000)}}));
        let err = validate(rk, "s", &object, None).unwrap_err();
        assert!(err.code == 400 && err.message.len() < 600, "{} bytes", err.message.len());
    }
}
