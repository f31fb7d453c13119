//! A slot Lease is written by whichever node holds it, so the election trusts no more of it than it
//! needs (`kubelink::election::SlotLease::bounded`), on the real kube-apiserver: a holder that
//! rewrites its Lease with an hour-long `leaseDurationSeconds` and a `renewTime` an hour ahead, then
//! stops renewing, loses the slot one configured lease duration later, as any dead holder does; and
//! no router keeps it as a next hop meanwhile.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::PostParams;
use kubelink::election::kube::LeaseElection;
use kubelink::election::{Timing, live_gateways};
use kubelink_tests::k8s;

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
