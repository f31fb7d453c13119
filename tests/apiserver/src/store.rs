//! The object store: one global, monotonically increasing resourceVersion, optimistic concurrency,
//! and a bounded event history that watches are served from.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Mutex;

use serde_json::{Value, json};

use super::auth::Tokens;
use super::kinds::{KINDS, ResourceKind};
use super::rbac::{Attributes, User};
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;

/// How many events the history keeps; a watch from an older resourceVersion gets `410 Gone`.
pub const DEFAULT_HISTORY: usize = 100_000;

/// Which objects a list or watch is about.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    fn matches(&self, namespace: &str, object: &Value) -> bool {
        self.namespace.as_deref().is_none_or(|ns| ns == namespace)
            && self.labels.matches(object)
            && self.fields.matches(object)
    }
}

/// One change, as a watch reports it.
#[derive(Debug, Clone)]
pub struct Event {
    pub rv: u64,
    pub kind: usize,
    pub namespace: String,
    pub kind_of_event: &'static str,
    pub object: Value,
}

type Key = (usize, String, String);

struct Inner {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Event>,
    /// The highest resourceVersion whose event was dropped from the history.
    compacted: u64,
    uid_counter: u64,
}

pub struct Store {
    inner: Mutex<Inner>,
    capacity: usize,
    changed: tokio::sync::watch::Sender<u64>,
    /// Every kind of request served, as the authorizer sees it: what RBAC must allow.
    requests: Mutex<BTreeSet<Access>>,
    /// Per user: each request and the bytes sent back.
    usage: Mutex<BTreeMap<String, UserLog>>,
    tokens: Tokens,
    /// `Some` when authentication and RBAC are on.
    admin_token: Option<String>,
}

/// One request of one user, as the authorizer saw it, and whether it was allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub attributes: Attributes,
    pub allowed: bool,
}

/// What a user cost the server: requests made and response body bytes sent (watch streams included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub requests: u64,
    pub bytes: u64,
}

#[derive(Default)]
struct UserLog {
    usage: Usage,
    requests: Vec<Request>,
}

/// One request in RBAC terms: verb, API group (`""` for core), resource, subresource.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Access {
    pub verb: &'static str,
    pub group: &'static str,
    pub resource: &'static str,
    pub subresource: Option<String>,
}

/// Result of asking for the events after a resourceVersion.
pub enum Since {
    Events { events: Vec<Event>, current: u64 },
    TooOld { compacted: u64 },
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now().round(jiff::Unit::Second).map(|t| t.to_string()).unwrap_or_default()
}

fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata")?.get(field)?.as_str().filter(|s| !s.is_empty())
}

/// The object without metadata and status: what `generation` counts changes of.
fn spec_part(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    copy
}

/// The name rule of a kind: RBAC objects only need to be a valid path segment (Kubernetes'
/// `ValidatePathSegmentName`, so `system:controller:x` is fine); every other kind here is a DNS
/// subdomain.
fn valid_name_of(rk: &ResourceKind, name: &str) -> bool {
    if rk.group == "rbac.authorization.k8s.io" {
        return !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '%']);
    }
    valid_name(name)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

impl Store {
    /// A store without authentication: every request is allowed.
    pub fn new(capacity: usize) -> Self {
        Self::with_auth(capacity, false)
    }

    /// With `auth`, requests need a token (or are anonymous) and RBAC decides; an admin token is made.
    pub fn with_auth(capacity: usize, auth: bool) -> Self {
        let inner = Inner { rv: 1, objects: BTreeMap::new(), history: VecDeque::new(), compacted: 0, uid_counter: 0 };
        let (changed, _) = tokio::sync::watch::channel(1);
        let tokens = Tokens::default();
        let admin_token = auth.then(|| tokens.issue_admin());
        Self {
            inner: Mutex::new(inner),
            capacity,
            changed,
            requests: Mutex::new(BTreeSet::new()),
            usage: Mutex::new(BTreeMap::new()),
            tokens,
            admin_token,
        }
    }

    /// The admin's bearer token, when authentication is on.
    pub fn admin_token(&self) -> Option<&str> {
        self.admin_token.as_deref()
    }

    /// The caller of a request; with authentication off, [`crate::auth::UNSECURED_USER`] in `system:masters`.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<User, ApiError> {
        if self.admin_token.is_none() {
            return Ok(User::new(crate::auth::UNSECURED_USER, &["system:masters", "system:authenticated"]));
        }
        crate::auth::authenticate(&self.tokens, authorization, |ns, name| self.service_account_exists(ns, name))
    }

    fn service_account_exists(&self, namespace: &str, name: &str) -> bool {
        ResourceKind::find("", "v1", "serviceaccounts").is_some_and(|kind| self.get(kind, namespace, name).is_ok())
    }

    /// A token for an existing ServiceAccount, valid for `seconds` (TokenRequest), and when it expires.
    pub fn issue_token(
        &self,
        namespace: &str,
        name: &str,
        seconds: i64,
    ) -> Result<(String, jiff::Timestamp), ApiError> {
        let kind = ResourceKind::find("", "v1", "serviceaccounts").ok_or_else(|| ApiError::path_not_found(""))?;
        self.get(kind, namespace, name)?;
        let expires = crate::auth::expiry(seconds)?;
        Ok((self.tokens.issue_service_account(namespace, name, expires), expires))
    }

    /// Whether `user` may make the request: RBAC over the stored Roles and bindings.
    pub fn authorize(&self, user: &User, attributes: &Attributes) -> bool {
        self.admin_token.is_none() || crate::rbac::Policy::from_store(self).allows(user, attributes)
    }

    fn user_log(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, UserLog>> {
        self.usage.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes one request of `user` and the authorizer's answer.
    pub fn record_request(&self, user: &str, attributes: Attributes, allowed: bool) {
        let mut log = self.user_log();
        let entry = log.entry(user.to_string()).or_default();
        entry.usage.requests += 1;
        entry.requests.push(Request { attributes, allowed });
    }

    /// Adds response body bytes sent to `user`.
    pub fn record_bytes(&self, user: &str, bytes: u64) {
        self.user_log().entry(user.to_string()).or_default().usage.bytes += bytes;
    }

    /// Requests and bytes of `user` so far (zero for a user never seen).
    pub fn usage(&self, user: &str) -> Usage {
        self.user_log().get(user).map(|l| l.usage).unwrap_or_default()
    }

    /// Every request of `user` so far, in order.
    pub fn requests_of(&self, user: &str) -> Vec<Request> {
        self.user_log().get(user).map(|l| l.requests.clone()).unwrap_or_default()
    }

    /// Every user that made a request.
    pub fn users(&self) -> Vec<String> {
        self.user_log().keys().cloned().collect()
    }

    /// Notes a request for [`Store::accesses`].
    pub fn record(&self, access: Access) {
        self.requests.lock().unwrap_or_else(|p| p.into_inner()).insert(access);
    }

    /// Forgets the requests served so far (a test's own setup).
    pub fn clear_accesses(&self) {
        self.requests.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Every kind of request served so far.
    pub fn accesses(&self) -> BTreeSet<Access> {
        self.requests.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Wakes up on every write.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    pub fn get(&self, kind: usize, namespace: &str, name: &str) -> Result<Value, ApiError> {
        let key = (kind, namespace.to_string(), name.to_string());
        self.lock().objects.get(&key).cloned().ok_or_else(|| ApiError::not_found(&KINDS[kind], name))
    }

    /// The matching objects (sorted by namespace, then name) and the resourceVersion of the snapshot.
    pub fn list(&self, kind: usize, filter: &Filter) -> (Vec<Value>, u64) {
        let inner = self.lock();
        let items = inner
            .objects
            .range((kind, String::new(), String::new())..)
            .take_while(|((k, _, _), _)| *k == kind)
            .filter(|((_, ns, _), obj)| filter.matches(ns, obj))
            .map(|(_, obj)| obj.clone())
            .collect();
        (items, inner.rv)
    }

    /// Events after `rv` that match, or `TooOld` when the history no longer reaches back that far.
    pub fn since(&self, kind: usize, rv: u64, filter: &Filter) -> Since {
        let inner = self.lock();
        if rv < inner.compacted {
            return Since::TooOld { compacted: inner.compacted };
        }
        let start = inner.history.partition_point(|e| e.rv <= rv);
        let events = inner
            .history
            .range(start..)
            .filter(|e| e.kind == kind && filter.matches(&e.namespace, &e.object))
            .cloned()
            .collect();
        Since::Events { events, current: inner.rv }
    }

    /// POST: a new object, validated as the real server does (see [`crate::schema`]).
    pub fn create(&self, kind: usize, namespace: &str, object: Value) -> Result<Value, ApiError> {
        self.create_checked(kind, namespace, object, true)
    }

    /// Creates an object without type validation: for a test that needs one the API refuses today, as a
    /// real cluster may hold it (written under an older schema, or by a conversion bug). Names, the
    /// namespace and uniqueness are still checked.
    pub fn plant(&self, kind: usize, namespace: &str, object: Value) -> Result<Value, ApiError> {
        self.create_checked(kind, namespace, object, false)
    }

    fn create_checked(
        &self,
        kind: usize,
        namespace: &str,
        mut object: Value,
        validate: bool,
    ) -> Result<Value, ApiError> {
        let rk = &KINDS[kind];
        check_type(rk, &object)?;
        fold_string_data(rk, &mut object)?;
        let mut inner = self.lock();
        let name = match (meta_str(&object, "name"), meta_str(&object, "generateName")) {
            (Some(name), _) => name.to_string(),
            (None, Some(prefix)) => {
                inner.uid_counter += 1;
                format!("{prefix}{:05x}", inner.uid_counter)
            }
            (None, None) => {
                return Err(ApiError::invalid(
                    rk,
                    "",
                    "metadata.name: Required value: name or generateName is required",
                ));
            }
        };
        if !valid_name_of(rk, &name) {
            return Err(ApiError::invalid(
                rk,
                &name,
                "metadata.name: Invalid value: must be a lowercase RFC 1123 subdomain",
            ));
        }
        check_namespace(rk, namespace, &name, &object)?;
        let key = (kind, namespace.to_string(), name.clone());
        if inner.objects.contains_key(&key) {
            return Err(ApiError::already_exists(rk, &name));
        }
        inner.uid_counter += 1;
        let uid = format!("00000000-0000-4000-8000-{:012x}", inner.uid_counter);
        let meta = object
            .as_object_mut()
            .ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))?
            .entry("metadata")
            .or_insert_with(|| json!({}));
        meta["name"] = json!(name);
        if rk.namespaced {
            meta["namespace"] = json!(namespace);
        }
        meta["uid"] = json!(uid);
        meta["creationTimestamp"] = json!(now_rfc3339());
        if rk.status {
            meta["generation"] = json!(1);
        }
        set_type(rk, &mut object);
        if validate {
            crate::schema::validate(rk, &name, &object, inner.crd_of(rk))?;
        }
        Ok(inner.commit(self, key, object, "ADDED"))
    }

    /// PUT: the body replaces the object. A non-empty `metadata.resourceVersion` must equal the stored one.
    pub fn update(
        &self,
        kind: usize,
        namespace: &str,
        name: &str,
        object: Value,
        status_only: bool,
    ) -> Result<Value, ApiError> {
        let mut inner = self.lock();
        let current = inner.objects.get(&(kind, namespace.to_string(), name.to_string())).cloned();
        let current = current.ok_or_else(|| ApiError::not_found(&KINDS[kind], name))?;
        self.replace_locked(&mut inner, kind, namespace, name, &current, object, status_only)
    }

    /// PATCH: `apply` computes the new object from the stored one, atomically.
    pub fn patch(
        &self,
        kind: usize,
        namespace: &str,
        name: &str,
        status_only: bool,
        apply: impl FnOnce(&Value) -> Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        let mut inner = self.lock();
        let current = inner.objects.get(&(kind, namespace.to_string(), name.to_string())).cloned();
        let current = current.ok_or_else(|| ApiError::not_found(&KINDS[kind], name))?;
        let mut patched = apply(&current)?;
        // A patch without a resourceVersion is unconditional; with one, it is a precondition.
        if meta_str(&patched, "resourceVersion").is_none() {
            patched["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
        }
        self.replace_locked(&mut inner, kind, namespace, name, &current, patched, status_only)
    }

    #[allow(clippy::too_many_arguments)]
    fn replace_locked(
        &self,
        inner: &mut Inner,
        kind: usize,
        namespace: &str,
        name: &str,
        current: &Value,
        mut object: Value,
        status_only: bool,
    ) -> Result<Value, ApiError> {
        let rk = &KINDS[kind];
        check_type(rk, &object)?;
        fold_string_data(rk, &mut object)?;
        if meta_str(&object, "name").is_some_and(|n| n != name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                meta_str(&object, "name").unwrap_or_default()
            )));
        }
        check_namespace(rk, namespace, name, &object)?;
        if let Some(rv) = meta_str(&object, "resourceVersion")
            && Some(rv) != meta_str(current, "resourceVersion")
        {
            return Err(ApiError::conflict(rk, name));
        }
        if status_only {
            let status = object.get("status").cloned();
            object = current.clone();
            match status {
                Some(status) => object["status"] = status,
                None => _ = object.as_object_mut().map(|m| m.remove("status")),
            }
        } else if rk.status {
            match current.get("status") {
                Some(status) => object["status"] = status.clone(),
                None => _ = object.as_object_mut().map(|m| m.remove("status")),
            }
        }
        keep_server_fields(rk, current, &mut object);
        set_type(rk, &mut object);
        crate::schema::validate(rk, name, &object, inner.crd_of(rk))?;
        let key = (kind, namespace.to_string(), name.to_string());
        if meta_str(&object, "deletionTimestamp").is_some() && finalizers_empty(&object) {
            return Ok(inner.remove(self, key, object));
        }
        if object == *current {
            return Ok(object); // a no-op write does not change the resourceVersion, as on the real server
        }
        Ok(inner.commit(self, key, object, "MODIFIED"))
    }

    /// DELETE: removes at once, or marks for deletion while finalizers remain.
    pub fn delete(
        &self,
        kind: usize,
        namespace: &str,
        name: &str,
        precondition_rv: Option<&str>,
    ) -> Result<Value, ApiError> {
        let rk = &KINDS[kind];
        let mut inner = self.lock();
        let key = (kind, namespace.to_string(), name.to_string());
        let current = inner.objects.get(&key).cloned().ok_or_else(|| ApiError::not_found(rk, name))?;
        if precondition_rv.is_some_and(|rv| Some(rv) != meta_str(&current, "resourceVersion")) {
            return Err(ApiError::conflict(rk, name));
        }
        if finalizers_empty(&current) {
            return Ok(inner.remove(self, key, current));
        }
        if meta_str(&current, "deletionTimestamp").is_some() {
            return Ok(current);
        }
        let mut marked = current;
        marked["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
        Ok(inner.commit(self, key, marked, "MODIFIED"))
    }
}

impl Inner {
    /// The stored CustomResourceDefinition that serves `rk`, if any.
    fn crd_of(&self, rk: &ResourceKind) -> Option<&Value> {
        if !rk.is_custom() {
            return None;
        }
        let crds = ResourceKind::find("apiextensions.k8s.io", "v1", "customresourcedefinitions")?;
        self.objects.get(&(crds, String::new(), format!("{}.{}", rk.plural, rk.group)))
    }

    fn record(&mut self, store: &Store, key: &Key, kind_of_event: &'static str, object: &Value) {
        self.history.push_back(Event {
            rv: self.rv,
            kind: key.0,
            namespace: key.1.clone(),
            kind_of_event,
            object: object.clone(),
        });
        while self.history.len() > store.capacity {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted = dropped.rv;
            }
        }
        store.changed.send_replace(self.rv);
    }

    fn commit(&mut self, store: &Store, key: Key, mut object: Value, kind_of_event: &'static str) -> Value {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.record(store, &key, kind_of_event, &object);
        self.objects.insert(key, object.clone());
        object
    }

    fn remove(&mut self, store: &Store, key: Key, mut object: Value) -> Value {
        self.rv += 1;
        self.objects.remove(&key);
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.record(store, &key, "DELETED", &object);
        object
    }
}

fn finalizers_empty(object: &Value) -> bool {
    object.pointer("/metadata/finalizers").and_then(Value::as_array).is_none_or(|f| f.is_empty())
}

/// Fields a client cannot change: uid, creation time, deletion time; generation counts spec changes.
fn keep_server_fields(rk: &ResourceKind, current: &Value, object: &mut Value) {
    let generation = current.pointer("/metadata/generation").and_then(Value::as_i64);
    let spec_changed = spec_part(current) != spec_part(object);
    let meta = &mut object["metadata"];
    for field in ["uid", "creationTimestamp", "deletionTimestamp", "namespace"] {
        match current["metadata"].get(field) {
            Some(v) => meta[field] = v.clone(),
            None => _ = meta.as_object_mut().map(|m| m.remove(field)),
        }
    }
    meta["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
    if rk.status {
        let g = generation.unwrap_or(1);
        meta["generation"] = json!(if spec_changed { g + 1 } else { g });
    }
}

fn set_type(rk: &ResourceKind, object: &mut Value) {
    object["apiVersion"] = json!(rk.api_version());
    object["kind"] = json!(rk.kind);
}

/// A Secret's `stringData` goes into `data` (base64), winning over the same key there, and is not
/// stored, as the real API server does on every write.
fn fold_string_data(rk: &ResourceKind, object: &mut Value) -> Result<(), ApiError> {
    use base64::Engine;
    if rk.kind != "Secret" || !rk.group.is_empty() {
        return Ok(());
    }
    let Some(strings) = object.as_object_mut().and_then(|o| o.remove("stringData")) else { return Ok(()) };
    let Value::Object(strings) = strings else {
        return Err(ApiError::bad_request(
            "Secret in version \"v1\" cannot be handled as a Secret: stringData must be an object",
        ));
    };
    let data = object.as_object_mut().expect("checked by check_type").entry("data").or_insert_with(|| json!({}));
    let Some(data) = data.as_object_mut() else {
        return Err(ApiError::bad_request(
            "Secret in version \"v1\" cannot be handled as a Secret: data must be an object",
        ));
    };
    for (key, value) in strings {
        let Value::String(text) = value else {
            return Err(ApiError::bad_request(format!(
                "Secret in version \"v1\" cannot be handled as a Secret: stringData.{key} must be a string"
            )));
        };
        data.insert(key, json!(base64::engine::general_purpose::STANDARD.encode(text)));
    }
    Ok(())
}

fn check_type(rk: &ResourceKind, object: &Value) -> Result<(), ApiError> {
    if !object.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or(rk.kind);
    let api_version = object.get("apiVersion").and_then(Value::as_str).map(str::to_string).unwrap_or(rk.api_version());
    if kind != rk.kind || api_version != rk.api_version() {
        return Err(ApiError::bad_request(format!(
            "the object is {api_version}, Kind={kind}, but this URL serves {}, Kind={}",
            rk.api_version(),
            rk.kind
        )));
    }
    Ok(())
}

fn check_namespace(rk: &ResourceKind, namespace: &str, name: &str, object: &Value) -> Result<(), ApiError> {
    match meta_str(object, "namespace") {
        Some(ns) if rk.namespaced && ns != namespace => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        Some(_) if !rk.namespaced => {
            Err(ApiError::invalid(rk, name, "metadata.namespace: Forbidden: not allowed on this type"))
        }
        _ => Ok(()),
    }
}
