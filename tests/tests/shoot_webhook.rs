//! `kubelink shoot-webhook` on real parts: vpn-shoot as Gardener's own component renders it
//! (`gardener-contract render-vpn-shoot`: `pkg/component/networking/vpn/shoot` with gardenlet's
//! values), its class-shoot ManagedResource written into a seed's control-plane namespace, the real
//! gardener-resource-manager applying it into a second real kube-apiserver (the shoot's), where the
//! webhook is registered as kubelink delivers it (`shoot_webhook::configuration`) and the
//! kube-apiserver's own mutating admission calls it over TLS.
//!
//! - the Deployment (one replica) gets the sidecar and its Secret volume;
//! - the shoot going HA: gardenlet writes the StatefulSet instead, the resource manager replaces the
//!   Deployment by it, and the StatefulSet gets the sidecar too;
//! - the resource manager applying vpn-shoot again (it puts back a hand edit) keeps the sidecar;
//! - nothing else in the shoot is touched (another Deployment in kube-system stays as written).

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::Api;
use kube::api::{Patch, PatchParams};
use kubelink::shoot_webhook;
use kubelink_tests::k8s::garden::{self, serving_cert};
use kubelink_tests::k8s::process::Daemon;
use kubelink_tests::k8s::resource_manager::{DEFAULT_CLASS, ResourceManager, wait_condition};
use kubelink_tests::k8s::{self, Cluster};
use kubelink_tests::{netns, skip};
use serde_json::{Value, json};

const NAMESPACE: &str = "shoot--dev--a";
const MR: &str = "shoot-core-vpn-shoot";
const IMAGE: &str = "kubelink:test";

/// Gardener's vpn-shoot ManagedResource for the shoot: `clients` 0 for the Deployment, 2 for HA.
fn render(clients: u8) -> Value {
    let bin = k8s::tools::gardener_contract().expect("checked at the start");
    let out = std::process::Command::new(bin)
        .args(["render-vpn-shoot", "--namespace", NAMESPACE, "--ha-clients", &clients.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "Gardener's vpn-shoot component: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Writes the rendered ManagedResource and its Secrets into the seed as gardenlet does (the
/// Secrets first, the ManagedResource naming them replaced whole).
async fn write_managed_resource(seed: &kube::Client, report: &Value) {
    for secret in report["secrets"].as_array().unwrap() {
        let mut secret = secret.clone();
        secret["apiVersion"] = json!("v1");
        secret["kind"] = json!("Secret");
        strip(&mut secret);
        garden::apply(seed, &secret).await.unwrap();
    }
    let mut mr = report["managedResource"].clone();
    mr["apiVersion"] = json!("resources.gardener.cloud/v1alpha1");
    mr["kind"] = json!("ManagedResource");
    strip(&mut mr);
    garden::apply(seed, &mr).await.unwrap();
}

/// What the in-memory client set that the API server sets itself.
fn strip(object: &mut Value) {
    if let Some(meta) = object["metadata"].as_object_mut() {
        for field in ["resourceVersion", "creationTimestamp", "uid"] {
            meta.remove(field);
        }
    }
}

fn containers(template_spec: Option<&k8s_openapi::api::core::v1::PodSpec>) -> Vec<String> {
    template_spec.map(|s| s.containers.iter().map(|c| c.name.clone()).collect()).unwrap_or_default()
}

fn volumes(template_spec: Option<&k8s_openapi::api::core::v1::PodSpec>) -> Vec<String> {
    template_spec
        .and_then(|s| s.volumes.as_ref())
        .map(|v| v.iter().map(|v| v.name.clone()).collect())
        .unwrap_or_default()
}

/// Waits until `read` gives the containers `want` (the resource manager applies asynchronously).
async fn wait_containers<F, Fut>(what: &str, want: &[&str], mut read: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<Vec<String>>>,
{
    let start = Instant::now();
    loop {
        let have = read().await;
        if have.as_deref().is_some_and(|h| h.iter().map(String::as_str).eq(want.iter().copied())) {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{what}: containers {have:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The garbage collector's part for `kube-system/vpn-shoot` once it is being deleted in the
/// foreground and has no dependents: its `foregroundDeletion` finalizer removed.
async fn collect_garbage(deployments: Api<Deployment>) {
    loop {
        if let Ok(Some(d)) = deployments.get_opt("vpn-shoot").await
            && d.metadata.deletion_timestamp.is_some()
            && d.metadata.finalizers.as_ref().is_some_and(|f| !f.is_empty())
        {
            let patch = json!({"metadata": {"finalizers": null}});
            let _ = deployments.patch("vpn-shoot", &PatchParams::default(), &Patch::Merge(&patch)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn vpn_shoot_as_gardener_renders_it_gets_the_sidecar_and_keeps_it_across_the_resource_managers_applies() {
    let test = "vpn_shoot_as_gardener_renders_it_gets_the_sidecar_and_keeps_it_across_the_resource_managers_applies";
    let missing = k8s::tools::tools()
        .err()
        .or_else(|| k8s::tools::gardener_resource_manager().err())
        .or_else(|| k8s::tools::gardener_contract().err().map(|e| e.to_string()))
        .or_else(|| netns::find_kubelink().err());
    if let Some(why) = missing {
        skip::skip(test, &why);
        return;
    }
    let seed = k8s::own_for_test("webhook-seed", true).await.expect("tools checked above");
    let shoot_cluster = Cluster::start(k8s::Options { name: "webhook-shoot".into(), ..Default::default() })
        .await
        .expect("the shoot's API server");
    let (seed_client, shoot) = (seed.client().await.unwrap(), shoot_cluster.client().await.unwrap());
    seed.ensure_namespace(NAMESPACE).await.unwrap();

    // The webhook on the seed, registered in the shoot with its CA.
    let serving = serving_cert(&shoot_cluster.dir, "shoot-webhook", &["localhost"]).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let args = [
        "shoot-webhook".to_string(),
        format!("--listen=127.0.0.1:{port}"),
        format!("--tls-cert-file={}", serving.cert.display()),
        format!("--tls-key-file={}", serving.key.display()),
        format!("--sidecar-image={IMAGE}"),
        "--log=info,kubelink=debug".into(),
    ];
    let log = shoot_cluster.dir.join("shoot-webhook.log");
    let webhook = Daemon::start(&netns::find_kubelink().unwrap(), &args, None, &log).unwrap();
    let url = format!("https://127.0.0.1:{port}{}", shoot_webhook::PATH);
    garden::apply(&shoot, &shoot_webhook::configuration(&url, serving.ca_pem.as_bytes())).await.unwrap();

    let started = Instant::now();
    let _rm = ResourceManager::start(&seed, &shoot_cluster, &[NAMESPACE], DEFAULT_CLASS).await.unwrap();
    println!("gardener-resource-manager ready in {:?}", started.elapsed());

    // One replica: the Deployment.
    let deployments: Api<Deployment> = Api::namespaced(shoot.clone(), "kube-system");
    write_managed_resource(&seed_client, &render(0)).await;
    let took = wait_containers("Deployment vpn-shoot", &["vpn-shoot", "kubelink"], || async {
        let d = deployments.get_opt("vpn-shoot").await.unwrap()?;
        Some(containers(d.spec?.template.spec.as_ref()))
    })
    .await;
    let d = deployments.get("vpn-shoot").await.unwrap();
    let pod = d.spec.as_ref().unwrap().template.spec.as_ref();
    assert!(volumes(pod).contains(&"kubelink-shoot".to_string()), "{:?}", volumes(pod));
    let sidecar = pod.unwrap().containers.iter().find(|c| c.name == "kubelink").unwrap();
    assert_eq!(sidecar.image.as_deref(), Some(IMAGE));
    wait_condition(&seed_client, NAMESPACE, MR, "ResourcesApplied", "True", Duration::from_secs(60)).await.unwrap();
    println!("Deployment vpn-shoot applied with the sidecar {took:?} after the ManagedResource was written");

    // HA: the StatefulSet replaces the Deployment. The resource manager deletes the Deployment in
    // the foreground and waits for it to be gone; kube-controller-manager's garbage collector would
    // then remove the `foregroundDeletion` finalizer (there are no ReplicaSets: no controller-manager
    // runs here), which the test does in its place.
    let statefulsets: Api<StatefulSet> = Api::namespaced(shoot.clone(), "kube-system");
    write_managed_resource(&seed_client, &render(2)).await;
    let gc = tokio::spawn(collect_garbage(deployments.clone()));
    let want = ["vpn-shoot-s0", "vpn-shoot-s1", "tunnel-controller", "kubelink"];
    let took = wait_containers("StatefulSet vpn-shoot", &want, || async {
        let s = statefulsets.get_opt("vpn-shoot").await.unwrap()?;
        Some(containers(s.spec?.template.spec.as_ref()))
    })
    .await;
    wait_condition(&seed_client, NAMESPACE, MR, "ResourcesApplied", "True", Duration::from_secs(60)).await.unwrap();
    let start = Instant::now();
    while deployments.get_opt("vpn-shoot").await.unwrap().is_some() {
        assert!(start.elapsed() < Duration::from_secs(60), "the resource manager kept the old Deployment");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gc.abort();
    println!(
        "HA: StatefulSet vpn-shoot with the sidecar {took:?} after the ManagedResource changed; Deployment removed"
    );

    // A hand edit of vpn-shoot is put back by the resource manager: its apply keeps the sidecar.
    let edit = json!({"metadata": {"labels": {"edited": "by-hand"}}, "spec": {"replicas": 3}});
    statefulsets.patch("vpn-shoot", &PatchParams::default(), &Patch::Merge(&edit)).await.unwrap();
    let edited = statefulsets.get("vpn-shoot").await.unwrap();
    assert_eq!(edited.spec.as_ref().unwrap().replicas, Some(3));
    // The resource manager's next apply: a change of the ManagedResource's spec starts it at once
    // instead of after its one-minute resync.
    let touch = json!({"spec": {"forceOverwriteLabels": true}});
    let mrs = k8s::resource_manager::managed_resources(&seed_client, NAMESPACE);
    mrs.patch(MR, &PatchParams::default(), &Patch::Merge(&touch)).await.unwrap();
    let start = Instant::now();
    loop {
        let s = statefulsets.get("vpn-shoot").await.unwrap();
        let spec = s.spec.as_ref().unwrap();
        if spec.replicas == Some(2) {
            assert_eq!(containers(spec.template.spec.as_ref()), want, "the resource manager's apply kept the sidecar");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(90), "the resource manager did not put vpn-shoot back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("hand edit put back by the resource manager in {:?}, sidecar kept", start.elapsed());

    // Nothing else is sent to the webhook or changed by it.
    let other = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "coredns", "namespace": "kube-system", "labels": {"app": "vpn-shoot-not"}},
        "spec": {"selector": {"matchLabels": {"k": "coredns"}}, "template": {"metadata": {"labels": {"k": "coredns"}},
                 "spec": {"containers": [{"name": "coredns", "image": "coredns"}]}}}});
    garden::apply(&shoot, &other).await.unwrap();
    let d = deployments.get("coredns").await.unwrap();
    assert_eq!(containers(d.spec.as_ref().unwrap().template.spec.as_ref()), ["coredns"]);
    let reviews = std::fs::read_to_string(&log).unwrap_or_default().matches("reviewed").count();
    println!("the webhook reviewed {reviews} writes of vpn-shoot");
    assert!(reviews >= 3, "{}", webhook.log_tail(20));
}
