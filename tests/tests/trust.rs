//! The RBAC proofs on a real seed: kube-apiserver and etcd (TLS, Node,RBAC, tokens from the
//! TokenRequest API, every request read back from its audit log) with `charts/kubelink` installed by
//! the `helm` CLI with the values a ControllerDeployment and gardenlet give (the extension controller
//! on), and gardenlet's part played by its stand-in (`tests/src/gardenlet.rs`). No garden: kubelink
//! needs none.
//!
//! - The extension controller runs with its own ServiceAccount's token (`kubelink/kubelink-controller`),
//!   the agent's code with `kubelink/kubelink-agent` tokens bound to agent Pods; every request each of
//!   them makes is allowed, and allowed by a grant of the chart (not by one of Kubernetes' default
//!   roles); and every grant of the chart allows a request the code made that no other grant allows,
//!   so the RBAC is no more than the code needs (exceptions, with reasons, in `UNEXERCISED`).
//! - The agent reads no Secret but its slot Secrets, and writes no Pod (403 for a patch of any agent
//!   Pod, its own too) and no EndpointSlice that names another node (the chart's admission policy);
//!   the chart renders no garden credentials (no Secret, no Secret volume, no garden flag or
//!   variable).
//! - Scale: an agent that starts on a seed with 1000 shoots receives little (bytes counted on its own
//!   connection to the server) and one small watch event per new shoot; a second seed's objects in
//!   another release namespace (its SeedTunnel, 1000 ShootPeers and a slot Secret) never reach it,
//!   and its token cannot read them.
//!
//! Which grant allowed a request is the real server's answer: each grant (one verb on one resource of
//! a rule of the chart's Roles and ClusterRoles) is given alone, with its scope, to a user of its own,
//! and a SubjectAccessReview asks the server which of those users may make each distinct request of
//! the audit log.
//!
//! No garden takes part: the controller has no garden identity and the agent never had one, so
//! "nothing about other seeds" is another release namespace on the same server.
//!
//! Without the control plane's binaries or helm (`scripts/deps` builds them) the tests print SKIPPED
//! and pass, and fail when `CI=true`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event as EventV1;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kubelink::agent::cluster::Cluster;
use kubelink::agent::events::SlotEvent;
use kubelink::agent::slot_endpoints::{self, Node, SlotEndpoints};
use kubelink::election::Timing;
use kubelink::election::kube::LeaseElection;
use kubelink_ipam::contract::{Slot, names};
use kubelink_ipam::extension::controller::{self, Config};
use kubelink_ipam::extension::objects::TYPE;
use kubelink_ipam::keys::PrivateKey;
use kubelink_ipam::managed::ManagedResource;
use kubelink_ipam::projection::{SeedTunnel, ShootPeer};
use kubelink_tests::gardenlet::{Gardenlet, SeedFixture, ShootFixture, ShootInput};
use kubelink_tests::helm::{chart, helm_ready};
use kubelink_tests::k8s::{self, audit};
use serde_json::{Value, json};

const NS: &str = "kubelink";
const SEED: &str = "local";
const CIDR: &str = "192.168.128.0/22";
/// The shoots' project (`shoot--<project>--<name>`).
const PROJECT: &str = "dev";
/// A second seed's release namespace on the same server, and its name.
const OTHER_NS: &str = "kubelink-other";
const OTHER: &str = "other";
const PODS: [&str; 2] = ["kubelink-agent-a", "kubelink-agent-b"];
/// The nodes the agent Pods run on, and their addresses.
const NODES: [&str; 2] = ["node-a", "node-b"];
const NODE_IPS: [&str; 2] = ["10.250.0.7", "10.250.0.8"];

/// The goals for an agent on a seed with 1000 shoots.
const START_BYTES_GOAL: u64 = 300 * 1000;
const EVENT_BYTES_GOAL: u64 = 1000;

/// Grants the test does not exercise, each kept in the chart for the reason given: (ServiceAccount,
/// verb, resource as a rule names it, reason). Empty: every grant is used by a request in the test.
const UNEXERCISED: &[(&str, &str, &str, &str)] = &[];

/// The chart's values as a ControllerDeployment gives them (the extension controller on) with the
/// `gardener` values gardenlet injects.
fn chart_values() -> Value {
    json!({"seedName": SEED, "slots": 2, "controller": {"enabled": true}, "crds": {"enabled": false},
           "gardener": {"seed": {"name": SEED, "spec": seed_json()["spec"]}}})
}

/// The Seed as gardenlet describes it: its networks stay out of the WireGuard CIDR.
fn seed_json() -> Value {
    let mut seed = SeedFixture::new(SEED).to_json();
    seed["spec"]["networks"] = json!({"nodes": "10.250.0.0/16", "pods": "100.64.0.0/12", "services": "100.80.0.0/13"});
    seed
}

/// `shoot-00000`, `shoot-00001`, ...
fn shoot_name(i: usize) -> String {
    format!("shoot-{i:05}")
}

/// Shoot `i`'s control-plane namespace on the seed.
fn control_plane(i: usize) -> String {
    format!("shoot--{PROJECT}--{}", shoot_name(i))
}

/// A seed with the chart installed by Helm as the admin, two agent Pods, and gardenlet's stand-in;
/// the extension controller once started.
struct Landscape {
    seed: k8s::Cluster,
    /// The seed's admin client.
    admin: kube::Client,
    /// The objects Helm rendered and created.
    objects: Vec<Value>,
    gardenlet: Gardenlet,
    controller: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Landscape {
    fn drop(&mut self) {
        self.stop_controller();
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
        for namespace in [NS, "garden"] {
            seed.ensure_namespace(namespace).await.unwrap();
        }
        let kubeconfig = seed.admin_kubeconfig_file().unwrap();
        let objects = kubelink_tests::helm::install(&chart("kubelink"), &kubeconfig, NS, "kubelink", chart_values())
            .await
            .unwrap_or_else(|e| panic!("installing kubelink: {e}"));
        let pods: Api<Pod> = Api::namespaced(admin.clone(), NS);
        for (pod, node) in PODS.iter().zip(NODES) {
            let object = json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod, "labels": {"app.kubernetes.io/name": "kubelink",
                                                     "app.kubernetes.io/component": "agent"}},
                "spec": {"nodeName": node, "serviceAccountName": "kubelink-agent",
                         "containers": [{"name": "agent", "image": "kubelink"}]}});
            pods.create(&PostParams::default(), &serde_json::from_value(object).unwrap()).await.unwrap();
        }
        Some(Landscape { gardenlet: Gardenlet::new(admin.clone()), seed, admin, objects, controller: None })
    }

    /// The extension controller in this process as the rendered Deployment configures it: its
    /// ServiceAccount's token, and the Seed's spec from the ConfigMap the Deployment mounts.
    async fn start_controller(&mut self) {
        let map = self.objects.iter().find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == "kubelink-seed");
        let spec: Value =
            serde_json::from_str(map.expect("the Seed's ConfigMap")["data"]["seed.json"].as_str().unwrap()).unwrap();
        let seed = kubelink_ipam::decode::decode_value(&json!({"metadata": {"name": SEED}, "spec": spec})).unwrap();
        let cfg = Config {
            namespace: NS.into(),
            seed_name: SEED.into(),
            seed: Some(seed),
            resync: Duration::from_secs(300),
            deployed_slots: 2,
        };
        let token = self.seed.token_for(NS, "kubelink-controller").await.unwrap();
        let client = self.seed.client_with_token(&token).await.unwrap();
        let observe: controller::Observer = Arc::new(|_: &controller::Reconciled| {});
        self.controller = Some(tokio::spawn(controller::run(client, cfg, observe)));
    }

    fn stop_controller(&mut self) {
        if let Some(c) = self.controller.take() {
            c.abort();
        }
    }

    /// gardenlet's reconcile of the seed's Extension: the CIDR, two slots and slot 0's endpoint; slot
    /// 1's is its Service's load-balancer address ([`slot_endpoint_from_the_load_balancer`]).
    async fn reconcile_seed(&self) {
        let config = json!({"cidr": CIDR, "slots": 2, "slotEndpoints": ["gw0.seed.example:51820"]});
        self.gardenlet.reconcile_extension("garden", TYPE, Some("seed"), Some(config)).await.unwrap();
    }

    /// gardenlet's part for shoots `range`: each one's namespace and Cluster, then its Extension
    /// reconciled until ready; `parallel` shoots at a time.
    async fn add_shoots(&self, range: std::ops::Range<usize>, parallel: usize) {
        let add = |i: usize| async move {
            let shoot = ShootFixture::new(PROJECT, &shoot_name(i), SEED).to_json();
            let namespace = self.gardenlet.prepare_shoot(&ShootInput::new(PROJECT, shoot, seed_json())).await?;
            self.gardenlet.reconcile_extension(&namespace, TYPE, None, None).await
        };
        let results: Vec<_> = futures::stream::iter(range).map(add).buffer_unordered(parallel).collect().await;
        for r in results {
            r.unwrap_or_else(|e| panic!("a shoot's Extension: {e}"));
        }
    }

    /// A fresh token of the agent's ServiceAccount, bound to the agent Pod `pod` (as its kubelet
    /// mounts it), and a client with it whose connections go through a forwarder that counts what
    /// the server sends.
    async fn agent(&self, pod: &str) -> (kube::Client, k8s::forward::Forwarder) {
        let token = self.seed.token_for_pod(NS, "kubelink-agent", pod).await.unwrap();
        self.seed.counted_client_with_token(&token).await.unwrap()
    }

    /// Every ShootPeer in `namespace`, as the admin reads it.
    async fn peers(&self, namespace: &str) -> Vec<Value> {
        let list = Api::<ShootPeer>::namespaced(self.admin.clone(), namespace).list(&ListParams::default()).await;
        list.unwrap().items.into_iter().map(|p| serde_json::to_value(p).unwrap()).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Requests and grants, and the server's answer on which grant allows which request.

/// What the authorizer is asked about a resource request.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Attributes {
    verb: String,
    group: String,
    resource: String,
    subresource: String,
    namespace: String,
    name: String,
}

impl Attributes {
    /// The request as the authorizer saw it; `None` for a non-resource request. The audit log names
    /// a created object, which the authorizer does not know: create cannot be limited by name.
    fn of(e: &audit::Event) -> Option<Self> {
        let o = e.object_ref.clone().filter(|o| !o.resource.is_empty())?;
        let name = if e.verb == "create" { String::new() } else { o.name };
        Some(Attributes {
            verb: e.verb.clone(),
            group: o.api_group,
            resource: o.resource,
            subresource: o.subresource,
            namespace: o.namespace,
            name,
        })
    }
}

impl std::fmt::Display for Attributes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() { String::new() } else { format!("{}/", self.group) };
        let sub = if self.subresource.is_empty() { String::new() } else { format!("/{}", self.subresource) };
        write!(f, "{} {group}{}{sub} ns={} name={}", self.verb, self.resource, self.namespace, self.name)
    }
}

/// One verb on one resource (with its resourceNames, if any) that a rule of a Role or ClusterRole
/// bound to a ServiceAccount grants.
#[derive(Debug, Clone)]
struct Grant {
    /// `Role <namespace>/<name>` or `ClusterRole <name>`.
    role: String,
    /// The RoleBinding's namespace (it grants only there); `None` for a ClusterRoleBinding.
    namespace: Option<String>,
    group: String,
    /// As a rule names it: `extensions/status` for a subresource.
    resource: String,
    verb: String,
    names: Vec<String>,
}

impl Grant {
    fn rule(&self) -> Value {
        let mut rule = json!({"apiGroups": [self.group], "resources": [self.resource], "verbs": [self.verb]});
        if !self.names.is_empty() {
            rule["resourceNames"] = json!(self.names);
        }
        rule
    }

    /// A request this grant alone allows: the check that the server applies it.
    fn example(&self) -> Attributes {
        let (resource, subresource) = self.resource.split_once('/').unwrap_or((&self.resource, ""));
        Attributes {
            verb: self.verb.clone(),
            group: self.group.clone(),
            resource: resource.into(),
            subresource: subresource.into(),
            namespace: self.namespace.clone().unwrap_or_default(),
            name: self.names.first().cloned().unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let resource =
            if self.group.is_empty() { self.resource.clone() } else { format!("{}/{}", self.group, self.resource) };
        let names = if self.names.is_empty() { "any".into() } else { self.names.join(",") };
        let scope = self.namespace.as_ref().map_or("cluster-wide".into(), |ns| format!("in namespace {ns}"));
        write!(f, "({}, {resource}, resourceNames: {names}) of {} {scope}", self.verb, self.role)
    }
}

/// Every grant the chart's `objects` give ServiceAccount `namespace/account`: each rule of each Role
/// and ClusterRole a binding of it refers to, one grant per API group, resource and verb.
fn grants_of(objects: &[Value], namespace: &str, account: &str) -> Vec<Grant> {
    let binds = |b: &&Value| {
        let subjects = b["subjects"].as_array().into_iter().flatten();
        subjects
            .into_iter()
            .any(|s| s["kind"] == "ServiceAccount" && s["name"] == account && s["namespace"] == namespace)
    };
    let bindings = objects.iter().filter(|o| o["kind"] == "RoleBinding" || o["kind"] == "ClusterRoleBinding");
    bindings.filter(binds).flat_map(|binding| grants_of_binding(objects, binding)).collect()
}

/// The grants of the role `binding` refers to, in the binding's scope.
fn grants_of_binding(objects: &[Value], binding: &Value) -> Vec<Grant> {
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
    let strings = |v: &Value| -> Vec<String> {
        v.as_array().into_iter().flatten().map(|s| s.as_str().unwrap().to_string()).collect()
    };
    let mut out = Vec::new();
    for rule in role["rules"].as_array().unwrap() {
        assert!(rule.get("nonResourceURLs").is_none(), "{role_name} grants non-resource URLs: {rule}");
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    let (group, resource, names) = (group.clone(), resource.clone(), strings(&rule["resourceNames"]));
                    let (role, namespace) = (role_name.clone(), scope.clone());
                    out.push(Grant { role, namespace, group, resource, verb, names });
                }
            }
        }
    }
    out
}

/// The synthetic user that holds `account`'s grant `i` alone.
fn grant_user(account: &str, i: usize) -> String {
    format!("grant-{account}-{i}")
}

/// Gives each grant of `account`, alone and in its scope, to its user ([`grant_user`]): a Role and
/// RoleBinding in the grant's namespace, or a ClusterRole and ClusterRoleBinding; then waits until
/// the server allows each user its grant's example request.
async fn install_grants(admin: &kube::Client, account: &str, grants: &[Grant]) {
    let pp = PostParams::default();
    for (i, grant) in grants.iter().enumerate() {
        let user = grant_user(account, i);
        let subject = json!([{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user}]);
        let kind = if grant.namespace.is_some() { "Role" } else { "ClusterRole" };
        let role_ref = json!({"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": user});
        let role = json!({"metadata": {"name": user}, "rules": [grant.rule()]});
        let binding = json!({"metadata": {"name": user}, "roleRef": role_ref, "subjects": subject});
        match &grant.namespace {
            Some(ns) => {
                Api::<Role>::namespaced(admin.clone(), ns).create(&pp, &object(role)).await.unwrap();
                Api::<RoleBinding>::namespaced(admin.clone(), ns).create(&pp, &object(binding)).await.unwrap();
            }
            None => {
                Api::<ClusterRole>::all(admin.clone()).create(&pp, &object(role)).await.unwrap();
                Api::<ClusterRoleBinding>::all(admin.clone()).create(&pp, &object(binding)).await.unwrap();
            }
        }
    }
    // The authorizer reads roles and bindings from its caches, which follow within moments.
    for (i, grant) in grants.iter().enumerate() {
        let start = Instant::now();
        while !allows(admin, &grant_user(account, i), &grant.example()).await {
            assert!(start.elapsed() < Duration::from_secs(20), "the server never applied {grant}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn object<K: serde::de::DeserializeOwned>(value: Value) -> K {
    serde_json::from_value(value).expect("a valid object")
}

/// The server's answer to a SubjectAccessReview: may `user` (no groups) make request `a`?
async fn allows(admin: &kube::Client, user: &str, a: &Attributes) -> bool {
    let review = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": user, "resourceAttributes": {"verb": a.verb, "group": a.group, "resource": a.resource,
                 "subresource": a.subresource, "namespace": a.namespace, "name": a.name}}});
    let review: SubjectAccessReview = serde_json::from_value(review).unwrap();
    let answer = Api::<SubjectAccessReview>::all(admin.clone()).create(&PostParams::default(), &review).await;
    answer.unwrap().status.expect("a SubjectAccessReview answer has a status").allowed
}

/// For each of `requests`, the grants (indices into `grants` of `account`) whose user the server
/// allows it.
async fn who_allows(
    admin: &kube::Client,
    account: &str,
    requests: &BTreeSet<Attributes>,
    grants: &[Grant],
) -> BTreeMap<Attributes, Vec<usize>> {
    let pairs = requests.iter().flat_map(|r| (0..grants.len()).map(move |i| (r, i)));
    let answers: Vec<(&Attributes, usize, bool)> = futures::stream::iter(pairs)
        .map(|(r, i)| async move { (r, i, allows(admin, &grant_user(account, i), r).await) })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut out: BTreeMap<Attributes, Vec<usize>> = requests.iter().map(|r| (r.clone(), Vec::new())).collect();
    for (r, i, allowed) in answers {
        if allowed {
            out.get_mut(r).unwrap().push(i);
        }
    }
    out
}

/// Both directions for ServiceAccount `kubelink/<account>` over the requests in `events`: every
/// request it made was answered (not 401/403) and is one a grant of the chart allows; every grant
/// allows a request that no other grant allows. Returns what fails, one line each.
async fn prove(admin: &kube::Client, events: &[audit::Event], objects: &[Value], account: &str) -> Vec<String> {
    let user = audit::service_account(NS, account);
    let mine = audit::of(events, &user);
    assert!(!mine.is_empty(), "{account} made no request");
    let mut problems: Vec<String> = mine
        .iter()
        .filter(|e| !e.allowed() || Attributes::of(e).is_none())
        .map(|e| format!("{account}: refused or not a resource request: {} {} ({})", e.verb, e.request_uri, e.code()))
        .collect();
    let requests: BTreeSet<Attributes> = mine.iter().copied().filter_map(Attributes::of).collect();
    let grants = grants_of(objects, NS, account);
    assert!(!grants.is_empty(), "the chart grants {account} nothing");
    install_grants(admin, account, &grants).await;
    let allowed_by = who_allows(admin, account, &requests, &grants).await;
    for (request, by) in &allowed_by {
        if by.is_empty() {
            problems.push(format!("{account}: no grant of the chart allows {request}"));
        }
    }
    problems.extend(unneeded(account, &grants, &allowed_by));
    println!("{account}: {} requests, {} distinct, {} grants:", mine.len(), requests.len(), grants.len());
    for (request, by) in &allowed_by {
        println!("  {request}  <- grant {by:?}");
    }
    problems
}

/// The grants that allow no request (unused), or only requests another grant allows as well
/// (redundant), each described.
fn unneeded(account: &str, grants: &[Grant], allowed_by: &BTreeMap<Attributes, Vec<usize>>) -> Vec<String> {
    let mut out = Vec::new();
    for (i, grant) in grants.iter().enumerate() {
        let excepted = UNEXERCISED
            .iter()
            .any(|(sa, verb, resource, _)| *sa == account && *verb == grant.verb && *resource == grant.resource);
        let used: Vec<&Vec<usize>> = allowed_by.values().filter(|by| by.contains(&i)).collect();
        if excepted {
            continue;
        } else if used.is_empty() {
            out.push(format!("{account}: unused: {grant}"));
        } else if used.iter().all(|by| by.len() > 1) {
            out.push(format!("{account}: redundant: {grant}: another grant allows every request it allows"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// What the components do.

/// Hand-edited seed objects are put back: the SeedTunnel on gardenlet's next reconcile of the
/// seed's Extension, a ShootPeer at once (the controller watches them), a shoot's Secret and
/// ManagedResource on the shoot's next reconcile.
async fn controller_puts_back_hand_edits(l: &Landscape) {
    let merge = |v: Value| Patch::Merge(v);
    let pp = PatchParams::default();
    let tunnels = Api::<SeedTunnel>::namespaced(l.admin.clone(), NS);
    tunnels.patch(SEED, &pp, &merge(json!({"spec": {"slots": 1}}))).await.unwrap();
    l.reconcile_seed().await;
    assert_eq!(tunnels.get(SEED).await.unwrap().spec.slots, 2, "the SeedTunnel is put back");

    let ns = control_plane(1);
    let peers = Api::<ShootPeer>::namespaced(l.admin.clone(), NS);
    let address = peers.get(&ns).await.unwrap().spec.address;
    peers.patch(&ns, &pp, &merge(json!({"spec": {"address": "192.168.131.250"}}))).await.unwrap();
    let start = Instant::now();
    while peers.get(&ns).await.unwrap().spec.address != address {
        assert!(start.elapsed() < Duration::from_secs(20), "the ShootPeer is not put back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let secrets = Api::<Secret>::namespaced(l.admin.clone(), &ns);
    let data = secrets.get(names::SHOOT_SECRET).await.unwrap().data;
    secrets
        .patch(names::SHOOT_SECRET, &pp, &merge(json!({"stringData": {"address": "192.168.131.250/22"}})))
        .await
        .unwrap();
    let resources = Api::<ManagedResource>::namespaced(l.admin.clone(), &ns);
    resources.patch(names::MANAGED_RESOURCE, &pp, &merge(json!({"spec": {"keepObjects": true}}))).await.unwrap();
    l.gardenlet.reconcile_extension(&ns, TYPE, None, None).await.unwrap();
    assert_eq!(secrets.get(names::SHOOT_SECRET).await.unwrap().data, data, "the shoot's Secret is put back");
    let keep = resources.get(names::MANAGED_RESOURCE).await.unwrap().spec.keep_objects;
    assert!(!keep, "the ManagedResource is put back");
}

/// Shoot 2 migrates away (gardenlet's migrate: the ManagedResource with keepObjects, then the
/// Extension deleted) and shoot 3 is deleted: neither keeps a ShootPeer or a ManagedResource here;
/// only the migrated one keeps its Secret, which gardenlet carries to the next seed.
async fn shoots_leave(l: &Landscape) {
    let (migrated, deleted) = (control_plane(2), control_plane(3));
    l.gardenlet.migrate(&migrated, TYPE).await.unwrap();
    l.gardenlet.delete_extension(&deleted, TYPE).await.unwrap();
    let peers = Api::<ShootPeer>::namespaced(l.admin.clone(), NS);
    for (ns, secret_kept) in [(&migrated, true), (&deleted, false)] {
        assert!(peers.get_opt(ns).await.unwrap().is_none(), "{ns}: its ShootPeer is gone");
        let resources = Api::<ManagedResource>::namespaced(l.admin.clone(), ns);
        assert!(resources.get_opt(names::MANAGED_RESOURCE).await.unwrap().is_none(), "{ns}: its ManagedResource");
        let secret = Api::<Secret>::namespaced(l.admin.clone(), ns).get_opt(names::SHOOT_SECRET).await.unwrap();
        assert_eq!(secret.is_some(), secret_kept, "{ns}: its Secret");
    }
}

/// The agent's pieces, as two nodes run them, with tokens bound to their Pods: the projection, the
/// election, the slot key, the Pod label, the Events. Shoots that come and go reach it through the
/// running controller.
async fn agent_pieces(l: &Landscape) {
    let (agent, _counted) = l.agent(PODS[0]).await;
    let wake = Arc::new(tokio::sync::Notify::new());
    let cluster = Cluster::start(agent.clone(), NS, SEED, Some(PODS[0].into()), wake.clone());
    synced_with(&cluster, &wake, 6).await;
    assert_eq!(cluster.slot_count(), Some(2));
    assert_eq!(cluster.cidr().unwrap().to_string(), CIDR);
    own_nodes_pods(&agent, &wake).await;
    let slot = slots_and_endpoints(l, &agent, &cluster).await;
    slot_events(l, &agent, slot).await;
    shoots_leave(l).await;
    synced_with(&cluster, &wake, 4).await;
    l.add_shoots(6..7, 1).await;
    synced_with(&cluster, &wake, 5).await;
}

/// The pod scope's reflector lists and watches the Pods of the agent's own node in every namespace
/// (here only node-a's agent Pod, which no kubelet runs: no address).
async fn own_nodes_pods(agent: &kube::Client, wake: &Arc<tokio::sync::Notify>) {
    let pods = kubelink::agent::local_pods::LocalPods::start(agent.clone(), NODES[0], wake.clone());
    let listed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(listed) = pods.pods() {
                return listed;
            }
            wake.notified().await;
        }
    });
    let listed = listed.await.expect("the node's Pods listed within 10 s");
    assert!(listed.iter().all(|p| p.namespace == NS && p.ips.is_empty()), "{listed:?}");
}

/// Node `i` as a slot's endpoint.
fn node(i: usize) -> Node {
    Node { name: NODES[i].into(), ip: NODE_IPS[i].parse().unwrap(), port: 51820 }
}

/// Two nodes take the two slots; node-a reads its slot key (and writes nothing there) and publishes
/// itself as its slot's endpoint (the EndpointSlice created); node-b taking the same slot replaces
/// that endpoint with its own (a stale holder's), and empties the slice when it gives the slot up.
/// Returns node-a's slot.
async fn slots_and_endpoints(l: &Landscape, agent: &kube::Client, cluster: &Cluster) -> Slot {
    let (agent_b, _counted_b) = l.agent(PODS[1]).await;
    let a = LeaseElection::new(agent.clone(), NS, NODES[0], NODE_IPS[0], 2, Timing::default());
    let b = LeaseElection::new(agent_b.clone(), NS, NODES[1], NODE_IPS[1], 2, Timing::default());
    let slot_a = a.round().await.unwrap().holding.expect("node-a takes a free slot");
    let slot_b = b.round().await.unwrap().holding.expect("node-b takes the other slot");
    assert_ne!(slot_a, slot_b);
    assert_eq!(a.round().await.unwrap().holding, Some(slot_a), "node-a renews its slot");
    let slot = Slot::try_from(slot_a).expect("a slot the election hands out");
    let key = cluster.slot_key(slot).await.unwrap();
    let again = cluster.slot_key(slot).await.unwrap();
    assert_eq!(key.public_key(), again.public_key());
    let (publish_a, publish_b) =
        (SlotEndpoints::new(agent.clone(), NS, node(0)), SlotEndpoints::new(agent_b, NS, node(1)));
    publish_a.publish(Some(slot), 2).await.unwrap();
    assert_eq!(endpoints(l, slot).await, [(NODES[0].to_string(), NODE_IPS[0].to_string(), true)]);
    publish_b.publish(Some(slot), 2).await.unwrap();
    let b_now = [(NODES[1].to_string(), NODE_IPS[1].to_string(), true)];
    assert_eq!(endpoints(l, slot).await, b_now, "a second holder replaces the first one's endpoint");
    publish_a.publish(None, 2).await.unwrap();
    assert_eq!(endpoints(l, slot).await, b_now, "a router leaves the current holder's endpoint alone");
    publish_b.publish(None, 2).await.unwrap();
    assert_eq!(endpoints(l, slot).await, [], "given up: no endpoint");
    a.release(slot_a).await.unwrap();
    b.release(slot_b).await.unwrap();
    slot
}

/// Slot 1 has no configured endpoint: until its Service's load balancer has an address, the seed's
/// Extension and the shoots' say so (naming the field and the fix) and no shoot gets one (no node's
/// address instead); once the cloud writes the address, the controller (watching the Service by
/// name) puts it into every shoot's Secret and the SeedTunnel.
async fn slot_endpoint_from_the_load_balancer(l: &Landscape) {
    let extensions = Api::<kubelink_ipam::extension::objects::Extension>::namespaced(l.admin.clone(), "garden");
    let seed_ext = extensions.get(TYPE).await.unwrap();
    let last = seed_ext.status.and_then(|s| s.last_operation).unwrap();
    let description = last.extra.get("description").and_then(Value::as_str).unwrap_or_default().to_string();
    assert!(description.contains("slot 1 has no endpoint"), "{description}");
    assert!(description.contains("spec.providerConfig.slotEndpoints[1]"), "{description}");
    assert!(description.contains("Service kubelink/kubelink-gateway-1"), "{description}");
    let shoot_secret = Api::<Secret>::namespaced(l.admin.clone(), &control_plane(0));
    let endpoint = |n: u8| {
        let shoot_secret = shoot_secret.clone();
        async move {
            let data = shoot_secret.get(names::SHOOT_SECRET).await.unwrap().data.unwrap_or_default();
            data.get(&format!("gateway-{n}-endpoint")).map(|b| String::from_utf8_lossy(&b.0).to_string())
        }
    };
    assert_eq!(endpoint(0).await.as_deref(), Some("gw0.seed.example:51820"), "configured");
    assert_eq!(endpoint(1).await, None, "no load-balancer address yet, and no node's address instead");

    let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}]}}});
    let services = Api::<Service>::namespaced(l.admin.clone(), NS);
    services.patch_status("kubelink-gateway-1", &PatchParams::default(), &Patch::Merge(status)).await.unwrap();
    let start = Instant::now();
    while endpoint(1).await.as_deref() != Some("203.0.113.9:51820") {
        assert!(start.elapsed() < Duration::from_secs(20), "the load balancer's address never reached the shoot");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("slot 1's load-balancer address in the shoot's Secret {:?} after the Service's status", start.elapsed());
    let tunnels = Api::<SeedTunnel>::namespaced(l.admin.clone(), NS);
    while tunnels.get(SEED).await.unwrap().spec.endpoints != ["gw0.seed.example:51820", "203.0.113.9:51820"] {
        assert!(start.elapsed() < Duration::from_secs(20), "the SeedTunnel's endpoints");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The endpoints (node, address, ready) of `slot`'s EndpointSlice, as the admin reads it.
async fn endpoints(l: &Landscape, slot: Slot) -> Vec<(String, String, bool)> {
    let slice = Api::<EndpointSlice>::namespaced(l.admin.clone(), NS).get(&names::gateway(slot)).await.unwrap();
    let ready =
        |e: &k8s_openapi::api::discovery::v1::Endpoint| e.conditions.as_ref().and_then(|c| c.ready) == Some(true);
    slice.endpoints.iter().map(|e| (e.node_name.clone().unwrap_or_default(), e.addresses.join(","), ready(e))).collect()
}

/// The agent's Events on a slot Lease, as the agent records them: taken (create), taken again within
/// the recorder's window (a patch counting the series), given up.
async fn slot_events(l: &Landscape, agent: &kube::Client, slot: Slot) {
    let events = kubelink::agent::events::Events::new(agent.clone(), NS, NODES[0]);
    let given_up = SlotEvent::GivenUp { slot, failing_for: Duration::from_secs(5), standby: Duration::from_secs(60) };
    for e in [SlotEvent::Taken { slot }, SlotEvent::Taken { slot }, given_up] {
        events.publish(&e).await.unwrap();
    }
    let recorded = Api::<EventV1>::namespaced(l.admin.clone(), NS).list(&ListParams::default()).await.unwrap();
    let about: Vec<(String, String, String, i32)> = recorded
        .items
        .iter()
        .map(|e| {
            let regarding = e.regarding.clone().unwrap_or_default();
            let count = e.series.as_ref().map_or(1, |s| s.count);
            let reason = e.reason.clone().unwrap_or_default();
            (reason, regarding.kind.unwrap_or_default(), regarding.name.unwrap_or_default(), count)
        })
        .collect();
    let lease = names::gateway(slot);
    assert!(about.contains(&("SlotTaken".into(), "Lease".into(), lease.clone(), 2)), "{about:?}");
    assert!(about.contains(&("SlotGivenUp".into(), "Lease".into(), lease, 1)), "{about:?}");
}

/// Waits until every watch of the running controller is open (their grants are checked after):
/// the Extensions by name everywhere and the seed's in `garden`, the Clusters, the ShootPeers, and
/// each slot Secret by name.
async fn controller_watches_open(l: &Landscape) {
    let user = audit::service_account(NS, "kubelink-controller");
    let watches = || -> BTreeSet<String> {
        let events = l.seed.audit();
        let requests = audit::of(&events, &user).into_iter().filter_map(Attributes::of);
        requests.filter(|a| a.verb == "watch").map(|a| format!("{} {}/{}", a.resource, a.namespace, a.name)).collect()
    };
    let want: BTreeSet<String> = [
        format!("extensions /{TYPE}"),
        format!("extensions garden/{TYPE}"),
        "clusters /".into(),
        // Every shoot's vpn-seed-server, by label.
        "endpointslices /".into(),
        format!("shootpeers {NS}/"),
        format!("secrets {NS}/kubelink-gateway-0"),
        format!("secrets {NS}/kubelink-gateway-1"),
        format!("services {NS}/kubelink-gateway-0"),
        format!("services {NS}/kubelink-gateway-1"),
    ]
    .into();
    let start = Instant::now();
    while watches() != want {
        assert!(start.elapsed() < Duration::from_secs(20), "the controller's watches: {:?}", watches());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The agent's token reads its slot Secrets and no other: not a shoot's, not Helm's release record
/// in its own namespace, no list; and writes none, not even its slot's (what shoots dial and trust is
/// the controller's): 403 for a patch or an update of a slot Secret.
async fn agent_reads_only_its_slot_secrets(l: &Landscape) {
    let (agent, _counted) = l.agent(PODS[0]).await;
    let secrets = |ns: &str| Api::<Secret>::namespaced(agent.clone(), ns);
    let gateway = secrets(NS).get("kubelink-gateway-0").await.unwrap();
    assert!(gateway.data.clone().unwrap().contains_key("privateKey"));
    let pp = PatchParams::default();
    for name in ["kubelink-gateway-0", "kubelink-gateway-1"] {
        let endpoint = json!({"stringData": {"endpoint": "attacker.example:51820"}});
        assert_eq!(code(secrets(NS).patch(name, &pp, &Patch::Merge(&endpoint)).await), 403, "patching Secret {name}");
        let key = json!({"data": {"privateKey": null, "publicKey": "AAAA"}});
        assert_eq!(code(secrets(NS).patch(name, &pp, &Patch::Merge(&key)).await), 403, "patching Secret {name}");
    }
    assert_eq!(code(secrets(NS).replace("kubelink-gateway-0", &PostParams::default(), &gateway).await), 403);
    let services = Api::<Service>::namespaced(agent.clone(), NS);
    assert_eq!(code(services.get("kubelink-gateway-0").await), 403, "the agent reads no Service");
    let shoot_ns = control_plane(1);
    let release = "sh.helm.release.v1.kubelink.v1";
    for (ns, name) in [(shoot_ns.as_str(), names::SHOOT_SECRET), (NS, release)] {
        let exists = Api::<Secret>::namespaced(l.admin.clone(), ns).get_opt(name).await.unwrap();
        assert!(exists.is_some(), "Secret {ns}/{name} exists");
        assert_eq!(code(secrets(ns).get(name).await), 403, "Secret {ns}/{name}");
    }
    assert_eq!(code(secrets(NS).list(&ListParams::default()).await), 403, "listing kubelink's Secrets");
    assert_eq!(code(Api::<Secret>::all(agent.clone()).list(&ListParams::default()).await), 403, "all Secrets");
}

/// The agent's token writes no Pod: 403 (RBAC: no grant) for a patch of another node's agent Pod and
/// of its own. And no EndpointSlice that names another node: 403 (the chart's admission policy) for
/// a slot's EndpointSlice with node-b's endpoint, written with node-a's token, created or replaced.
async fn agent_writes_no_pod_and_names_only_its_own_node(l: &Landscape) {
    let (agent, _counted) = l.agent(PODS[0]).await;
    let pods = Api::<Pod>::namespaced(agent.clone(), NS);
    let pp = PatchParams::default();
    let label = Patch::Merge(json!({"metadata": {"labels": {"kubelink.gardener.cloud/gateway-slot": "0"}}}));
    let image = Patch::Strategic(json!({"spec": {"containers": [{"name": "agent", "image": "evil:1"}]}}));
    for (pod, patch) in [(PODS[0], &label), (PODS[1], &label), (PODS[0], &image)] {
        let refused = api_error(pods.patch(pod, &pp, patch).await);
        println!("node-a patches Pod {pod}: {} {}", refused.code, refused.message);
        assert_eq!(refused.code, 403, "{pod}: {}", refused.message);
        assert!(refused.message.contains("cannot patch resource \"pods\""), "{}", refused.message);
    }
    let slices = Api::<EndpointSlice>::namespaced(agent, NS);
    let slot = Slot::ALL[1];
    // Slot 1's EndpointSlice afresh: node-a creates it below.
    let admin = Api::<EndpointSlice>::namespaced(l.admin.clone(), NS);
    if admin.get_opt(&names::gateway(slot)).await.unwrap().is_some() {
        admin.delete(&names::gateway(slot), &Default::default()).await.unwrap();
    }
    let claim = slot_endpoints::slice(slot, &node(1), true);
    let refused = api_error(slices.create(&PostParams::default(), &claim).await);
    println!("node-a creates {} naming node-b: {} {}", names::gateway(slot), refused.code, refused.message);
    assert_eq!(refused.code, 403, "{}", refused.message);
    assert!(refused.message.contains("may name only its own node"), "{}", refused.message);
    let mut mine = slot_endpoints::slice(slot, &node(0), true);
    mine = slices.create(&PostParams::default(), &mine).await.expect("node-a names itself");
    let mut claim = slot_endpoints::slice(slot, &node(1), true);
    claim.metadata.resource_version = mine.metadata.resource_version.take();
    let refused = api_error(slices.replace(&names::gateway(slot), &PostParams::default(), &claim).await);
    println!("node-a replaces {} naming node-b: {} {}", names::gateway(slot), refused.code, refused.message);
    assert_eq!(refused.code, 403, "{}", refused.message);
    assert!(refused.message.contains("may name only its own node"), "{}", refused.message);
}

/// The API status of a failed call.
fn api_error<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// No garden credentials in what the chart renders: no Secret, no volume or variable from a Secret,
/// no garden flag or variable in any container.
fn the_chart_renders_no_garden_credentials(objects: &[Value]) {
    let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    assert!(!kinds.contains(&"Secret"), "the chart renders a Secret: {kinds:?}");
    for workload in objects.iter().filter(|o| o["kind"] == "DaemonSet" || o["kind"] == "Deployment") {
        let name = &workload["metadata"]["name"];
        let pod = &workload["spec"]["template"]["spec"];
        let text = |v: &Value| v.to_string();
        for volume in pod["volumes"].as_array().into_iter().flatten() {
            assert!(!text(volume).contains("secret"), "{name}: a volume from a Secret: {volume}");
        }
        for container in pod["containers"].as_array().into_iter().flatten() {
            let args = text(&container["args"]).to_lowercase();
            assert!(!args.contains("garden"), "{name}: a garden flag: {args}");
            let env = text(&container["env"]) + &text(&container["envFrom"]);
            assert!(!env.to_lowercase().contains("garden"), "{name}: a garden variable: {env}");
            assert!(!env.contains("secretKeyRef") && !env.contains("secretRef"), "{name}: a variable from a Secret");
        }
    }
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
async fn each_component_needs_exactly_what_its_chart_grants_and_no_garden_credentials() {
    let test = "each_component_needs_exactly_what_its_chart_grants_and_no_garden_credentials";
    let Some(mut l) = Landscape::start(test).await else { return };
    l.start_controller().await;
    l.reconcile_seed().await;
    l.add_shoots(0..6, 1).await;
    controller_puts_back_hand_edits(&l).await;
    agent_pieces(&l).await;
    slot_endpoint_from_the_load_balancer(&l).await;
    controller_watches_open(&l).await;
    l.stop_controller();

    // Both directions, for each component, over every request it made.
    let t = Instant::now();
    let events = l.seed.audit();
    let mut problems = Vec::new();
    for account in ["kubelink-agent", "kubelink-controller"] {
        problems.extend(prove(&l.admin, &events, &l.objects, account).await);
    }
    println!("the server's answers in {:?}", t.elapsed());
    assert!(
        problems.is_empty(),
        "what the chart's RBAC and the code's requests disagree on:\n  {}\nAdd a missing grant; remove an unused \
         or redundant one from the chart, or add the code path that needs it to this test (if no test can reach \
         it, list it in UNEXERCISED with the reason it stays).",
        problems.join("\n  ")
    );
    agent_reads_only_its_slot_secrets(&l).await;
    agent_writes_no_pod_and_names_only_its_own_node(&l).await;
    the_chart_renders_no_garden_credentials(&l.objects);
}

/// What another seed's controller writes into its release namespace: its SeedTunnel, a slot
/// Secret and `shoots` ShootPeers (the same names as this seed's, in another project).
async fn another_seed(l: &Landscape, shoots: usize) {
    l.seed.ensure_namespace(OTHER_NS).await.unwrap();
    let pp = PostParams::default();
    let tunnel = json!({"apiVersion": "kubelink.gardener.cloud/v1alpha1", "kind": "SeedTunnel",
        "metadata": {"name": OTHER}, "spec": {"seed": OTHER, "cidr": "192.168.136.0/22", "slots": 2}});
    let tunnels = Api::<SeedTunnel>::namespaced(l.admin.clone(), OTHER_NS);
    tunnels.create(&pp, &serde_json::from_value(tunnel).unwrap()).await.unwrap();
    let key = PrivateKey::generate().expose_base64().to_string();
    let secret = json!({"metadata": {"name": "kubelink-gateway-0"}, "stringData": {"privateKey": key}});
    let secrets = Api::<Secret>::namespaced(l.admin.clone(), OTHER_NS);
    secrets.create(&pp, &serde_json::from_value(secret).unwrap()).await.unwrap();
    let peers = Api::<ShootPeer>::namespaced(l.admin.clone(), OTHER_NS);
    let create = |i: usize| {
        let address = Ipv4Addr::from(u32::from(Ipv4Addr::new(192, 168, 136, 3)) + i as u32);
        let peer = json!({"apiVersion": "kubelink.gardener.cloud/v1alpha1", "kind": "ShootPeer",
            "metadata": {"name": format!("shoot--{OTHER}--{}", shoot_name(i))},
            "spec": {"shoot": format!("garden-{OTHER}/{}", shoot_name(i)), "address": address.to_string(),
                     "publicKey": PrivateKey::generate().public_key().to_string()}});
        let (peers, pp) = (peers.clone(), pp.clone());
        async move { peers.create(&pp, &serde_json::from_value(peer).unwrap()).await.map(drop) }
    };
    let created: Vec<_> = futures::stream::iter(0..shoots).map(create).buffer_unordered(16).collect().await;
    created.into_iter().collect::<Result<(), _>>().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_on_a_seed_with_1000_shoots_gets_little_and_nothing_of_another_seed() {
    let test = "an_agent_on_a_seed_with_1000_shoots_gets_little_and_nothing_of_another_seed";
    let Some(mut l) = Landscape::start(test).await else { return };
    l.start_controller().await;
    l.reconcile_seed().await;
    let t = Instant::now();
    l.add_shoots(0..1000, 16).await;
    println!("1000 shoots reconciled by gardenlet's stand-in and the controller in {:?}", t.elapsed());
    let t = Instant::now();
    another_seed(&l, 1000).await;
    println!("another seed's SeedTunnel, slot Secret and 1000 ShootPeers written in {:?}", t.elapsed());

    // An agent starts: from nothing to every shoot of its seed. What it receives is counted on its own
    // connections (TLS records, as on the wire); its requests are read from the audit log.
    let agent_user = audit::service_account(NS, "kubelink-agent");
    let (agent, counted) = l.agent(PODS[0]).await;
    let seed = &l.seed;
    let agent_requests = || audit::of(&seed.audit(), &agent_user).into_iter().cloned().collect::<Vec<_>>();
    let (earlier, before_bytes) = (agent_requests().len(), counted.received());
    let wake = Arc::new(tokio::sync::Notify::new());
    let t = Instant::now();
    let cluster = Cluster::start(agent.clone(), NS, SEED, Some(PODS[0].into()), wake.clone());
    synced_with(&cluster, &wake, 1000).await;
    let synced_in = t.elapsed();
    // Synced once both lists are in; the watches that follow them belong to the start too.
    let watching = |requests: &[audit::Event], resource: &str| {
        requests[earlier..]
            .iter()
            .any(|e| e.verb == "watch" && e.object_ref.as_ref().is_some_and(|o| o.resource == resource))
    };
    let start = Instant::now();
    let mut requests = agent_requests();
    while !["seedtunnels", "shootpeers", "pods"].iter().all(|r| watching(&requests, r)) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the agent does not watch after its lists: {:#?}",
            &requests[earlier..]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        requests = agent_requests();
    }
    let (start_requests, start_bytes) = (requests.len() - earlier, counted.received() - before_bytes);
    let start_log: Vec<&str> = requests[earlier..].iter().map(|e| e.request_uri.as_str()).collect();
    println!("agent start: synced with 1000 shoots in {synced_in:?}");
    // What the ShootPeer list would be uncompressed (the server gzips it: the client accepts gzip).
    let list_bytes = serde_json::to_vec(&json!({"kind": "ShootPeerList", "items": l.peers(NS).await})).unwrap().len();

    // One more shoot: the agent's watch events in between, counted by watches with the agent's
    // selectors, the admin's own.
    let (peer_events, peer_watch) =
        count_events(Api::<ShootPeer>::namespaced(l.admin.clone(), NS), watcher::Config::default()).await;
    let by_name = watcher::Config::default().fields(&format!("metadata.name={SEED}"));
    let (tunnel_events, tunnel_watch) = count_events(Api::<SeedTunnel>::namespaced(l.admin.clone(), NS), by_name).await;
    let (before_requests, before_bytes) = (agent_requests().len(), counted.received());
    let t = Instant::now();
    l.add_shoots(2000..2001, 1).await;
    synced_with(&cluster, &wake, 1001).await;
    let seen_in = t.elapsed();
    // The event's bytes have reached the agent once it sees the shoot; its requests are logged by then.
    let (new_requests, new_bytes) = (agent_requests().len() - before_requests, counted.received() - before_bytes);
    // Give the admin's watches the same moment to deliver, then stop everything.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The field, not stop_controller(): the closures above still read the seed.
    if let Some(c) = l.controller.take() {
        c.abort();
    }
    peer_watch.abort();
    tunnel_watch.abort();
    let changed = peer_events.lock().unwrap().clone();
    let tunnel_changed = tunnel_events.lock().unwrap().clone();
    // Each event's size as the server sends it: one JSON line with the object as the watch gave it.
    let as_sent = |o: &Value| serde_json::to_vec(&json!({"type": "ADDED", "object": o})).unwrap().len() + 1;
    let event_bytes: Vec<usize> = changed.iter().chain(&tunnel_changed).map(as_sent).collect();

    // Nothing of the other seed: not among the agent's shoots, no request outside its namespace, and
    // its token cannot read the other release namespace.
    let of_other: Vec<String> =
        cluster.shoots().into_iter().map(|p| p.shoot).filter(|s| s.starts_with(&format!("garden-{OTHER}/"))).collect();
    let outside: Vec<String> = agent_requests()
        .iter()
        .filter(|e| e.object_ref.as_ref().is_none_or(|o| o.namespace != NS))
        .map(|e| e.request_uri.clone())
        .collect();
    let refused = [
        code(Api::<ShootPeer>::namespaced(agent.clone(), OTHER_NS).list(&ListParams::default()).await),
        code(Api::<SeedTunnel>::namespaced(agent.clone(), OTHER_NS).get(OTHER).await),
        code(Api::<Secret>::namespaced(agent.clone(), OTHER_NS).get("kubelink-gateway-0").await),
    ];

    println!(
        "agent start: {start_requests} requests, {start_bytes} bytes (goal <= {START_BYTES_GOAL}; the ShootPeer \
         list alone is {list_bytes} bytes uncompressed); per new shoot: {new_requests} requests, {new_bytes} bytes, \
         {} watch events of {event_bytes:?} bytes, seen in {seen_in:?} (goal: one event <= {EVENT_BYTES_GOAL} \
         bytes); another seed's 1000 ShootPeers in {OTHER_NS}: {} among the agent's shoots, {} requests outside \
         {NS}, its reads there answered {refused:?}",
        event_bytes.len(),
        of_other.len(),
        outside.len(),
    );

    assert_eq!(l.peers(NS).await.len(), 1001, "one ShootPeer per shoot of this seed");
    assert!(of_other.is_empty(), "the other seed's shoots reached the agent: {of_other:?}");
    assert!(outside.is_empty(), "agent requests outside {NS}: {outside:?}");
    assert_eq!(refused, [403; 3], "the agent's token reads the other release namespace");
    // The real server pages lists: kube's watcher asks for pages of 500 (watcher::Config's default).
    let pages = 1000usize.div_ceil(watcher::Config::default().page_size.unwrap_or(500) as usize);
    assert_eq!(
        start_requests,
        3 + 1 + pages + 1,
        "a watch each for the SeedTunnel, the ShootPeers and the agent Pods after a list of one, {pages} pages and \
         one: {start_log:#?}"
    );
    assert!(start_bytes <= START_BYTES_GOAL, "agent start: {start_bytes} bytes");
    assert_eq!(new_requests, 0, "a new shoot comes through the open watches");
    assert_eq!(event_bytes.len(), 1, "one watch event per new shoot: {changed:?} {tunnel_changed:?}");
    assert!(event_bytes[0] as u64 <= EVENT_BYTES_GOAL, "the event: {} bytes", event_bytes[0]);
    assert!(new_bytes <= EVENT_BYTES_GOAL, "the agent received {new_bytes} bytes for one new shoot");
}
