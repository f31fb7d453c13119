//! Gateway election against the real kube-apiserver: Leases, resourceVersion races, failover, and an
//! outage of the API server itself (frozen with SIGSTOP).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kubelink::election::Timing;
use kubelink::election::kube::LeaseElection;
use kubelink_tests::k8s;

fn timing() -> Timing {
    Timing {
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1500),
        retry: Duration::from_millis(100),
    }
}

fn node(client: &kube::Client, ns: &str, name: &str) -> LeaseElection {
    LeaseElection::new(client.clone(), ns, name, &format!("10.250.0.{}", name.len()), 2, timing())
}

/// An admin client of `cluster` and a fresh namespace `ns` in it.
async fn client_in(cluster: &k8s::Cluster, ns: &str) -> kube::Client {
    cluster.ensure_namespace(ns).await.unwrap();
    cluster.client().await.unwrap()
}

/// Runs rounds for every node concurrently for `for_how_long`; returns each node's last holding.
async fn run_rounds(nodes: &[&LeaseElection], for_how_long: Duration) -> BTreeMap<String, Option<usize>> {
    let start = Instant::now();
    let mut last = BTreeMap::new();
    while start.elapsed() < for_how_long {
        let rounds = futures::future::join_all(nodes.iter().map(|n| n.round())).await;
        let mut held: Vec<usize> = Vec::new();
        for (n, r) in nodes.iter().zip(rounds) {
            let r = r.expect("round");
            if let Some(slot) = r.holding {
                assert!(!held.contains(&slot), "two nodes hold slot {slot} in the same round");
                held.push(slot);
            }
            last.insert(n.me.clone(), r.holding);
        }
        tokio::time::sleep(timing().retry).await;
    }
    last
}

#[tokio::test]
async fn three_nodes_two_slots_distinct_holders_and_failover() {
    let Some(cluster) = k8s::for_test("three_nodes_two_slots_distinct_holders_and_failover").await else { return };
    let (ns, client) = ("election-three", client_in(cluster, "election-three").await);
    let (a, b, c) = (node(&client, ns, "node-a"), node(&client, ns, "node-bb"), node(&client, ns, "node-ccc"));

    let held = run_rounds(&[&a, &b, &c], Duration::from_millis(800)).await;
    let slots: Vec<usize> = held.values().flatten().copied().collect();
    assert_eq!(slots.len(), 2, "two slots, two holders: {held:?}");
    assert_ne!(slots[0], slots[1], "a node holds at most one slot and two nodes never share one: {held:?}");

    // The holders are published with their node IPs on the Leases.
    let leases = a.read().await.unwrap();
    for lease in leases.iter().flatten() {
        let view = kubelink::election::kube::view(lease);
        assert!(view.node_ip.is_some(), "node IP annotation missing: {view:?}");
    }

    // The holder of slot 0 dies (stops renewing): the idle node takes the slot over after the lease
    // expires.
    let dead = held.iter().find(|(_, s)| **s == Some(0)).map(|(n, _)| n.clone()).unwrap();
    let survivors: Vec<&LeaseElection> = [&a, &b, &c].into_iter().filter(|n| n.me != dead).collect();
    let start = Instant::now();
    let mut taken = None;
    while start.elapsed() < Duration::from_secs(6) {
        let held = run_rounds(&survivors, timing().retry).await;
        if held.values().filter(|s| s.is_some()).count() == 2 {
            taken = Some(start.elapsed());
            break;
        }
    }
    let taken = taken.expect("slot 0 was not taken over");
    println!("slot 0 taken over {taken:?} after its holder stopped (lease duration {:?})", timing().lease_duration);
    assert!(taken >= Duration::from_millis(1500), "taken over before the lease could expire: {taken:?}");
    assert!(taken < timing().lease_duration + Duration::from_secs(1), "take-over too slow: {taken:?}");
}

/// Nodes a and b competing for one slot.
fn one_slot_two_nodes(client: &kube::Client, ns: &str) -> (LeaseElection, LeaseElection) {
    let a = LeaseElection::new(client.clone(), ns, "node-a", "10.0.0.1", 1, timing());
    let b = LeaseElection::new(client.clone(), ns, "node-b", "10.0.0.2", 1, timing());
    (a, b)
}

#[tokio::test]
async fn a_released_slot_is_taken_at_once() {
    let Some(cluster) = k8s::for_test("a_released_slot_is_taken_at_once").await else { return };
    let (a, b) = one_slot_two_nodes(&client_in(cluster, "election-release").await, "election-release");
    assert_eq!(a.round().await.unwrap().holding, Some(0));
    assert_eq!(b.round().await.unwrap().holding, None, "slot is live and held by a");
    a.release(0).await.unwrap();
    assert_eq!(b.round().await.unwrap().holding, Some(0), "released slot must be free now");
    assert_eq!(a.round().await.unwrap().holding, None, "a must not take it back while b renews");
}

#[tokio::test]
async fn after_an_api_outage_the_holder_keeps_its_slot() {
    // This test freezes its API server: a cluster of its own.
    let Some(cluster) = k8s::own_for_test("after_an_api_outage_the_holder_keeps_its_slot", false).await else { return };
    let (a, b) = one_slot_two_nodes(&client_in(&cluster, "election-outage").await, "election-outage");
    assert_eq!(a.round().await.unwrap().holding, Some(0));
    assert_eq!(b.round().await.unwrap().holding, None);
    // The API server stops answering (SIGSTOP) for longer than the lease: the Lease expires
    // unrenewed, and both nodes' rounds hang until the agent's bound (the renew deadline) cuts them
    // off; a round cut off forgets what was observed, as the agent's loop does (agent/src/agent/run.rs).
    cluster.freeze_apiserver(true);
    let frozen = std::time::Instant::now();
    for n in [&a, &b] {
        let round = tokio::time::timeout(timing().renew_deadline, n.round()).await;
        assert!(round.is_err(), "a round answered while the API server was frozen: {round:?}");
        n.forget_observations();
    }
    tokio::time::sleep((timing().lease_duration + Duration::from_millis(500)).saturating_sub(frozen.elapsed())).await;
    cluster.freeze_apiserver(false);
    // Back: b may be the first to read, and the Lease's renewTime is long past. b must give a a whole
    // lease duration to renew instead of taking the slot from a working gateway.
    let first = b.round().await.unwrap();
    assert_eq!(first.holding, None, "b took the slot right after the outage");
    assert_eq!(first.slots[0].as_ref().and_then(|l| l.holder.clone()).as_deref(), Some("node-a"));
    assert_eq!(a.round().await.unwrap().holding, Some(0), "a renews its expired Lease");
    assert_eq!(b.round().await.unwrap().holding, None);
    // Without a's renewals, b takes over one lease duration after it started watching again.
    let start = Instant::now();
    while b.round().await.unwrap().holding.is_none() {
        assert!(start.elapsed() < timing().lease_duration * 2, "b never took the abandoned slot");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("abandoned slot taken {:?} after the last renewal was first seen", start.elapsed());
}
