//! The IPAM controller against the Kubernetes API test server, through a real `kube::Client`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kubelink_ipam::contract::{labels, names};
use kubelink_ipam::controller::{Config, Controller, PassReport};
use kubelink_ipam::gardener::{Seed, Shoot, ShootKey, ShootState};
use kubelink_ipam::record;
use kubelink_ipam::secret::private_key_of;
use kubelink_ipam::status::{SEED_CONDITION, SHOOT_CONDITION};
use kubelink_ipam::store::{list_allocations, table_of, watch_allocations};
use kubelink_ipam::{PrivateKey, PublicKey};
use kubelink_tests::apiserver::fixtures::{self, PROJECT_NS, create_seed, create_shoots, shoot, shoot_name};
use kubelink_tests::apiserver::{self, ApiServer};
use serde_json::{Value, json};

const SEED: &str = "seed-a";

async fn setup(cidr: &str, shoots: usize) -> (ApiServer, Controller) {
    let server = apiserver::start().await;
    let client = server.client();
    create_seed(&client, &fixtures::seed(SEED, cidr)).await.unwrap();
    create_shoots(&client, SEED, 0..shoots).await.unwrap();
    let controller = Controller::new(client.clone(), client, Config::new(SEED));
    (server, controller)
}

fn key(i: usize) -> ShootKey {
    ShootKey::new(PROJECT_NS, shoot_name(i))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

async fn shoot_condition(client: &kube::Client, name: &str) -> Option<Value> {
    let shoot = Api::<Shoot>::namespaced(client.clone(), PROJECT_NS).get(name).await.unwrap();
    let conditions = shoot.status?.get("conditions")?.as_array()?.clone();
    conditions.into_iter().find(|c| c["type"] == SHOOT_CONDITION)
}

async fn seed_condition(client: &kube::Client) -> Value {
    let seed = serde_json::to_value(Api::<Seed>::all(client.clone()).get(SEED).await.unwrap()).unwrap();
    let conditions = seed["status"]["conditions"].as_array().cloned().unwrap_or_default();
    conditions.into_iter().find(|c| c["type"] == SEED_CONDITION).expect("the seed condition is set")
}

/// Everything the cluster says about allocations, cross-checked: the table on the Seed, every ShootState
/// record and every shoot Secret must agree, and no address may appear twice in any of them.
async fn assert_consistent(client: &kube::Client) -> BTreeMap<ShootKey, IpAddr> {
    let seed = Api::<Seed>::all(client.clone()).get(SEED).await.unwrap();
    let (table, problems) = table_of(&seed);
    assert!(problems.is_empty(), "{problems:?}");
    assert!(table.addresses_unique(), "the table gives an address twice");
    let table: BTreeMap<ShootKey, IpAddr> = table.iter().map(|(k, a)| (k.clone(), *a)).collect();

    let states = Api::<ShootState>::all(client.clone()).list(&ListParams::default()).await.unwrap().items;
    let mut recorded = BTreeMap::new();
    for state in &states {
        if let Ok(Some(rec)) = record::read(state) {
            let k = ShootKey {
                namespace: state.metadata.namespace.clone().unwrap(),
                name: state.metadata.name.clone().unwrap(),
            };
            recorded.insert(k, rec);
        }
    }
    let unique: BTreeSet<IpAddr> = recorded.values().map(|r| r.address).collect();
    assert_eq!(unique.len(), recorded.len(), "two ShootStates record the same address");

    let secrets = Api::<Secret>::all(client.clone()).list(&ListParams::default()).await.unwrap().items;
    let mut secret_addresses = BTreeSet::new();
    for s in secrets.iter().filter(|s| s.metadata.name.as_deref() == Some(names::SHOOT_SECRET)) {
        let address = String::from_utf8(s.data.as_ref().unwrap()["address"].0.clone()).unwrap();
        assert!(secret_addresses.insert(address.clone()), "two shoot Secrets hold {address}");
    }
    for (k, addr) in &table {
        let rec = recorded.get(k).unwrap_or_else(|| panic!("{k} has no ShootState record"));
        assert_eq!(rec.address, *addr, "{k}");
        let ns = format!("shoot--{}--{}", k.namespace.trim_start_matches("garden-"), k.name);
        let secret = Api::<Secret>::namespaced(client.clone(), &ns).get(names::SHOOT_SECRET).await.unwrap();
        assert_eq!(private_key_of(&secret).unwrap().public_key(), rec.public_key, "{k}: Secret and record disagree");
    }
    assert_eq!(recorded.len(), table.len(), "records for shoots the table does not hold");
    assert_eq!(secret_addresses.len(), table.len(), "Secrets for shoots the table does not hold");
    table
}

#[tokio::test]
async fn a_thousand_shoots_get_distinct_addresses() {
    let (server, controller) = setup("192.168.128.0/22", 1000).await;
    let report = controller.reconcile().await.unwrap();
    assert_eq!((report.assigned.len(), report.exhausted.len()), (1000, 0), "{:?}", report.problems);
    let table = assert_consistent(&server.client()).await;
    assert_eq!(table.len(), 1000);
    assert_eq!(table[&key(0)], ip("192.168.128.3"), "the first host after the network and the two slots");
    assert_eq!(table[&key(999)], ip("192.168.131.234"));

    let listed = list_allocations(&server.client(), "kubelink").await.unwrap();
    assert_eq!(listed.entries.len(), 1000, "one ShootPeer per allocated shoot: {:?}", listed.problems);
    let projected: BTreeMap<ShootKey, IpAddr> = listed.entries.iter().map(|a| (a.shoot.clone(), a.address)).collect();
    assert_eq!(projected, table, "the projection shows what the table holds");
    assert_eq!(shoot_condition(&server.client(), &shoot_name(7)).await.unwrap()["reason"], "Allocated");
    assert_eq!(seed_condition(&server.client()).await["status"], "True");

    // A second pass changes nothing.
    let again = controller.reconcile().await.unwrap();
    assert_eq!((again.assigned.len(), again.writes), (0, 0));
}

/// One malformed Shoot among 1000 good ones: every good shoot gets its address, keeps it on the next
/// pass, and the bad one is reported by name and field.
#[tokio::test]
async fn one_malformed_shoot_among_a_thousand_holds_up_no_other() {
    let (server, controller) = setup("192.168.128.0/22", 1000).await;
    let client = server.client();
    let mut bad = serde_json::to_value(shoot(&shoot_name(500), SEED)).unwrap();
    bad["spec"]["networking"]["nodes"] = json!({"not": "a string"});
    plant(&server, served("core.gardener.cloud", "v1beta1", "shoots"), PROJECT_NS, bad);
    let first = controller.reconcile().await.unwrap();
    assert_eq!((first.assigned.len(), first.exhausted.len()), (999, 0), "{:?}", first.problems);
    assert_eq!(first.skipped.len(), 1);
    let skipped = first.skipped[0].to_string();
    assert!(skipped.contains(&shoot_name(500)) && skipped.contains("spec.networking.nodes"), "{skipped}");
    let table = assert_consistent(&client).await;
    assert_eq!(table.len(), 999);
    assert!(!table.contains_key(&key(500)));
    let again = controller.reconcile().await.unwrap();
    assert!(again.assigned.is_empty() && again.released.is_empty(), "{again:?}");
    assert_eq!(assert_consistent(&client).await, table, "every good shoot keeps its address");
    assert_eq!(seed_condition(&client).await["reason"], "ObjectsSkipped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_allocators_racing_never_give_an_address_twice() {
    let server = apiserver::start().await;
    let client = server.client();
    create_seed(&client, &fixtures::seed(SEED, "192.168.128.0/22")).await.unwrap();
    let allocators: Vec<Controller> =
        (0..4).map(|_| Controller::new(client.clone(), client.clone(), Config::new(SEED))).collect();
    // Shoots arrive in batches while all four allocators run passes concurrently.
    let creator = {
        let client = client.clone();
        async move {
            for batch in 0..10 {
                create_shoots(&client, SEED, batch * 100..(batch + 1) * 100).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let racers = futures::future::join_all(allocators.iter().map(|c| async move {
        let mut passes = 0;
        loop {
            let report: PassReport = c.reconcile().await.unwrap();
            passes += 1;
            if report.table.len() == 1000 && report.writes == 0 {
                return passes;
            }
        }
    }));
    let ((), passes) = tokio::join!(creator, racers);
    assert!(passes.iter().all(|p| *p >= 1));
    assert_table_history_never_reassigns(&client).await;
    let table = assert_consistent(&client).await;
    assert_eq!(table.len(), 1000);
    let expected: BTreeSet<IpAddr> = kubelink_ipam::alloc::Pool::new("192.168.128.0/22".parse().unwrap())
        .allocate_many(&BTreeSet::new(), 1000)
        .into_iter()
        .collect();
    assert_eq!(table.values().copied().collect::<BTreeSet<_>>(), expected, "the lowest 1000 addresses, no gaps");
}

/// Replays every version of the Seed's table the server ever committed (a watch from the first
/// resourceVersion). No shoot is deleted in the race, so a lost update would show up as a shoot losing or
/// changing its address, or an address moving to another shoot.
async fn assert_table_history_never_reassigns(client: &kube::Client) {
    use futures::TryStreamExt;
    let seeds = Api::<Seed>::all(client.clone());
    let mut stream = seeds.watch(&WatchParams::default().timeout(1), "1").await.unwrap().boxed();
    let (mut owner, mut held) = (BTreeMap::<IpAddr, ShootKey>::new(), BTreeMap::<ShootKey, IpAddr>::new());
    let mut versions = 0;
    while let Some(event) = stream.try_next().await.unwrap() {
        let (WatchEvent::Added(seed) | WatchEvent::Modified(seed)) = event else { continue };
        let (table, _) = table_of(&seed);
        versions += 1;
        for (k, a) in table.iter() {
            assert_eq!(*owner.entry(*a).or_insert_with(|| k.clone()), *k, "{a} moved to another shoot");
            assert_eq!(*held.entry(k.clone()).or_insert(*a), *a, "{k} changed its address");
        }
        assert!(held.keys().all(|k| table.get(k).is_some()) || versions == 1, "a committed allocation was lost");
    }
    assert!(versions > 2, "the race produced only {versions} table versions");
}

#[tokio::test]
async fn a_released_address_goes_to_the_next_new_shoot() {
    let (server, controller) = setup("192.168.128.0/24", 5).await;
    let client = server.client();
    controller.reconcile().await.unwrap();
    let shoots = Api::<Shoot>::namespaced(client.clone(), PROJECT_NS);
    shoots.delete(&shoot_name(1), &DeleteParams::default()).await.unwrap(); // held .4
    let disable = json!({"metadata": {"annotations": {labels::TUNNEL: "false"}}});
    shoots.patch(&shoot_name(3), &PatchParams::default(), &Patch::Merge(&disable)).await.unwrap(); // held .6
    let report = controller.reconcile().await.unwrap();
    let released: BTreeSet<_> = report.released.iter().cloned().collect();
    assert_eq!(released, [(key(1), ip("192.168.128.4")), (key(3), ip("192.168.128.6"))].into());
    let ns3 = "shoot--dev--shoot-00003";
    assert!(Api::<Secret>::namespaced(client.clone(), ns3).get_opt(names::SHOOT_SECRET).await.unwrap().is_none());
    let state3 = Api::<ShootState>::namespaced(client.clone(), PROJECT_NS).get(&shoot_name(3)).await.unwrap();
    assert_eq!(record::read(&state3), Ok(None), "the record of a shoot that left the tunnel is removed");
    let cond = shoot_condition(&client, &shoot_name(3)).await.unwrap();
    assert_eq!((cond["status"].as_str(), cond["reason"].as_str()), (Some("False"), Some("Released")));

    create_shoots(&client, SEED, 10..12).await.unwrap();
    let report = controller.reconcile().await.unwrap();
    assert_eq!(report.assigned, [(key(10), ip("192.168.128.4")), (key(11), ip("192.168.128.6"))], "lowest free first");
    assert_consistent(&client).await;
}

#[tokio::test]
async fn a_full_pool_reports_exhausted_and_keeps_going() {
    let (server, controller) = setup("192.168.128.0/29", 6).await; // four assignable addresses
    let client = server.client();
    let report = controller.reconcile().await.unwrap();
    assert_eq!(report.exhausted, [key(4), key(5)]);
    assert_eq!(assert_consistent(&client).await.len(), 4);
    let cond = shoot_condition(&client, &shoot_name(5)).await.unwrap();
    assert_eq!((cond["status"].as_str(), cond["reason"].as_str()), (Some("False"), Some("Exhausted")));
    assert!(cond["message"].as_str().unwrap().contains("spec.wireguard.cidr 192.168.128.0/29 is exhausted"), "{cond}");
    assert_eq!(seed_condition(&client).await["reason"], "Exhausted");
    let events = Api::<Event>::namespaced(client.clone(), PROJECT_NS).list(&ListParams::default()).await.unwrap().items;
    let warning = events.iter().find(|e| regarding(e) == Some(&shoot_name(5)[..])).unwrap();
    assert_eq!((warning.type_.as_deref(), warning.reason.as_deref()), (Some("Warning"), Some("Exhausted")));

    // Freeing one address lets a waiting shoot in on the next pass.
    Api::<Shoot>::namespaced(client.clone(), PROJECT_NS)
        .delete(&shoot_name(0), &DeleteParams::default())
        .await
        .unwrap();
    let report = controller.reconcile().await.unwrap();
    assert_eq!(report.assigned, [(key(4), ip("192.168.128.3"))]);
    assert_eq!(shoot_condition(&client, &shoot_name(4)).await.unwrap()["reason"], "Allocated");
}

/// The same address written by hand into two records: one shoot keeps it (the one whose ShootState
/// records it), the other moves, and both the Shoot's and the Seed's condition say so with a typed
/// reason; nothing moves without a report.
#[tokio::test]
async fn one_address_written_into_two_records_is_reported_and_only_one_shoot_moves() {
    let (server, controller) = setup("192.168.128.0/24", 3).await;
    let client = server.client();
    controller.reconcile().await.unwrap();
    let before = assert_consistent(&client).await;

    // The Seed's table, edited by hand: shoot 1 on shoot 0's address.
    let seed = Api::<Seed>::all(client.clone()).get(SEED).await.unwrap();
    let (table, _) = table_of(&seed);
    let mut edited: BTreeMap<String, String> = table.iter().map(|(k, a)| (k.to_string(), a.to_string())).collect();
    edited.insert(key(1).to_string(), before[&key(0)].to_string());
    let text = serde_json::to_string(&edited).unwrap();
    let patch = json!({"metadata": {"annotations": {kubelink_ipam::table::TABLE_ANNOTATION: text}}});
    Api::<Seed>::all(client.clone()).patch(SEED, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let report = controller.reconcile().await.unwrap();
    let after = assert_consistent(&client).await;
    assert_eq!(after, before, "shoot 0 keeps its address (its record), shoot 1 goes back to the free one");
    assert!(report.problems.iter().any(|p| p.contains("was claimed by shoots")), "{:?}", report.problems);
    let cond = shoot_condition(&client, &shoot_name(1)).await.unwrap();
    assert_eq!((cond["status"].as_str(), cond["reason"].as_str()), (Some("True"), Some("AddressConflict")), "{cond}");
    let message = cond["message"].as_str().unwrap();
    assert!(message.contains(&before[&key(0)].to_string()) && message.contains(&shoot_name(0)), "{message}");
    let seed_cond = seed_condition(&client).await;
    assert_eq!((seed_cond["status"].as_str(), seed_cond["reason"].as_str()), (Some("False"), Some("AddressConflict")));
    let events = events_about(&client, PROJECT_NS, &shoot_name(1)).await;
    let warned = |e: &Event| (e.type_.as_deref(), e.reason.as_deref()) == (Some("Warning"), Some("AddressConflict"));
    assert!(events.iter().any(warned), "{events:?}");
    assert_eq!(shoot_condition(&client, &shoot_name(0)).await.unwrap()["reason"], "Allocated");

    // The next pass: the Seed is Ready again, the shoot's report stays while it holds that address.
    controller.reconcile().await.unwrap();
    assert_eq!(seed_condition(&client).await["reason"], "Ready");
    assert_eq!(shoot_condition(&client, &shoot_name(1)).await.unwrap()["reason"], "AddressConflict");

    // Two ShootStates recording one address (a restored backup) while the table lost both shoots.
    let states = Api::<ShootState>::namespaced(client.clone(), PROJECT_NS);
    let mut state = states.get(&shoot_name(2)).await.unwrap();
    let mut entry = state.entry(record::ENTRY_NAME).unwrap().clone();
    entry.data["address"] = json!(before[&key(0)].to_string());
    state.set_entry(entry);
    states.replace(&shoot_name(2), &PostParams::default(), &state).await.unwrap();
    let drop_table = json!({"metadata": {"annotations": {kubelink_ipam::table::TABLE_ANNOTATION: null}}});
    Api::<Seed>::all(client.clone()).patch(SEED, &PatchParams::default(), &Patch::Merge(&drop_table)).await.unwrap();
    // A new controller (a restart): the running one reads a ShootState it wrote again only after its
    // resync period.
    let restarted = Controller::new(client.clone(), client.clone(), Config::new(SEED));
    restarted.reconcile().await.unwrap();
    let rebuilt = assert_consistent(&client).await;
    assert_eq!(rebuilt[&key(0)], before[&key(0)], "the first record keeps the address");
    assert_ne!(rebuilt[&key(2)], before[&key(0)]);
    let cond = shoot_condition(&client, &shoot_name(2)).await.unwrap();
    assert_eq!(cond["reason"], "AddressConflict", "{cond}");
    assert!(cond["message"].as_str().unwrap().contains("ShootState record"), "{cond}");
}

/// Pool exhausted: the shoots left over get a typed condition (`Exhausted`), the Seed too, and no
/// shoot that has an address loses it.
#[tokio::test]
async fn an_exhausted_pool_never_takes_an_address_from_a_shoot_that_has_one() {
    let (server, controller) = setup("192.168.128.0/29", 4).await; // four assignable addresses
    let client = server.client();
    controller.reconcile().await.unwrap();
    let full = assert_consistent(&client).await;
    create_shoots(&client, SEED, 4..6).await.unwrap();
    for _ in 0..2 {
        let report = controller.reconcile().await.unwrap();
        assert_eq!(report.exhausted, [key(4), key(5)]);
        assert!(report.assigned.is_empty() && report.released.is_empty(), "{report:?}");
        assert_eq!(assert_consistent(&client).await, full, "an address moved while the pool was full");
    }
    for i in 4..6 {
        let cond = shoot_condition(&client, &shoot_name(i)).await.unwrap();
        assert_eq!((cond["status"].as_str(), cond["reason"].as_str()), (Some("False"), Some("Exhausted")));
    }
    assert_eq!(seed_condition(&client).await["reason"], "Exhausted");
}

#[tokio::test]
async fn every_overlap_rule_is_rejected_naming_both_ranges() {
    for (cidr, with) in [
        ("10.250.4.0/22", "spec.networks.nodes 10.250.0.0/16"),
        ("100.97.0.0/22", "spec.networks.pods 100.96.0.0/11"),
        ("100.64.8.0/22", "spec.networks.services 100.64.0.0/13"),
        ("169.254.169.0/24", "spec.networks.blockCIDRs[0] 169.254.169.254/32"),
        ("242.1.0.0/22", "Gardener's reserved range 242.0.0.0/8"),
    ] {
        let (server, controller) = setup(cidr, 2).await;
        let report = controller.reconcile().await.unwrap();
        let err = report.seed_error.expect("the seed's CIDR is rejected");
        let message = err.to_string();
        assert!(message.contains(&format!("spec.wireguard.cidr {cidr}")) && message.contains(with), "{message}");
        let cond = seed_condition(&server.client()).await;
        assert_eq!((cond["reason"].as_str(), cond["message"].as_str()), (Some("Overlap"), Some(message.as_str())));
        assert!(report.table.is_empty() && report.assigned.is_empty());
    }
}

#[tokio::test]
async fn the_parent_seed_and_shoot_networks_must_not_overlap() {
    // seed-a is a managed seed: it runs on Shoot garden/seed-a, which lives on seed-parent.
    let (server, controller) = setup("192.168.128.0/22", 3).await;
    let client = server.client();
    create_seed(&client, &fixtures::seed("seed-parent", "192.168.128.0/24")).await.unwrap();
    let mut hosting = shoot(SEED, "seed-parent");
    hosting.metadata.namespace = Some("garden".into());
    Api::<Shoot>::namespaced(client.clone(), "garden").create(&PostParams::default(), &hosting).await.unwrap();
    let err = controller.reconcile().await.unwrap().seed_error.unwrap().to_string();
    assert!(err.contains("192.168.128.0/22") && err.contains("parent seed seed-parent 192.168.128.0/24"), "{err}");

    // With a distinct range, one shoot whose pods overlap the tunnel is rejected; the others go on.
    let fix = json!({"spec": {"wireguard": {"cidr": "192.168.132.0/22"}}});
    Api::<Seed>::all(client.clone()).patch(SEED, &PatchParams::default(), &Patch::Merge(&fix)).await.unwrap();
    let bad = json!({"spec": {"networking": {"pods": "192.168.0.0/16"}}});
    Api::<Shoot>::namespaced(client.clone(), PROJECT_NS)
        .patch(&shoot_name(1), &PatchParams::default(), &Patch::Merge(&bad))
        .await
        .unwrap();
    let report = controller.reconcile().await.unwrap();
    assert_eq!(report.rejected.len(), 1);
    let message = report.rejected[0].1.to_string();
    assert!(
        message.contains("192.168.132.0/22") && message.contains("spec.networking.pods 192.168.0.0/16"),
        "{message}"
    );
    assert_eq!(report.assigned.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(), [key(0), key(2)]);
    let cond = shoot_condition(&client, &shoot_name(1)).await.unwrap();
    assert_eq!(cond["reason"], "Overlap");
}

#[tokio::test]
async fn malformed_input_is_reported_and_skipped() {
    // A malformed seed CIDR: reported on the Seed, nothing allocated, no panic.
    let (server, controller) = setup("192.168.128.0/33", 2).await;
    let report = controller.reconcile().await.unwrap();
    assert_eq!(report.seed_error.as_ref().map(|e| e.reason()), Some("InvalidCidr"));
    let cond = seed_condition(&server.client()).await;
    assert!(cond["message"].as_str().unwrap().starts_with("spec.wireguard.cidr: \"192.168.128.0/33\""), "{cond}");

    // A malformed shoot network, a ShootState with a garbage key, one with a garbage address, a bad
    // annotation: each reported, the other shoots allocated.
    let (server, controller) = setup("192.168.128.0/24", 5).await;
    let client = server.client();
    let shoots = Api::<Shoot>::namespaced(client.clone(), PROJECT_NS);
    let bad_net = json!({"spec": {"networking": {"nodes": "10.0.0.0/99"}}});
    shoots.patch(&shoot_name(0), &PatchParams::default(), &Patch::Merge(&bad_net)).await.unwrap();
    let bad_annotation = json!({"metadata": {"annotations": {labels::TUNNEL: "maybe"}}});
    shoots.patch(&shoot_name(4), &PatchParams::default(), &Patch::Merge(&bad_annotation)).await.unwrap();
    let states = Api::<ShootState>::namespaced(client.clone(), PROJECT_NS);
    for (i, address, key) in
        [(1, "192.168.128.77", "garbage"), (2, "not-an-ip", PrivateKey::generate().public_key().to_string().as_str())]
    {
        let state: ShootState = serde_json::from_value(json!({
            "metadata": {"name": shoot_name(i), "namespace": PROJECT_NS},
            "spec": {"gardener": [{"name": "wireguard-tunnel", "type": "kubelink.gardener.cloud/wireguard-tunnel",
                                   "data": {"address": address, "publicKey": key}}]},
        }))
        .unwrap();
        states.create(&PostParams::default(), &state).await.unwrap();
    }
    let report = controller.reconcile().await.unwrap();
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(report.rejected[0].0, key(0));
    assert!(report.rejected[0].1.to_string().contains("shoot garden-dev/shoot-00000 spec.networking.nodes"));
    let problems = report.problems.join("\n");
    assert!(
        problems.contains("ShootState garden-dev/shoot-00001 spec.gardener[wireguard-tunnel].data.publicKey"),
        "{problems}"
    );
    assert!(
        problems.contains("ShootState garden-dev/shoot-00002 spec.gardener[wireguard-tunnel].data.address"),
        "{problems}"
    );
    assert!(problems.contains(labels::TUNNEL), "{problems}");
    let table = assert_consistent(&client).await;
    assert_eq!(table.keys().cloned().collect::<Vec<_>>(), [key(1), key(2), key(3), key(4)]);
    assert_eq!(shoot_condition(&client, &shoot_name(0)).await.unwrap()["reason"], "InvalidCidr");
}

#[tokio::test]
async fn unknown_fields_survive_every_write() {
    let server = apiserver::start().await;
    let client = server.client();
    let mut seed = serde_json::to_value(fixtures::seed(SEED, "192.168.128.0/24")).unwrap();
    seed["spec"]["provider"] = json!({"type": "local", "region": "here"});
    seed["spec"]["networks"]["futureField"] = json!([1, 2]);
    seed["metadata"]["annotations"] = json!({"other.io/keep": "me"});
    create_seed(&client, &serde_json::from_value(seed).unwrap()).await.unwrap();
    let mut shoot = serde_json::to_value(shoot(&shoot_name(0), SEED)).unwrap();
    shoot["spec"]["kubernetes"] = json!({"version": "1.33.0"});
    let shoots = Api::<Shoot>::namespaced(client.clone(), PROJECT_NS);
    shoots.create(&PostParams::default(), &serde_json::from_value(shoot).unwrap()).await.unwrap();
    let status = json!({"status": {"technicalID": "shoot--dev--shoot-00000", "conditions": [{"type": "APIServerAvailable", "status": "True"}]}});
    shoots.patch_status(&shoot_name(0), &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    let state = json!({
        "apiVersion": "core.gardener.cloud/v1beta1", "kind": "ShootState",
        "metadata": {"name": shoot_name(0), "namespace": PROJECT_NS},
        "spec": {"gardener": [{"name": "ca", "type": "secret", "labels": {"x": "y"}, "data": {"cert": "..."}}],
                 "extensions": [{"kind": "Infrastructure", "state": {"vpc": "v"}}]},
    });
    Api::<ShootState>::namespaced(client.clone(), PROJECT_NS)
        .create(&PostParams::default(), &serde_json::from_value(state).unwrap())
        .await
        .unwrap();

    Controller::new(client.clone(), client.clone(), Config::new(SEED)).reconcile().await.unwrap();

    let seed = serde_json::to_value(Api::<Seed>::all(client.clone()).get(SEED).await.unwrap()).unwrap();
    assert_eq!(seed["spec"]["provider"]["region"], "here");
    assert_eq!(seed["spec"]["networks"]["futureField"], json!([1, 2]));
    assert_eq!(seed["metadata"]["annotations"]["other.io/keep"], "me");
    let shoot = serde_json::to_value(shoots.get(&shoot_name(0)).await.unwrap()).unwrap();
    assert_eq!(shoot["spec"]["kubernetes"]["version"], "1.33.0");
    assert_eq!(shoot["status"]["conditions"][0]["type"], "APIServerAvailable");
    assert_eq!(shoot["status"]["conditions"][1]["type"], SHOOT_CONDITION);
    let state = Api::<ShootState>::namespaced(client.clone(), PROJECT_NS).get(&shoot_name(0)).await.unwrap();
    let state = serde_json::to_value(state).unwrap();
    assert_eq!(state["spec"]["gardener"][0]["labels"]["x"], "y");
    assert_eq!(state["spec"]["gardener"][1]["name"], "wireguard-tunnel");
    assert_eq!(state["spec"]["extensions"][0]["state"]["vpc"], "v");
    // The technical ID names the control-plane namespace.
    Api::<Secret>::namespaced(client.clone(), "shoot--dev--shoot-00000").get(names::SHOOT_SECRET).await.unwrap();
}

#[tokio::test]
async fn the_shoot_secret_follows_the_gateways_and_keeps_its_key() {
    let (server, controller) = setup("192.168.128.0/24", 1).await;
    let client = server.client();
    controller.reconcile().await.unwrap();
    let secrets = Api::<Secret>::namespaced(client.clone(), "shoot--dev--shoot-00000");
    let first = secrets.get(names::SHOOT_SECRET).await.unwrap();
    let data = |s: &Secret, k: &str| s.data.as_ref().unwrap().get(k).map(|v| String::from_utf8(v.0.clone()).unwrap());
    assert_eq!(data(&first, "address").as_deref(), Some("192.168.128.3/24"));
    assert_eq!(data(&first, "gateway-0-address").as_deref(), Some("192.168.128.1"));
    assert_eq!(data(&first, "gateway-1-address").as_deref(), Some("192.168.128.2"));
    assert_eq!(data(&first, "gateway-0-endpoint"), None, "not published yet");

    // The IPAM created the slot Secrets with their keys; the seed agent holding slot 0 publishes its
    // endpoint there (the slot's private key must never be copied into a shoot's Secret).
    let slots = Api::<Secret>::namespaced(client.clone(), "kubelink");
    let slot0 = slots.get("kubelink-gateway-0").await.unwrap();
    let gateway: PrivateKey = data(&slot0, "privateKey").unwrap().parse().unwrap();
    assert_eq!(data(&slot0, "publicKey"), Some(gateway.public_key().to_string()));
    let endpoint = json!({"data": {"endpoint": k8s_openapi::ByteString(b"gw0.seed-a.example.test:51820".to_vec())}});
    slots.patch("kubelink-gateway-0", &PatchParams::default(), &Patch::Merge(&endpoint)).await.unwrap();
    controller.reconcile().await.unwrap();
    let second = secrets.get(names::SHOOT_SECRET).await.unwrap();
    assert_eq!(data(&second, "gateway-0-endpoint").as_deref(), Some("gw0.seed-a.example.test:51820"));
    assert_eq!(data(&second, "gateway-0-publicKey"), Some(gateway.public_key().to_string()));
    assert!(!second.data.as_ref().unwrap().values().any(|v| v.0 == gateway.expose_base64().as_bytes()));
    assert_eq!(private_key_of(&second).unwrap(), private_key_of(&first).unwrap(), "the shoot's key is kept");
    let recorded: PublicKey = list_allocations(&client, "kubelink").await.unwrap().entries[0].public_key;
    assert_eq!(recorded, private_key_of(&second).unwrap().public_key());
}

#[tokio::test]
async fn the_running_controller_and_the_agent_watch_react_to_changes() {
    let (server, controller) = setup("192.168.128.0/24", 0).await;
    let client = server.client();
    let mut cfg = controller.config().clone();
    cfg.resync = Duration::from_secs(3600);
    let running = tokio::spawn(Controller::new(client.clone(), client.clone(), cfg).run());
    let mut allocations = Box::pin(watch_allocations(client.clone(), "kubelink".into()));
    create_shoots(&client, SEED, 0..3).await.unwrap();
    let wanted = |n: usize| move |a: &kubelink_ipam::store::Allocations| a.entries.len() == n;
    let deadline = Duration::from_secs(20);
    let seen = tokio::time::timeout(deadline, first_matching(&mut allocations, wanted(3)))
        .await
        .expect("the controller allocates three new shoots and the watch reports them");
    assert_eq!(seen.entries[2].address, ip("192.168.128.5"));

    Api::<Shoot>::namespaced(client.clone(), PROJECT_NS)
        .delete(&shoot_name(1), &DeleteParams::default())
        .await
        .unwrap();
    let after = tokio::time::timeout(deadline, first_matching(&mut allocations, wanted(2)))
        .await
        .expect("the release shows up in the watch");
    assert_eq!(after.entries.iter().map(|e| e.shoot.clone()).collect::<Vec<_>>(), [key(0), key(2)]);
    running.abort();
}

#[tokio::test]
async fn a_lost_table_is_rebuilt_from_the_shootstate_records() {
    let (server, controller) = setup("192.168.128.0/24", 4).await;
    let client = server.client();
    controller.reconcile().await.unwrap();
    let shoots = Api::<Shoot>::namespaced(client.clone(), PROJECT_NS);
    shoots.delete(&shoot_name(1), &DeleteParams::default()).await.unwrap();
    controller.reconcile().await.unwrap(); // .4 is free now; 0, 2, 3 hold .3, .5, .6
    let before = assert_consistent(&client).await;

    let drop_table = json!({"metadata": {"annotations": {kubelink_ipam::table::TABLE_ANNOTATION: null}}});
    Api::<Seed>::all(client.clone()).patch(SEED, &PatchParams::default(), &Patch::Merge(&drop_table)).await.unwrap();
    create_shoots(&client, SEED, 10..11).await.unwrap();
    let report = controller.reconcile().await.unwrap();
    let after = assert_consistent(&client).await;
    for (k, a) in &before {
        assert_eq!(after.get(k), Some(a), "{k} keeps its recorded address");
    }
    assert_eq!(after[&key(10)], ip("192.168.128.4"), "the new shoot gets the free gap, not a recorded address");
    assert_eq!(report.assigned.len(), 4, "three adopted, one new");
}

#[tokio::test]
async fn ipv6_ranges_work_end_to_end() {
    let (server, controller) = setup("fd00:10:20::/120", 3).await;
    let report = controller.reconcile().await.unwrap();
    assert_eq!(report.seed_error, None);
    let addresses: Vec<String> = report.assigned.iter().map(|(_, a)| a.to_string()).collect();
    assert_eq!(addresses, ["fd00:10:20::3", "fd00:10:20::4", "fd00:10:20::5"]);
    let secret =
        Api::<Secret>::namespaced(server.client(), "shoot--dev--shoot-00000").get(names::SHOOT_SECRET).await.unwrap();
    assert_eq!(secret.data.unwrap()["address"].0, b"fd00:10:20::3/120");
    assert_consistent(&server.client()).await;
}

/// The first allocation snapshot the stream reports that satisfies `wanted`.
async fn first_matching<S, E>(
    allocations: &mut std::pin::Pin<Box<S>>,
    wanted: impl Fn(&kubelink_ipam::store::Allocations) -> bool,
) -> kubelink_ipam::store::Allocations
where
    S: futures::Stream<Item = Result<kubelink_ipam::store::Allocations, E>>,
{
    while let Some(item) = allocations.next().await {
        if let Ok(a) = item
            && wanted(&a)
        {
            return a;
        }
    }
    panic!("the allocation stream ended");
}

/// The index of a served kind, for planting objects with [`apiserver::Store::plant`].
fn served(group: &str, version: &str, plural: &str) -> usize {
    apiserver::kinds::ResourceKind::find(group, version, plural).expect("served")
}

/// Replaces an object in the store by one the API refuses today: the API test server validates types as a
/// real one does, so a malformed object is planted past it, as a real cluster may hold one written under
/// an older schema or by a conversion bug.
fn plant(server: &ApiServer, kind: usize, namespace: &str, object: Value) {
    let name = object["metadata"]["name"].as_str().unwrap().to_string();
    let _ = server.store().delete(kind, namespace, &name, None);
    server.store().plant(kind, namespace, object).unwrap();
}

/// The name of the object an Event is about.
fn regarding(e: &Event) -> Option<&str> {
    e.regarding.as_ref()?.name.as_deref()
}

async fn events_about(client: &kube::Client, namespace: &str, name: &str) -> Vec<Event> {
    let events = Api::<Event>::namespaced(client.clone(), namespace).list(&ListParams::default()).await.unwrap();
    events.items.into_iter().filter(|e| regarding(e) == Some(name)).collect()
}

#[tokio::test]
async fn one_malformed_object_of_each_kind_is_reported_and_skipped_while_the_other_shoots_get_addresses() {
    let (server, _) = setup("192.168.128.0/24", 4).await;
    let client = server.client();
    // ShootStates are read again after `resync` (a malformed one is noticed then): here, every pass.
    let cfg = Config { resync: Duration::ZERO, ..Config::new(SEED) };
    let controller = Controller::new(client.clone(), client.clone(), cfg);
    let first = controller.reconcile().await.unwrap();
    assert_eq!(first.assigned.len(), 4);
    let before = assert_consistent(&client).await;

    let shoots = served("core.gardener.cloud", "v1beta1", "shoots");
    let states = served("core.gardener.cloud", "v1beta1", "shootstates");
    let peers = served("kubelink.gardener.cloud", "v1alpha1", "shootpeers");
    // shoot-00001 (allocated) turns malformed, shoot-00010 is new and malformed.
    for (i, pods) in [(1, json!(5)), (10, json!(["100.96.0.0/11"]))] {
        let mut bad = serde_json::to_value(shoot(&shoot_name(i), SEED)).unwrap();
        bad["spec"]["networking"]["pods"] = pods;
        plant(&server, shoots, PROJECT_NS, bad);
    }
    // shoot-00002's ShootState (with its record) turns malformed.
    let bad_state = json!({"apiVersion": "core.gardener.cloud/v1beta1", "kind": "ShootState",
                           "metadata": {"name": shoot_name(2), "namespace": PROJECT_NS},
                           "spec": {"gardener": {"name": "not-a-list"}}});
    plant(&server, states, PROJECT_NS, bad_state);
    // shoot-00003's ShootPeer on the seed turns malformed.
    let peer_name = "shoot--dev--shoot-00003";
    let bad_peer = json!({"apiVersion": "kubelink.gardener.cloud/v1alpha1", "kind": "ShootPeer",
                          "metadata": {"name": peer_name, "namespace": "kubelink"},
                          "spec": {"shoot": "garden-dev/shoot-00003", "address": 5, "publicKey": "k"}});
    plant(&server, peers, "kubelink", bad_peer);
    // Typed lists of each kind now fail as a whole, as they did in the controller before.
    assert!(Api::<Shoot>::all(client.clone()).list(&ListParams::default()).await.is_err());

    // `kubelink ipam list` still lists the others and names the bad one.
    let listed = list_allocations(&client, "kubelink").await.unwrap();
    assert_eq!(listed.entries.len(), 3);
    assert!(listed.problems.iter().any(|p| p.contains(&format!("ShootPeer kubelink/{peer_name} spec.address"))));

    // New good shoots come while the bad ones are there.
    create_shoots(&client, SEED, 4..7).await.unwrap();
    let report = controller.reconcile().await.unwrap();
    let assigned: BTreeSet<ShootKey> = report.assigned.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(assigned, [key(4), key(5), key(6)].into(), "{:?}", report.skipped);
    let skipped: BTreeSet<String> = report.skipped.iter().map(|s| format!("{} {}", s.object(), s.field)).collect();
    let want: BTreeSet<String> = [
        "Shoot garden-dev/shoot-00001 spec.networking.pods",
        "Shoot garden-dev/shoot-00010 spec.networking.pods",
        "ShootState garden-dev/shoot-00002 spec.gardener",
        "ShootPeer kubelink/shoot--dev--shoot-00003 spec.address",
    ]
    .map(String::from)
    .into();
    assert_eq!(skipped, want);
    // The held shoots keep their addresses; the new malformed one gets none; nothing moved.
    let table: BTreeMap<ShootKey, IpAddr> = report.table.iter().map(|(k, a)| (k.clone(), *a)).collect();
    for i in 0..4 {
        assert_eq!(table[&key(i)], before[&key(i)], "{}", key(i));
    }
    assert!(!table.contains_key(&key(10)));
    assert!(report.released.is_empty(), "{:?}", report.released);
    println!("shoots with an address while 4 objects are skipped: {}", table.len());

    // Each is reported on itself by an Event naming the field.
    for (namespace, name, field) in [
        (PROJECT_NS, shoot_name(1), "spec.networking.pods"),
        (PROJECT_NS, shoot_name(10), "spec.networking.pods"),
        ("kubelink", peer_name.to_string(), "spec.address"),
    ] {
        let events = events_about(&client, namespace, &name).await;
        let reported = events.iter().find(|e| e.reason.as_deref() == Some("InvalidObject")).unwrap_or_else(|| {
            panic!("no InvalidObject Event on {name}: {events:?}");
        });
        assert!(reported.note.as_deref().unwrap().starts_with(field), "{reported:?}");
        assert_eq!(reported.type_.as_deref(), Some("Warning"));
    }
    // The Seed's condition does not say all is well, and names them.
    let cond = seed_condition(&client).await;
    assert_eq!((cond["status"].as_str(), cond["reason"].as_str()), (Some("False"), Some("ObjectsSkipped")), "{cond}");
    let message = cond["message"].as_str().unwrap();
    assert!(
        message.contains("4 objects skipped") && message.contains("Shoot garden-dev/shoot-00001 spec.networking.pods"),
        "{message}"
    );

    // The malformed ShootPeer was rewritten from the record; a second pass reports nothing new.
    let invalid_object_events = || async {
        let all = Api::<Event>::all(client.clone()).list(&ListParams::default()).await.unwrap().items;
        all.iter().filter(|e| e.reason.as_deref() == Some("InvalidObject")).count()
    };
    let events = invalid_object_events().await;
    assert_eq!(events, 4);
    let again = controller.reconcile().await.unwrap();
    assert_eq!(again.skipped.len(), 3, "{:?}", again.skipped);
    assert_eq!(invalid_object_events().await, events, "an object already reported is not reported again");
    assert_eq!(list_allocations(&client, "kubelink").await.unwrap().entries.len(), 7);

    // Fixed objects are taken up again, and the Seed is Ready.
    let api = Api::<Shoot>::namespaced(client.clone(), PROJECT_NS);
    for i in [1, 10] {
        server.store().delete(shoots, PROJECT_NS, &shoot_name(i), None).unwrap();
        api.create(&PostParams::default(), &shoot(&shoot_name(i), SEED)).await.unwrap();
    }
    server.store().delete(states, PROJECT_NS, &shoot_name(2), None).unwrap();
    let fixed = controller.reconcile().await.unwrap();
    assert!(fixed.skipped.is_empty(), "{:?}", fixed.skipped);
    assert_eq!(fixed.assigned.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(), [key(10)]);
    let table = assert_consistent(&client).await;
    assert_eq!((table[&key(1)], table[&key(2)]), (before[&key(1)], before[&key(2)]), "nothing reassigned");
    assert_eq!(seed_condition(&client).await["reason"], "Ready");
}

#[tokio::test]
async fn a_wrong_typed_seed_field_is_named_on_the_seeds_condition() {
    // Gardener's real API: kubelink's settings in a providerConfig, which the API server does not type.
    let server = apiserver::start().await;
    let client = server.client();
    let mut seed = fixtures::seed(SEED, "192.168.128.0/22");
    seed.spec.wireguard = None;
    seed.spec.extensions = serde_json::from_value(json!([
        {"type": "kubelink-wireguard", "providerConfig": {"enabled": true, "cidr": 5}},
    ]))
    .unwrap();
    create_seed(&client, &seed).await.unwrap();
    create_shoots(&client, SEED, 0..1).await.unwrap();
    let controller = Controller::new(client.clone(), client.clone(), Config::new(SEED));
    let report = controller.reconcile().await.unwrap();
    let error = report.seed_error.expect("a seed error").to_string();
    assert!(error.contains("spec.extensions[0].providerConfig.cidr") && !error.contains("column"), "{error}");
    let cond = seed_condition(&client).await;
    assert_eq!((cond["status"].as_str(), cond["reason"].as_str()), (Some("False"), Some("InvalidType")));
    assert!(cond["message"].as_str().unwrap().contains("spec.extensions[0].providerConfig.cidr"), "{cond}");

    // A typed field of the wrong type: the API refuses it, naming the field ...
    let mut bad = serde_json::to_value(fixtures::seed("seed-b", "192.168.128.0/22")).unwrap();
    bad["spec"]["wireguard"]["enabled"] = json!("yes");
    let object: kube::api::DynamicObject = serde_json::from_value(bad.clone()).unwrap();
    let api = Api::<kube::api::DynamicObject>::all_with(client.clone(), &seed_resource());
    let refused = api.create(&PostParams::default(), &object).await;
    let refused = refused.unwrap_err().to_string();
    assert!(refused.contains("spec.wireguard.enabled"), "{refused}");
    // ... and a Seed stored that way anyhow is named by the controller too, not by a column number.
    plant(&server, served("core.gardener.cloud", "v1beta1", "seeds"), "", bad);
    let controller = Controller::new(client.clone(), client.clone(), Config::new("seed-b"));
    let error = match controller.reconcile().await {
        Ok(report) => report.seed_error.expect("a seed error").to_string(),
        // The API refuses the condition on a Seed it cannot decode; the error still names the field.
        Err(e) => e.to_string(),
    };
    assert!(error.contains("spec.wireguard.enabled") && !error.contains("column"), "{error}");
}

fn seed_resource() -> kube::api::ApiResource {
    kube::api::ApiResource::erase::<Seed>(&())
}
