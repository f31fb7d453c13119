//! Real `kubectl` (1.33 when installed) against the API test server with authentication and RBAC on:
//! what kubectl writes, `kube::Client` reads back, and the reverse.
//!
//! Without kubectl the tests print a SKIPPED line and pass, except in CI (`CI=true`), where they fail.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kubelink_tests::apiserver::{self, ApiServer};
use kubelink_tests::skip::skip;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

const NS: &str = "kubelink";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// `kubectl.1.33` on PATH or beside the file `kubectl` resolves to, else `kubectl` itself.
fn find_kubectl() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    let on_path = |name: &str| dirs.iter().map(|d| d.join(name)).find(|p| p.is_file());
    let beside_resolved = || {
        let resolved = std::fs::canonicalize(on_path("kubectl")?).ok()?;
        Some(resolved.parent()?.join("kubectl.1.33")).filter(|p| p.is_file())
    };
    on_path("kubectl.1.33").or_else(beside_resolved).or_else(|| on_path("kubectl"))
}

/// A kubectl with its own kubeconfig and cache in a temporary directory.
struct Kubectl {
    bin: PathBuf,
    dir: PathBuf,
}

/// The output of one kubectl run.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Kubectl {
    /// `None` (after a SKIPPED line) when kubectl is not installed; in CI that is a failure.
    fn new(server: &ApiServer, token: &str, name: &str) -> Option<Self> {
        let Some(bin) = find_kubectl() else {
            skip(name, "kubectl is not installed (looked for kubectl.1.33 and kubectl on PATH)");
            return None;
        };
        let dir = std::env::temp_dir().join(format!("kubelink-kubectl-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("kubeconfig"), server.kubeconfig(token)).unwrap();
        Some(Self { bin, dir })
    }

    /// The same kubectl with another token.
    fn with_token(&self, server: &ApiServer, token: &str, name: &str) -> Self {
        Self::new(server, token, name).expect("kubectl was found before")
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.env("HOME", &self.dir)
            .arg("--kubeconfig")
            .arg(self.dir.join("kubeconfig"))
            .arg("--cache-dir")
            .arg(self.dir.join("cache"))
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    async fn run(&self, args: &[&str]) -> Run {
        let run = tokio::time::timeout(Duration::from_secs(60), self.command(args).output());
        let out = run.await.expect("kubectl finishes within a minute").expect("kubectl starts");
        let run = Run {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        println!("kubectl {}: ok={} {}", args.join(" "), run.ok, run.stderr.trim());
        run
    }

    /// Runs and expects success; the stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args).await;
        assert!(run.ok, "kubectl {args:?} failed: {}", run.stderr);
        run.stdout
    }

    /// `apply -f` of a document written to a file.
    async fn apply(&self, name: &str, manifest: &Value) -> String {
        let file = self.dir.join(format!("{name}.yaml"));
        std::fs::write(&file, serde_yaml_ng::to_string(manifest).unwrap()).unwrap();
        self.ok(&["apply", "-f", file.to_str().unwrap()]).await
    }
}

impl Drop for Kubectl {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn shoot_peers() -> ApiResource {
    let gvk = GroupVersionKind::gvk("kubelink.gardener.cloud", "v1alpha1", "ShootPeer");
    ApiResource::from_gvk_with_plural(&gvk, "shootpeers")
}

/// Asserts each field kube read equals kubectl's, naming the first that differs.
fn assert_same_fields(kube: &Value, kubectl: &Value) {
    let (Some(a), Some(b)) = (kube.as_object(), kubectl.as_object()) else {
        return assert_eq!(kube, kubectl);
    };
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>(), "the same fields");
    for (field, value) in a {
        if value.is_object() {
            assert_same_fields(value, &b[field]);
        } else {
            assert_eq!(value, &b[field], "field {field}");
        }
    }
}

async fn server_and_kubectl(name: &str) -> Option<(ApiServer, Kubectl)> {
    let server = apiserver::start_with_auth().await;
    let token = server.admin_token().expect("auth is on").to_string();
    let kubectl = Kubectl::new(&server, &token, name)?;
    Some((server, kubectl))
}

/// Standard base64 of a short ASCII value.
fn base64(value: &str) -> String {
    let bytes = k8s_openapi::ByteString(value.as_bytes().to_vec());
    serde_json::to_value(bytes).unwrap().as_str().unwrap().to_string()
}

fn config_map(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    let data: BTreeMap<_, _> = data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": "kubelink"}}, "data": data})).unwrap()
}

#[tokio::test]
async fn get_shows_what_kube_reads_and_patch_writes_what_kube_reads() {
    let Some((server, kubectl)) = server_and_kubectl("get").await else { return };
    let maps: Api<ConfigMap> = Api::namespaced(server.client(), NS);
    maps.create(&PostParams::default(), &config_map("cm", &[("k", "v")])).await.unwrap();

    let shown: Value =
        serde_json::from_str(&kubectl.ok(&["get", "configmap", "cm", "-n", NS, "-o", "json"]).await).unwrap();
    let read = serde_json::to_value(maps.get("cm").await.unwrap()).unwrap();
    assert_same_fields(&read, &shown);
    assert_eq!(shown["data"]["k"], "v");

    kubectl
        .ok(&["patch", "configmap", "cm", "-n", NS, "--type", "merge", "-p", r#"{"data":{"k":"v2","n":"1"}}"#])
        .await;
    let patched = maps.get("cm").await.unwrap();
    let data = patched.data.unwrap();
    assert_eq!((data["k"].as_str(), data["n"].as_str()), ("v2", "1"));
    let rv_after: u64 = patched.metadata.resource_version.unwrap().parse().unwrap();
    let rv_before: u64 = shown["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
    assert!(rv_after > rv_before, "the patch is a write");
}

/// Reads kubectl's stdout until a JSON object satisfies `want`; the objects seen.
async fn read_until(stdout: &mut tokio::process::ChildStdout, want: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let objects: Vec<Value> =
            serde_json::Deserializer::from_slice(&buffer).into_iter::<Value>().map_while(Result::ok).collect();
        if objects.iter().any(&want) {
            return objects;
        }
        let n = tokio::time::timeout(Duration::from_secs(20), stdout.read(&mut chunk))
            .await
            .expect("kubectl prints the change within 20 s")
            .unwrap();
        assert!(n > 0, "kubectl's watch ended early: {}", String::from_utf8_lossy(&buffer));
        buffer.extend_from_slice(&chunk[..n]);
    }
}

/// How many watches of `resource` the admin has opened.
fn watches(server: &ApiServer, resource: &str) -> usize {
    let requests = server.store().requests_of(apiserver::auth::ADMIN_USER);
    requests.iter().filter(|r| r.attributes.verb == "watch" && r.attributes.resource == resource).count()
}

/// Waits until the admin has opened more than `before` watches of `resource` (kubectl lists, then watches).
async fn watch_open(server: &ApiServer, resource: &str, before: usize) {
    for _ in 0..400 {
        if watches(server, resource) > before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("kubectl never watched {resource}");
}

#[tokio::test]
async fn watches_show_changes_made_through_kube() {
    let Some((server, kubectl)) = server_and_kubectl("watch").await else { return };
    let leases: Api<Lease> = Api::namespaced(server.client(), NS);
    let lease = serde_json::from_value(json!({"metadata": {"name": "gw-0"}, "spec": {"holderIdentity": "a"}})).unwrap();
    leases.create(&PostParams::default(), &lease).await.unwrap();
    let holder = |name: &'static str| move |v: &Value| v["spec"]["holderIdentity"] == name;

    // `get -w`: the current object, then the change.
    let mut child = kubectl
        .command(&["get", "lease", "gw-0", "-n", NS, "-w", "-o", "json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    read_until(&mut stdout, holder("a")).await;
    watch_open(&server, "leases", 0).await;
    let change = json!({"spec": {"holderIdentity": "b"}});
    let changed = leases.patch("gw-0", &PatchParams::default(), &Patch::Merge(&change)).await.unwrap();
    let seen = read_until(&mut stdout, holder("b")).await;
    let last = seen.last().unwrap();
    assert_eq!(last["metadata"]["resourceVersion"].as_str(), changed.metadata.resource_version.as_deref());
    child.kill().await.unwrap();

    // `--watch-only`: only the change.
    let before = watches(&server, "leases");
    let mut child = kubectl
        .command(&["get", "leases", "-n", NS, "--watch-only", "-o", "json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    watch_open(&server, "leases", before).await;
    let change = json!({"spec": {"holderIdentity": "c"}});
    leases.patch("gw-0", &PatchParams::default(), &Patch::Merge(&change)).await.unwrap();
    let seen = read_until(&mut stdout, holder("c")).await;
    assert!(seen.iter().all(|v| v["spec"]["holderIdentity"] == "c"), "watch-only shows no old state: {seen:?}");
    child.kill().await.unwrap();
    assert!(server.store().usage(apiserver::auth::ADMIN_USER).bytes > 0);
}

#[tokio::test]
async fn apply_creates_then_patches_built_in_and_custom_objects() {
    let Some((server, kubectl)) = server_and_kubectl("apply").await else { return };
    let client = server.client();
    let map = |v: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": NS}, "data": {"k": v}});
    let lease = |h: &str| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": "gw-0", "namespace": NS}, "spec": {"holderIdentity": h}})
    };
    let secret = |v: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "key", "namespace": NS},
               "data": {"private": base64(v)}})
    };
    let peer = |address: &str| {
        json!({"apiVersion": "kubelink.gardener.cloud/v1alpha1", "kind": "ShootPeer",
               "metadata": {"name": "shoot-a", "namespace": NS},
               "spec": {"shoot": "garden-dev/shoot-a", "address": address, "publicKey": "cHVibGlj"}})
    };
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let peers: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &shoot_peers());

    for (round, (value, address)) in [("1", "192.168.128.2"), ("2", "192.168.128.3")].into_iter().enumerate() {
        let verb = if round == 0 { "created" } else { "configured" };
        assert!(kubectl.apply("cfg", &map(value)).await.contains(verb));
        assert!(kubectl.apply("lease", &lease(value)).await.contains(verb));
        assert!(kubectl.apply("secret", &secret(value)).await.contains(verb));
        assert!(kubectl.apply("peer", &peer(address)).await.contains(verb));

        let read = maps.get("cfg").await.unwrap();
        assert_eq!(read.data.unwrap()["k"], value);
        let applied: Value = serde_json::from_str(&read.metadata.annotations.unwrap()[LAST_APPLIED]).unwrap();
        assert_eq!(applied["data"]["k"], value, "the last-applied annotation follows the file");
        let holder = leases.get("gw-0").await.unwrap().spec.unwrap().holder_identity;
        assert_eq!(holder.as_deref(), Some(value));
        let data = secrets.get("key").await.unwrap().data.unwrap();
        assert_eq!(data["private"].0, value.as_bytes());
        let read = peers.get("shoot-a").await.unwrap();
        assert_eq!(read.data["spec"]["address"], address);
        assert_eq!(read.data["spec"]["shoot"], "garden-dev/shoot-a");
    }
    // Applying an unchanged file changes nothing.
    let rv = maps.get("cfg").await.unwrap().metadata.resource_version;
    assert!(kubectl.apply("cfg", &map("2")).await.contains("unchanged"));
    assert_eq!(maps.get("cfg").await.unwrap().metadata.resource_version, rv);
}

#[tokio::test]
async fn service_account_tokens_are_denied_until_rbac_allows() {
    let Some((server, admin)) = server_and_kubectl("rbac").await else { return };
    let secrets: Api<Secret> = Api::namespaced(server.client(), NS);
    let secret = serde_json::from_value(json!({"metadata": {"name": "x"}, "stringData": {"k": "v"}})).unwrap();
    secrets.create(&PostParams::default(), &secret).await.unwrap();

    // The TokenRequest API: 404 without the ServiceAccount, a token with it.
    let accounts: Api<ServiceAccount> = Api::namespaced(server.client(), NS);
    let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                         "spec": {"expirationSeconds": 600}});
    let pp = PostParams::default();
    let missing = accounts.create_subresource::<_, TokenRequest>("token", "kubelink-agent", &pp, &request).await;
    let Err(kube::Error::Api(status)) = missing else { panic!("expected a 404, got {missing:?}") };
    assert_eq!((status.code, status.message.as_str()), (404, r#"serviceaccounts "kubelink-agent" not found"#));
    let account = serde_json::from_value(json!({"metadata": {"name": "kubelink-agent"}})).unwrap();
    accounts.create(&pp, &account).await.unwrap();
    let issued =
        accounts.create_subresource::<_, TokenRequest>("token", "kubelink-agent", &pp, &request).await.unwrap();
    let status = issued.status.expect("a TokenRequest answer has a status");
    let ttl = status.expiration_timestamp.0.duration_since(jiff::Timestamp::now());
    assert!(ttl.as_secs() > 590 && ttl.as_secs() <= 600, "expires as asked: {ttl:?}");
    let token = status.token;

    let agent = admin.with_token(&server, &token, "rbac-agent");
    let user = "system:serviceaccount:kubelink:kubelink-agent";
    let denied = agent.run(&["get", "secret", "x", "-n", NS, "-o", "json"]).await;
    assert!(!denied.ok);
    let message = format!(
        r#"Error from server (Forbidden): secrets "x" is forbidden: User "{user}" cannot get resource "secrets" in API group "" in the namespace "kubelink""#
    );
    assert!(denied.stderr.contains(&message), "{}", denied.stderr);
    let cluster = agent.run(&["get", "secrets", "-A"]).await;
    let message = format!(r#"User "{user}" cannot list resource "secrets" in API group "" at the cluster scope"#);
    assert!(!cluster.ok && cluster.stderr.contains(&message), "{}", cluster.stderr);

    let rules = json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]}]);
    grant(&server.client(), "kubelink-agent", rules).await;
    let shown: Value = serde_json::from_str(&agent.ok(&["get", "secret", "x", "-n", NS, "-o", "json"]).await).unwrap();
    assert_same_fields(&serde_json::to_value(secrets.get("x").await.unwrap()).unwrap(), &shown);
    let still = agent.run(&["get", "secret", "x", "-n", "default"]).await;
    assert!(!still.ok && still.stderr.contains("Forbidden"), "a RoleBinding grants only in its namespace");

    let requests = server.store().requests_of(user);
    let decisions: Vec<(String, String, bool)> = requests
        .iter()
        .filter(|r| r.attributes.resource == "secrets")
        .map(|r| (r.attributes.verb.clone(), r.attributes.namespace.clone(), r.allowed))
        .collect();
    assert!(
        decisions.contains(&("get".into(), NS.into(), false)) && decisions.contains(&("get".into(), NS.into(), true))
    );
    assert!(server.store().usage(user).bytes > 0);

    let stranger = admin.with_token(&server, "not-a-token", "rbac-stranger");
    let unknown = stranger.run(&["get", "secret", "x", "-n", NS]).await;
    assert!(!unknown.ok && unknown.stderr.contains("You must be logged in to the server"), "{}", unknown.stderr);
}

/// Without kubectl: what a `kube::Client` sees of authentication, and the per-user accounting.
#[tokio::test]
async fn unknown_tokens_get_401_anonymous_gets_403_and_usage_counts_watch_bytes() {
    let server = apiserver::start_with_auth().await;
    let status = |e: kube::Error| match e {
        kube::Error::Api(status) => *status,
        other => panic!("expected an API error, got {other:?}"),
    };
    let stranger: Api<Secret> = Api::namespaced(apiserver::client_with_token(server.url(), "nope"), NS);
    let denied = status(stranger.get("x").await.unwrap_err());
    assert_eq!((denied.code, denied.reason.as_str(), denied.message.as_str()), (401, "Unauthorized", "Unauthorized"));

    let anonymous = apiserver::client_for(server.url());
    assert_eq!(anonymous.apiserver_version().await.unwrap().minor, "33", "/version is public");
    let forbidden = status(Api::<Secret>::all(anonymous).list(&Default::default()).await.unwrap_err());
    assert_eq!((forbidden.code, forbidden.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        forbidden.message,
        r#"secrets is forbidden: User "system:anonymous" cannot list resource "secrets" in API group "" at the cluster scope"#
    );

    // A watch's streamed events count as bytes of the user that watches.
    let token = server.token_for(NS, "watcher");
    let user = "system:serviceaccount:kubelink:watcher";
    grant(&server.client(), "watcher", json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["watch"]}]))
        .await;
    let watcher: Api<ConfigMap> = Api::namespaced(apiserver::client_with_token(server.url(), &token), NS);
    let params = kube::api::WatchParams::default().timeout(5);
    let mut stream = Box::pin(watcher.watch(&params, "0").await.unwrap());
    let before = server.store().usage(user);
    let maps: Api<ConfigMap> = Api::namespaced(server.client(), NS);
    maps.create(&PostParams::default(), &config_map("big", &[("k", &"x".repeat(10_000))])).await.unwrap();
    let event = futures::StreamExt::next(&mut stream).await.unwrap().unwrap();
    assert!(matches!(event, kube::api::WatchEvent::Added(_)));
    let after = server.store().usage(user);
    assert_eq!(after.requests, before.requests, "one request, the watch");
    assert!(after.bytes >= before.bytes + 10_000, "the event's bytes are counted: {before:?} -> {after:?}");
    let requests = server.store().requests_of(user);
    assert_eq!(requests.len(), 1);
    assert_eq!((requests[0].attributes.verb.as_str(), requests[0].allowed), ("watch", true));
}

/// A Role with `rules` in [`NS`] bound to ServiceAccount `account`.
async fn grant(client: &kube::Client, account: &str, rules: Value) {
    let rbac = |plural: &str, kind: &str| {
        let gvk = GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", kind);
        Api::<DynamicObject>::namespaced_with(client.clone(), NS, &ApiResource::from_gvk_with_plural(&gvk, plural))
    };
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": account},
                      "rules": rules});
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                         "metadata": {"name": account},
                         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
                         "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": NS}]});
    let pp = PostParams::default();
    rbac("roles", "Role").create(&pp, &serde_json::from_value(role).unwrap()).await.unwrap();
    rbac("rolebindings", "RoleBinding").create(&pp, &serde_json::from_value(binding).unwrap()).await.unwrap();
}
