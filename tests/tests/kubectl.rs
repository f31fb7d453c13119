//! The real `kubectl` (the release `scripts/k8s-tools` builds) against the real kube-apiserver with
//! authentication and RBAC on: what kubectl writes, `kube::Client` reads back, and the reverse; its
//! watches show what is changed through kube; a ServiceAccount's token is refused until RBAC allows.
//! The tests share one cluster, each in a namespace of its own.
//!
//! Without the control plane's binaries the tests print a SKIPPED line and pass, except in CI
//! (`CI=true`), where they fail.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kubelink_tests::k8s::{self, Cluster, audit};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt};

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A kubectl with its own kubeconfig and cache in a temporary directory, in one namespace.
struct Kubectl {
    cluster: &'static Cluster,
    namespace: String,
    dir: tempfile::TempDir,
}

/// The output of one kubectl run.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Kubectl {
    /// The shared cluster and the admin's kubectl in `namespace` (created); `None` after a SKIPPED
    /// line when the binaries are missing.
    async fn admin(test: &str, namespace: &str) -> Option<Self> {
        let cluster = k8s::for_test(test).await?;
        cluster.ensure_namespace(namespace).await.unwrap();
        Some(Self::new(cluster, namespace, &cluster.admin_kubeconfig()))
    }

    fn new(cluster: &'static Cluster, namespace: &str, kubeconfig: &str) -> Self {
        let dir = tempfile::Builder::new().prefix("kubelink-kubectl-").tempdir().unwrap();
        std::fs::write(dir.path().join("kubeconfig"), kubeconfig).unwrap();
        Kubectl { cluster, namespace: namespace.into(), dir }
    }

    /// The same kubectl sending bearer `token`.
    fn with_token(&self, token: &str) -> Self {
        Self::new(self.cluster, &self.namespace, &self.cluster.kubeconfig(None, token))
    }

    async fn client(&self) -> kube::Client {
        self.cluster.client().await.unwrap()
    }

    /// `kubectl --namespace <ns> args`, with its own home and cache.
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = self.cluster.kubectl(&self.dir.path().join("kubeconfig")).unwrap();
        cmd.env("HOME", self.dir.path())
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(["--namespace", &self.namespace])
            .args(args)
            .stdin(Stdio::null());
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.kill_on_drop(true);
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
        let file = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, serde_yaml_ng::to_string(manifest).unwrap()).unwrap();
        self.ok(&["apply", "-f", file.to_str().unwrap()]).await
    }
}

fn shoot_peers() -> ApiResource {
    let gvk = GroupVersionKind::gvk("kubelink.gardener.cloud", "v1alpha1", "ShootPeer");
    ApiResource::from_gvk_with_plural(&gvk, "shootpeers")
}

/// What kube reads, as kubectl shows it: kubectl leaves out `metadata.managedFields`.
fn as_kubectl_shows<K: serde::Serialize>(object: &K) -> Value {
    let mut value = serde_json::to_value(object).unwrap();
    value["metadata"].as_object_mut().unwrap().remove("managedFields");
    value
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
    let Some(kubectl) =
        Kubectl::admin("get_shows_what_kube_reads_and_patch_writes_what_kube_reads", "kubectl-get").await
    else {
        return;
    };
    let maps: Api<ConfigMap> = Api::namespaced(kubectl.client().await, &kubectl.namespace);
    maps.create(&PostParams::default(), &config_map("cm", &[("k", "v")])).await.unwrap();

    let shown: Value = serde_json::from_str(&kubectl.ok(&["get", "configmap", "cm", "-o", "json"]).await).unwrap();
    assert_same_fields(&as_kubectl_shows(&maps.get("cm").await.unwrap()), &shown);
    assert_eq!(shown["data"]["k"], "v");

    kubectl.ok(&["patch", "configmap", "cm", "--type", "merge", "-p", r#"{"data":{"k":"v2","n":"1"}}"#]).await;
    let patched = maps.get("cm").await.unwrap();
    let data = patched.data.unwrap();
    assert_eq!((data["k"].as_str(), data["n"].as_str()), ("v2", "1"));
    // etcd's revisions: a write makes a greater one.
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

/// Reads kubectl's log (`-v=6`: one line per response) until the server has answered its watch
/// request: from then on every change reaches it.
async fn watch_answered(stderr: tokio::process::ChildStderr) {
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    let answered = |l: &str| l.contains("watch=true") && l.contains("200 OK");
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if answered(&line) {
                return true;
            }
            seen.push(line);
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "kubectl's log shows no answered watch: {seen:#?}");
}

#[tokio::test]
async fn watches_show_changes_made_through_kube() {
    let Some(kubectl) = Kubectl::admin("watches_show_changes_made_through_kube", "kubectl-watch").await else { return };
    let leases: Api<Lease> = Api::namespaced(kubectl.client().await, &kubectl.namespace);
    let lease = serde_json::from_value(json!({"metadata": {"name": "gw-0"}, "spec": {"holderIdentity": "a"}})).unwrap();
    leases.create(&PostParams::default(), &lease).await.unwrap();
    let holder = |name: &'static str| move |v: &Value| v["spec"]["holderIdentity"] == name;

    // `get -w`: the current object, then the change (the watch starts at the version kubectl listed,
    // so a change made before it opens still comes).
    let mut child =
        kubectl.command(&["get", "lease", "gw-0", "-w", "-o", "json"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    read_until(&mut stdout, holder("a")).await;
    let change = json!({"spec": {"holderIdentity": "b"}});
    let changed = leases.patch("gw-0", &PatchParams::default(), &Patch::Merge(&change)).await.unwrap();
    let seen = read_until(&mut stdout, holder("b")).await;
    let last = seen.last().unwrap();
    assert_eq!(last["metadata"]["resourceVersion"].as_str(), changed.metadata.resource_version.as_deref());
    child.kill().await.unwrap();

    // `--watch-only`: only the change, once the watch is open.
    let args = ["get", "leases", "--watch-only", "-o", "json", "-v=6"];
    let mut child = kubectl.command(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    watch_answered(child.stderr.take().unwrap()).await;
    let change = json!({"spec": {"holderIdentity": "c"}});
    leases.patch("gw-0", &PatchParams::default(), &Patch::Merge(&change)).await.unwrap();
    let seen = read_until(&mut stdout, holder("c")).await;
    assert!(seen.iter().all(|v| v["spec"]["holderIdentity"] == "c"), "watch-only shows no old state: {seen:?}");
    child.kill().await.unwrap();
}

#[tokio::test]
async fn apply_creates_then_patches_built_in_and_custom_objects() {
    let Some(kubectl) = Kubectl::admin("apply_creates_then_patches_built_in_and_custom_objects", "kubectl-apply").await
    else {
        return;
    };
    let (client, ns) = (kubectl.client().await, kubectl.namespace.as_str());
    let map = |v: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": ns}, "data": {"k": v}});
    let lease = |h: &str| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": "gw-0", "namespace": ns}, "spec": {"holderIdentity": h}})
    };
    let secret = |v: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "key", "namespace": ns},
               "data": {"private": base64(v)}})
    };
    // kubelink's own CRD, as the shared cluster installs it from the chart's crds/.
    let peer = |address: &str| {
        json!({"apiVersion": "kubelink.gardener.cloud/v1alpha1", "kind": "ShootPeer",
               "metadata": {"name": "shoot-a", "namespace": ns},
               "spec": {"shoot": "garden-dev/shoot-a", "address": address, "publicKey": "cHVibGlj"}})
    };
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let peers: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &shoot_peers());

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

/// A token of ServiceAccount `account` from the TokenRequest API, valid for ten minutes (the
/// shortest the server issues).
async fn token(accounts: &Api<ServiceAccount>, account: &str) -> Result<String, kube::Error> {
    let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                         "spec": {"expirationSeconds": 600}});
    let pp = PostParams::default();
    let issued = accounts.create_subresource::<_, TokenRequest>("token", account, &pp, &request).await?;
    let status = issued.status.expect("a TokenRequest answer has a status");
    let ttl = status.expiration_timestamp.0.duration_since(jiff::Timestamp::now());
    assert!(ttl.as_secs() > 590 && ttl.as_secs() <= 600, "expires as asked: {ttl:?}");
    Ok(status.token)
}

#[tokio::test]
async fn service_account_tokens_are_denied_until_rbac_allows() {
    let Some(admin) = Kubectl::admin("service_account_tokens_are_denied_until_rbac_allows", "kubectl-rbac").await
    else {
        return;
    };
    let ns = admin.namespace.clone();
    let client = admin.client().await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret = serde_json::from_value(json!({"metadata": {"name": "x"}, "stringData": {"k": "v"}})).unwrap();
    secrets.create(&PostParams::default(), &secret).await.unwrap();

    // The TokenRequest API: 404 without the ServiceAccount, a token with it.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let Err(kube::Error::Api(status)) = token(&accounts, "kubelink-agent").await else { panic!("expected a 404") };
    assert_eq!((status.code, status.message.as_str()), (404, r#"serviceaccounts "kubelink-agent" not found"#));
    let account = serde_json::from_value(json!({"metadata": {"name": "kubelink-agent"}})).unwrap();
    accounts.create(&PostParams::default(), &account).await.unwrap();
    let agent = admin.with_token(&token(&accounts, "kubelink-agent").await.unwrap());

    let user = audit::service_account(&ns, "kubelink-agent");
    let denied = agent.run(&["get", "secret", "x", "-o", "json"]).await;
    let message = format!(
        r#"Error from server (Forbidden): secrets "x" is forbidden: User "{user}" cannot get resource "secrets" in API group "" in the namespace "{ns}""#
    );
    assert!(!denied.ok && denied.stderr.contains(&message), "{}", denied.stderr);
    let cluster = agent.run(&["get", "secrets", "-A"]).await;
    let message = format!(r#"User "{user}" cannot list resource "secrets" in API group "" at the cluster scope"#);
    assert!(!cluster.ok && cluster.stderr.contains(&message), "{}", cluster.stderr);

    let rules = json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]}]);
    grant(&client, &ns, "kubelink-agent", rules).await;
    // The authorizer follows roles and bindings through its caches: allowed within moments.
    let start = Instant::now();
    let shown = loop {
        let run = agent.run(&["get", "secret", "x", "-o", "json"]).await;
        if run.ok {
            break serde_json::from_str::<Value>(&run.stdout).unwrap();
        }
        assert!(start.elapsed() < Duration::from_secs(10), "still refused: {}", run.stderr);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_same_fields(&as_kubectl_shows(&secrets.get("x").await.unwrap()), &shown);
    let elsewhere = agent.run(&["get", "secret", "x", "--namespace", "default"]).await;
    assert!(!elsewhere.ok && elsewhere.stderr.contains("Forbidden"), "a RoleBinding grants only in its namespace");

    // The server's audit log records both answers.
    let events = admin.cluster.audit();
    let decisions: Vec<(String, String, bool)> = audit::of(&events, &user)
        .into_iter()
        .filter_map(|e| Some((e.verb.clone(), e.object_ref.clone()?, e.allowed())))
        .filter(|(_, o, _)| o.resource == "secrets" && o.name == "x")
        .map(|(verb, o, allowed)| (verb, o.namespace, allowed))
        .collect();
    assert!(decisions.contains(&("get".into(), ns.clone(), false)), "{decisions:?}");
    assert!(decisions.contains(&("get".into(), ns.clone(), true)), "{decisions:?}");

    let stranger = admin.with_token("not-a-token");
    let unknown = stranger.run(&["get", "secret", "x"]).await;
    assert!(!unknown.ok && unknown.stderr.contains("You must be logged in to the server"), "{}", unknown.stderr);
}

/// A Role with `rules` in `namespace` bound to its ServiceAccount `account`.
async fn grant(client: &kube::Client, namespace: &str, account: &str, rules: Value) {
    let role = json!({"metadata": {"name": account}, "rules": rules});
    let binding = json!({"metadata": {"name": account},
                         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
                         "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]});
    let pp = PostParams::default();
    let roles = Api::<Role>::namespaced(client.clone(), namespace);
    roles.create(&pp, &serde_json::from_value(role).unwrap()).await.unwrap();
    let bindings = Api::<RoleBinding>::namespaced(client.clone(), namespace);
    bindings.create(&pp, &serde_json::from_value(binding).unwrap()).await.unwrap();
}
