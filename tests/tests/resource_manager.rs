//! The shoot's Secret delivered as on a seed: kubelink's extension controller writes the
//! ManagedResource in the shoot's control-plane namespace, and the real gardener-resource-manager of
//! the pinned gardener release (`k8s::resource_manager`) applies it into a second real kube-apiserver,
//! the shoot's, and reports its conditions. gardenlet's part is the stand-in's.
//!
//! - a shoot deleted (its Extension deleted: the ManagedResource deleted without `keepObjects`) has
//!   its Secret removed from the shoot;
//! - a shoot migrated away (`keepObjects: true`, then deleted) keeps its Secret in the shoot;
//! - a ManagedResource of another class is not touched by the shoot's resource manager.
//!
//! Both shoots use one shoot API server, one after the other (the Secret is `kube-system/kubelink-shoot`
//! in either), and one resource manager watches both control-plane namespaces.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use kubelink_ipam::contract::{Slot, names, shoot_secret};
use kubelink_ipam::extension::controller::{self, Config};
use kubelink_ipam::extension::objects::{Extension, TYPE};
use kubelink_ipam::managed::shoot_data_of;
use kubelink_ipam::secret::private_key_of;
use kubelink_tests::gardenlet::{Gardenlet, SeedFixture, ShootFixture, ShootInput, Timing};
use kubelink_tests::k8s::resource_manager::{self, DEFAULT_CLASS, ResourceManager};
use kubelink_tests::k8s::{self, Cluster};
use kubelink_tests::skip;
use serde_json::{Value, json};

const NAMESPACE: &str = "kubelink";
const CIDR: &str = "192.168.128.0/22";
const SEED: &str = "seed-rm";

fn seed_networks() -> Value {
    json!({"networks": {"nodes": "10.250.0.0/16", "pods": "10.96.0.0/11", "services": "10.64.0.0/13"}})
}

fn seed_config() -> Value {
    json!({"cidr": CIDR, "slots": 2, "slotEndpoints": ["gw0.seed.example:51820", "gw1.seed.example:51820"]})
}

/// The chart installed as gardenlet installs it (the controller's grants), the controller running
/// in this process with its ServiceAccount's token, as tests/tests/extension.rs runs it.
async fn start_controller(seed: &Cluster) -> tokio::task::JoinHandle<()> {
    seed.ensure_namespace("garden").await.unwrap();
    seed.ensure_namespace(NAMESPACE).await.unwrap();
    let values = json!({"controller": {"enabled": true}, "crds": {"enabled": false},
                        "gardener": {"version": "1.149.0", "seed": {"name": SEED, "spec": seed_networks()}}});
    let kubeconfig = seed.admin_kubeconfig_file().unwrap();
    let objects = kubelink_tests::helm::install(
        &kubelink_tests::helm::chart("kubelink"),
        &kubeconfig,
        NAMESPACE,
        "kubelink",
        values,
    )
    .await
    .unwrap();
    let seed_json = objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == "kubelink-seed")
        .map(|o| serde_json::from_str::<Value>(o["data"]["seed.json"].as_str().unwrap()).unwrap())
        .expect("the chart's kubelink-seed ConfigMap");
    let seed_spec =
        kubelink_ipam::decode::decode_value(&json!({"metadata": {"name": SEED}, "spec": seed_json})).unwrap();
    let token = seed.token_for(NAMESPACE, "kubelink-controller").await.unwrap();
    let cfg = Config {
        namespace: NAMESPACE.into(),
        seed_name: SEED.into(),
        seed: Some(seed_spec),
        resync: Duration::from_secs(300),
        deployed_slots: 2,
    };
    let client = seed.client_with_token(&token).await.unwrap();
    tokio::spawn(controller::run(client, cfg, std::sync::Arc::new(|_: &controller::Reconciled| {})))
}

async fn shoot_secret(shoot: &kube::Client) -> Option<Secret> {
    Api::<Secret>::namespaced(shoot.clone(), names::SHOOT_NAMESPACE).get_opt(names::SHOOT_SECRET).await.unwrap()
}

/// Polls until the shoot's Secret is there (`true`) or gone (`false`); how long that took.
async fn wait_shoot_secret(shoot: &kube::Client, present: bool, timeout: Duration) -> Duration {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if shoot_secret(shoot).await.is_some() == present {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the shoot's Secret is {} after {timeout:?}", if present { "still missing" } else { "still there" });
}

/// Watches (by polling every 10 ms) for the ManagedResource in `namespace` on the seed and then
/// for the Secret in the shoot: when each appeared, from the start.
fn time_delivery(
    seed: &kube::Client,
    shoot: &kube::Client,
    namespace: &str,
) -> tokio::task::JoinHandle<(Duration, Duration)> {
    let (mrs, shoot) = (resource_manager::managed_resources(seed, namespace), shoot.clone());
    let start = Instant::now();
    tokio::spawn(async move {
        while mrs.get_opt(names::MANAGED_RESOURCE).await.unwrap().is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let written = start.elapsed();
        while shoot_secret(&shoot).await.is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (written, start.elapsed())
    })
}

/// What the controller wrote for the shoot in `namespace`: the data of the shoot's Secret inside
/// the ManagedResource's Secret, checked against the seed-side Secret and the Extension's state.
async fn written_for(seed: &kube::Client, namespace: &str) -> BTreeMap<String, ByteString> {
    let secrets = Api::<Secret>::namespaced(seed.clone(), namespace);
    let mr_secret = secrets.get(names::MANAGED_RESOURCE_SECRET).await.unwrap();
    let data = shoot_data_of(&mr_secret).expect("the shoot's Secret in the ManagedResource's Secret");
    let seed_side = secrets.get(names::SHOOT_SECRET).await.unwrap();
    assert_eq!(seed_side.data.as_ref(), Some(&data), "the ManagedResource carries the seed-side Secret's data");
    let ext = Api::<Extension>::namespaced(seed.clone(), namespace).get(TYPE).await.unwrap();
    let state = ext.status.and_then(|s| s.state).expect("a state");
    let key = private_key_of(&seed_side).unwrap().public_key().to_string();
    assert_eq!(state["publicKey"].as_str(), Some(key.as_str()));
    let address = String::from_utf8(data[shoot_secret::ADDRESS].0.clone()).unwrap();
    assert!(address.starts_with(state["address"].as_str().unwrap()), "{address} is the state's address");
    for slot in Slot::first(2) {
        let g = shoot_secret::gateway(slot);
        for k in [&g.endpoint, &g.public_key, &g.address] {
            assert!(data.contains_key(k), "gateway key {k}");
        }
    }
    data
}

/// A ManagedResource of class `seed` in `namespace` with a ConfigMap for `kube-system`: the shoot's
/// resource manager must leave it alone.
async fn other_class(seed: &kube::Client, namespace: &str) {
    let doc =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: other-class\n  namespace: kube-system\ndata:\n  a: b\n";
    let secret = Secret {
        metadata: kube::api::ObjectMeta { name: Some("managedresource-other-class".into()), ..Default::default() },
        data: Some([("configmap__kube-system__other-class.yaml".to_string(), ByteString(doc.into()))].into()),
        ..Default::default()
    };
    Api::<Secret>::namespaced(seed.clone(), namespace).create(&PostParams::default(), &secret).await.unwrap();
    let mr: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "resources.gardener.cloud/v1alpha1", "kind": "ManagedResource",
        "metadata": {"name": "other-class", "namespace": namespace},
        "spec": {"class": "seed", "secretRefs": [{"name": "managedresource-other-class"}]},
    }))
    .unwrap();
    resource_manager::managed_resources(seed, namespace).create(&PostParams::default(), &mr).await.unwrap();
}

#[tokio::test]
async fn the_real_resource_manager_applies_the_shoot_secret_and_honours_keep_objects_and_class() {
    let test = "the_real_resource_manager_applies_the_shoot_secret_and_honours_keep_objects_and_class";
    let _ = tracing_subscriber::fmt().with_env_filter("kubelink_ipam=info").with_test_writer().try_init();
    let missing =
        k8s::tools::tools().err().or_else(|| k8s::tools::gardener_resource_manager().err()).map(|e| e.to_string());
    if let Some(why) = missing {
        skip::skip(test, &why);
        return;
    }
    let seed = k8s::own_for_test("rm-seed", true).await.expect("tools checked above");
    let shoot_cluster = Cluster::start(k8s::Options { name: "rm-shoot".into(), ..Default::default() })
        .await
        .expect("the shoot's API server");
    let (seed_client, shoot) = (seed.client().await.unwrap(), shoot_cluster.client().await.unwrap());
    let _controller = start_controller(&seed).await;
    let timing =
        Timing { timeout: Duration::from_secs(60), severe_threshold: Duration::from_secs(1), ..Timing::default() };
    let g = Gardenlet::new(seed_client.clone()).with_timing(timing);
    g.reconcile_extension("garden", TYPE, Some("seed"), Some(seed_config())).await.unwrap();
    let mut seed_json = SeedFixture::new(SEED).to_json();
    seed_json["spec"]["networks"] = seed_networks()["networks"].clone();
    let mut namespaces = Vec::new();
    for name in ["gone", "moved"] {
        let fixture = ShootFixture::new("p", name, SEED);
        namespaces.push(g.prepare_shoot(&ShootInput::new("p", fixture.to_json(), seed_json.clone())).await.unwrap());
    }
    let (gone, moved) = (namespaces[0].clone(), namespaces[1].clone());
    other_class(&seed_client, &moved).await;

    let started = Instant::now();
    let rm = ResourceManager::start(&seed, &shoot_cluster, &[&gone, &moved], DEFAULT_CLASS).await.unwrap();
    println!("gardener-resource-manager ready in {:?}", started.elapsed());

    // Each shoot: gardenlet reconciles its Extension, the controller writes the ManagedResource, the
    // resource manager applies the Secret into the shoot and reports ResourcesApplied.
    for namespace in [&gone, &moved] {
        let start = Instant::now();
        let delivery = time_delivery(&seed_client, &shoot, namespace);
        g.reconcile_extension(namespace, TYPE, None, None).await.unwrap();
        let ready = start.elapsed();
        let (written, in_shoot) =
            tokio::time::timeout(Duration::from_secs(60), delivery).await.expect("the Secret in the shoot").unwrap();
        let mr = resource_manager::wait_condition(
            &seed_client,
            namespace,
            names::MANAGED_RESOURCE,
            "ResourcesApplied",
            "True",
            Duration::from_secs(60),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", rm.log_tail(40)));
        let applied = start.elapsed();
        println!(
            "{namespace}: ManagedResource written {written:?} after gardenlet's reconcile request, Extension ready \
             after {ready:?}; the Secret in the shoot {:?} after the ManagedResource was written; ResourcesApplied=True \
             seen {:?} after it (looked for once the Extension was ready)",
            in_shoot.saturating_sub(written),
            applied.saturating_sub(written)
        );
        let healthy = resource_manager::wait_condition(
            &seed_client,
            namespace,
            names::MANAGED_RESOURCE,
            "ResourcesHealthy",
            "True",
            Duration::from_secs(60),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", rm.log_tail(40)));
        assert_eq!(mr["metadata"]["uid"], healthy["metadata"]["uid"]);
        let written = written_for(&seed_client, namespace).await;
        let applied = shoot_secret(&shoot).await.expect("the shoot's Secret");
        assert_eq!(applied.data.as_ref(), Some(&written), "the shoot has what the controller wrote");
        let origin = applied.metadata.annotations.unwrap_or_default().remove("resources.gardener.cloud/origin");
        assert!(origin.is_some_and(|o| o.ends_with(&format!("{namespace}/{}", names::MANAGED_RESOURCE))));

        if namespace == &gone {
            // The shoot is deleted: its Extension deleted, the controller deletes the ManagedResource
            // (keepObjects false), the resource manager deletes the Secret from the shoot and then
            // lets the ManagedResource go, which gardenlet waits for.
            let start = Instant::now();
            g.delete_extension(namespace, TYPE).await.unwrap();
            g.wait_shoot_managed_resources_deleted(namespace)
                .await
                .unwrap_or_else(|e| panic!("{e}\n{}", rm.log_tail(40)));
            let mr_gone = start.elapsed();
            wait_shoot_secret(&shoot, false, Duration::from_secs(30)).await;
            println!(
                "{namespace}: deleted; ManagedResource gone after {mr_gone:?}, the Secret gone from the shoot after {:?}",
                start.elapsed()
            );
        }
    }

    // The other shoot migrates away: the controller sets keepObjects and deletes the ManagedResource;
    // once the resource manager has let it go, the Secret is still in the shoot, unchanged.
    let before = shoot_secret(&shoot).await.unwrap();
    let start = Instant::now();
    g.migrate(&moved, TYPE).await.unwrap_or_else(|e| panic!("{e}\n{}", rm.log_tail(40)));
    println!("{moved}: migrated; ManagedResource gone after {:?}", start.elapsed());
    let mrs = resource_manager::managed_resources(&seed_client, &moved);
    assert!(mrs.get_opt(names::MANAGED_RESOURCE).await.unwrap().is_none());
    // A second's grace for a deletion that would come late.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = shoot_secret(&shoot).await.expect("keepObjects: the shoot keeps its Secret");
    assert_eq!(after.data, before.data);
    assert_eq!(after.metadata.uid, before.metadata.uid, "the same object, not a new one");

    // The ManagedResource of class seed: no finalizer, no status, nothing in the shoot.
    let other = serde_json::to_value(mrs.get("other-class").await.unwrap()).unwrap();
    assert!(other["metadata"].get("finalizers").is_none_or(Value::is_null), "{other}");
    assert!(other["status"]["conditions"].is_null(), "{other}");
    let configmaps = Api::<ConfigMap>::namespaced(shoot.clone(), "kube-system");
    assert!(configmaps.get_opt("other-class").await.unwrap().is_none());
    // Its class changed to the default one: now the shoot's resource manager applies it.
    let patch = json!({"spec": {"class": null}});
    mrs.patch("other-class", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    resource_manager::wait_condition(
        &seed_client,
        &moved,
        "other-class",
        "ResourcesApplied",
        "True",
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert!(configmaps.get_opt("other-class").await.unwrap().is_some());
    // Its own account of the two deletions.
    let log = std::fs::read_to_string(rm.log()).unwrap();
    let kept = |namespace: &str| {
        log.lines()
            .any(|l| l.contains("marked to keep objects") && l.contains(&format!("\"namespace\": \"{namespace}\"")))
    };
    assert!(kept(&moved) && !kept(&gone), "keepObjects honoured for {moved} only:\n{}", rm.log_tail(40));
    for line in log.lines().filter(|l| l.contains("keep objects") || l.contains("All resources have been deleted")) {
        println!("gardener-resource-manager: {line}");
    }
}
