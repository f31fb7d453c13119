//! The gardenlet stand-in's own mechanics (`kubelink_tests::gardenlet`) on the real kube-apiserver
//! with Gardener's CRDs, against a small fake extension controller (not kubelink): the Cluster and
//! the labelled control-plane namespace, the Extension as gardenlet writes it, readiness judged by
//! gardenlet's rule with the reason when not ready, a migration from one seed and the restore on
//! another.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Api;
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::watcher;
use kubelink_tests::gardenlet::{
    self, CONFIRM_DELETION, Error, Gardenlet, NotReady, OPERATION, SeedFixture, ShootFixture, ShootInput, TIMESTAMP,
    Timing,
};
use kubelink_tests::k8s::{self, Cluster};
use serde_json::{Value, json};

const TYPE: &str = "kubelink-wireguard";
const FINALIZER: &str = "extensions.gardener.cloud/fake";

fn dynamic(client: &kube::Client, ns: &str, group: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(group, "v1alpha1", kind);
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk_with_plural(&gvk, plural))
}

fn extensions(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    dynamic(client, ns, "extensions.gardener.cloud", "Extension", "extensions")
}

fn managed_resources(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    dynamic(client, ns, "resources.gardener.cloud", "ManagedResource", "managedresources")
}

fn value(object: impl serde::Serialize) -> Value {
    serde_json::to_value(object).unwrap()
}

/// Polls fast and gives up soon: nothing here takes long.
fn quick() -> Timing {
    Timing {
        interval: Duration::from_millis(100),
        timeout: Duration::from_secs(10),
        severe_threshold: Duration::from_secs(1),
    }
}

fn now_seconds() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// What the fake extension writes on `reconcile`.
#[derive(Debug, Clone, Default)]
struct Behaviour {
    /// `status.state`.
    state: Option<Value>,
    /// A Secret it creates and lists in `status.resources` (name, base64 data).
    secret: Option<(&'static str, &'static str)>,
    /// A shoot ManagedResource (no class) it creates, and deletes on `migrate`.
    shoot_managed_resource: Option<&'static str>,
    /// Report this `lastError` instead of success.
    error: Option<&'static str>,
}

/// One revision of an Extension as the fake's watch delivered it.
#[derive(Debug, Clone)]
struct Seen {
    op: Option<String>,
    has_state: bool,
    deleted: bool,
    confirmed: bool,
    /// On one etcd, resourceVersions are its revisions: a lower one was written earlier.
    resource_version: u64,
}

impl Seen {
    fn of(obj: &Value, deleted: bool) -> Seen {
        let annotations = &obj["metadata"]["annotations"];
        Seen {
            op: annotations[OPERATION].as_str().map(String::from),
            has_state: !obj["status"]["state"].is_null(),
            deleted,
            confirmed: annotations[CONFIRM_DELETION] == "true",
            resource_version: resource_version(obj),
        }
    }
}

fn resource_version(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"].as_str().and_then(|v| v.parse().ok()).unwrap_or_default()
}

/// A fake extension controller for one namespace, shaped like Gardener's extension library: it
/// ignores `wait-for-state`, removes `reconcile` before acting and `migrate`/`restore` after,
/// holds a finalizer until deletion, and reports through `status` (`lastOperation`,
/// `observedGeneration`, `lastError`). It records every revision its watch delivers.
struct Fake {
    seen: Arc<Mutex<Vec<Seen>>>,
    behaviour: Arc<Mutex<Behaviour>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Fake {
    /// Starts watching and returns once the initial list is done, so no later revision is missed.
    async fn start(client: &kube::Client, ns: &str, behaviour: Behaviour) -> Fake {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let behaviour = Arc::new(Mutex::new(behaviour));
        let (synced, wait_synced) = tokio::sync::oneshot::channel();
        let (client, ns, s, b) = (client.clone(), ns.to_string(), seen.clone(), behaviour.clone());
        let task = tokio::spawn(async move {
            let mut synced = Some(synced);
            let mut events = watcher(extensions(&client, &ns), watcher::Config::default()).boxed();
            while let Some(event) = events.next().await {
                let result = match event {
                    Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => {
                        let obj = value(obj);
                        s.lock().unwrap().push(Seen::of(&obj, false));
                        let behaviour = b.lock().unwrap().clone();
                        handle(&client, &ns, obj["metadata"]["name"].as_str().unwrap_or_default(), &behaviour).await
                    }
                    Ok(watcher::Event::Delete(obj)) => {
                        s.lock().unwrap().push(Seen::of(&value(obj), true));
                        Ok(())
                    }
                    Ok(watcher::Event::InitDone) => {
                        if let Some(synced) = synced.take() {
                            let _ = synced.send(());
                        }
                        Ok(())
                    }
                    Ok(watcher::Event::Init) => Ok(()),
                    Err(e) => {
                        eprintln!("fake extension watch: {e}");
                        Ok(())
                    }
                };
                if let Err(e) = result {
                    eprintln!("fake extension: {e}");
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), wait_synced)
            .await
            .expect("the fake's watch lists within 10 s")
            .expect("the fake's watch runs");
        Fake { seen, behaviour, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Acts on the Extension as it is now (a fresh read: the event may be stale).
async fn handle(client: &kube::Client, ns: &str, name: &str, behaviour: &Behaviour) -> Result<(), kube::Error> {
    let api = extensions(client, ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let Some(obj) = api.get_opt(name).await?.map(value) else { return Ok(()) };
    let op = obj["metadata"]["annotations"][OPERATION].as_str().map(String::from);
    let pp = PatchParams::default();
    let patch = |v: Value| Patch::Merge(v);
    if !obj["metadata"]["deletionTimestamp"].is_null() {
        api.patch(name, &pp, &patch(json!({"metadata": {"finalizers": null}}))).await?;
        return Ok(());
    }
    let generation = obj["metadata"]["generation"].clone();
    let succeeded = |t: &str| {
        json!({"type": t, "state": "Succeeded", "progress": 100, "description": format!("{t} done"),
               "lastUpdateTime": now_seconds()})
    };
    let drop_operation = json!({"metadata": {"annotations": {OPERATION: null}}});
    match op.as_deref() {
        Some("reconcile") => {
            api.patch(name, &pp, &patch(drop_operation)).await?;
            api.patch(name, &pp, &patch(json!({"metadata": {"finalizers": [FINALIZER]}}))).await?;
            if let Some(description) = behaviour.error {
                let status = json!({"observedGeneration": generation,
                    "lastOperation": {"type": "Reconcile", "state": "Error", "progress": 50,
                                      "description": description, "lastUpdateTime": now_seconds()},
                    "lastError": {"description": description, "lastUpdateTime": now_seconds()}});
                api.patch_status(name, &pp, &patch(json!({"status": status}))).await?;
                return Ok(());
            }
            let mut status = json!({"observedGeneration": generation, "lastOperation": succeeded("Reconcile"),
                                    "lastError": null});
            if let Some(state) = &behaviour.state {
                status["state"] = state.clone();
            }
            if let Some((secret, data)) = behaviour.secret {
                let object = json!({"metadata": {"name": secret, "labels": {"app": "fake"}},
                    "type": "fake.example/keys", "data": {"private": data}});
                // Already there after the first reconcile.
                let _ = secrets.create(&PostParams::default(), &serde_json::from_value(object).unwrap()).await;
                status["resources"] = json!([{"name": "keys",
                    "resourceRef": {"apiVersion": "v1", "kind": "Secret", "name": secret}}]);
            }
            if let Some(mr) = behaviour.shoot_managed_resource {
                let object = json!({"apiVersion": "resources.gardener.cloud/v1alpha1", "kind": "ManagedResource",
                    "metadata": {"name": mr}, "spec": {"secretRefs": [], "keepObjects": false}});
                let _ = managed_resources(client, ns)
                    .create(&PostParams::default(), &serde_json::from_value(object).unwrap())
                    .await;
            }
            api.patch_status(name, &pp, &patch(json!({"status": status}))).await?;
        }
        Some("restore") => {
            api.patch(name, &pp, &patch(json!({"metadata": {"finalizers": [FINALIZER]}}))).await?;
            let status = json!({"observedGeneration": generation, "lastOperation": succeeded("Restore"),
                                "lastError": null});
            api.patch_status(name, &pp, &patch(json!({"status": status}))).await?;
            api.patch(name, &pp, &patch(drop_operation)).await?;
        }
        Some("migrate") => {
            if let Some(mr) = behaviour.shoot_managed_resource {
                let _ = managed_resources(client, ns).delete(mr, &Default::default()).await;
            }
            let status = json!({"lastOperation": succeeded("Migrate")});
            api.patch_status(name, &pp, &patch(json!({"status": status}))).await?;
            api.patch(name, &pp, &patch(json!({"metadata": {"finalizers": null}}))).await?;
            api.patch(name, &pp, &patch(drop_operation)).await?;
        }
        // wait-for-state, or nothing asked.
        _ => {}
    }
    Ok(())
}

async fn cluster(test: &str) -> Option<&'static Cluster> {
    k8s::for_test(test).await
}

/// Prepares shoot `project/name` on `seed` and returns its input and namespace.
async fn prepare(gardenlet: &Gardenlet, project: &str, name: &str, seed: &str) -> (ShootInput, String) {
    let shoot = ShootFixture::new(project, name, seed).with_extension(TYPE, Some(json!({"mtu": 1420})));
    let input = ShootInput::from_fixtures(&shoot, &SeedFixture::new(seed));
    let ns = gardenlet.prepare_shoot(&input).await.expect("preparing the shoot");
    (input, ns)
}

#[tokio::test]
async fn prepare_shoot_writes_the_cluster_and_labels_the_namespace() {
    let Some(cluster) = cluster("prepare_shoot_writes_the_cluster_and_labels_the_namespace").await else { return };
    let client = cluster.client().await.unwrap();
    let gardenlet = Gardenlet::new(client.clone());
    let mut shoot = ShootFixture::new("dev", "prep", "seed-a").with_extension(TYPE, None);
    shoot.nodes = Some("10.180.0.0/16".into());
    let mut input = ShootInput::from_fixtures(&shoot, &SeedFixture::new("seed-a"));
    input.auto_enabled = vec!["shoot-auto".into()];
    let ns = gardenlet.prepare_shoot(&input).await.unwrap();
    assert_eq!(ns, "shoot--dev--prep");

    let namespace = Api::<Namespace>::all(client.clone()).get(&ns).await.unwrap();
    let labels = namespace.metadata.labels.unwrap_or_default();
    println!("{ns} labels: {labels:?}");
    for (key, value) in [
        ("gardener.cloud/role", "shoot"),
        ("seed.gardener.cloud/provider", "local"),
        ("shoot.gardener.cloud/provider", "local"),
        ("networking.shoot.gardener.cloud/provider", "calico"),
        ("extensions.gardener.cloud/kubelink-wireguard", "true"),
        ("extensions.gardener.cloud/shoot-auto", "true"),
        ("backup.gardener.cloud/provider", "local"),
        ("pod-security.kubernetes.io/enforce", "privileged"),
        ("high-availability-config.resources.gardener.cloud/consider", "true"),
    ] {
        assert_eq!(labels.get(key).map(String::as_str), Some(value), "label {key}");
    }
    let annotations = namespace.metadata.annotations.unwrap_or_default();
    assert_eq!(
        annotations.get("shoot.gardener.cloud/uid"),
        input.shoot["status"]["uid"].as_str().map(String::from).as_ref()
    );

    let clusters = Api::<DynamicObject>::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("extensions.gardener.cloud", "v1alpha1", "Cluster"),
            "clusters",
        ),
    );
    let written = value(clusters.get(&ns).await.unwrap());
    let spec = &written["spec"];
    assert_eq!(
        (spec["shoot"]["apiVersion"].as_str(), spec["shoot"]["kind"].as_str()),
        (Some("core.gardener.cloud/v1beta1"), Some("Shoot"))
    );
    assert_eq!(spec["shoot"]["spec"]["networking"]["nodes"], "10.180.0.0/16");
    assert_eq!(spec["shoot"]["spec"]["hibernation"]["enabled"], false);
    assert_eq!(spec["seed"]["kind"], "Seed");
    assert_eq!(spec["seed"]["metadata"]["name"], "seed-a");
    assert_eq!(spec["cloudProfile"]["kind"], "CloudProfile");

    // The shoot hibernates and disables the auto-enabled extension: the Cluster follows, the
    // label goes, labels gardenlet does not own stay.
    let ns_api = Api::<Namespace>::all(client.clone());
    ns_api
        .patch(&ns, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"team": "a"}}})))
        .await
        .unwrap();
    input.shoot["spec"]["hibernation"]["enabled"] = json!(true);
    input.shoot["spec"]["extensions"].as_array_mut().unwrap().push(json!({"type": "shoot-auto", "disabled": true}));
    gardenlet.prepare_shoot(&input).await.unwrap();
    let labels = ns_api.get(&ns).await.unwrap().metadata.labels.unwrap_or_default();
    assert!(!labels.contains_key("extensions.gardener.cloud/shoot-auto"), "{labels:?}");
    assert_eq!(labels.get("extensions.gardener.cloud/kubelink-wireguard").map(String::as_str), Some("true"));
    assert_eq!(labels.get("team").map(String::as_str), Some("a"));
    assert_eq!(value(clusters.get(&ns).await.unwrap())["spec"]["shoot"]["spec"]["hibernation"]["enabled"], true);

    gardenlet.delete_cluster(&ns).await.unwrap();
    assert!(clusters.get_opt(&ns).await.unwrap().is_none(), "the Cluster is gone");
    gardenlet.delete_cluster(&ns).await.expect("a missing Cluster is fine");
}

#[tokio::test]
async fn reconcile_waits_for_the_extensions_report_and_names_what_is_missing() {
    let Some(cluster) = cluster("reconcile_waits_for_the_extensions_report_and_names_what_is_missing").await else {
        return;
    };
    let client = cluster.client().await.unwrap();
    let gardenlet = Gardenlet::new(client.clone()).with_timing(Timing { timeout: Duration::from_secs(2), ..quick() });
    let (_, ns) = prepare(&gardenlet, "dev", "ready", "seed-a").await;

    // Nothing reconciles it: not ready, and the reason is gardenlet's first unmet rule.
    let before = jiff::Timestamp::now();
    let err = gardenlet.reconcile_extension(&ns, TYPE, None, Some(json!({"mtu": 1420}))).await.unwrap_err();
    println!("no controller: {err}");
    match &err {
        Error::NotReady { reason: NotReady::GenerationOutdated { observed: 0, generation: 1 }, waited, .. } => {
            assert!(*waited >= Duration::from_secs(2), "{waited:?}")
        }
        other => panic!("expected NotReady with an outdated generation, got {other}"),
    }
    let ext = value(extensions(&client, &ns).get(TYPE).await.unwrap());
    assert_eq!(ext["metadata"]["annotations"][OPERATION], "reconcile");
    let stamp: jiff::Timestamp = ext["metadata"]["annotations"][TIMESTAMP].as_str().unwrap().parse().unwrap();
    assert!(stamp >= before && stamp <= jiff::Timestamp::now(), "{stamp}");
    assert_eq!(ext["spec"], json!({"type": TYPE, "providerConfig": {"mtu": 1420}}), "a shoot extension has no class");

    // The fake picks it up: ready, by the same rule.
    let fake = Fake::start(&client, &ns, Behaviour::default()).await;
    gardenlet.reconcile_extension(&ns, TYPE, None, Some(json!({"mtu": 1380}))).await.expect("ready");
    let ext = value(extensions(&client, &ns).get(TYPE).await.unwrap());
    assert!(ext["metadata"]["annotations"].get(OPERATION).is_none(), "{ext}");
    assert_eq!(ext["status"]["lastOperation"]["state"], "Succeeded");
    assert_eq!(
        (ext["metadata"]["generation"].as_i64(), ext["status"]["observedGeneration"].as_i64()),
        (Some(2), Some(2))
    );
    assert_eq!(gardenlet::extension_ready(&ext), Ok(()));
    assert!(fake.seen().iter().any(|s| s.op.as_deref() == Some("reconcile")));

    // A ready Extension with an older timestamp is not what gardenlet waits for.
    extensions(&client, &ns)
        .patch(
            TYPE,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {TIMESTAMP: "2020-01-01T00:00:00Z"}}})),
        )
        .await
        .unwrap();
    let err = gardenlet.wait_ready(&ns, TYPE).await.unwrap_err();
    assert!(matches!(&err, Error::NotReady { reason: NotReady::TimestampAnnotation { .. }, .. }), "{err}");

    // An error report ends the wait after the severe threshold, before the timeout.
    fake.behaviour.lock().unwrap().error = Some("no address left in 192.168.128.0/22");
    let gardenlet = Gardenlet::new(client.clone()).with_timing(Timing { timeout: Duration::from_secs(30), ..quick() });
    let started = std::time::Instant::now();
    let err = gardenlet.reconcile_extension(&ns, TYPE, None, None).await.unwrap_err();
    println!("error report: {err}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    match &err {
        Error::Failed { reason: NotReady::LastError { description, .. }, .. } => {
            assert_eq!(description, "no address left in 192.168.128.0/22")
        }
        other => panic!("expected Failed with the lastError, got {other}"),
    }
    assert!(extensions(&client, &ns).get(TYPE).await.unwrap().data["spec"].get("providerConfig").is_none());

    // Deleted as gardenlet deletes: confirmed first; the wait lasts until the finalizer goes.
    gardenlet.delete_extension(&ns, TYPE).await.unwrap();
    assert!(extensions(&client, &ns).get_opt(TYPE).await.unwrap().is_none());
    let seen = fake.seen();
    assert!(seen.iter().any(|s| s.deleted && s.confirmed), "{seen:#?}");
    gardenlet.delete_extension(&ns, TYPE).await.expect("a missing Extension is fine");
}

#[tokio::test]
async fn migrate_from_one_seed_and_restore_on_another() {
    let test = "migrate_from_one_seed_and_restore_on_another";
    let Some(seed_a) = cluster(test).await else { return };
    let Some(seed_b) = k8s::own_for_test(test, true).await else { return };
    let (client_a, client_b) = (seed_a.client().await.unwrap(), seed_b.client().await.unwrap());
    let (source, destination) =
        (Gardenlet::new(client_a.clone()).with_timing(quick()), Gardenlet::new(client_b.clone()).with_timing(quick()));

    // On seed A the extension reconciles: it records a state, a Secret and a shoot ManagedResource.
    let (_, ns) = prepare(&source, "dev", "mover", "seed-a").await;
    let state = json!({"address": "192.168.128.10", "slots": [0, 1]});
    let behaviour = Behaviour {
        state: Some(state.clone()),
        secret: Some(("kubelink-keys", "cHJpdmF0ZQ==")),
        shoot_managed_resource: Some("extension-kubelink-shoot"),
        error: None,
    };
    let fake_a = Fake::start(&client_a, &ns, behaviour).await;
    source.reconcile_extension(&ns, TYPE, None, Some(json!({"mtu": 1420}))).await.unwrap();
    let seed_class = json!({"apiVersion": "resources.gardener.cloud/v1alpha1", "kind": "ManagedResource",
        "metadata": {"name": "extension-kubelink-seed"}, "spec": {"class": "seed", "secretRefs": []}});
    managed_resources(&client_a, &ns)
        .create(&PostParams::default(), &serde_json::from_value(seed_class).unwrap())
        .await
        .unwrap();
    let err = Gardenlet::new(client_a.clone())
        .with_timing(Timing { timeout: Duration::from_millis(300), ..quick() })
        .wait_shoot_managed_resources_deleted(&ns)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::ManagedResourcesRemain { names, .. } if names == &["extension-kubelink-shoot"]),
        "only the shoot's ManagedResource is waited for: {err}"
    );

    let migrated = source.migrate(&ns, TYPE).await.unwrap();
    println!("migrated: {}", migrated.shoot_state_spec());
    let entry = migrated.extension.as_ref().expect("the state is recorded");
    assert_eq!(
        (entry.kind.as_str(), entry.name.as_deref(), entry.state.as_ref()),
        ("Extension", Some(TYPE), Some(&state))
    );
    assert_eq!(
        serde_json::to_value(&entry.resources).unwrap(),
        json!([{"name": "keys", "resourceRef": {"apiVersion": "v1", "kind": "Secret", "name": "kubelink-keys"}}])
    );
    assert_eq!(migrated.resources.len(), 1);
    let data = &migrated.resources[0].data;
    assert_eq!(data["data"], json!({"private": "cHJpdmF0ZQ=="}));
    assert_eq!(data["metadata"]["labels"], json!({"app": "fake"}));
    for field in ["uid", "resourceVersion", "creationTimestamp", "managedFields"] {
        assert!(data["metadata"].get(field).is_none(), "{field} is not persisted: {data}");
    }
    assert!(extensions(&client_a, &ns).get_opt(TYPE).await.unwrap().is_none(), "the Extension is deleted");
    let seen = fake_a.seen();
    assert!(seen.iter().any(|s| s.op.as_deref() == Some("migrate")), "{seen:#?}");
    assert!(seen.iter().any(|s| s.deleted && s.confirmed), "deleted with confirmation: {seen:#?}");
    let left: Vec<String> = managed_resources(&client_a, &ns)
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|mr| mr.metadata.name)
        .collect();
    assert_eq!(left, ["extension-kubelink-seed"]);
    // The shoot has left seed A.
    source.delete_cluster(&ns).await.unwrap();
    source.delete_namespace(&ns).await.unwrap();
    let terminating = Api::<Namespace>::all(client_a.clone()).get_opt(&ns).await.unwrap();
    assert!(terminating.is_none_or(|n| n.metadata.deletion_timestamp.is_some()), "seed A's namespace is being deleted");

    // On seed B: the same namespace, then the restore.
    let (_, ns_b) = prepare(&destination, "dev", "mover", "seed-b").await;
    assert_eq!(ns_b, ns);
    let fake_b = Fake::start(&client_b, &ns, Behaviour::default()).await;
    destination.restore(&ns, TYPE, None, Some(json!({"mtu": 1420})), &migrated).await.unwrap();
    let ext = value(extensions(&client_b, &ns).get(TYPE).await.unwrap());
    assert_eq!(ext["status"]["state"], state);
    assert_eq!(ext["status"]["resources"], serde_json::to_value(&entry.resources).unwrap());
    assert_eq!(ext["status"]["lastOperation"]["type"], "Restore");
    let secret = value(Api::<Secret>::namespaced(client_b.clone(), &ns).get("kubelink-keys").await.unwrap());
    assert_eq!(secret["data"], json!({"private": "cHJpdmF0ZQ=="}));
    assert_eq!(secret["metadata"]["labels"], json!({"app": "fake"}));
    assert_eq!(secret["type"], "Opaque", "gardenlet restores metadata, spec and data, not a Secret's type");

    // The order gardenlet keeps: created waiting for its state, the state and the Secret in
    // place, then restore.
    let seen: Vec<Seen> = fake_b.seen().into_iter().filter(|s| !s.deleted).collect();
    println!("seed B saw: {seen:#?}");
    assert_eq!((seen[0].op.as_deref(), seen[0].has_state), (Some("wait-for-state"), false), "{seen:#?}");
    let restore = seen.iter().find(|s| s.op.as_deref() == Some("restore")).expect("a restore");
    let with_state = seen.iter().find(|s| s.has_state).expect("a revision with the state");
    assert_eq!(with_state.op.as_deref(), Some("wait-for-state"), "the state came before restore: {seen:#?}");
    assert!(resource_version(&secret) < restore.resource_version, "the Secret came before restore");

    // Restored again (gardenlet retried): a state already there is kept.
    let mut other = migrated.clone();
    other.extension.as_mut().unwrap().state = Some(json!({"address": "192.168.128.99"}));
    destination.restore(&ns, TYPE, None, Some(json!({"mtu": 1420})), &other).await.unwrap();
    assert_eq!(value(extensions(&client_b, &ns).get(TYPE).await.unwrap())["status"]["state"], state);
}
