//! The REST surface: real paths, query parameters, status codes and the watch stream.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use super::auth;
use super::kinds::{KINDS, ResourceKind};
use super::openapi;
use super::rbac::Attributes;
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{Filter, Since, Store};

pub type Body = BoxBody<Bytes, Infallible>;

/// How often an idle watch that asked for bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(5);
/// The real server gzips a response body of at least this size for a client that accepts gzip
/// (`APIResponseCompression`, on by default), except watch streams.
pub const GZIP_THRESHOLD: usize = 128 * 1024;
/// The real server's gzip level: fast.
const GZIP_LEVEL: u32 = 1;

/// The real server's default upper bound for a watch without `timeoutSeconds` is 30 to 60 minutes.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// The resource a request is about.
#[derive(Debug, PartialEq)]
struct Target {
    kind: usize,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

enum Route {
    Resource(Target),
    Discovery(Value),
}

/// Authenticates, authorizes (recording both per user), serves, gzips a large answer for a client that
/// accepts it, and counts the bytes sent back (as sent: compressed when gzipped).
pub async fn handle(store: Arc<Store>, request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let gzip = accepts_gzip(request.headers());
    let response = authorized(store.clone(), request).await;
    let response = if gzip { gzipped(response).await } else { response };
    Ok(counted(response.0, store, response.1))
}

/// Whether `Accept-Encoding` lists `gzip`, token by token as the real server reads it.
fn accepts_gzip(headers: &hyper::HeaderMap) -> bool {
    let value = headers.get(hyper::header::ACCEPT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("");
    value.split(',').any(|token| token.trim() == "gzip")
}

/// A complete body (not a watch stream) of at least [`GZIP_THRESHOLD`] bytes, gzipped.
async fn gzipped((response, user): (Response<Body>, String)) -> (Response<Body>, String) {
    use http_body_util::BodyExt as _;
    use hyper::body::Body as _;
    use std::io::Write as _;
    if response.body().size_hint().exact().is_none_or(|n| n < GZIP_THRESHOLD as u64) {
        return (response, user);
    }
    let (mut parts, body) = response.into_parts();
    let Ok(collected) = body.collect().await;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(GZIP_LEVEL));
    let zipped = encoder.write_all(&collected.to_bytes()).and_then(|()| encoder.finish()).expect("gzip into memory");
    parts.headers.insert(hyper::header::CONTENT_ENCODING, "gzip".parse().expect("static header"));
    parts.headers.remove(hyper::header::CONTENT_LENGTH);
    (Response::from_parts(parts, Full::new(Bytes::from(zipped)).boxed()), user)
}

/// The response and the name of the user it goes to.
async fn authorized(store: Arc<Store>, request: Request<Incoming>) -> (Response<Body>, String) {
    let authorization = request.headers().get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let user = match store.authenticate(authorization) {
        Ok(user) => user,
        // Not counted: there is no user to count it for.
        Err(e) => return (error_response(&e), String::new()),
    };
    let query: HashMap<String, String> =
        form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes()).into_owned().collect();
    let attributes = Attributes::from_request(request.method().as_str(), request.uri().path(), &query);
    let allowed = store.authorize(&user, &attributes);
    store.record_request(&user.name, attributes.clone(), allowed);
    let response = if allowed {
        dispatch(store.clone(), request, &query).await.unwrap_or_else(|e| error_response(&e))
    } else {
        error_response(&ApiError::forbidden(&user, &attributes))
    };
    (response, user.name)
}

fn error_response(e: &ApiError) -> Response<Body> {
    json_response(StatusCode::from_u16(e.code).unwrap_or(StatusCode::BAD_REQUEST), &e.to_status())
}

/// Counts the body bytes as they go out, so a watch's stream counts too (nothing without a user).
fn counted(response: Response<Body>, store: Arc<Store>, user: String) -> Response<Body> {
    if user.is_empty() {
        return response;
    }
    response.map(|body| {
        body.map_frame(move |frame| {
            if let Some(data) = frame.data_ref() {
                store.record_bytes(&user, data.len() as u64);
            }
            frame
        })
        .boxed()
    })
}

/// The request as Kubernetes' authorizer names it.
fn access(method: &Method, target: &Target, watch: bool) -> crate::store::Access {
    let verb = match (method, target.name.is_some()) {
        (&Method::GET, true) => "get",
        (&Method::GET, false) if watch => "watch",
        (&Method::GET, false) => "list",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, _) => "delete",
        _ => "unknown",
    };
    let kind = &KINDS[target.kind];
    crate::store::Access { verb, group: kind.group, resource: kind.plural, subresource: target.subresource.clone() }
}

async fn dispatch(
    store: Arc<Store>,
    request: Request<Incoming>,
    query: &HashMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    let (parts, body) = request.into_parts();
    let target = match route(parts.uri.path())? {
        Route::Discovery(doc) => return Ok(json_response(StatusCode::OK, &doc)),
        Route::Resource(target) => target,
    };
    let body = body.collect().await.map_err(|e| ApiError::bad_request(format!("reading the body: {e}")))?.to_bytes();
    let content_type = parts.headers.get(hyper::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    // Only JSON bodies are decoded (no protobuf, as `kubectl create token` sends): say so, as a real
    // server does for a format it does not know.
    if matches!(parts.method, Method::POST | Method::PUT)
        && !body.is_empty()
        && !matches!(media, "" | "application/json")
    {
        return Err(ApiError::unsupported_media_type(media));
    }
    let ns = target.namespace.clone().unwrap_or_default();
    store.record(access(&parts.method, &target, is_true(query.get("watch"))));
    let status_only = match target.subresource.as_deref() {
        None => false,
        Some("status") if KINDS[target.kind].status => true,
        Some("token") if KINDS[target.kind].api_version() == "v1" && KINDS[target.kind].plural == "serviceaccounts" => {
            return match (&parts.method, target.name.as_deref()) {
                (&Method::POST, Some(name)) => token_request(&store, &ns, name, &body),
                (method, _) => Err(ApiError::method_not_allowed(method.as_str())),
            };
        }
        Some(other) => return Err(ApiError::path_not_found(&format!("subresource {other}"))),
    };
    match (&parts.method, target.name.as_deref()) {
        (&Method::GET, None) if is_true(query.get("watch")) => watch(store, &target, query),
        (&Method::GET, None) => list(&store, &target, query),
        (&Method::GET, Some(name)) => ok(store.get(target.kind, &ns, name)),
        (&Method::POST, None) => {
            let object = parse_json(&body)?;
            Ok(json_response(StatusCode::CREATED, &store.create(target.kind, &ns, object)?))
        }
        (&Method::PUT, Some(name)) => ok(store.update(target.kind, &ns, name, parse_json(&body)?, status_only)),
        (&Method::PATCH, Some(name)) => patch(&store, &target, name, content_type, &body, status_only, query),
        (&Method::DELETE, Some(name)) => {
            let options: Value = if body.is_empty() { json!({}) } else { parse_json(&body)? };
            let precondition = options.pointer("/preconditions/resourceVersion").and_then(Value::as_str);
            ok(store.delete(target.kind, &ns, name, precondition))
        }
        (method, _) => Err(ApiError::method_not_allowed(method.as_str())),
    }
}

/// The TokenRequest API: a token for the ServiceAccount, 404 when it does not exist.
fn token_request(store: &Store, namespace: &str, name: &str, body: &[u8]) -> Result<Response<Body>, ApiError> {
    let request: Value = if body.is_empty() { json!({}) } else { parse_json(body)? };
    let seconds =
        request.pointer("/spec/expirationSeconds").and_then(Value::as_i64).unwrap_or(auth::DEFAULT_TOKEN_SECONDS);
    if seconds < auth::MIN_TOKEN_SECONDS {
        return Err(ApiError {
            code: 422,
            reason: "Invalid",
            message: format!(
                "TokenRequest.authentication.k8s.io \"{name}\" is invalid: spec.expirationSeconds: Invalid value: \
                 {seconds}: may not specify a duration less than 10 minutes"
            ),
            details: Some(json!({"name": name, "group": "authentication.k8s.io", "kind": "TokenRequest"})),
        });
    }
    let (token, expires) = store.issue_token(namespace, name, seconds)?;
    let audiences = request.pointer("/spec/audiences").cloned().unwrap_or_else(|| json!([]));
    let response = json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": null},
        "spec": {"audiences": audiences, "expirationSeconds": seconds, "boundObjectRef": null},
        "status": {"token": token, "expirationTimestamp": expires.to_string()},
    });
    Ok(json_response(StatusCode::CREATED, &response))
}

fn is_true(value: Option<&String>) -> bool {
    value.is_some_and(|v| v == "true" || v == "1")
}

fn ok(result: Result<Value, ApiError>) -> Result<Response<Body>, ApiError> {
    result.map(|v| json_response(StatusCode::OK, &v))
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(bytes)).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(hyper::header::CONTENT_TYPE, "application/json".parse().expect("static header"));
    response
}

fn route(path: &str) -> Result<Route, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return Ok(Route::Discovery(version_doc())),
        ["api"] => return Ok(Route::Discovery(json!({"kind": "APIVersions", "versions": ["v1"]}))),
        ["apis"] => return Ok(Route::Discovery(group_list())),
        ["api", version] => return Ok(Route::Discovery(resource_list("", version))),
        ["apis", group, version] => return Ok(Route::Discovery(resource_list(group, version))),
        ["openapi", "v3"] => return Ok(Route::Discovery(openapi::index())),
        ["openapi", "v3", rest @ ..] => {
            return openapi::document_for(&rest.join("/"))
                .map(Route::Discovery)
                .ok_or_else(|| ApiError::path_not_found(path));
        }
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(ApiError::path_not_found(path)),
    };
    let (namespace, plural, tail) = match rest {
        ["namespaces", ns, plural, tail @ ..] => (Some(ns.to_string()), *plural, tail),
        [plural, tail @ ..] => (None, *plural, tail),
        [] => return Err(ApiError::path_not_found(path)),
    };
    let kind = ResourceKind::find(group, version, plural).ok_or_else(|| ApiError::path_not_found(path))?;
    let rk = &KINDS[kind];
    let name = tail.first().map(|s| s.to_string());
    // Namespaced items need a namespace; cluster-scoped resources never have one.
    if (rk.namespaced && namespace.is_none() && name.is_some())
        || (!rk.namespaced && namespace.is_some())
        || tail.len() > 2
    {
        return Err(ApiError::path_not_found(path));
    }
    Ok(Route::Resource(Target { kind, namespace, name, subresource: tail.get(1).map(|s| s.to_string()) }))
}

fn version_doc() -> Value {
    json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-kubelink-test", "platform": "linux/amd64"})
}

fn group_list() -> Value {
    let mut groups: Vec<(&str, &str)> =
        KINDS.iter().filter(|k| !k.group.is_empty()).map(|k| (k.group, k.version)).collect();
    groups.dedup();
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(g, v)| {
            let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
            json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn resource_list(group: &str, version: &str) -> Value {
    let resources: Vec<Value> = KINDS
        .iter()
        .filter(|k| k.group == group && k.version == version)
        .map(|k| {
            json!({"name": k.plural, "singularName": k.kind.to_lowercase(), "namespaced": k.namespaced, "kind": k.kind,
                   "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]})
        })
        .collect();
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

fn filter_from(target: &Target, query: &HashMap<String, String>) -> Result<Filter, ApiError> {
    Ok(Filter {
        namespace: target.namespace.clone(),
        labels: LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))?,
        fields: FieldSelector::parse(query.get("fieldSelector").map_or("", String::as_str))?,
    })
}

/// A list is always served from the latest state. Like the real server answering from its watch cache,
/// it may ignore `limit`: clients must (and kube does) cope with a list that is not paginated.
fn list(store: &Store, target: &Target, query: &HashMap<String, String>) -> Result<Response<Body>, ApiError> {
    let rk = &KINDS[target.kind];
    let (items, rv) = store.list(target.kind, &filter_from(target, query)?);
    let doc = json!({
        "kind": format!("{}List", rk.kind),
        "apiVersion": rk.api_version(),
        "metadata": {"resourceVersion": rv.to_string()},
        "items": items,
    });
    Ok(json_response(StatusCode::OK, &doc))
}

struct WatchPlan {
    kind: usize,
    filter: Filter,
    /// `None`: send the current objects as ADDED first, then changes.
    from: Option<u64>,
    bookmarks: bool,
    initial_events_end: bool,
    timeout: Duration,
}

fn watch(store: Arc<Store>, target: &Target, query: &HashMap<String, String>) -> Result<Response<Body>, ApiError> {
    let from = match query.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(rv) => {
            Some(rv.parse::<u64>().map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?)
        }
    };
    let send_initial = is_true(query.get("sendInitialEvents"));
    let plan = WatchPlan {
        kind: target.kind,
        filter: filter_from(target, query)?,
        from: if send_initial { None } else { from },
        bookmarks: is_true(query.get("allowWatchBookmarks")),
        initial_events_end: send_initial,
        timeout: query
            .get("timeoutSeconds")
            .and_then(|t| t.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_WATCH_TIMEOUT),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(256);
    tokio::spawn(run_watch(store, plan, tx));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    response.headers_mut().insert(hyper::header::CONTENT_TYPE, "application/json".parse().expect("static header"));
    Ok(response)
}

fn event_line(kind_of_event: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind_of_event, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn bookmark(kind: usize, rv: u64, initial_events_end: bool) -> Bytes {
    let rk = &KINDS[kind];
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_events_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    event_line("BOOKMARK", &json!({"kind": rk.kind, "apiVersion": rk.api_version(), "metadata": meta}))
}

/// Streams events until the client goes away or the timeout ends the watch (clients then re-watch).
async fn run_watch(store: Arc<Store>, plan: WatchPlan, tx: tokio::sync::mpsc::Sender<Bytes>) {
    let mut changed = store.subscribe();
    let deadline = tokio::time::Instant::now() + plan.timeout;
    let mut last = match plan.from {
        Some(rv) => rv,
        None => {
            let (items, rv) = store.list(plan.kind, &plan.filter);
            for item in &items {
                if tx.send(event_line("ADDED", item)).await.is_err() {
                    return;
                }
            }
            if plan.initial_events_end && tx.send(bookmark(plan.kind, rv, true)).await.is_err() {
                return;
            }
            rv
        }
    };
    loop {
        changed.borrow_and_update();
        match store.since(plan.kind, last, &plan.filter) {
            Since::TooOld { compacted } => {
                let gone = ApiError::gone(format!("too old resource version: {last} ({compacted})"));
                let _ = tx.send(event_line("ERROR", &gone.to_status())).await;
                return;
            }
            Since::Events { events, current } => {
                for e in events {
                    if tx.send(event_line(e.kind_of_event, &e.object)).await.is_err() {
                        return;
                    }
                }
                last = current;
            }
        }
        tokio::select! {
            r = changed.changed() => if r.is_err() { return },
            _ = tokio::time::sleep_until(deadline) => return,
            _ = tokio::time::sleep(BOOKMARK_EVERY), if plan.bookmarks => {
                if tx.send(bookmark(plan.kind, last, false)).await.is_err() { return }
            }
            _ = tx.closed() => return,
        }
    }
}

fn patch(
    store: &Store,
    target: &Target,
    name: &str,
    content_type: &str,
    body: &[u8],
    status_only: bool,
    query: &HashMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    let ns = target.namespace.clone().unwrap_or_default();
    let media = content_type.split(';').next().unwrap_or("").trim();
    let patch = parse_json(body)?;
    match media {
        "application/merge-patch+json" => {
            ok(store.patch(target.kind, &ns, name, status_only, |current| Ok(merged(current, &patch))))
        }
        "application/strategic-merge-patch+json" if KINDS[target.kind].is_custom() => {
            Err(ApiError::unsupported_patch())
        }
        "application/strategic-merge-patch+json" => {
            ok(store.patch(target.kind, &ns, name, status_only, |current| Ok(strategic_merged(current, &patch))))
        }
        "application/json-patch+json" => {
            let ops: json_patch::Patch =
                serde_json::from_value(patch).map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            ok(store.patch(target.kind, &ns, name, status_only, |current| {
                let mut doc = current.clone();
                json_patch::patch(&mut doc, &ops)
                    .map_err(|e| ApiError::invalid(&KINDS[target.kind], name, e.to_string()))?;
                Ok(doc)
            }))
        }
        // Server-side apply, approximated as "merge, creating when missing"; no field ownership.
        "application/apply-patch+yaml" => {
            if !query.contains_key("fieldManager") {
                return Err(ApiError::bad_request("PATCH, PatchType is ApplyPatch: fieldManager is required"));
            }
            match store.patch(target.kind, &ns, name, status_only, |current| Ok(merged(current, &patch))) {
                Err(e) if e.code == 404 => {
                    let mut object = patch.clone();
                    object["metadata"]["name"] = json!(name);
                    Ok(json_response(StatusCode::CREATED, &store.create(target.kind, &ns, object)?))
                }
                other => ok(other),
            }
        }
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

fn merged(current: &Value, patch: &Value) -> Value {
    let mut doc = current.clone();
    json_patch::merge(&mut doc, patch);
    doc
}

/// A strategic merge patch without patch strategies: maps merge (`null` or `$patch: delete` removes,
/// `$patch: replace` replaces, `$retainKeys` prunes), lists are replaced whole, as for lists the served
/// OpenAPI declares no merge key for; `$setElementOrder` is ignored and `$deleteFromPrimitiveList`
/// removes the listed values.
fn strategic_merged(current: &Value, patch: &Value) -> Value {
    let Value::Object(changes) = patch else { return patch.clone() };
    let directive = changes.get("$patch").and_then(Value::as_str);
    let mut out = match (current, directive) {
        (Value::Object(map), None) => map.clone(),
        _ => serde_json::Map::new(),
    };
    for (key, value) in changes {
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Some(drop)) = (out.get_mut(field), value.as_array()) {
                items.retain(|item| !drop.contains(item));
            }
        } else if key.starts_with('$') {
            continue;
        } else if value.is_null() || value.get("$patch").and_then(Value::as_str) == Some("delete") {
            out.remove(key);
        } else {
            let merged = strategic_merged(out.get(key).unwrap_or(&Value::Null), value);
            out.insert(key.clone(), merged);
        }
    }
    if let Some(Value::Array(keep)) = changes.get("$retainKeys") {
        out.retain(|k, _| keep.iter().any(|v| v.as_str() == Some(k)));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(path: &str) -> Target {
        match route(path).unwrap() {
            Route::Resource(t) => t,
            Route::Discovery(_) => panic!("{path} is not a resource"),
        }
    }

    #[test]
    fn paths_map_to_resources_as_on_the_real_server() {
        let t = target("/api/v1/namespaces/ns1/secrets/s1");
        assert_eq!(
            (KINDS[t.kind].kind, t.namespace.as_deref(), t.name.as_deref()),
            ("Secret", Some("ns1"), Some("s1"))
        );
        let t = target("/apis/core.gardener.cloud/v1beta1/seeds/seed-a/status");
        assert_eq!(
            (KINDS[t.kind].kind, t.name.as_deref(), t.subresource.as_deref()),
            ("Seed", Some("seed-a"), Some("status"))
        );
        let t = target("/apis/core.gardener.cloud/v1beta1/shootstates");
        assert_eq!((KINDS[t.kind].kind, t.namespace, t.name), ("ShootState", None, None));
        let t = target("/api/v1/namespaces/garden");
        assert_eq!((KINDS[t.kind].kind, t.name.as_deref()), ("Namespace", Some("garden")));
        assert!(route("/api/v1/secrets/s1").is_err(), "a namespaced item needs its namespace");
        assert!(route("/apis/core.gardener.cloud/v1beta1/namespaces/x/seeds").is_err(), "seeds are cluster-scoped");
        assert!(route("/apis/nope/v1/things").is_err());
    }
}

#[cfg(test)]
mod strategic_tests {
    use super::*;

    #[test]
    fn strategic_merge_handles_the_directives_kubectl_sends() {
        let current = json!({"metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x", "y"]},
                             "data": {"k": "v"}, "spec": {"old": 1, "keep": 2}});
        let patch = json!({
            "metadata": {"labels": {"a": null, "c": "3"}, "$deleteFromPrimitiveList/finalizers": ["x"],
                         "$setElementOrder/finalizers": ["y"]},
            "data": {"$patch": "replace", "n": "w"},
            "spec": {"$retainKeys": ["keep", "new"], "new": 3},
        });
        assert_eq!(
            strategic_merged(&current, &patch),
            json!({"metadata": {"labels": {"b": "2", "c": "3"}, "finalizers": ["y"]}, "data": {"n": "w"},
                   "spec": {"keep": 2, "new": 3}})
        );
    }
}

#[cfg(test)]
mod gzip_tests {
    use super::*;
    use std::io::Read as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One GET over a fresh connection: the response head (lower-cased) and body as sent.
    async fn get(url: &str, path: &str, accept_encoding: Option<&str>) -> (String, Vec<u8>) {
        let mut stream = tokio::net::TcpStream::connect(url.trim_start_matches("http://")).await.unwrap();
        let accept = accept_encoding.map(|a| format!("accept-encoding: {a}\r\n")).unwrap_or_default();
        let request = format!("GET {path} HTTP/1.1\r\nhost: test\r\n{accept}connection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&raw[..end]).to_lowercase();
        let body = if head.contains("transfer-encoding: chunked") {
            dechunked(&raw[end + 4..])
        } else {
            raw[end + 4..].to_vec()
        };
        (head, body)
    }

    /// The body of a chunked transfer.
    fn dechunked(mut raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let line = raw.windows(2).position(|w| w == b"\r\n").unwrap();
            let size = usize::from_str_radix(std::str::from_utf8(&raw[..line]).unwrap().trim(), 16).unwrap();
            if size == 0 {
                return out;
            }
            out.extend_from_slice(&raw[line + 2..line + 2 + size]);
            raw = &raw[line + 2 + size + 2..];
        }
    }

    #[tokio::test]
    async fn large_answers_are_gzipped_for_clients_that_accept_it_and_counted_as_sent() {
        let server = crate::start().await;
        let kind = crate::kinds::ResourceKind::find("", "v1", "configmaps").unwrap();
        let list = "/api/v1/namespaces/ns/configmaps";
        server.store().create(kind, "ns", json!({"metadata": {"name": "small"}, "data": {"k": "v"}})).unwrap();

        // Small: plain, whatever the client accepts.
        let (head, body) = get(server.url(), list, Some("gzip")).await;
        assert!(!head.contains("content-encoding"), "{head}");
        assert!(body.len() < GZIP_THRESHOLD);

        for i in 0..200 {
            let data = json!({"k": format!("{i:04}{}", "x".repeat(1000))});
            server.store().create(kind, "ns", json!({"metadata": {"name": format!("big-{i}")}, "data": data})).unwrap();
        }
        // Large, without Accept-Encoding (or with gzip refused): plain.
        let (head, plain) = get(server.url(), list, None).await;
        assert!(!head.contains("content-encoding") && plain.len() >= GZIP_THRESHOLD, "{head}");
        let (head, _) = get(server.url(), list, Some("gzip;q=0, identity")).await;
        assert!(!head.contains("content-encoding"), "{head}");

        // Large, accepting gzip: gzipped, the same document, and the compressed bytes counted.
        let before = server.store().usage(crate::auth::UNSECURED_USER);
        let (head, zipped) = get(server.url(), list, Some("deflate, gzip")).await;
        let after = server.store().usage(crate::auth::UNSECURED_USER);
        assert!(head.contains("content-encoding: gzip"), "{head}");
        assert!(zipped.len() < plain.len() / 10, "{} of {} bytes", zipped.len(), plain.len());
        assert_eq!(after.bytes - before.bytes, zipped.len() as u64, "bytes as sent");
        let mut unzipped = Vec::new();
        flate2::read::GzDecoder::new(&zipped[..]).read_to_end(&mut unzipped).unwrap();
        assert_eq!(unzipped, plain);

        // A watch stream is never gzipped.
        let mut stream = tokio::net::TcpStream::connect(server.url().trim_start_matches("http://")).await.unwrap();
        let request = format!("GET {list}?watch=true HTTP/1.1\r\nhost: test\r\naccept-encoding: gzip\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = vec![0u8; 4096];
        let n = stream.read(&mut raw).await.unwrap();
        let head = String::from_utf8_lossy(&raw[..n]).to_lowercase();
        assert!(head.starts_with("http/1.1 200") && !head.contains("content-encoding"), "{head}");
    }
}
