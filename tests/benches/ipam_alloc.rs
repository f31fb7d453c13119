//! Allocation time against the API test server, through a real `kube::Client` over loopback HTTP.
//!
//! Prints: the time for one pass that allocates 1000 new shoots in a row; the time for the 1000th shoot
//! alone (999 already allocated); a no-op pass over 1000 allocated shoots (the baseline: reading and
//! comparing only); and the pure plan for 1000 shoots without any API calls. Ratios are against the no-op
//! pass measured in the same run.
//!
//! Run: `cargo bench -p kubelink-tests --bench ipam_alloc`

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kubelink_ipam::alloc::Pool;
use kubelink_ipam::controller::{Config, Controller};
use kubelink_ipam::gardener::ShootKey;
use kubelink_ipam::table::{Table, plan};
use kubelink_tests::apiserver::{self, fixtures};

const SEED: &str = "seed-a";
const ROUNDS: usize = 5;

async fn fresh(shoots: usize) -> (apiserver::ApiServer, Controller) {
    let server = apiserver::start().await;
    let client = server.client();
    fixtures::create_seed(&client, &fixtures::seed(SEED, "192.168.128.0/22")).await.expect("seed");
    fixtures::create_shoots(&client, SEED, 0..shoots).await.expect("shoots");
    let controller = Controller::new(client.clone(), client, Config::new(SEED));
    (server, controller)
}

async fn timed_pass(controller: &Controller, expect_assigned: usize) -> Duration {
    let start = Instant::now();
    let report = controller.reconcile().await.expect("pass");
    let took = start.elapsed();
    assert_eq!(report.assigned.len(), expect_assigned, "{:?}", report.problems);
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (mut batch, mut one, mut noop) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let (_server, controller) = fresh(1000).await;
        batch.push(timed_pass(&controller, 1000).await);
        noop.push(timed_pass(&controller, 0).await);
    }
    for _ in 0..ROUNDS {
        let (server, controller) = fresh(999).await;
        timed_pass(&controller, 999).await;
        fixtures::create_shoots(&server.client(), SEED, 999..1000).await.expect("the 1000th shoot");
        one.push(timed_pass(&controller, 1).await);
    }
    let pool = Pool::new("192.168.128.0/22".parse().expect("cidr"));
    let wanted: BTreeSet<ShootKey> =
        (0..1000).map(|i| ShootKey::new(fixtures::PROJECT_NS, fixtures::shoot_name(i))).collect();
    let start = Instant::now();
    for _ in 0..100 {
        std::hint::black_box(plan(&Table::default(), &pool, &wanted, &BTreeMap::new()));
    }
    let pure = start.elapsed() / 100;

    let base = median(noop.clone());
    println!("ipam allocation against the API test server (median of {ROUNDS}, 2 worker threads)");
    let rows = [
        ("1000 new shoots in one pass", median(batch)),
        ("the 1000th shoot (999 allocated)", median(one)),
        ("no-op pass over 1000 allocated (baseline)", base),
        ("pure plan for 1000 shoots (no API)", pure),
    ];
    for (what, d) in rows {
        println!("{what:<45} {:>10.2} ms   {:>6.2}x baseline", ms(d), d.as_secs_f64() / base.as_secs_f64());
    }
}
