//! The real kube-apiserver and etcd (built from their Go modules by `scripts/k8s-tools`): the version
//! they report, and what they refuse that a server written for the tests accepted: objects that break
//! their CRD's schema, a change of an Extension's class (Gardener's CEL rule), a token without a grant.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kubelink_tests::k8s::{self, Cluster};
use serde_json::json;

async fn cluster(test: &str) -> Option<&'static Cluster> {
    k8s::for_test(test).await
}

fn api_error(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(status) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn dynamic(client: kube::Client, ns: &str, group: &str, version: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    Api::namespaced_with(client, ns, &resource)
}

fn object(value: serde_json::Value) -> DynamicObject {
    serde_json::from_value(value).expect("a valid object")
}

#[tokio::test]
async fn kubectl_reports_the_real_server_version() {
    let Some(cluster) = cluster("kubectl_reports_the_real_server_version").await else { return };
    let kubeconfig = cluster.admin_kubeconfig_file().unwrap();
    let out = cluster.kubectl(&kubeconfig).unwrap().args(["version", "-o", "json"]).output().unwrap();
    assert!(out.status.success(), "kubectl version: {}", String::from_utf8_lossy(&out.stderr));
    let version: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (client, server) = (&version["clientVersion"]["gitVersion"], &version["serverVersion"]["gitVersion"]);
    println!("kubectl version: client {client}, server {server}");
    eprintln!("real control plane: kube-apiserver {server} (kubectl {client})");
    // The release the binaries were built at, as scripts/k8s-tools took it from tests/k8s/go.mod.
    let pinned = k8s::tools::tools().unwrap().version("kubernetes");
    assert_eq!(server.as_str(), Some(pinned), "/version names the release built");
    assert_eq!(client.as_str(), Some(pinned), "kubectl is of the same release");
    assert_eq!(cluster.version().await.unwrap(), pinned);
}

#[tokio::test]
async fn crd_schemas_refuse_bad_seedtunnels_and_shootpeers() {
    let Some(cluster) = cluster("crd_schemas_refuse_bad_seedtunnels_and_shootpeers").await else { return };
    let ns = "schemas";
    cluster.ensure_namespace(ns).await.unwrap();
    let client = cluster.client().await.unwrap();
    let tunnels = dynamic(client.clone(), ns, "kubelink.gardener.cloud", "v1alpha1", "SeedTunnel", "seedtunnels");
    let good = json!({"apiVersion": "kubelink.gardener.cloud/v1alpha1", "kind": "SeedTunnel",
        "metadata": {"name": "good"}, "spec": {"seed": "s", "cidr": "192.168.128.0/22", "slots": 2}});
    tunnels.create(&PostParams::default(), &object(good)).await.expect("a valid SeedTunnel is accepted");
    let three = json!({"apiVersion": "kubelink.gardener.cloud/v1alpha1", "kind": "SeedTunnel",
        "metadata": {"name": "three-slots"}, "spec": {"seed": "s", "cidr": "192.168.128.0/22", "slots": 3}});
    let refused = api_error(tunnels.create(&PostParams::default(), &object(three)).await.unwrap_err());
    println!("slots: 3 -> {} {}: {}", refused.code, refused.reason, refused.message);
    assert_eq!((refused.code, refused.reason.as_str()), (422, "Invalid"));
    assert!(refused.message.contains("spec.slots"), "{}", refused.message);

    let peers = dynamic(client, ns, "kubelink.gardener.cloud", "v1alpha1", "ShootPeer", "shootpeers");
    let no_key = json!({"apiVersion": "kubelink.gardener.cloud/v1alpha1", "kind": "ShootPeer",
        "metadata": {"name": "no-key"}, "spec": {"shoot": "garden-p/a", "address": "192.168.128.10"}});
    let refused = api_error(peers.create(&PostParams::default(), &object(no_key)).await.unwrap_err());
    println!("ShootPeer without publicKey -> {} {}: {}", refused.code, refused.reason, refused.message);
    assert_eq!(refused.code, 422);
    assert!(refused.message.contains("spec.publicKey: Required value"), "{}", refused.message);
    let wrong_type = json!({"apiVersion": "kubelink.gardener.cloud/v1alpha1", "kind": "ShootPeer",
        "metadata": {"name": "wrong-type"}, "spec": {"shoot": "garden-p/a", "address": 7, "publicKey": "k"}});
    let refused = api_error(peers.create(&PostParams::default(), &object(wrong_type)).await.unwrap_err());
    assert_eq!(refused.code, 422);
    assert!(refused.message.contains("spec.address"), "{}", refused.message);
}

#[tokio::test]
async fn gardeners_cel_rule_keeps_an_extensions_class() {
    let Some(cluster) = cluster("gardeners_cel_rule_keeps_an_extensions_class").await else { return };
    let ns = "garden";
    cluster.ensure_namespace(ns).await.unwrap();
    let client = cluster.client().await.unwrap();
    let extensions = dynamic(client, ns, "extensions.gardener.cloud", "v1alpha1", "Extension", "extensions");
    let ext = json!({"apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "Extension",
        "metadata": {"name": "kubelink-wireguard"}, "spec": {"type": "kubelink-wireguard", "class": "seed"}});
    extensions.create(&PostParams::default(), &object(ext)).await.expect("a seed-class Extension is accepted");
    let patch = json!({"spec": {"class": "shoot"}});
    let refused = api_error(
        extensions.patch("kubelink-wireguard", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap_err(),
    );
    println!("spec.class seed -> shoot: {} {}: {}", refused.code, refused.reason, refused.message);
    assert_eq!((refused.code, refused.reason.as_str()), (422, "Invalid"));
    assert!(
        refused.message.contains("spec.class: Invalid value") && refused.message.contains("Value is immutable"),
        "{}",
        refused.message
    );
}

#[tokio::test]
async fn a_token_without_a_grant_gets_kubernetes_own_403() {
    let Some(cluster) = cluster("a_token_without_a_grant_gets_kubernetes_own_403").await else { return };
    let ns = "grants";
    let token = cluster.token_for(ns, "nobody").await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(cluster.client_with_token(&token).await.unwrap(), ns);
    let refused = api_error(secrets.list(&Default::default()).await.unwrap_err());
    println!("{} {}: {}", refused.code, refused.reason, refused.message);
    assert_eq!((refused.code, refused.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        refused.message,
        format!(
            "secrets is forbidden: User \"system:serviceaccount:{ns}:nobody\" cannot list resource \"secrets\" in API group \"\" in the namespace \"{ns}\""
        )
    );
    // The audit log has the same answer, under the ServiceAccount's name.
    let user = k8s::audit::service_account(ns, "nobody");
    let events = cluster.audit();
    let mine = k8s::audit::of(&events, &user);
    assert!(mine.iter().any(|e| e.verb == "list" && e.code() == 403 && !e.allowed()), "audit: {mine:#?}");
}

/// The seed chart's admission policy on the real server: an agent's token (bound to its Pod, as the
/// kubelet's projected token is) may set the gateway-slot label on its own node's Pod and remove it
/// from another node's Pod, and nothing else: not another node's label, not any Pod's image. RBAC
/// alone (`pods: patch`, no names) would allow all of it.
#[tokio::test]
async fn an_agent_token_cannot_patch_another_nodes_pod() {
    let test = "an_agent_token_cannot_patch_another_nodes_pod";
    let Some(cluster) = cluster(test).await else { return };
    if !kubelink_tests::helm::helm_ready(test).await {
        return;
    }
    let ns = "agent-pods";
    cluster.ensure_namespace(ns).await.unwrap();
    let values = json!({"seedName": "s", "crds": {"enabled": false}});
    let kubeconfig = cluster.admin_kubeconfig_file().unwrap();
    let chart = kubelink_tests::helm::chart("kubelink");
    kubelink_tests::helm::install(&chart, &kubeconfig, ns, "kubelink", values).await.unwrap();
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(cluster.client().await.unwrap(), ns);
    for node in ["node-a", "node-b"] {
        let pod = json!({"metadata": {"name": format!("agent-{node}"), "labels": {"app": "kubelink"}},
            "spec": {"nodeName": node, "serviceAccountName": "kubelink-agent",
                     "containers": [{"name": "agent", "image": "kubelink:1"}]}});
        pods.create(&PostParams::default(), &serde_json::from_value(pod).unwrap()).await.unwrap();
    }
    let token = cluster.token_for_pod(ns, "kubelink-agent", "agent-node-a").await.unwrap();
    let as_a: Api<k8s_openapi::api::core::v1::Pod> =
        Api::namespaced(cluster.client_with_token(&token).await.unwrap(), ns);
    let slot = kubelink_ipam::contract::labels::GATEWAY_SLOT;
    let label = |v: serde_json::Value| Patch::Merge(json!({"metadata": {"labels": {slot: v}}}));
    let pp = PatchParams::default();

    // The API server applies a new policy once its informer has it: wait until it refuses.
    let start = std::time::Instant::now();
    while as_a.patch("agent-node-b", &pp, &label(json!("9"))).await.is_ok() {
        assert!(start.elapsed() < std::time::Duration::from_secs(20), "the admission policy never took effect");
        pods.patch("agent-node-b", &pp, &label(serde_json::Value::Null)).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    println!("the policy took effect {:?} after the install", start.elapsed());

    // Allowed: its own Pod's slot label; removing the label from another node's Pod.
    as_a.patch("agent-node-a", &pp, &label(json!("0"))).await.expect("node-a labels its own Pod");
    pods.patch("agent-node-b", &pp, &label(json!("1"))).await.unwrap();
    as_a.patch("agent-node-b", &pp, &label(serde_json::Value::Null)).await.expect("node-a strips a stale holder");

    // Refused by the policy (RBAC allowed each of them).
    let refusals = [
        ("agent-node-b", label(json!("0")), "may only remove the gateway-slot label from a Pod of another node"),
        (
            "agent-node-b",
            Patch::Strategic(json!({"spec": {"containers": [{"name": "agent", "image": "evil:1"}]}})),
            "may change only the gateway-slot label",
        ),
        (
            "agent-node-a",
            Patch::Strategic(json!({"spec": {"containers": [{"name": "agent", "image": "evil:1"}]}})),
            "may change only the gateway-slot label",
        ),
        (
            "agent-node-a",
            Patch::Merge(json!({"metadata": {"labels": {"app": "other"}}})),
            "only the gateway-slot label",
        ),
    ];
    for (pod, patch, why) in refusals {
        let refused = api_error(as_a.patch(pod, &pp, &patch).await.unwrap_err());
        println!("{pod}: {} {}: {}", refused.code, refused.reason, refused.message);
        assert_eq!(refused.code, 403, "{}", refused.message);
        assert!(refused.message.contains(why), "{}", refused.message);
    }
    // A token not bound to a Pod (no node) may change no Pod at all.
    let unbound = cluster.token_for(ns, "kubelink-agent").await.unwrap();
    let as_unbound: Api<k8s_openapi::api::core::v1::Pod> =
        Api::namespaced(cluster.client_with_token(&unbound).await.unwrap(), ns);
    let refused = api_error(as_unbound.patch("agent-node-a", &pp, &label(json!("1"))).await.unwrap_err());
    assert!(refused.message.contains("needs a token bound to its Pod"), "{}", refused.message);
    let images: Vec<String> = pods
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|p| p.spec.as_ref().unwrap().containers[0].image.clone().unwrap_or_default())
        .collect();
    assert_eq!(images, ["kubelink:1", "kubelink:1"], "no image changed");
}
