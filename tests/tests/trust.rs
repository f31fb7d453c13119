//! The trust boundary between garden and seed: the seed a real kube-apiserver and etcd (TLS, Node,RBAC,
//! tokens from the TokenRequest API, every request read back from its audit log), the garden the
//! Kubernetes API test server with authentication and RBAC on (Gardener's own API cannot run here);
//! each chart installed by real Helm: `kubelink-garden` into the garden (Helm's library), `kubelink`
//! into the seed (the `helm` CLI).
//!
//! - The IPAM controller runs with its own tokens (the garden's `garden/kubelink-ipam-<seed>` and the
//!   seed's `kubelink/kubelink-ipam`), the agent's code with `kubelink/kubelink-agent`; every request
//!   each of them makes is allowed, so the charts' RBAC is enough for what the code does; and every
//!   grant of the charts allows a request the code made that no other grant allows, so the RBAC is no
//!   more than the code needs (exceptions, with reasons, in `UNEXERCISED`).
//! - The agent never talks to the garden (its token is not even valid there) and reads no Secret but
//!   its slot Secrets.
//! - Scale: an agent that starts on a seed with 1000 shoots, in a garden with 1000 more on another
//!   seed, receives little (bytes counted on its own connection to the seed), nothing about the other
//!   seed, and one small watch event per new shoot.
//!
//! Which grant allowed a request is decided by the RBAC rule matching of `kubelink_apiserver::rbac`,
//! applied to the requests the real server's audit log records.
//!
//! Without the control plane's binaries or the Helm virtualenv (`scripts/deps` builds and creates them)
//! the tests print SKIPPED and pass, and fail when `CI=true`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::events::v1::Event as EventV1;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kubelink::agent::cluster::Cluster;
use kubelink::agent::events::SlotEvent;
use kubelink::election::Timing;
use kubelink::election::kube::LeaseElection;
use kubelink_apiserver::kinds::ResourceKind;
use kubelink_apiserver::rbac::{Attributes, Rule};
use kubelink_apiserver::{ApiServer, auth, fixtures, helm};
use kubelink_ipam::contract::{labels, names};
use kubelink_ipam::controller::{Config, Controller};
use kubelink_ipam::gardener::{Seed, Shoot, ShootState};
use kubelink_ipam::managed::ManagedResource;
use kubelink_ipam::projection::{SeedTunnel, ShootPeer};
use kubelink_tests::k8s;
use serde_json::{Value, json};

const NS: &str = "kubelink";
const SEED: &str = "local";
const OTHER: &str = "other";
const GARDEN_SECRET: &str = "kubelink-garden-kubeconfig";
const PODS: [&str; 2] = ["kubelink-agent-a", "kubelink-agent-b"];
/// The nodes the agent Pods run on.
const NODES: [&str; 2] = ["node-a", "node-b"];

/// The goals for an agent on a seed with 1000 shoots.
const START_BYTES_GOAL: u64 = 300 * 1000;
const EVENT_BYTES_GOAL: u64 = 1000;

use kubelink_tests::helm::{chart, helm_ready};

/// A request as the RBAC proofs read it, from the seed's audit log or the garden's record: who, the
/// authorizer's attributes, and whether it was allowed.
#[derive(Debug, Clone)]
struct Request {
    user: String,
    attributes: Attributes,
    allowed: bool,
}

/// Every request the seed's real API server answered, from its audit log.
fn seed_requests(seed: &k8s::Cluster) -> Vec<Request> {
    seed.audit()
        .into_iter()
        .map(|e| {
            let o = e.object_ref.clone();
            let path = e.request_uri.split('?').next().unwrap_or_default().to_string();
            let o = o.unwrap_or_default();
            let attributes = Attributes {
                verb: e.verb.clone(),
                resource_request: !o.resource.is_empty(),
                group: o.api_group,
                resource: o.resource,
                subresource: o.subresource,
                namespace: o.namespace,
                name: o.name,
                path,
            };
            Request { user: e.user.username.clone(), allowed: e.allowed(), attributes }
        })
        .collect()
}

/// Every request the garden's API test server answered.
fn garden_requests(garden: &ApiServer) -> Vec<Request> {
    let store = garden.store();
    let users = store.users();
    users
        .into_iter()
        .flat_map(|user| {
            store.requests_of(&user).into_iter().map(move |r| Request {
                user: user.clone(),
                attributes: r.attributes,
                allowed: r.allowed,
            })
        })
        .collect()
}

fn of_user<'a>(requests: &'a [Request], user: &str) -> Vec<&'a Request> {
    requests.iter().filter(|r| r.user == user).collect()
}

fn user(namespace: &str, account: &str) -> String {
    auth::service_account_user(namespace, account).name
}

/// Garden and seed, each with authentication on and its chart installed by Helm as the admin; the
/// Seed in the garden, two agent Pods on the seed, and the garden kubeconfig Secret the seed chart
/// names (holding a kubeconfig for the IPAM's garden identity, as an operator would create it).
struct Landscape {
    garden: ApiServer,
    seed: k8s::Cluster,
    /// The seed's admin client.
    admin: kube::Client,
    /// The objects Helm rendered and created, per chart: `kubelink-garden` into the garden,
    /// `kubelink` into the seed.
    garden_objects: Vec<Value>,
    seed_objects: Vec<Value>,
    dir: PathBuf,
}

impl Drop for Landscape {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Landscape {
    /// `None` after a SKIPPED line when the tools are missing.
    async fn start(test: &str) -> Option<Self> {
        if !helm_ready(test).await {
            return None;
        }
        // Each test reads its seed's whole audit log: a cluster of its own.
        let seed = k8s::own_for_test(test, true).await?;
        let admin = seed.client().await.unwrap();
        let garden = kubelink_apiserver::start_with_auth().await;
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("kubelink-trust-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = dir.join("kubelink-garden.kubeconfig");
        std::fs::write(&kubeconfig, garden.kubeconfig(garden.admin_token().unwrap())).unwrap();
        let garden_objects =
            helm::install(&chart("kubelink-garden"), &kubeconfig, NS, "kubelink", json!({"seedName": SEED}))
                .await
                .unwrap_or_else(|e| panic!("installing kubelink-garden: {e}"));
        seed.ensure_namespace(NS).await.unwrap();
        let seed_values = json!({"seedName": SEED, "gardenKubeconfigSecret": GARDEN_SECRET, "slots": 2});
        let kubeconfig = seed.admin_kubeconfig_file().unwrap();
        let seed_objects = kubelink_tests::helm::install(&chart("kubelink"), &kubeconfig, NS, "kubelink", seed_values)
            .await
            .unwrap_or_else(|e| panic!("installing kubelink: {e}"));
        let l = Landscape { garden, seed, admin, garden_objects, seed_objects, dir };

        fixtures::create_seed(&l.garden.client(), &fixtures::seed(SEED, "192.168.128.0/22")).await.unwrap();
        let pods: Api<Pod> = Api::namespaced(l.admin.clone(), NS);
        for (pod, node) in PODS.iter().zip(NODES) {
            let object = json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod, "labels": {"app.kubernetes.io/name": "kubelink"}},
                "spec": {"nodeName": node, "serviceAccountName": "kubelink-agent",
                         "containers": [{"name": "agent", "image": "kubelink"}]}});
            pods.create(&PostParams::default(), &serde_json::from_value(object).unwrap()).await.unwrap();
        }
        let garden_kubeconfig = l.garden.kubeconfig(&l.garden.token_for("garden", &format!("kubelink-ipam-{SEED}")));
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": GARDEN_SECRET},
                            "stringData": {"kubeconfig": garden_kubeconfig}});
        Api::<Secret>::namespaced(l.admin.clone(), NS)
            .create(&PostParams::default(), &serde_json::from_value(secret).unwrap())
            .await
            .unwrap();
        Some(l)
    }

    /// Creates the control-plane namespaces of shoots `range` on the seed (gardenlet's part).
    async fn control_planes(&self, range: std::ops::Range<usize>) {
        for i in range {
            self.seed.ensure_namespace(&format!("shoot--dev--{}", fixtures::shoot_name(i))).await.unwrap();
        }
    }

    /// The IPAM controller with its own identities: garden `garden/kubelink-ipam-<seed>`, seed
    /// `kubelink/kubelink-ipam`.
    async fn ipam(&self) -> Controller {
        let garden = self.garden.token_for("garden", &format!("kubelink-ipam-{SEED}"));
        let seed = self.seed.token_for(NS, "kubelink-ipam").await.unwrap();
        let cfg = Config { slots: 2, ..Config::new(SEED) };
        Controller::new(
            kubelink_apiserver::client_with_token(self.garden.url(), &garden),
            self.seed.client_with_token(&seed).await.unwrap(),
            cfg,
        )
    }

    /// A fresh token of the agent's ServiceAccount on the seed, bound to the agent Pod `pod` (as its
    /// kubelet mounts it), and a client with it whose connections go through a forwarder that counts
    /// what the server sends.
    async fn agent(&self, pod: &str) -> (String, kube::Client, k8s::forward::Forwarder) {
        let token = self.seed.token_for_pod(NS, "kubelink-agent", pod).await.unwrap();
        let (client, counter) = self.seed.counted_client_with_token(&token).await.unwrap();
        (token, client, counter)
    }

    /// Passes until `shoots` shoots are allocated and projected (at most `passes`).
    async fn allocate(&self, ipam: &Controller, shoots: usize, passes: usize) {
        for pass in 1..=passes {
            let report = ipam.reconcile().await.unwrap_or_else(|e| panic!("IPAM pass {pass}: {e}"));
            assert!(report.seed_error.is_none(), "{:?}", report.seed_error);
            if report.table.len() == shoots && self.peers().await.len() == shoots {
                return;
            }
        }
        panic!("{shoots} shoots not allocated and projected after {passes} passes: {}", self.peers().await.len());
    }

    /// Every ShootPeer on the seed, in any namespace, as the admin reads it.
    async fn peers(&self) -> Vec<Value> {
        let list = Api::<ShootPeer>::all(self.admin.clone()).list(&ListParams::default()).await.unwrap();
        list.items.into_iter().map(|p| serde_json::to_value(p).unwrap()).collect()
    }
}

/// Every request of `user` in `requests` was allowed; the requests, as `verb resource [name]` lines.
fn assert_all_allowed(requests: &[Request], user: &str, what: &str) -> BTreeSet<String> {
    let requests = of_user(requests, user);
    assert!(!requests.is_empty(), "{what}: {user} made no request");
    let denied: Vec<_> = requests.iter().filter(|r| !r.allowed).map(|r| &r.attributes).collect();
    assert!(denied.is_empty(), "{what}: requests of {user} the chart's RBAC does not allow: {denied:#?}");
    requests
        .iter()
        .map(|r| {
            let a = &r.attributes;
            let resource =
                if a.subresource.is_empty() { a.resource.clone() } else { a.resource.clone() + "/" + &a.subresource };
            // One line for all shoots: their namespaces and names differ only in the shoot's number.
            let generic = |s: &str| if s.contains("shoot-") { "<shoot>".to_string() } else { s.to_string() };
            format!("{} {resource} ns={} name={}", a.verb, generic(&a.namespace), generic(&a.name))
        })
        .collect()
}

/// Grants the test does not exercise, each kept in the chart for the reason given: (ServiceAccount,
/// verb, resource as a rule names it, reason). Empty: every grant is used by a request in the test.
const UNEXERCISED: &[(&str, &str, &str, &str)] = &[];

/// One verb on one resource (with its resourceNames, if any) that a rule of a Role or ClusterRole bound
/// to an identity grants.
#[derive(Debug, Clone)]
struct Grant {
    /// `Role <namespace>/<name>` or `ClusterRole <name>`.
    role: String,
    /// The RoleBinding's namespace (it grants only there); `None` for a ClusterRoleBinding.
    namespace: Option<String>,
    rule: Rule,
}

impl Grant {
    fn verb(&self) -> &str {
        &self.rule.verbs[0]
    }

    fn resource(&self) -> &str {
        &self.rule.resources[0]
    }

    /// Whether this grant alone allows the request, as the authorizer decides it.
    fn allows(&self, a: &Attributes) -> bool {
        self.namespace.as_ref().is_none_or(|ns| a.resource_request && a.namespace == *ns) && self.rule.allows(a)
    }
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = &self.rule.api_groups[0];
        let resource =
            if group.is_empty() { self.resource().to_string() } else { format!("{group}/{}", self.resource()) };
        let names = if self.rule.resource_names.is_empty() { "any".into() } else { self.rule.resource_names.join(",") };
        let scope = self.namespace.as_ref().map_or("cluster-wide".into(), |ns| format!("in namespace {ns}"));
        write!(f, "({}, {resource}, resourceNames: {names}) of {} {scope}", self.verb(), self.role)
    }
}

/// Every grant the chart's `objects` give ServiceAccount `namespace/account`: each rule of each Role
/// and ClusterRole a binding of it refers to, one grant per API group, resource and verb.
fn grants_of(objects: &[Value], namespace: &str, account: &str) -> Vec<Grant> {
    let mut out = Vec::new();
    let bindings = objects.iter().filter(|o| o["kind"] == "RoleBinding" || o["kind"] == "ClusterRoleBinding");
    for binding in bindings {
        let subjects = binding["subjects"].as_array().into_iter().flatten();
        if !subjects
            .into_iter()
            .any(|s| s["kind"] == "ServiceAccount" && s["name"] == account && s["namespace"] == namespace)
        {
            continue;
        }
        let scope =
            (binding["kind"] == "RoleBinding").then(|| binding["metadata"]["namespace"].as_str().unwrap().to_string());
        let (kind, name) = (binding["roleRef"]["kind"].as_str().unwrap(), binding["roleRef"]["name"].as_str().unwrap());
        let role = objects
            .iter()
            .find(|o| {
                o["kind"] == kind
                    && o["metadata"]["name"] == name
                    && (kind == "ClusterRole" || o["metadata"]["namespace"] == binding["metadata"]["namespace"])
            })
            .unwrap_or_else(|| panic!("{binding} refers to a role the chart does not render"));
        let role_name = match &scope {
            Some(ns) if kind == "Role" => format!("Role {ns}/{name}"),
            _ => format!("{kind} {name}"),
        };
        for rule in role["rules"].as_array().unwrap() {
            let rule: Rule = serde_json::from_value(rule.clone()).unwrap();
            assert!(rule.non_resource_urls.is_empty(), "{role_name} grants non-resource URLs: {rule:?}");
            for group in &rule.api_groups {
                for resource in &rule.resources {
                    for verb in &rule.verbs {
                        let rule = Rule {
                            verbs: vec![verb.clone()],
                            api_groups: vec![group.clone()],
                            resources: vec![resource.clone()],
                            resource_names: rule.resource_names.clone(),
                            non_resource_urls: vec![],
                        };
                        out.push(Grant { role: role_name.clone(), namespace: scope.clone(), rule });
                    }
                }
            }
        }
    }
    out
}

/// The other direction of [`assert_all_allowed`]: the grants the chart's `objects` give
/// `namespace/account` that allow no request it made on `server` (unused), or only requests that
/// another of its grants allows as well (redundant), each described; and how many grants it has.
fn unneeded_grants(requests: &[Request], objects: &[Value], namespace: &str, account: &str) -> (usize, Vec<String>) {
    let who = user(namespace, account);
    let requests: Vec<Attributes> =
        of_user(requests, &who).into_iter().filter(|r| r.allowed).map(|r| r.attributes.clone()).collect();
    let grants = grants_of(objects, namespace, account);
    let mut unneeded = Vec::new();
    for (i, grant) in grants.iter().enumerate() {
        let excepted = UNEXERCISED
            .iter()
            .any(|(sa, verb, resource, _)| *sa == account && *verb == grant.verb() && *resource == grant.resource());
        if excepted {
            continue;
        }
        let used: Vec<&Attributes> = requests.iter().filter(|a| grant.allows(a)).collect();
        if used.is_empty() {
            unneeded.push(format!("unused: {grant}"));
        } else if used.iter().all(|a| grants.iter().enumerate().any(|(j, other)| j != i && other.allows(a))) {
            unneeded.push(format!("redundant: {grant}: another grant allows every request it allows"));
        }
    }
    (grants.len(), unneeded)
}

/// Merge-patches ShootPeer `name` in [`NS`] with `patch`, which its CRD's schema refuses: the schema is
/// loosened for the write and restored after it, as a ShootPeer written under an older schema stays.
async fn write_under_a_looser_schema(admin: &kube::Client, name: &str, patch: Value) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
        CustomResourceDefinition, CustomResourceValidation, JSONSchemaProps,
    };
    let crds = Api::<CustomResourceDefinition>::all(admin.clone());
    let crd = "shootpeers.kubelink.gardener.cloud";
    let set_schema = async |schema: Option<CustomResourceValidation>| {
        let mut current = crds.get(crd).await.unwrap();
        current.spec.versions[0].schema = schema;
        crds.replace(crd, &PostParams::default(), &current).await.unwrap();
    };
    let strict = crds.get(crd).await.unwrap().spec.versions[0].schema.clone();
    let open = JSONSchemaProps {
        type_: Some("object".into()),
        x_kubernetes_preserve_unknown_fields: Some(true),
        ..Default::default()
    };
    set_schema(Some(CustomResourceValidation { open_api_v3_schema: Some(open) })).await;
    let resource = kube::core::ApiResource::erase::<ShootPeer>(&());
    let peers = Api::<kube::api::DynamicObject>::namespaced_with(admin.clone(), NS, &resource);
    let start = Instant::now();
    // The server takes the new schema within moments.
    while peers.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "the loosened schema never took effect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    set_schema(strict).await;
}

/// The API status code of a failed call.
fn code<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> u16 {
    match result {
        Err(kube::Error::Api(status)) => status.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Watches like the agent (`config` on `api`) in the background: returns once the initial list is
/// done, then collects the object of every later event.
async fn count_events<K>(api: Api<K>, config: watcher::Config) -> (Arc<Mutex<Vec<Value>>>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
{
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (ready, listed) = tokio::sync::oneshot::channel();
    let task = tokio::spawn({
        let seen = seen.clone();
        async move {
            let mut events = watcher::watcher(api, config).boxed();
            let mut ready = Some(ready);
            while let Some(event) = events.next().await {
                match event.expect("the admin's watch") {
                    watcher::Event::InitDone => _ = ready.take().map(|r| r.send(())),
                    watcher::Event::Apply(o) | watcher::Event::Delete(o) => {
                        seen.lock().unwrap().push(serde_json::to_value(o).unwrap())
                    }
                    watcher::Event::Init | watcher::Event::InitApply(_) => {}
                }
            }
        }
    });
    listed.await.expect("the admin's watch lists");
    (seen, task)
}

/// Waits until `cluster` has listed everything and sees `shoots` shoots.
async fn synced_with(cluster: &Cluster, wake: &tokio::sync::Notify, shoots: usize) {
    tokio::time::timeout(Duration::from_secs(60), async {
        while !(cluster.synced() && cluster.shoots().len() == shoots) {
            let _ = tokio::time::timeout(Duration::from_millis(20), wake.notified()).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the agent does not see {shoots} shoots (sees {})", cluster.shoots().len()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_component_needs_exactly_what_its_chart_grants_and_the_agent_nothing_of_the_garden() {
    let test = "each_component_needs_exactly_what_its_chart_grants_and_the_agent_nothing_of_the_garden";
    let Some(l) = Landscape::start(test).await else { return };
    l.control_planes(0..21).await;
    fixtures::create_shoots(&l.garden.client(), SEED, 0..20).await.unwrap();
    // A managed seed: it runs on Shoot garden/<seed>, whose Seed is the parent; the IPAM reads the
    // parent Seed by a name the chart does not know.
    fixtures::create_seed(&l.garden.client(), &fixtures::seed(OTHER, "192.168.136.0/22")).await.unwrap();
    let mut hosting = fixtures::shoot(SEED, OTHER);
    hosting.metadata.namespace = Some("garden".into());
    Api::<Shoot>::namespaced(l.garden.client(), "garden").create(&PostParams::default(), &hosting).await.unwrap();

    // The IPAM: a few passes, then its watch loop for the rest of the test.
    let ipam = l.ipam().await;
    l.allocate(&ipam, 20, 3).await;
    // Hand-edited seed objects are put back on the next pass: the SeedTunnel, a ShootPeer, a
    // ManagedResource.
    let shoot_ns = format!("shoot--dev--{}", fixtures::shoot_name(1));
    let merge = |v: Value| Patch::Merge(v);
    let tunnels = Api::<SeedTunnel>::namespaced(l.admin.clone(), NS);
    tunnels.patch(SEED, &PatchParams::default(), &merge(json!({"spec": {"slots": 1}}))).await.unwrap();
    let peers = Api::<ShootPeer>::namespaced(l.admin.clone(), NS);
    let address = peers.get(&shoot_ns).await.unwrap().spec.address;
    peers
        .patch(&shoot_ns, &PatchParams::default(), &merge(json!({"spec": {"address": "192.168.131.250"}})))
        .await
        .unwrap();
    let resources = Api::<ManagedResource>::namespaced(l.admin.clone(), &shoot_ns);
    resources
        .patch(names::MANAGED_RESOURCE, &PatchParams::default(), &merge(json!({"spec": {"keepObjects": true}})))
        .await
        .unwrap();
    ipam.reconcile().await.unwrap();
    assert_eq!(tunnels.get(SEED).await.unwrap().spec.slots, 2, "the SeedTunnel is put back");
    assert_eq!(peers.get(&shoot_ns).await.unwrap().spec.address, address, "the ShootPeer is put back");
    assert!(
        !resources.get(names::MANAGED_RESOURCE).await.unwrap().spec.keep_objects,
        "the ManagedResource is put back"
    );
    // A ShootPeer that does not decode, as an older schema may have written it: the CRD's schema
    // loosened, the object written, the schema restored (the server does not check what it already
    // stores). The IPAM replaces it and reports it with a Warning Event on the seed.
    let bad_peer = format!("shoot--dev--{}", fixtures::shoot_name(2));
    write_under_a_looser_schema(&l.admin, &bad_peer, json!({"spec": {"address": 5}})).await;
    // A Shoot that does not decode (planted past the garden's validation, as an older schema may have
    // written it) is the garden's: reported there with a Warning Event, never replaced.
    let shoots = ResourceKind::find("core.gardener.cloud", "v1beta1", "shoots").unwrap();
    let bad_shoot = fixtures::shoot_name(4);
    let good_shoot = l.garden.store().get(shoots, fixtures::PROJECT_NS, &bad_shoot).unwrap();
    let mut shoot = good_shoot.clone();
    shoot["spec"]["networking"]["pods"] = json!(5);
    l.garden.store().delete(shoots, fixtures::PROJECT_NS, &bad_shoot, None).unwrap();
    l.garden.store().plant(shoots, fixtures::PROJECT_NS, shoot).unwrap();
    ipam.reconcile().await.unwrap();
    for (client, namespace, name) in
        [(l.admin.clone(), NS, bad_peer.as_str()), (l.garden.client(), fixtures::PROJECT_NS, bad_shoot.as_str())]
    {
        let events = Api::<EventV1>::namespaced(client, namespace).list(&ListParams::default()).await.unwrap();
        let regarding = |e: &&EventV1| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name);
        let reported = events.items.iter().filter(regarding).find(|e| e.reason.as_deref() == Some("InvalidObject"));
        assert!(reported.is_some(), "no InvalidObject Event on {namespace}/{name}: {events:?}");
    }
    l.garden.store().delete(shoots, fixtures::PROJECT_NS, &bad_shoot, None).unwrap();
    l.garden.store().plant(shoots, fixtures::PROJECT_NS, good_shoot).unwrap();
    let running = tokio::spawn(l.ipam().await.run());

    // The agent's pieces, as two nodes run them.
    let (agent_token, agent, _counted) = l.agent(PODS[0]).await;
    let (_, agent_b, _counted_b) = l.agent(PODS[1]).await;
    let wake = Arc::new(tokio::sync::Notify::new());
    let cluster = Cluster::start(agent.clone(), NS, SEED, Some(PODS[0].into()), wake.clone());
    synced_with(&cluster, &wake, 20).await;
    assert_eq!(cluster.slot_count(), Some(2));
    assert_eq!(cluster.cidr().unwrap().to_string(), "192.168.128.0/22");
    let a = LeaseElection::new(agent.clone(), NS, "node-a", "10.250.0.7", 2, Timing::default());
    let b = LeaseElection::new(agent.clone(), NS, "node-b", "10.250.0.8", 2, Timing::default());
    let slot_a = a.round().await.unwrap().holding.expect("node-a takes a free slot");
    let slot_b = b.round().await.unwrap().holding.expect("node-b takes the other slot");
    assert_ne!(slot_a, slot_b);
    assert_eq!(a.round().await.unwrap().holding, Some(slot_a), "node-a renews its slot");
    let slot = kubelink_ipam::contract::Slot::try_from(slot_a).expect("a slot the election hands out");
    let (key, published) = cluster.slot_key(slot, "gw-a.example:51820").await.unwrap();
    let (again, published_again) = cluster.slot_key(slot, "gw-a.example:51820").await.unwrap();
    assert_eq!(key.public_key(), again.public_key());
    assert_eq!((published, published_again), (true, false), "the endpoint is published once");
    // Without --slot-endpoints the holder publishes its Service's load-balancer address, once the cloud
    // has written one into the Service's status.
    let service = cluster.slot_service(slot).await.unwrap().expect("the chart's slot Service");
    assert_eq!(kubelink::agent::publish::lb_endpoint(&service), None, "no address assigned yet");
    let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}]}}});
    let services = Api::<k8s_openapi::api::core::v1::Service>::namespaced(l.admin.clone(), NS);
    services.patch_status(&names::gateway(slot), &PatchParams::default(), &merge(status)).await.unwrap();
    let service = cluster.slot_service(slot).await.unwrap().expect("the chart's slot Service");
    let lb = kubelink::agent::publish::lb_endpoint(&service).map(|e| e.to_string());
    assert_eq!(lb.as_deref(), Some("203.0.113.9:51820"));
    cluster.label_pod(Some(slot)).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(l.admin.clone(), NS);
    let labelled =
        pods.list(&ListParams::default().labels(&format!("{}={slot_a}", labels::GATEWAY_SLOT))).await.unwrap();
    assert_eq!(labelled.items.iter().filter_map(|p| p.metadata.name.as_deref()).collect::<Vec<_>>(), [PODS[0]]);
    // A second node's Pod taking the same slot strips the first one's label.
    let other = Cluster::start(agent_b.clone(), NS, SEED, Some(PODS[1].into()), Arc::default());
    other.label_pod(Some(slot)).await.unwrap();
    let labelled =
        pods.list(&ListParams::default().labels(&format!("{}={slot_a}", labels::GATEWAY_SLOT))).await.unwrap();
    assert_eq!(labelled.items.iter().filter_map(|p| p.metadata.name.as_deref()).collect::<Vec<_>>(), [PODS[1]]);
    other.label_pod(None).await.unwrap();
    a.release(slot_a).await.unwrap();
    b.release(slot_b).await.unwrap();
    // The agent's Events on a slot Lease, as the agent records them: taken (create), taken again within
    // the recorder's window (a patch counting the series), given up.
    let events = kubelink::agent::events::Events::new(agent.clone(), NS, "node-a");
    let given_up = SlotEvent::GivenUp {
        slot: kubelink_ipam::contract::Slot::ALL[0],
        failing_for: Duration::from_secs(5),
        standby: Duration::from_secs(60),
    };
    for e in [
        SlotEvent::Taken { slot: kubelink_ipam::contract::Slot::ALL[0] },
        SlotEvent::Taken { slot: kubelink_ipam::contract::Slot::ALL[0] },
        given_up,
    ] {
        events.publish(&e).await.unwrap();
    }
    let recorded = Api::<EventV1>::namespaced(l.admin.clone(), NS).list(&ListParams::default()).await.unwrap();
    let about: Vec<_> = recorded
        .items
        .iter()
        .map(|e| {
            let regarding = e.regarding.clone().unwrap_or_default();
            let count = e.series.as_ref().map_or(1, |s| s.count);
            (
                e.reason.clone().unwrap_or_default(),
                regarding.kind.unwrap_or_default(),
                regarding.name.unwrap_or_default(),
                count,
            )
        })
        .collect();
    let lease = || ("Lease".to_string(), "kubelink-gateway-0".to_string());
    assert!(about.contains(&("SlotTaken".into(), lease().0, lease().1, 2)), "{about:?}");
    assert!(about.contains(&("SlotGivenUp".into(), lease().0, lease().1, 1)), "{about:?}");
    // A new shoot reaches the agent through the running IPAM.
    fixtures::create_shoots(&l.garden.client(), SEED, 20..21).await.unwrap();
    synced_with(&cluster, &wake, 21).await;
    // A deleted shoot takes its ShootPeer, Secret, ManagedResource and record with it.
    let gone = fixtures::shoot_name(0);
    Api::<Shoot>::namespaced(l.garden.client(), fixtures::PROJECT_NS).delete(&gone, &Default::default()).await.unwrap();
    synced_with(&cluster, &wake, 20).await;
    let gone_ns = format!("shoot--dev--{gone}");
    let peer = Api::<ShootPeer>::namespaced(l.admin.clone(), NS).get_opt(&gone_ns).await.unwrap();
    assert!(peer.is_none(), "the deleted shoot's ShootPeer is gone");
    let stale_secret = Api::<Secret>::namespaced(l.admin.clone(), &gone_ns).get_opt(names::SHOOT_SECRET).await.unwrap();
    assert!(stale_secret.is_none(), "the deleted shoot's Secret is gone");
    drop((cluster, other));
    // Every watch of the running IPAM is open (their grants are checked below): Shoots and its Seed
    // in the garden, the ShootPeers and each slot Secret on the seed.
    let ipam_seed = user(NS, "kubelink-ipam");
    let ipam_garden = user("garden", &format!("kubelink-ipam-{SEED}"));
    let watches = |requests: Vec<Request>, who: &str| -> BTreeSet<String> {
        let requests = requests.into_iter().filter(|r| r.user == who).map(|r| r.attributes);
        requests.filter(|a| a.verb == "watch").map(|a| format!("{} {}", a.resource, a.name)).collect()
    };
    let want_garden = BTreeSet::from(["shoots ".to_string(), format!("seeds {SEED}")]);
    let want_seed: BTreeSet<String> =
        ["shootpeers ", "secrets kubelink-gateway-0", "secrets kubelink-gateway-1"].map(String::from).into();
    tokio::time::timeout(Duration::from_secs(10), async {
        while watches(garden_requests(&l.garden), &ipam_garden) != want_garden
            || watches(seed_requests(&l.seed), &ipam_seed) != want_seed
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the IPAM's watches: {:?} {:?}",
            watches(garden_requests(&l.garden), &ipam_garden),
            watches(seed_requests(&l.seed), &ipam_seed)
        )
    });
    running.abort();

    // Every request each component made was allowed.
    let agent_user = user(NS, "kubelink-agent");
    let (on_seed, in_garden) = (seed_requests(&l.seed), garden_requests(&l.garden));
    for (requests, who, what) in [
        (&on_seed, &agent_user, "agent on the seed"),
        (&on_seed, &ipam_seed, "IPAM on the seed"),
        (&in_garden, &ipam_garden, "IPAM in the garden"),
    ] {
        let distinct = assert_all_allowed(requests, who, what);
        println!("{what}: {} requests, all allowed; distinct: {distinct:#?}", of_user(requests, who).len());
    }
    // And the other way round: every grant of the charts is needed by a request made above.
    let ipam_account = format!("kubelink-ipam-{SEED}");
    let mut unneeded = Vec::new();
    for (requests, objects, namespace, account, what) in [
        (&on_seed, &l.seed_objects, NS, "kubelink-agent", "agent on the seed"),
        (&on_seed, &l.seed_objects, NS, "kubelink-ipam", "IPAM on the seed"),
        (&in_garden, &l.garden_objects, "garden", ipam_account.as_str(), "IPAM in the garden"),
    ] {
        let (grants, found) = unneeded_grants(requests, objects, namespace, account);
        assert!(grants > 0, "{what}: the chart grants {account} nothing");
        println!("{what}: {grants} grants, {} not needed", found.len());
        unneeded.extend(found.into_iter().map(|f| format!("{what}: {f}")));
    }
    assert!(
        unneeded.is_empty(),
        "grants that no request in this test needs:\n  {}\nRemove each from the chart, or add the code path that \
         makes such a request to this test (if no test can reach it, list it in UNEXERCISED with the reason it \
         stays).",
        unneeded.join("\n  ")
    );
    // The parent Seed is read by a name no chart knows: why `seeds get` has no resourceNames.
    let read_parent = l.garden.store().requests_of(&ipam_garden).into_iter().any(|r| {
        let a = &r.attributes;
        r.allowed && a.verb == "get" && a.resource == "seeds" && a.subresource.is_empty() && a.name == OTHER
    });
    assert!(read_parent, "the IPAM of a managed seed reads the parent Seed");

    // The agent's Secrets: its slot Secrets, nothing else.
    let secrets = |ns: &str| Api::<Secret>::namespaced(agent.clone(), ns);
    let gateway = secrets(NS).get("kubelink-gateway-0").await.unwrap();
    assert!(gateway.data.unwrap().contains_key("privateKey"));
    assert!(
        Api::<Secret>::namespaced(l.admin.clone(), &shoot_ns).get(names::SHOOT_SECRET).await.is_ok(),
        "the shoot Secret exists"
    );
    assert_eq!(code(secrets(&shoot_ns).get(names::SHOOT_SECRET).await), 403, "a shoot's Secret");
    assert_eq!(code(secrets(NS).get(GARDEN_SECRET).await), 403, "the garden kubeconfig");
    assert_eq!(code(secrets(NS).list(&ListParams::default()).await), 403, "listing kubelink's Secrets");
    assert_eq!(code(Api::<Secret>::all(agent.clone()).list(&ListParams::default()).await), 403, "all Secrets");

    // The garden: the agent's token is not valid there, and the agent never tried.
    let agent_in_garden = kubelink_apiserver::client_with_token(l.garden.url(), &agent_token);
    assert_eq!(code(Api::<ShootState>::all(agent_in_garden.clone()).list(&ListParams::default()).await), 401);
    assert_eq!(code(Api::<Seed>::all(agent_in_garden).list(&ListParams::default()).await), 401);
    assert!(l.garden.store().requests_of(&agent_user).is_empty(), "the agent made requests to the garden");
    assert_eq!(l.garden.store().usage(&agent_user), Default::default());
    let garden_users: BTreeSet<String> = l.garden.store().users().into_iter().collect();
    assert_eq!(
        garden_users,
        BTreeSet::from([auth::ADMIN_USER.to_string(), ipam_garden.clone()]),
        "who used the garden"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_on_a_seed_with_1000_shoots_gets_little_and_nothing_about_other_seeds() {
    let test = "an_agent_on_a_seed_with_1000_shoots_gets_little_and_nothing_about_other_seeds";
    let Some(l) = Landscape::start(test).await else { return };
    let t = Instant::now();
    l.control_planes(0..1000).await;
    l.control_planes(2000..2001).await;
    println!("1001 control-plane namespaces created in {:?}", t.elapsed());
    let admin = l.garden.client();
    fixtures::create_seed(&admin, &fixtures::seed(OTHER, "192.168.136.0/22")).await.unwrap();
    let t = Instant::now();
    fixtures::create_shoots(&admin, SEED, 0..1000).await.unwrap();
    fixtures::create_shoots(&admin, OTHER, 1000..2000).await.unwrap();
    println!("2000 shoots created in {:?}", t.elapsed());
    let t = Instant::now();
    let ipam = l.ipam().await;
    l.allocate(&ipam, 1000, 3).await;
    println!("1000 shoots allocated in {:?}", t.elapsed());
    let running = tokio::spawn(l.ipam().await.run());

    // An agent starts: from nothing to every shoot of its seed. What it receives is counted on its own
    // connections (TLS records, as on the wire); its requests are read from the audit log.
    let agent_user = user(NS, "kubelink-agent");
    let (_, agent, counted) = l.agent(PODS[0]).await;
    let agent_requests = || of_user(&seed_requests(&l.seed), &agent_user).into_iter().cloned().collect::<Vec<_>>();
    let before_bytes = counted.received();
    let earlier = agent_requests().len();
    let wake = Arc::new(tokio::sync::Notify::new());
    let t = Instant::now();
    let cluster = Cluster::start(agent, NS, SEED, Some(PODS[0].into()), wake.clone());
    synced_with(&cluster, &wake, 1000).await;
    // Synced once both lists are in; the watches that follow them belong to the start too.
    let watching = |resource: &str| {
        agent_requests()[earlier..].iter().any(|r| r.attributes.verb == "watch" && r.attributes.resource == resource)
    };
    tokio::time::timeout(Duration::from_secs(10), async {
        while !(watching("seedtunnels") && watching("shootpeers")) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        let since: Vec<_> = agent_requests()[earlier..].to_vec();
        panic!("the agent does not watch after its lists; its requests since the start: {since:#?}")
    });
    let (start_requests, start_bytes) = (agent_requests().len() - earlier, counted.received() - before_bytes);
    let start_log: Vec<String> = agent_requests()[earlier..]
        .iter()
        .map(|r| format!("{} {} {}", r.attributes.verb, r.attributes.resource, r.attributes.path))
        .collect();
    println!("agent start: synced with 1000 shoots in {:?}", t.elapsed());
    // What the ShootPeer list would be uncompressed (the server gzips it: the client accepts gzip).
    let list_bytes = serde_json::to_vec(&json!({"kind": "ShootPeerList", "items": l.peers().await})).unwrap().len();

    // One more shoot: the agent's watch events in between, counted by watches with the agent's
    // selectors, the admin's own.
    let (peer_events, peer_watch) =
        count_events(Api::<ShootPeer>::namespaced(l.admin.clone(), NS), watcher::Config::default()).await;
    let by_name = watcher::Config::default().fields(&format!("metadata.name={SEED}"));
    let (tunnel_events, tunnel_watch) = count_events(Api::<SeedTunnel>::namespaced(l.admin.clone(), NS), by_name).await;
    let (before_requests, before_bytes) = (agent_requests().len(), counted.received());
    let t = Instant::now();
    fixtures::create_shoots(&admin, SEED, 2000..2001).await.unwrap();
    synced_with(&cluster, &wake, 1001).await;
    let seen_in = t.elapsed();
    // The event's bytes have reached the agent once it sees the shoot; its requests are logged by then.
    let (new_requests, new_bytes) = (agent_requests().len() - before_requests, counted.received() - before_bytes);
    // Give the admin's watches the same moment to deliver, then stop everything.
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.abort();
    peer_watch.abort();
    tunnel_watch.abort();
    let changed = peer_events.lock().unwrap().clone();
    let tunnel_changed = tunnel_events.lock().unwrap().clone();
    // Each event's size as the server sends it: one JSON line with the object as the watch gave it.
    let as_sent = |_: &str, o: &Value| serde_json::to_vec(&json!({"type": "ADDED", "object": o})).unwrap().len() + 1;
    let event_bytes: Vec<usize> = changed
        .iter()
        .map(|o| as_sent("shootpeers", o))
        .chain(tunnel_changed.iter().map(|o| as_sent("seedtunnels", o)))
        .collect();

    // Nothing about the other seed on the seed server, and no agent request to the garden.
    let other_shoots: BTreeSet<String> = (1000..2000).map(fixtures::shoot_name).collect();
    let peers = l.peers().await;
    let about_other: Vec<&Value> = peers
        .iter()
        .filter(|p| {
            let shoot = p["spec"]["shoot"].as_str().unwrap_or_default();
            let name = p["metadata"]["name"].as_str().unwrap_or_default();
            other_shoots.iter().any(|s| shoot.ends_with(&format!("/{s}")) || name.ends_with(&format!("--{s}")))
        })
        .collect();
    let tunnels = Api::<SeedTunnel>::all(l.admin.clone()).list(&ListParams::default()).await.unwrap();
    let tunnels: Vec<String> = tunnels.items.iter().filter_map(|t| t.metadata.name.clone()).collect();
    let garden_usage = l.garden.store().usage(&agent_user);
    let other_bytes = garden_usage.bytes;

    println!(
        "agent start: {start_requests} requests, {start_bytes} bytes (goal <= {START_BYTES_GOAL}; the ShootPeer \
         list alone is {list_bytes} bytes uncompressed); per new shoot: \
         {new_requests} requests, {new_bytes} bytes, {} watch events of {event_bytes:?} bytes, seen in {seen_in:?} \
         (goal: one event <= {EVENT_BYTES_GOAL} bytes); about other seeds: {other_bytes} bytes, {} ShootPeers, \
         SeedTunnels {tunnels:?}, {} garden requests",
        event_bytes.len(),
        about_other.len(),
        garden_usage.requests,
    );

    assert_eq!(peers.len(), 1001, "one ShootPeer per shoot of this seed");
    assert!(about_other.is_empty(), "ShootPeers of the other seed's shoots: {about_other:?}");
    assert_eq!(tunnels, [SEED]);
    assert_eq!(garden_usage, Default::default(), "the agent used the garden");
    // The real server pages lists: kube's watcher asks for pages of 500 (watcher::Config's default).
    let pages = 1000usize.div_ceil(watcher::Config::default().page_size.unwrap_or(500) as usize);
    assert_eq!(
        start_requests,
        2 + 1 + pages,
        "a watch each for the SeedTunnel and the ShootPeers after a list of one and {pages} pages: {start_log:#?}"
    );
    assert!(start_bytes <= START_BYTES_GOAL, "agent start: {start_bytes} bytes");
    assert_eq!(new_requests, 0, "a new shoot comes through the open watches");
    assert_eq!(event_bytes.len(), 1, "one watch event per new shoot: {changed:?} {tunnel_changed:?}");
    assert!(event_bytes[0] as u64 <= EVENT_BYTES_GOAL, "the event: {} bytes", event_bytes[0]);
    assert!(new_bytes <= EVENT_BYTES_GOAL, "the agent received {new_bytes} bytes for one new shoot");
}
