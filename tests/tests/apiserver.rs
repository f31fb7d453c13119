//! The Kubernetes API test server, driven by a real `kube::Client` over HTTP.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::watcher;
use kubelink_tests::apiserver;
use serde_json::json;

fn secret(name: &str, labels: &[(&str, &str)]) -> Secret {
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
        },
        "stringData": {"x": "y"},
        "data": {"k": "dmFsdWU="},
    }))
    .unwrap()
}

fn api_error(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(status) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn seed_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("core.gardener.cloud", "v1beta1", "Seed"), "seeds")
}

#[tokio::test]
async fn crud_with_the_real_status_codes() {
    let server = apiserver::start().await;
    let secrets: Api<Secret> = Api::namespaced(server.client(), "shoot--p--a");
    let created = secrets.create(&PostParams::default(), &secret("s1", &[])).await.unwrap();
    let meta = &created.metadata;
    assert!(meta.uid.is_some() && meta.creation_timestamp.is_some());
    assert_eq!(meta.namespace.as_deref(), Some("shoot--p--a"));
    let rv1: u64 = meta.resource_version.as_deref().unwrap().parse().unwrap();
    // stringData is folded into data and not kept, as the real server does.
    let data = created.data.as_ref().unwrap();
    assert_eq!((data["x"].0.as_slice(), data["k"].0.as_slice()), (&b"y"[..], &b"value"[..]));
    assert_eq!(created.string_data, None);

    let again = api_error(secrets.create(&PostParams::default(), &secret("s1", &[])).await.unwrap_err());
    assert_eq!((again.code, again.reason.as_str()), (409, "AlreadyExists"));

    let missing = api_error(secrets.get("nope").await.unwrap_err());
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    assert!(missing.message.contains("secrets \"nope\" not found"), "{}", missing.message);

    // Replace with the current resourceVersion succeeds and bumps it; the stale one then conflicts.
    let mut changed = created.clone();
    changed.data.as_mut().unwrap().insert("k2".into(), k8s_openapi::ByteString(b"v2".to_vec()));
    let replaced = secrets.replace("s1", &PostParams::default(), &changed).await.unwrap();
    let rv2: u64 = replaced.metadata.resource_version.as_deref().unwrap().parse().unwrap();
    assert!(rv2 > rv1);
    let stale = api_error(secrets.replace("s1", &PostParams::default(), &changed).await.unwrap_err());
    assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));
    assert!(stale.is_conflict());

    // Merge patch, then delete, then 404.
    let patch = json!({"metadata": {"labels": {"role": "gateway"}}});
    let patched = secrets.patch("s1", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    assert_eq!(patched.metadata.labels.unwrap()["role"], "gateway");
    assert_eq!(patched.data.unwrap().len(), 3, "a merge patch keeps the other fields (k, x, k2)");
    secrets.delete("s1", &DeleteParams::default()).await.unwrap();
    assert_eq!(api_error(secrets.get("s1").await.unwrap_err()).code, 404);
}

#[tokio::test]
async fn lists_filter_by_namespace_labels_and_fields() {
    let server = apiserver::start().await;
    let client = server.client();
    for (ns, name, role) in [("a", "s1", "gateway"), ("a", "s2", "worker"), ("b", "s3", "gateway")] {
        let api: Api<Secret> = Api::namespaced(client.clone(), ns);
        api.create(&PostParams::default(), &secret(name, &[("role", role)])).await.unwrap();
    }
    let names = |list: kube::core::ObjectList<Secret>| {
        list.items.into_iter().map(|s| s.metadata.name.unwrap()).collect::<Vec<_>>()
    };
    let all: Api<Secret> = Api::all(client.clone());
    let in_a: Api<Secret> = Api::namespaced(client.clone(), "a");
    assert_eq!(names(all.list(&ListParams::default()).await.unwrap()), ["s1", "s2", "s3"]);
    assert_eq!(names(in_a.list(&ListParams::default()).await.unwrap()), ["s1", "s2"]);
    assert_eq!(names(all.list(&ListParams::default().labels("role=gateway")).await.unwrap()), ["s1", "s3"]);
    assert_eq!(names(all.list(&ListParams::default().labels("role in (worker)")).await.unwrap()), ["s2"]);
    assert_eq!(names(all.list(&ListParams::default().fields("metadata.name=s3")).await.unwrap()), ["s3"]);
    let list = all.list(&ListParams::default()).await.unwrap();
    assert!(list.metadata.resource_version.is_some_and(|rv| rv.parse::<u64>().unwrap() > 1));
}

#[tokio::test]
async fn cluster_scoped_and_custom_kinds_keep_unknown_fields() {
    let server = apiserver::start().await;
    let seeds: Api<DynamicObject> = Api::all_with(server.client(), &seed_resource());
    let seed: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "core.gardener.cloud/v1beta1", "kind": "Seed",
        "metadata": {"name": "seed-a"},
        "spec": {"networks": {"pods": "10.1.0.0/16"}, "somethingNew": {"x": 1}},
    }))
    .unwrap();
    seeds.create(&PostParams::default(), &seed).await.unwrap();
    let got = seeds.get("seed-a").await.unwrap();
    assert_eq!(got.data["spec"]["somethingNew"]["x"], 1);
    assert_eq!(got.metadata.generation, Some(1));

    // The status subresource changes only the status; the main resource keeps it.
    let status = json!({"status": {"conditions": [{"type": "Ready"}]}});
    seeds.patch_status("seed-a", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    let spec = json!({"spec": {"networks": {"pods": "10.2.0.0/16"}}, "status": null});
    let after = seeds.patch("seed-a", &PatchParams::default(), &Patch::Merge(&spec)).await.unwrap();
    assert_eq!(after.data["status"]["conditions"][0]["type"], "Ready");
    assert_eq!(after.metadata.generation, Some(2), "a spec change bumps the generation");
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let server = apiserver::start().await;
    let leases: Api<Lease> = Api::namespaced(server.client(), "kube-system");
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "kubelink-gateway-0", "finalizers": ["kubelink.io/test"]},
        "spec": {"holderIdentity": "node-a"},
    }))
    .unwrap();
    leases.create(&PostParams::default(), &lease).await.unwrap();
    leases.delete("kubelink-gateway-0", &DeleteParams::default()).await.unwrap();
    let marked = leases.get("kubelink-gateway-0").await.unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    let clear = json!({"metadata": {"finalizers": null}});
    leases.patch("kubelink-gateway-0", &PatchParams::default(), &Patch::Merge(&clear)).await.unwrap();
    assert_eq!(api_error(leases.get("kubelink-gateway-0").await.unwrap_err()).code, 404);
}

#[tokio::test]
async fn raw_watch_resumes_from_a_resource_version_and_expires_old_ones() {
    let server = apiserver::serve_with_history("127.0.0.1:0".parse().unwrap(), 3).await.unwrap();
    let nodes: Api<Node> = Api::all(server.client());
    let node = |name: &str| serde_json::from_value::<Node>(json!({"metadata": {"name": name}})).unwrap();
    let first = nodes.create(&PostParams::default(), &node("n1")).await.unwrap();
    let rv = first.metadata.resource_version.unwrap();
    nodes.create(&PostParams::default(), &node("n2")).await.unwrap();
    nodes.delete("n1", &DeleteParams::default()).await.unwrap();

    let mut stream = nodes.watch(&WatchParams::default().timeout(5), &rv).await.unwrap().boxed();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match stream.try_next().await.unwrap().unwrap() {
            WatchEvent::Added(n) => seen.push(format!("ADDED {}", n.metadata.name.unwrap())),
            WatchEvent::Deleted(n) => seen.push(format!("DELETED {}", n.metadata.name.unwrap())),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, ["ADDED n2", "DELETED n1"], "events after {rv}, in order");

    for i in 3..8 {
        nodes.create(&PostParams::default(), &node(&format!("n{i}"))).await.unwrap();
    }
    let mut stream = nodes.watch(&WatchParams::default().timeout(5), &rv).await.unwrap().boxed();
    match stream.try_next().await.unwrap().unwrap() {
        WatchEvent::Error(e) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("a compacted resourceVersion must give 410, got {other:?}"),
    }
}

#[tokio::test]
async fn kube_runtime_watcher_sees_add_modify_delete_in_order() {
    let server = apiserver::start().await;
    let pods: Api<Pod> = Api::namespaced(server.client(), "kubelink");
    let pod: Pod =
        serde_json::from_value(json!({"metadata": {"name": "agent-a", "labels": {"app": "kubelink"}}})).unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();

    let config = watcher::Config::default().labels("app=kubelink");
    let mut events = watcher(pods.clone(), config).boxed();
    let mut log = Vec::new();
    let writer = {
        let pods = pods.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let label = json!({"metadata": {"labels": {"kubelink.io/role": "gateway-0"}}});
            pods.patch("agent-a", &PatchParams::default(), &Patch::Merge(&label)).await.unwrap();
            pods.delete("agent-a", &DeleteParams::default()).await.unwrap();
        }
    };
    let reader = async {
        while let Some(event) = tokio::time::timeout(Duration::from_secs(10), events.try_next()).await.unwrap().unwrap()
        {
            match event {
                watcher::Event::InitApply(p) => log.push(format!("init {}", p.metadata.name.unwrap())),
                watcher::Event::Apply(p) => {
                    let role = p.metadata.labels.unwrap_or_default().get("kubelink.io/role").cloned();
                    log.push(format!("apply {}", role.unwrap_or_default()));
                }
                watcher::Event::Delete(p) => {
                    log.push(format!("delete {}", p.metadata.name.unwrap()));
                    break;
                }
                watcher::Event::Init | watcher::Event::InitDone => {}
            }
        }
    };
    tokio::join!(writer, reader);
    assert_eq!(log, ["init agent-a", "apply gateway-0", "delete agent-a"]);
}

#[tokio::test]
async fn bad_requests_get_a_status_not_a_crash() {
    let server = apiserver::start().await;
    let secrets: Api<Secret> = Api::namespaced(server.client(), "a");
    let bad = api_error(secrets.create(&PostParams::default(), &secret("Not_A_Name", &[])).await.unwrap_err());
    assert_eq!((bad.code, bad.reason.as_str()), (422, "Invalid"));
    let bad = api_error(secrets.list(&ListParams::default().labels("a in b")).await.unwrap_err());
    assert_eq!(bad.code, 400);
    let absent = api_error(
        secrets.patch("ghost", &PatchParams::default(), &Patch::Merge(json!({"data": {}}))).await.unwrap_err(),
    );
    assert_eq!(absent.code, 404);
}

#[tokio::test]
async fn streaming_lists_end_with_the_initial_events_bookmark() {
    let server = apiserver::start().await;
    let secrets: Api<Secret> = Api::namespaced(server.client(), "a");
    for name in ["s1", "s2"] {
        secrets.create(&PostParams::default(), &secret(name, &[])).await.unwrap();
    }
    // Raw: sendInitialEvents gives the current objects, then a BOOKMARK annotated as the end of them.
    let params = WatchParams::default().initial_events().timeout(5);
    let mut stream = secrets.watch(&params, "0").await.unwrap().boxed();
    let mut seen = Vec::new();
    loop {
        match stream.try_next().await.unwrap().unwrap() {
            WatchEvent::Added(s) => seen.push(s.metadata.name.unwrap()),
            WatchEvent::Bookmark(b) => {
                assert_eq!(b.metadata.annotations.get("k8s.io/initial-events-end").map(String::as_str), Some("true"));
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, ["s1", "s2"]);

    // kube's watcher in streaming-list mode relies on exactly that bookmark to finish its initial state.
    let config = watcher::Config::default().streaming_lists();
    let mut events = watcher(secrets.clone(), config).boxed();
    let mut init = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.try_next()).await.unwrap().unwrap().unwrap() {
            watcher::Event::InitApply(s) => init.push(s.metadata.name.unwrap()),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(init, ["s1", "s2"]);
}
