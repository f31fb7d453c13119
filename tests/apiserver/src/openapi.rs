//! OpenAPI v3, as much as `kubectl` needs: the `/openapi/v3` index and one document per group-version.
//!
//! Each document has the served paths with their operations, each tagged with
//! `x-kubernetes-group-version-kind` (what kubectl looks up to decide on server-side field validation
//! and on the patch type of `apply`), and one schema per kind, also tagged. The schemas are honest but
//! minimal: `metadata` and each kind's top-level fields are declared, what is below them is
//! `x-kubernetes-preserve-unknown-fields: true` (a full schema of every kind is out of scope). kubectl
//! computes `apply`'s strategic merge patch from these schemas; where a change is nested deeper than
//! they reach (e.g. inside a Deployment's `spec.template`) it warns and falls back to its compiled-in
//! schema. With no `x-kubernetes-patch-strategy` declared anywhere, the patches treat lists as atomic,
//! which is what the server's patch does too. Custom resources accept no strategic merge patch,
//! as on a real cluster; kubectl then sends a JSON merge patch. `/openapi/v2` is not served (clients
//! ask for it as protobuf); kubectl uses v3 when v3 is there.

use serde_json::{Map, Value, json};

use super::kinds::{KINDS, ResourceKind};

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";

/// `api/v1` or `apis/group/version`: the index key and URL suffix of a group-version.
fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") }
}

fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut gvs: Vec<(&str, &str)> = KINDS.iter().map(|k| (k.group, k.version)).collect();
    gvs.sort();
    gvs.dedup();
    gvs
}

/// A content hash for the index's `serverRelativeURL`, which clients use as a cache key.
fn hash_of(doc: &Value) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    doc.to_string().hash(&mut hasher);
    format!("{:016X}", hasher.finish())
}

/// `GET /openapi/v3`.
pub fn index() -> Value {
    let paths: Map<String, Value> = group_versions()
        .into_iter()
        .map(|(g, v)| {
            let path = gv_path(g, v);
            let url = format!("/openapi/v3/{path}?hash={}", hash_of(&document(g, v)));
            (path, json!({"serverRelativeURL": url}))
        })
        .collect();
    json!({"paths": paths})
}

/// `GET /openapi/v3/api/v1` or `/openapi/v3/apis/{group}/{version}`; `None` for an unknown one.
pub fn document_for(path: &str) -> Option<Value> {
    group_versions().into_iter().find(|(g, v)| gv_path(g, v) == path).map(|(g, v)| document(g, v))
}

fn schema_name(rk: &ResourceKind) -> String {
    let group = if rk.group.is_empty() { "io.k8s.api.core".to_string() } else { reversed(rk.group) };
    format!("{group}.{}.{}", rk.version, rk.kind)
}

fn reversed(group: &str) -> String {
    group.split('.').rev().collect::<Vec<_>>().join(".")
}

fn gvk(rk: &ResourceKind) -> Value {
    json!({"group": rk.group, "version": rk.version, "kind": rk.kind})
}

fn document(group: &str, version: &str) -> Value {
    let kinds: Vec<&ResourceKind> = KINDS.iter().filter(|k| k.group == group && k.version == version).collect();
    let mut paths = Map::new();
    let mut schemas = Map::new();
    schemas.insert(OBJECT_META.into(), object_meta_schema());
    schemas.insert(STATUS.into(), json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
    for rk in kinds {
        schemas.insert(schema_name(rk), kind_schema(rk));
        for (path, item) in kind_paths(rk) {
            paths.insert(path, item);
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// Any JSON object: what is below a declared field is not modelled.
fn open_object() -> Value {
    json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

fn string_map() -> Value {
    json!({"type": "object", "additionalProperties": {"type": "string"}})
}

fn list_of(items: Value) -> Value {
    json!({"type": "array", "items": items})
}

/// `ObjectMeta` with its fields: kubectl's strategic merge patch looks up every field whose value is
/// an object or a list. No patch strategies are declared, so `finalizers` and `ownerReferences` are
/// atomic lists here, where a real server merges them.
fn object_meta_schema() -> Value {
    let mut properties = Map::new();
    for field in ["name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "creationTimestamp"] {
        properties.insert(field.into(), json!({"type": "string"}));
    }
    properties.insert("deletionTimestamp".into(), json!({"type": "string"}));
    properties.insert("generation".into(), json!({"type": "integer"}));
    properties.insert("deletionGracePeriodSeconds".into(), json!({"type": "integer"}));
    properties.insert("labels".into(), string_map());
    properties.insert("annotations".into(), string_map());
    properties.insert("finalizers".into(), list_of(json!({"type": "string"})));
    properties.insert("ownerReferences".into(), list_of(open_object()));
    properties.insert("managedFields".into(), list_of(open_object()));
    json!({"type": "object", "properties": properties})
}

/// The top-level fields of a kind besides `apiVersion`, `kind` and `metadata`.
fn top_level_fields(rk: &ResourceKind) -> Vec<(&'static str, Value)> {
    match (rk.group, rk.kind) {
        ("", "ConfigMap") => {
            vec![("data", string_map()), ("binaryData", string_map()), ("immutable", json!({"type": "boolean"}))]
        }
        ("", "Secret") => vec![
            ("data", string_map()),
            ("stringData", string_map()),
            ("type", json!({"type": "string"})),
            ("immutable", json!({"type": "boolean"})),
        ],
        ("", "ServiceAccount") => vec![
            ("secrets", list_of(open_object())),
            ("imagePullSecrets", list_of(open_object())),
            ("automountServiceAccountToken", json!({"type": "boolean"})),
        ],
        (_, "Role") => vec![("rules", list_of(open_object()))],
        (_, "ClusterRole") => vec![("rules", list_of(open_object())), ("aggregationRule", open_object())],
        (_, "RoleBinding" | "ClusterRoleBinding") => {
            vec![("roleRef", open_object()), ("subjects", list_of(open_object()))]
        }
        _ => vec![("spec", open_object()), ("status", open_object())],
    }
}

/// Declares the top-level fields and `metadata`; below them any object is accepted (a full schema of
/// every kind is out of scope), and unknown top-level fields are kept too.
fn kind_schema(rk: &ResourceKind) -> Value {
    let mut properties = Map::new();
    properties.insert("apiVersion".into(), json!({"type": "string"}));
    properties.insert("kind".into(), json!({"type": "string"}));
    properties.insert("metadata".into(), json!({"$ref": format!("#/components/schemas/{OBJECT_META}")}));
    properties.extend(top_level_fields(rk).into_iter().map(|(name, schema)| (name.to_string(), schema)));
    json!({
        "type": "object",
        "description": format!("{}: top-level fields only, the rest is not modelled", rk.kind),
        "properties": properties,
        "x-kubernetes-preserve-unknown-fields": true,
        "x-kubernetes-group-version-kind": [gvk(rk)],
    })
}

fn collection_path(rk: &ResourceKind) -> String {
    let ns = if rk.namespaced { "/namespaces/{namespace}" } else { "" };
    format!("/{}{ns}/{}", gv_path(rk.group, rk.version), rk.plural)
}

fn kind_paths(rk: &ResourceKind) -> Vec<(String, Value)> {
    let collection = collection_path(rk);
    let item = format!("{collection}/{{name}}");
    let mut paths = vec![
        (collection, json!({"get": operation(rk, "list", None), "post": operation(rk, "post", Some(write_body(rk)))})),
        (item.clone(), item_operations(rk)),
    ];
    if rk.status {
        paths.push((format!("{item}/status"), item_operations(rk)));
    }
    paths
}

fn item_operations(rk: &ResourceKind) -> Value {
    json!({
        "get": operation(rk, "get", None),
        "put": operation(rk, "put", Some(write_body(rk))),
        "patch": operation(rk, "patch", Some(patch_body(rk))),
        "delete": operation(rk, "delete", None),
    })
}

fn schema_ref(rk: &ResourceKind) -> Value {
    json!({"$ref": format!("#/components/schemas/{}", schema_name(rk))})
}

fn write_body(rk: &ResourceKind) -> Value {
    json!({"content": {"*/*": {"schema": schema_ref(rk)}}, "required": true})
}

/// The patch types the server accepts for this kind.
fn patch_body(rk: &ResourceKind) -> Value {
    let mut types = vec!["application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml"];
    if !rk.is_custom() {
        types.push("application/strategic-merge-patch+json");
    }
    let schema = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    let content: Map<String, Value> = types.into_iter().map(|t| (t.to_string(), json!({"schema": schema}))).collect();
    json!({"content": content, "required": true})
}

fn query_parameter(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
}

fn operation(rk: &ResourceKind, action: &str, body: Option<Value>) -> Value {
    let mut parameters = vec![];
    if matches!(action, "post" | "put" | "patch") {
        parameters.extend(["dryRun", "fieldManager", "fieldValidation"].map(query_parameter));
    }
    if action == "patch" {
        parameters.push(query_parameter("force"));
    }
    let ok = json!({"description": "OK", "content": {"application/json": {"schema": schema_ref(rk)}}});
    let mut op = json!({
        "operationId": format!("{action}{}", rk.kind),
        "parameters": parameters,
        "responses": {"200": ok, "401": {"description": "Unauthorized"}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(rk),
    });
    if let Some(body) = body {
        op["requestBody"] = body;
    }
    op
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_findable_by_its_group_version_kind() {
        let index = index();
        for rk in KINDS {
            let key = gv_path(rk.group, rk.version);
            let url = index["paths"][&key]["serverRelativeURL"].as_str().unwrap();
            assert!(url.starts_with(&format!("/openapi/v3/{key}?hash=")), "{url}");
            let doc = document_for(&key).unwrap();
            let schema = &doc["components"]["schemas"][schema_name(rk)];
            assert_eq!(schema["x-kubernetes-group-version-kind"][0], gvk(rk));
            let patch = &doc["paths"][format!("{}/{{name}}", collection_path(rk))]["patch"];
            assert_eq!(patch["x-kubernetes-group-version-kind"], gvk(rk));
            let smp = patch["requestBody"]["content"].get("application/strategic-merge-patch+json").is_some();
            assert_eq!(smp, !rk.is_custom(), "{}", rk.kind);
        }
        assert!(document_for("apis/nope/v1").is_none());
    }
}
