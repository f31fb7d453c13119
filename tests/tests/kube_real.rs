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
