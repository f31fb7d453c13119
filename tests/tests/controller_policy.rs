//! The extension controller's admission policy (`charts/kubelink/templates/admission-controller.yaml`)
//! on the real kube-apiserver: its ClusterRole grants `create` of Secrets and ManagedResources in
//! every namespace (RBAC cannot limit a create by name), and the policy lets its token create and
//! update only its own objects. Every refusal below is a request RBAC allows.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Api;
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kubelink_tests::k8s;
use serde_json::{Value, json};

const NS: &str = "controller-policy";
const SHOOT_NS: &str = "shoot--policy--a";
const PLAIN_NS: &str = "not-a-shoot";
const MESSAGE: &str = "the kubelink controller may write only";

fn secret(name: &str, type_: &str) -> Secret {
    serde_json::from_value(json!({"metadata": {"name": name}, "type": type_, "data": {"k": "dg=="}})).unwrap()
}

fn managed_resource(name: &str, secret_ref: &str, class: Option<&str>) -> DynamicObject {
    let mut spec = json!({"secretRefs": [{"name": secret_ref}], "keepObjects": false});
    if let Some(class) = class {
        spec["class"] = json!(class);
    }
    serde_json::from_value(json!({"apiVersion": "resources.gardener.cloud/v1alpha1", "kind": "ManagedResource",
                                  "metadata": {"name": name}, "spec": spec}))
    .unwrap()
}

fn managed_resources(client: kube::Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("resources.gardener.cloud", "v1alpha1", "ManagedResource");
    Api::namespaced_with(client, ns, &ApiResource::from_gvk_with_plural(&gvk, "managedresources"))
}

fn refused<T: std::fmt::Debug>(what: &str, result: Result<T, kube::Error>) {
    match result {
        Err(kube::Error::Api(status)) => {
            println!("refused, {what}: {} {}", status.code, status.message);
            assert_eq!(status.code, 403, "{what}: {}", status.message);
            assert!(status.message.contains(MESSAGE), "{what}: refused by something else: {}", status.message);
        }
        other => panic!("{what}: expected 403, got {other:?}"),
    }
}

#[tokio::test]
async fn the_controller_token_creates_only_its_own_secrets_and_managed_resources() {
    let test = "the_controller_token_creates_only_its_own_secrets_and_managed_resources";
    let Some(cluster) = k8s::for_test(test).await else { return };
    if !kubelink_tests::helm::helm_ready(test).await {
        return;
    }
    let admin = cluster.client().await.unwrap();
    for ns in [NS, SHOOT_NS, PLAIN_NS] {
        cluster.ensure_namespace(ns).await.unwrap();
    }
    // gardenlet's label of a control-plane namespace (tests/src/gardenlet.rs sets it as Gardener does).
    let label = json!({"metadata": {"labels": {"gardener.cloud/role": "shoot"}}});
    Api::<Namespace>::all(admin.clone()).patch(SHOOT_NS, &PatchParams::default(), &Patch::Merge(&label)).await.unwrap();
    let values = json!({"seedName": "s", "crds": {"enabled": false}, "controller": {"enabled": true}});
    let kubeconfig = cluster.admin_kubeconfig_file().unwrap();
    let chart = kubelink_tests::helm::chart("kubelink");
    let objects = kubelink_tests::helm::install(&chart, &kubeconfig, NS, "kubelink", values).await.unwrap();
    let kinds: Vec<(&Value, &Value)> = objects
        .iter()
        .filter(|o| o["kind"].as_str().is_some_and(|k| k.starts_with("ValidatingAdmissionPolicy")))
        .map(|o| (&o["kind"], &o["metadata"]["name"]))
        .collect();
    println!("admission objects: {kinds:?}");
    let token = cluster.token_for(NS, "kubelink-controller").await.unwrap();
    let as_controller = cluster.client_with_token(&token).await.unwrap();
    let secrets = |ns: &str| Api::<Secret>::namespaced(as_controller.clone(), ns);
    let pp = PostParams::default();

    // The API server applies a new policy once its informer has it: wait until it refuses.
    let start = Instant::now();
    loop {
        match secrets(PLAIN_NS).create(&pp, &secret("kubelink-shoot", "Opaque")).await {
            Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains(MESSAGE) => break,
            Ok(_) => {
                Api::<Secret>::namespaced(admin.clone(), PLAIN_NS)
                    .delete("kubelink-shoot", &Default::default())
                    .await
                    .unwrap();
            }
            Err(e) => panic!("creating the probe Secret: {e}"),
        }
        assert!(start.elapsed() < Duration::from_secs(20), "the admission policy never took effect");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("the policy took effect {:?} after the install", start.elapsed());

    // Its own objects pass: created, then updated.
    for (ns, name) in
        [(SHOOT_NS, "kubelink-shoot"), (SHOOT_NS, "managedresource-kubelink-shoot"), (NS, "kubelink-gateway-0")]
    {
        let created = secrets(ns).create(&pp, &secret(name, "Opaque")).await;
        let created = created.unwrap_or_else(|e| panic!("its own Secret {ns}/{name}: {e}"));
        println!("allowed: Secret {ns}/{name}");
        if name.starts_with("kubelink-shoot") || name.starts_with("managedresource") {
            let mut next = created;
            next.data.get_or_insert_default().insert("k".into(), k8s_openapi::ByteString(b"w".to_vec()));
            secrets(ns).replace(name, &pp, &next).await.unwrap_or_else(|e| panic!("updating {ns}/{name}: {e}"));
            println!("allowed: Secret {ns}/{name} updated");
        }
    }
    let mrs = managed_resources(as_controller.clone(), SHOOT_NS);
    mrs.create(&pp, &managed_resource("kubelink-shoot", "managedresource-kubelink-shoot", None))
        .await
        .expect("its own ManagedResource");
    let keep = json!({"spec": {"keepObjects": true}});
    mrs.patch("kubelink-shoot", &PatchParams::default(), &Patch::Merge(&keep)).await.expect("keepObjects set");
    println!("allowed: ManagedResource {SHOOT_NS}/kubelink-shoot created and patched");

    // Refused: another name, another type, a namespace that is not a shoot's.
    refused("Secret of another name", secrets(SHOOT_NS).create(&pp, &secret("other", "Opaque")).await);
    refused(
        "Secret of another type",
        secrets(SHOOT_NS).create(&pp, &secret("kubelink-shoot-x", "example.com/other")).await,
    );
    let sa_token: Secret = serde_json::from_value(json!({"metadata": {"name": "managedresource-kubelink-shoot-token",
        "annotations": {"kubernetes.io/service-account.name": "default"}}, "type": "kubernetes.io/service-account-token"}))
    .unwrap();
    refused("a ServiceAccount token Secret", secrets(SHOOT_NS).create(&pp, &sa_token).await);
    refused(
        "its Secret's name in a namespace that is not a shoot's",
        secrets(PLAIN_NS).create(&pp, &secret("kubelink-shoot", "Opaque")).await,
    );
    refused(
        "a shoot's Secret in the release namespace",
        secrets(NS).create(&pp, &secret("kubelink-shoot", "Opaque")).await,
    );
    refused(
        "a slot Secret in a shoot namespace",
        secrets(SHOOT_NS).create(&pp, &secret("kubelink-gateway-0", "Opaque")).await,
    );
    refused("a third slot Secret", secrets(NS).create(&pp, &secret("kubelink-gateway-2", "Opaque")).await);
    refused(
        "ManagedResource of another name",
        mrs.create(&pp, &managed_resource("other", "managedresource-kubelink-shoot", None)).await,
    );
    let mrs_plain = managed_resources(as_controller.clone(), PLAIN_NS);
    refused(
        "its ManagedResource in a namespace that is not a shoot's",
        mrs_plain.create(&pp, &managed_resource("kubelink-shoot", "managedresource-kubelink-shoot", None)).await,
    );
    let other_ref = json!({"spec": {"secretRefs": [{"name": "managedresource-kubelink-shoot"}, {"name": "other"}]}});
    refused(
        "its ManagedResource pointed at another Secret",
        mrs.patch("kubelink-shoot", &PatchParams::default(), &Patch::Merge(&other_ref)).await,
    );
    let seed_class = json!({"spec": {"class": "seed"}});
    refused(
        "its ManagedResource of another class",
        mrs.patch("kubelink-shoot", &PatchParams::default(), &Patch::Merge(&seed_class)).await,
    );

    // The admin is not matched: the same Secret of another name is created.
    Api::<Secret>::namespaced(admin.clone(), SHOOT_NS)
        .create(&pp, &secret("other", "Opaque"))
        .await
        .expect("the admin");
    let names: Vec<String> = Api::<Secret>::namespaced(admin, PLAIN_NS)
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|s| s.metadata.name)
        .collect();
    assert!(!names.contains(&"kubelink-shoot".to_string()), "nothing of the controller's in {PLAIN_NS}: {names:?}");
}
