//! A slot Lease is written by whichever node holds it, so the election trusts no more of it than it
//! needs (`kubelink::election::SlotLease::bounded`), on the real kube-apiserver: a holder that
//! rewrites its Lease with an hour-long `leaseDurationSeconds` and a `renewTime` an hour ahead, then
//! stops renewing, loses the slot one configured lease duration later, as any dead holder does; and
//! no router keeps it as a next hop meanwhile. And a node that rewrites the node-IP annotation of a
//! slot another node holds (its token may update the slot Leases) makes no router route via the
//! address it wrote: a router checks it against the host IPs of the holder's agent Pod
//! (`kubelink::agent::next_hops`).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use kubelink::agent::cluster::{AgentPods, Cluster};
use kubelink::agent::next_hops::verify_node_ips;
use kubelink::agent::role::{self, Action, Delays, Now, Observation, RoleState};
use kubelink::election::kube::LeaseElection;
use kubelink::election::{Round, Timing, live_gateways};
use kubelink_ipam::contract::labels;
use kubelink_tests::k8s;
use serde_json::json;

fn timing() -> Timing {
    Timing {
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1500),
        retry: Duration::from_millis(100),
    }
}

#[tokio::test]
async fn a_lease_rewritten_with_an_hour_of_duration_and_renewal_expires_after_the_configured_duration() {
    let test = "a_lease_rewritten_with_an_hour_of_duration_and_renewal_expires_after_the_configured_duration";
    let Some(cluster) = k8s::for_test(test).await else { return };
    let ns = "lease-trust";
    cluster.ensure_namespace(ns).await.unwrap();
    let client = cluster.client().await.unwrap();
    let x = LeaseElection::new(client.clone(), ns, "node-x", "10.250.0.9", 1, timing());
    let b = LeaseElection::new(client.clone(), ns, "node-b", "10.250.0.8", 1, timing());
    assert_eq!(x.round().await.unwrap().holding, Some(0));
    assert_eq!(b.round().await.unwrap().holding, None, "node-x holds the slot");

    // node-x rewrites its Lease (its token may update the slot Leases) and stops renewing.
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    let mut lease = leases.get("kubelink-gateway-0").await.unwrap();
    let spec = lease.spec.as_mut().unwrap();
    spec.lease_duration_seconds = Some(3600);
    let hour_ahead = k8s_openapi::jiff::Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_secs(3600);
    spec.renew_time = Some(MicroTime(hour_ahead));
    leases.replace("kubelink-gateway-0", &PostParams::default(), &lease).await.unwrap();
    let rewritten = Instant::now();

    // node-b sees the slot as node-x's only while that version is younger than the configured lease
    // duration, then takes it over; a router's next hops follow the same view.
    let taken = loop {
        let round = b.round().await.unwrap();
        let live = live_gateways(k8s_openapi::jiff::Timestamp::now(), &round.slots);
        if let Some(slot) = round.holding {
            break (slot, rewritten.elapsed());
        }
        assert!(
            live.iter().all(|g| g.node == "node-x") && rewritten.elapsed() < Duration::from_secs(10),
            "node-b never took the slot ({:?} after the rewrite): {live:?}",
            rewritten.elapsed()
        );
        tokio::time::sleep(timing().retry).await;
    };
    println!("node-b took slot {} {:?} after node-x's rewrite (lease duration 2 s)", taken.0, taken.1);
    assert_eq!(taken.0, 0);
    assert!(taken.1 >= timing().lease_duration - 2 * timing().retry, "taken over too early: {:?}", taken.1);
    assert!(taken.1 < timing().lease_duration + Duration::from_secs(1), "not within the lease duration: {:?}", taken.1);
    let round = b.round().await.unwrap();
    let live = live_gateways(k8s_openapi::jiff::Timestamp::now(), &round.slots);
    assert_eq!(live.iter().map(|g| g.node.as_str()).collect::<Vec<_>>(), ["node-b"], "the next hop is node-b's");
}

/// Where a router sends slot traffic after `round`, as its role logic decides it: the gateways of
/// `ApplyRouter`, (slot, next hop).
fn router_next_hops(round: Round) -> Vec<(usize, IpAddr)> {
    let delays = Delays {
        warmup: Duration::ZERO,
        give_up_after: Duration::from_secs(5),
        standby: Duration::from_secs(60),
        renew_deadline: timing().renew_deadline,
    };
    let now = Now { instant: Instant::now(), wall: k8s_openapi::jiff::Timestamp::now() };
    let (state, _) = role::step(RoleState::new(delays), Observation::Elected(round), now);
    let (_, actions) = role::step(state, Observation::PassDue, now);
    actions
        .into_iter()
        .find_map(|a| match a {
            Action::ApplyRouter { gateways } => Some(gateways),
            _ => None,
        })
        .expect("a router applies its routes")
}

/// The agent Pod of `node` as the DaemonSet controller creates it (the chart's labels), with the host
/// IP its kubelet writes.
async fn agent_pod(pods: &Api<Pod>, node: &str, host_ip: &str) {
    let pod = json!({"metadata": {"name": format!("agent-{node}"),
                                  "labels": {"app.kubernetes.io/name": "kubelink", "app.kubernetes.io/component": "agent"}},
        "spec": {"nodeName": node, "serviceAccountName": "kubelink-agent", "hostNetwork": true,
                 "containers": [{"name": "agent", "image": "kubelink:1"}]}});
    pods.create(&PostParams::default(), &serde_json::from_value(pod).unwrap()).await.unwrap();
    let status = json!({"status": {"phase": "Running", "hostIP": host_ip, "hostIPs": [{"ip": host_ip}]}});
    pods.patch_status(&format!("agent-{node}"), &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
}

#[tokio::test]
async fn a_node_that_rewrites_another_holders_node_ip_changes_no_routers_next_hop() {
    let test = "a_node_that_rewrites_another_holders_node_ip_changes_no_routers_next_hop";
    let Some(cluster) = k8s::for_test(test).await else { return };
    if !kubelink_tests::helm::helm_ready(test).await {
        return;
    }
    let ns = "lease-trust-node-ip";
    cluster.ensure_namespace(ns).await.unwrap();
    let values = json!({"seedName": "s", "slots": 1, "crds": {"enabled": false}});
    let kubeconfig = cluster.admin_kubeconfig_file().unwrap();
    kubelink_tests::helm::install(&kubelink_tests::helm::chart("kubelink"), &kubeconfig, ns, "kubelink", values)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(cluster.client().await.unwrap(), ns);
    let nodes = [("node-x", "10.250.0.9"), ("node-b", "10.250.0.8"), ("node-r", "10.250.0.7")];
    for (node, ip) in nodes {
        agent_pod(&pods, node, ip).await;
    }
    // Each node with its agent's token, bound to its Pod, and the chart's grants.
    let as_node = async |node: &'static str| {
        let token = cluster.token_for_pod(ns, "kubelink-agent", &format!("agent-{node}")).await.unwrap();
        cluster.client_with_token(&token).await.unwrap()
    };
    let (x_client, b_client, r_client) = (as_node("node-x").await, as_node("node-b").await, as_node("node-r").await);
    let x = LeaseElection::new(x_client, ns, "node-x", "10.250.0.9", 1, timing());
    let router = LeaseElection::new(r_client.clone(), ns, "node-r", "10.250.0.7", 1, timing());
    assert_eq!(x.round().await.unwrap().holding, Some(0), "node-x holds the slot");

    // The router's view, as its agent builds it: the agent Pods from its reflector, each round's
    // node IPs checked against them, then the role logic's next hops.
    let wake = Arc::new(tokio::sync::Notify::new());
    let agents = Cluster::start(r_client, ns, "s", Some("agent-node-r".into()), wake.clone());
    let started = Instant::now();
    let listed = loop {
        if let AgentPods::Listed(pods) = agents.agent_pods() {
            break pods;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the router never listed the agent Pods");
        let _ = tokio::time::timeout(Duration::from_millis(50), wake.notified()).await;
    };
    assert_eq!(listed.len(), 3, "{listed:?}");
    let hops = async || {
        let round = router.round_with(false).await.unwrap();
        let unchecked = live_gateways(k8s_openapi::jiff::Timestamp::now(), &round.slots);
        let unchecked: Vec<Option<String>> = unchecked.into_iter().map(|g| g.node_ip).collect();
        let AgentPods::Listed(pods) = agents.agent_pods() else { panic!("the agent Pods are listed") };
        let (slots, problems) = verify_node_ips(round.slots, &pods);
        (unchecked, router_next_hops(Round { slots, ..round }), problems)
    };
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let (_, before, problems) = hops().await;
    assert_eq!(before, [(0, ip("10.250.0.9"))], "node-x's own address: {problems:?}");

    // node-b writes another address into node-x's Lease: its own, then one no node has.
    let leases: Api<Lease> = Api::namespaced(b_client, ns);
    for forged in ["10.250.0.8", "10.250.0.99"] {
        let mut lease = leases.get("kubelink-gateway-0").await.unwrap();
        lease.metadata.annotations.get_or_insert_with(Default::default).insert(labels::NODE_IP.into(), forged.into());
        leases.replace("kubelink-gateway-0", &PostParams::default(), &lease).await.expect("node-b's token may do it");
        let (unchecked, after, problems) = hops().await;
        let text = problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
        println!(
            "node-b wrote {forged} into node-x's Lease: the Lease says {unchecked:?}; the router's next hops \
             {before:?} before, {after:?} after; the warning: {text}"
        );
        assert_eq!(unchecked, [Some(forged.to_string())], "the forged annotation is what the Lease says");
        assert!(after.is_empty(), "no route via {forged}: {after:?}");
        for word in ["Lease kubelink-gateway-0", labels::NODE_IP, forged, "agent-node-x", "10.250.0.9"] {
            assert!(text.contains(word), "the warning names {word}: {text}");
        }
    }

    // node-x renews (every retry period): its own address again, and the router's next hop with it.
    let renewed = Instant::now();
    assert_eq!(x.round().await.unwrap().holding, Some(0));
    let (_, after, problems) = hops().await;
    println!("node-x renewed: the router's next hops {after:?} again, {:?} after the renewal", renewed.elapsed());
    assert_eq!(after, before, "{problems:?}");
    assert!(problems.is_empty(), "{problems:?}");
}
