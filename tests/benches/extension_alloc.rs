//! The extension controller's allocation against the real kube-apiserver and etcd (`scripts/k8s-tools`),
//! driven by the gardenlet stand-in as gardenlet drives it.
//!
//! Prints: the time until `SHOOTS` new shoots' Extensions are all ready (gardenlet reconciling 32 at a
//! time); the time until one more shoot's Extension is ready with `SHOOTS` already served; gardenlet's
//! reconcile of a shoot already served (the baseline: the same round trips, nothing to allocate); and
//! the pure decision for `SHOOTS` shoots without any API call. Ratios are against the baseline
//! measured in the same run.
//!
//! Run: `cargo bench -p kubelink-tests --bench extension_alloc`

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kubelink_ipam::contract::ShootKey;
use kubelink_ipam::extension::controller::{self, Config};
use kubelink_ipam::extension::objects::TYPE;
use kubelink_ipam::extension::plan;
use kubelink_ipam::table::Table;
use kubelink_tests::gardenlet::{Gardenlet, SeedFixture, ShootFixture, ShootInput};
use kubelink_tests::k8s::{Cluster, Options};
use serde_json::json;

const SEED: &str = "bench";
const SHOOTS: usize = 1000;
const ROUNDS: usize = 5;
const CIDR: &str = "192.168.128.0/22";

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// gardenlet's part for shoot `i`: its namespace and Cluster; then its Extension reconciled and ready.
async fn add_shoot(g: &Gardenlet, i: usize) -> Duration {
    let shoot = ShootFixture::new("p", &format!("s{i:04}"), SEED);
    let input = ShootInput::new(&shoot.project, shoot.to_json(), SeedFixture::new(SEED).to_json());
    let ns = g.prepare_shoot(&input).await.expect("the shoot's namespace and Cluster");
    let start = Instant::now();
    g.reconcile_extension(&ns, TYPE, None, None).await.unwrap_or_else(|e| panic!("shoot {i}: {e}"));
    start.elapsed()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let options = Options { name: "bench-ext".into(), netns: None, ips: vec![], crds: true };
    let cluster = Cluster::start(options).await.expect("the real control plane (scripts/k8s-tools)");
    let admin = cluster.client().await.expect("admin client");
    for ns in ["kubelink", "garden"] {
        cluster.ensure_namespace(ns).await.expect("namespace");
    }
    let cfg = Config {
        namespace: "kubelink".into(),
        seed_name: SEED.into(),
        seed: None,
        resync: Duration::from_secs(300),
        deployed_slots: 2,
    };
    let _controller = tokio::spawn(controller::run(admin.clone(), cfg, Arc::new(|_: &controller::Reconciled| {})));
    let g = Gardenlet::new(admin);
    let seed_config = json!({"cidr": CIDR, "slots": 2, "slotEndpoints": ["gw0.example:51820", "gw1.example:51820"]});
    g.reconcile_extension("garden", TYPE, Some("seed"), Some(seed_config)).await.expect("the seed's Extension");

    let start = Instant::now();
    let shoots = futures::stream::iter(0..SHOOTS).map(|i| add_shoot(&g, i)).buffer_unordered(32);
    let _: Vec<Duration> = shoots.collect().await;
    let batch = start.elapsed();

    let mut one = Vec::new();
    let mut again = Vec::new();
    for round in 0..ROUNDS {
        one.push(add_shoot(&g, SHOOTS + round).await);
        let ns = format!("shoot--p--s{:04}", round);
        let start = Instant::now();
        g.reconcile_extension(&ns, TYPE, None, None).await.expect("a served shoot reconciled again");
        again.push(start.elapsed());
    }

    let pure = pure_decisions();
    let base = median(again.clone());
    println!(
        "extension controller on kube-apiserver {} (2 worker threads)",
        cluster.version().await.unwrap_or_default()
    );
    let rows = [
        (format!("{SHOOTS} new shoots, 32 at a time, all ready"), batch),
        (format!("one more shoot ready ({SHOOTS} served; median of {ROUNDS})"), median(one)),
        (format!("a served shoot reconciled again (baseline; median of {ROUNDS})"), base),
        (format!("pure decisions for {SHOOTS} shoots (no API)"), pure),
    ];
    for (what, d) in rows {
        println!("{what:<62} {:>10.2} ms   {:>7.2}x baseline", ms(d), d.as_secs_f64() / base.as_secs_f64());
    }
}

/// `SHOOTS` first-free allocations in a row on one table, as the controller decides them.
fn pure_decisions() -> Duration {
    let pool = kubelink_ipam::alloc::Pool::new(CIDR.parse().expect("cidr"));
    let keys: Vec<ShootKey> = (0..SHOOTS).map(|i| ShootKey::new(format!("shoot--p--s{i:04}"), TYPE)).collect();
    let start = Instant::now();
    for _ in 0..10 {
        let mut table = Table::default();
        for key in &keys {
            let (_, _, next) = plan::allocate(&table, &pool, key, None).expect("room");
            table = next.unwrap_or(table);
        }
        std::hint::black_box(&table);
    }
    start.elapsed() / 10
}
