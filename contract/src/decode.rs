//! One bad object never stops the rest: lists and watches read objects as [`Raw`] JSON, which always
//! decodes, and each item is then decoded into its type on its own ([`typed`]). An item that does not
//! decode becomes a [`Skipped`] that names the object and the field, and is reported on the object (an
//! Event), in the log, and on the Seed's condition; the others go on.

use std::borrow::Cow;
use std::marker::PhantomData;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// How long a decoder's reason may be in a report: it can quote the offending value.
const MAX_REASON: usize = 160;

/// An object of kind `K` as the API server sent it. Only `metadata` is read, and only as far as it
/// decodes (name, namespace, uid and resourceVersion are picked out of a broken one), so a list or a
/// watch of `Raw<K>` never fails on one object.
pub struct Raw<K> {
    pub metadata: ObjectMeta,
    pub value: Value,
    kind: PhantomData<fn() -> K>,
}

impl<K> Raw<K> {
    pub fn new(value: Value) -> Self {
        let metadata = value
            .get("metadata")
            .and_then(|m| serde_json::from_value::<ObjectMeta>(m.clone()).ok())
            .unwrap_or_else(|| {
                let text = |field: &str| {
                    value.pointer(&format!("/metadata/{field}")).and_then(Value::as_str).map(String::from)
                };
                ObjectMeta {
                    name: text("name"),
                    namespace: text("namespace"),
                    uid: text("uid"),
                    resource_version: text("resourceVersion"),
                    ..Default::default()
                }
            });
        Self { metadata, value, kind: PhantomData }
    }

    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }
}

impl<K> Clone for Raw<K> {
    fn clone(&self) -> Self {
        Self { metadata: self.metadata.clone(), value: self.value.clone(), kind: PhantomData }
    }
}

impl<K> std::fmt::Debug for Raw<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Raw").field("name", &self.metadata.name).field("namespace", &self.metadata.namespace).finish()
    }
}

impl<'de, K> Deserialize<'de> for Raw<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(Self::new)
    }
}

impl<K> Serialize for Raw<K> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(serializer)
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Raw<K> {
    type DynamicType = ();
    type Scope = K::Scope;
    fn kind(_: &()) -> Cow<'_, str> {
        K::kind(&()).into_owned().into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        K::group(&()).into_owned().into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        K::version(&()).into_owned().into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        K::plural(&()).into_owned().into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// An object that was skipped because it does not decode: which one, the field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    /// The field path, e.g. `spec.networking.pods`.
    pub field: String,
    pub reason: String,
}

impl Skipped {
    /// `kind namespace/name` or `kind name`.
    pub fn object(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}; skipped, fix or remove the object", self.object(), self.field, self.reason)
    }
}

/// Decodes JSON into `T`, naming the path of the first field that does not fit.
pub fn decode_value<T: DeserializeOwned>(value: &Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "(the object)".to_string() } else { path };
        (field, crate::shorten(&e.inner().to_string(), MAX_REASON))
    })
}

/// The object decoded into its type, or what to report about it.
pub fn typed<K: Resource<DynamicType = ()> + DeserializeOwned>(raw: &Raw<K>) -> Result<K, Box<Skipped>> {
    decode_value::<K>(&raw.value).map_err(|(field, reason)| {
        Box::new(Skipped {
            api_version: K::api_version(&()).into_owned(),
            kind: K::kind(&()).into_owned(),
            namespace: raw.metadata.namespace.clone(),
            name: raw.name().to_string(),
            uid: raw.metadata.uid.clone(),
            resource_version: raw.metadata.resource_version.clone(),
            field,
            reason,
        })
    })
}

/// Every item decoded on its own: the good ones, and the skipped ones.
pub fn split<K: Resource<DynamicType = ()> + DeserializeOwned>(
    items: impl IntoIterator<Item = Raw<K>>,
) -> (Vec<K>, Vec<Skipped>) {
    let mut good = Vec::new();
    let mut skipped = Vec::new();
    for raw in items {
        match typed(&raw) {
            Ok(k) => good.push(k),
            Err(s) => skipped.push(*s),
        }
    }
    (good, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projection::ShootPeer;
    use serde_json::json;

    // The Gardener objects' decoding is tested with their types in kubelink-ipam (`gardener`).
    #[test]
    fn a_bad_item_is_skipped_by_name_and_field_and_the_rest_decode() {
        let spec = |address: Value| json!({"shoot": "garden-dev/a", "address": address, "publicKey": "k"});
        let list = json!([
            {"metadata": {"name": "a", "namespace": "kubelink"}, "spec": spec("192.168.128.10".into())},
            {"metadata": {"name": "bad", "namespace": "kubelink", "uid": "u1"}, "spec": spec(5.into())},
            {"metadata": {"name": "broken-meta", "namespace": "kubelink", "labels": {"x": 1}}, "spec": spec("a".into())},
        ]);
        let raws: Vec<Raw<ShootPeer>> = serde_json::from_value(list).unwrap();
        let (good, skipped) = split(raws);
        assert_eq!(good.iter().map(|p| p.spec.address.as_str()).collect::<Vec<_>>(), ["192.168.128.10"]);
        assert_eq!(skipped.len(), 2);
        assert_eq!(
            (skipped[0].object().as_str(), skipped[0].field.as_str()),
            ("ShootPeer kubelink/bad", "spec.address")
        );
        assert_eq!(skipped[0].uid.as_deref(), Some("u1"));
        assert!(skipped[0].to_string().contains("expected a string"), "{}", skipped[0]);
        assert_eq!((skipped[1].name.as_str(), skipped[1].field.as_str()), ("broken-meta", "metadata.labels.x"));
    }

    #[test]
    fn raw_keeps_the_object_as_sent() {
        let doc =
            json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "n", "annotations": {"a": "b"}}, "odd": [1]});
        let raw: Raw<ShootPeer> = serde_json::from_value(doc.clone()).unwrap();
        assert_eq!(serde_json::to_value(&raw).unwrap(), doc);
        assert_eq!(raw.name(), "n");
    }
}
