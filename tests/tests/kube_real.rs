//! The real kube-apiserver and etcd (built from their Go modules by `scripts/k8s-tools`): the version
//! they report, and what they refuse that a server written for the tests accepted: objects that break
//! their CRD's schema, a change of an Extension's class (Gardener's CEL rule), a token without a grant,
//! an agent's EndpointSlice that the chart's admission policy refuses.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kubelink::agent::slot_endpoints::{Node, SlotEndpoints, slice};
use kubelink_ipam::contract::Slot;
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
/// kubelet's projected token is) may write a slot's EndpointSlice naming its own node, or no node (a
/// slot given up), and nothing else: not another node, not another EndpointSlice, not other labels
/// or ports, nothing with a token not bound to a Pod. RBAC alone (`endpointslices: create`, no names
/// possible) would allow all of it.
#[tokio::test]
async fn an_agent_token_writes_only_its_own_node_into_a_slot_endpointslice() {
    let test = "an_agent_token_writes_only_its_own_node_into_a_slot_endpointslice";
    let Some(cluster) = cluster(test).await else { return };
    if !kubelink_tests::helm::helm_ready(test).await {
        return;
    }
    let ns = "agent-endpoints";
    cluster.ensure_namespace(ns).await.unwrap();
    let values = json!({"seedName": "s", "slots": 2, "crds": {"enabled": false}});
    let kubeconfig = cluster.admin_kubeconfig_file().unwrap();
    let chart = kubelink_tests::helm::chart("kubelink");
    kubelink_tests::helm::install(&chart, &kubeconfig, ns, "kubelink", values).await.unwrap();
    let admin = cluster.client().await.unwrap();
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(admin.clone(), ns);
    for node in ["node-a", "node-b"] {
        let pod = json!({"metadata": {"name": format!("agent-{node}"), "labels": {"app": "kubelink"}},
            "spec": {"nodeName": node, "serviceAccountName": "kubelink-agent",
                     "containers": [{"name": "agent", "image": "kubelink:1"}]}});
        pods.create(&PostParams::default(), &serde_json::from_value(pod).unwrap()).await.unwrap();
    }
    let as_node = async |node: &'static str| {
        let token = cluster.token_for_pod(ns, "kubelink-agent", &format!("agent-{node}")).await.unwrap();
        let client = cluster.client_with_token(&token).await.unwrap();
        (client.clone(), Api::<EndpointSlice>::namespaced(client, ns))
    };
    let ((client_a, as_a), (client_b, as_b)) = (as_node("node-a").await, as_node("node-b").await);
    let node = |name: &str, ip: &str| Node { name: name.into(), ip: ip.parse().unwrap(), port: 51820 };
    let (a, b) = (node("node-a", "10.250.0.11"), node("node-b", "10.250.0.12"));
    let pp = PostParams::default();
    let admin_slices: Api<EndpointSlice> = Api::namespaced(admin, ns);

    // The API server applies a new policy once its informer has it: wait until it refuses.
    let start = std::time::Instant::now();
    let mut other = slice(Slot::ALL[0], &a, true);
    other.metadata.name = Some("other".into());
    while as_a.create(&pp, &other).await.is_ok() {
        assert!(start.elapsed() < std::time::Duration::from_secs(20), "the admission policy never took effect");
        admin_slices.delete("other", &Default::default()).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    println!("the policy took effect {:?} after the install", start.elapsed());

    // Allowed: the agent's own writes. node-a takes slot 0, node-b takes it over (a stale holder's
    // endpoint replaced), node-b gives it up (the slice emptied).
    let slot = Slot::ALL[0];
    SlotEndpoints::new(client_a.clone(), ns, a.clone()).publish(Some(slot), 2).await.expect("node-a names itself");
    SlotEndpoints::new(client_b.clone(), ns, b.clone()).publish(Some(slot), 2).await.expect("node-b takes over");
    SlotEndpoints::new(client_b, ns, b.clone()).publish(None, 2).await.expect("node-b gives the slot up");
    let stored = admin_slices.get("kubelink-gateway-0").await.unwrap();
    assert!(stored.endpoints.is_empty(), "given up: {:?}", stored.endpoints);
    // Also allowed: emptying another node's slice (what giving a slot up writes). A node could do so
    // to the current holder: a denial of service, as taking the slot over would be.
    SlotEndpoints::new(client_a.clone(), ns, a.clone()).publish(Some(slot), 2).await.expect("node-a again");
    let mut empty = slice(slot, &b, false);
    empty.metadata.resource_version = admin_slices.get("kubelink-gateway-0").await.unwrap().metadata.resource_version;
    as_b.replace("kubelink-gateway-0", &pp, &empty).await.expect("node-b empties node-a's slice");

    // Refused by the policy (RBAC allowed each of them), created as slot 1's or replacing slot 0's.
    let name_only = "may write only the slot EndpointSlices";
    let labels_only = "carries exactly the labels";
    let own_node = "the kubelink agent of node node-a may name only its own node";
    let port_only = "has one port: wireguard, UDP 51820";
    let with = |f: &dyn Fn(&mut EndpointSlice)| {
        let mut s = slice(Slot::ALL[1], &a, true);
        f(&mut s);
        s
    };
    let refusals: Vec<(&str, EndpointSlice, &str)> = vec![
        ("another node as the endpoint", slice(Slot::ALL[1], &b, true), own_node),
        ("an endpoint without a node", with(&|s| s.endpoints[0].node_name = None), own_node),
        (
            "a second endpoint of another node",
            with(&|s| s.endpoints.push(slice(slot, &b, true).endpoints[0].clone())),
            own_node,
        ),
        ("another EndpointSlice", other.clone(), name_only),
        (
            "a third slot",
            with(&|s| {
                s.metadata.name = Some("kubelink-gateway-2".into());
                label(s, "kubernetes.io/service-name", Some("kubelink-gateway-2"));
            }),
            name_only,
        ),
        ("another Service's", with(&|s| label(s, "kubernetes.io/service-name", Some("kubernetes"))), labels_only),
        (
            "the slice of slot 0 under slot 1's name",
            with(&|s| label(s, "kubernetes.io/service-name", Some("kubelink-gateway-0"))),
            labels_only,
        ),
        (
            "Kubernetes' own controller's",
            with(&|s| label(s, "endpointslice.kubernetes.io/managed-by", Some("endpointslice-controller.k8s.io"))),
            labels_only,
        ),
        (
            "without the managed-by label",
            with(&|s| label(s, "endpointslice.kubernetes.io/managed-by", None)),
            labels_only,
        ),
        ("another port", with(&|s| s.ports.as_mut().unwrap()[0].port = Some(53)), port_only),
        ("TCP", with(&|s| s.ports.as_mut().unwrap()[0].protocol = Some("TCP".into())), port_only),
    ];
    for (why, object, message) in refusals {
        let refused = api_error(as_a.create(&pp, &object).await.unwrap_err());
        println!("{why}: {} {}: {}", refused.code, refused.reason, refused.message);
        assert_eq!(refused.code, 403, "{why}: {}", refused.message);
        assert!(refused.message.contains(message), "{why}: {}", refused.message);
    }
    let mut claim = slice(slot, &b, true);
    claim.metadata.resource_version = admin_slices.get("kubelink-gateway-0").await.unwrap().metadata.resource_version;
    let refused = api_error(as_a.replace("kubelink-gateway-0", &pp, &claim).await.unwrap_err());
    println!("slot 0 replaced with node-b's endpoint: {} {}", refused.code, refused.message);
    assert!(refused.code == 403 && refused.message.contains(own_node), "{}", refused.message);
    // A token not bound to a Pod (no node) may write no EndpointSlice at all, not even an empty one.
    let unbound = cluster.token_for(ns, "kubelink-agent").await.unwrap();
    let as_unbound: Api<EndpointSlice> = Api::namespaced(cluster.client_with_token(&unbound).await.unwrap(), ns);
    let refused = api_error(as_unbound.create(&pp, &slice(Slot::ALL[1], &a, false)).await.unwrap_err());
    assert!(refused.message.contains("needs a token bound to its Pod"), "{}", refused.message);
    let stored = admin_slices.list(&Default::default()).await.unwrap().items;
    let names: Vec<String> = stored.iter().filter_map(|s| s.metadata.name.clone()).collect();
    assert_eq!(names, ["kubelink-gateway-0"], "nothing refused was stored");
    assert!(stored[0].endpoints.is_empty(), "slot 0 unchanged by the refused replace");
}

/// Sets (or with `None` removes) label `key` of `slice`.
fn label(slice: &mut EndpointSlice, key: &str, value: Option<&str>) {
    let labels = slice.metadata.labels.get_or_insert_with(Default::default);
    match value {
        Some(v) => labels.insert(key.into(), v.into()),
        None => labels.remove(key),
    };
}
