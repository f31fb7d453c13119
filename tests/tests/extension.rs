//! kubelink's extension controller on the real kube-apiserver with Gardener's own CRDs, driven by the
//! gardenlet stand-in (`tests/src/gardenlet.rs`) exactly as gardenlet drives an extension: the seed's
//! Extension is the seed's configuration, shoots come and go as Extension objects, bad input keeps
//! the last good state, a deleted Extension frees its address, and a migrated shoot keeps its key.

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::PostParams;
use kubelink_ipam::contract::names;
use kubelink_ipam::extension::controller::{self, Config};
use kubelink_ipam::extension::objects::{Extension, TYPE};
use kubelink_ipam::extension::table_store;
use kubelink_ipam::managed::ManagedResource;
use kubelink_ipam::projection::{SeedTunnel, ShootPeer};
use kubelink_ipam::secret::private_key_of;
use kubelink_tests::gardenlet::{Gardenlet, SeedFixture, ShootFixture, ShootInput, Timing};
use kubelink_tests::k8s::{self, Cluster};
use serde_json::{Value, json};

const NAMESPACE: &str = "kubelink";
const CIDR: &str = "192.168.128.0/22";

/// A seed: its real control plane, kubelink's controller on it, and gardenlet's stand-in.
struct Seed {
    cluster: Cluster,
    gardenlet: Gardenlet,
    fixture: SeedFixture,
    /// The controller's configuration, as the rendered Deployment gives it.
    cfg: Config,
    _controller: tokio::task::JoinHandle<()>,
}

/// The extension controller with `client`'s identity, in this process.
fn spawn_controller(client: kube::Client, cfg: Config) -> tokio::task::JoinHandle<()> {
    tokio::spawn(controller::run(client, cfg, std::sync::Arc::new(|_: &controller::Reconciled| {})))
}

fn seed_networks() -> Value {
    json!({"networks": {"nodes": "10.250.0.0/16", "pods": "10.96.0.0/11", "services": "10.64.0.0/13",
                        "blockCIDRs": ["169.254.169.254/32"]}})
}

/// A seed with kubelink installed by the real helm CLI as gardenlet configures it (the controller
/// on, gardenlet's `gardener.seed` values), and the controller running with the rendered
/// Deployment's ServiceAccount token, seed name and Seed spec: every test below also proves the
/// chart's grants suffice.
async fn seed(test: &str, name: &str) -> Option<Seed> {
    let _ = tracing_subscriber::fmt().with_env_filter("kubelink_ipam=debug").with_test_writer().try_init();
    // One control plane per seed; its name (the work directory's) first, as only 24 characters count.
    let cluster = k8s::own_for_test(&format!("{name}-{test}"), true).await?;
    cluster.ensure_namespace("garden").await.unwrap();
    let objects = install_chart(&cluster, name).await;
    let deployment = find(&objects, "Deployment", "kubelink-controller");
    let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
    let seed_name = env.as_array().unwrap().iter().find(|e| e["name"] == "KUBELINK_SEED").unwrap()["value"].clone();
    assert_eq!(seed_name, name, "the seed name comes from gardener.seed.name");
    let seed_json: Value =
        serde_json::from_str(find(&objects, "ConfigMap", "kubelink-seed")["data"]["seed.json"].as_str().unwrap())
            .unwrap();
    let seed = kubelink_ipam::decode::decode_value(&json!({"metadata": {"name": name}, "spec": seed_json})).unwrap();
    let token = cluster.token_for(NAMESPACE, "kubelink-controller").await.unwrap();
    let cfg = Config {
        namespace: NAMESPACE.into(),
        seed_name: name.into(),
        seed: Some(seed),
        resync: Duration::from_secs(300),
        // The chart's default, as its Deployment passes it (`--deployed-slots`).
        deployed_slots: 2,
    };
    let as_controller = cluster.client_with_token(&token).await.unwrap();
    let controller = spawn_controller(as_controller, cfg.clone());
    // gardenlet gives up on a lastError after 30 s; here after 1 s, and on anything else after 30 s.
    let timing =
        Timing { timeout: Duration::from_secs(30), severe_threshold: Duration::from_secs(1), ..Timing::default() };
    let gardenlet = Gardenlet::new(cluster.client().await.unwrap()).with_timing(timing);
    Some(Seed { cluster, gardenlet, fixture: SeedFixture::new(name), cfg, _controller: controller })
}

/// `helm install` of charts/kubelink into [`NAMESPACE`] with the values a ControllerDeployment gives
/// and the `gardener` values gardenlet injects; the rendered objects.
async fn install_chart(cluster: &Cluster, seed: &str) -> Vec<Value> {
    cluster.ensure_namespace(NAMESPACE).await.unwrap();
    let values = json!({"controller": {"enabled": true}, "crds": {"enabled": false},
                        "gardener": {"version": "1.149.0", "seed": {"name": seed, "spec": seed_networks()}}});
    let kubeconfig = cluster.admin_kubeconfig_file().unwrap();
    kubelink_tests::helm::install(&kubelink_tests::helm::chart("kubelink"), &kubeconfig, NAMESPACE, "kubelink", values)
        .await
        .unwrap()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn seed_config(cidr: &str) -> Value {
    json!({"cidr": cidr, "slots": 2, "slotEndpoints": ["gw0.seed.example:51820", "gw1.seed.example:51820"]})
}

impl Seed {
    async fn client(&self) -> kube::Client {
        self.cluster.client().await.unwrap()
    }

    /// gardenlet's Cluster for `shoot` (the Seed it embeds carries the networks).
    async fn prepare(&self, shoot: &ShootFixture) -> String {
        let mut seed = self.fixture.to_json();
        seed["spec"]["networks"] = seed_networks()["networks"].clone();
        self.gardenlet.prepare_shoot(&ShootInput::new(&shoot.project, shoot.to_json(), seed)).await.unwrap()
    }

    async fn state(&self, namespace: &str) -> (IpAddr, String) {
        let ext = Api::<Extension>::namespaced(self.client().await, namespace).get(TYPE).await.unwrap();
        let state = ext.status.and_then(|s| s.state).expect("a state");
        (state["address"].as_str().unwrap().parse().unwrap(), state["publicKey"].as_str().unwrap().into())
    }

    async fn table(&self) -> Vec<(String, IpAddr)> {
        let map = Api::<ConfigMap>::namespaced(self.client().await, NAMESPACE).get_opt(table_store::NAME).await;
        let (table, problems) = table_store::table_of(map.unwrap().as_ref());
        assert!(problems.is_empty(), "{problems:?}");
        table.iter().map(|(k, a)| (k.namespace.clone(), *a)).collect()
    }

    async fn peer(&self, namespace: &str) -> Option<ShootPeer> {
        Api::<ShootPeer>::namespaced(self.client().await, NAMESPACE).get_opt(namespace).await.unwrap()
    }

    async fn shoot_secret(&self, namespace: &str) -> Option<Secret> {
        Api::<Secret>::namespaced(self.client().await, namespace).get_opt(names::SHOOT_SECRET).await.unwrap()
    }

    async fn last_error(&self, namespace: &str) -> String {
        let ext = Api::<Extension>::namespaced(self.client().await, namespace).get(TYPE).await.unwrap();
        let status = serde_json::to_value(ext.status).unwrap();
        status["extra"]["lastError"]["description"]
            .as_str()
            .or(status["lastError"]["description"].as_str())
            .unwrap_or_default()
            .to_string()
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn the_seeds_extension_is_its_configuration_and_a_bad_one_is_not_ready_with_the_reason() {
    let test = "the_seeds_extension_is_its_configuration_and_a_bad_one_is_not_ready_with_the_reason";
    let Some(seed) = seed(test, "seed-a").await else { return };
    let g = &seed.gardenlet;
    for (cidr, reason) in [
        ("241.0.0.0/22", "overlaps Gardener's reserved range 241.0.0.0/8"),
        ("10.250.64.0/22", "overlaps spec.networks.nodes 10.250.0.0/16"),
        ("169.254.169.0/24", "overlaps spec.networks.blockCIDRs[0]"),
    ] {
        let err = g.reconcile_extension("garden", TYPE, Some("seed"), Some(seed_config(cidr))).await.unwrap_err();
        let err = err.to_string();
        assert!(err.contains(reason) && err.contains("spec.providerConfig.cidr"), "{cidr}: {err}");
        println!("seed Extension with cidr {cidr}: not ready: {err}");
    }
    let err = g.reconcile_extension("garden", TYPE, Some("seed"), Some(json!({"cidr": CIDR, "slots": 3}))).await;
    assert!(err.unwrap_err().to_string().contains("spec.providerConfig.slots"));
    g.reconcile_extension("garden", TYPE, Some("seed"), Some(seed_config(CIDR))).await.unwrap();
    let tunnel = Api::<SeedTunnel>::namespaced(seed.client().await, NAMESPACE).get("seed-a").await.unwrap();
    assert_eq!((tunnel.spec.cidr.as_str(), tunnel.spec.slots), (CIDR, 2));
    let secrets = Api::<Secret>::namespaced(seed.client().await, NAMESPACE);
    for slot in ["kubelink-gateway-0", "kubelink-gateway-1"] {
        assert!(secrets.get_opt(slot).await.unwrap().is_some(), "slot Secret {slot}");
    }
}

#[tokio::test]
async fn shoots_come_and_go_as_extensions_and_bad_input_loses_nothing() {
    let test = "shoots_come_and_go_as_extensions_and_bad_input_loses_nothing";
    let Some(seed) = seed(test, "seed-a").await else { return };
    let g = &seed.gardenlet;
    let (a, b) = (ShootFixture::new("p", "a", "seed-a"), ShootFixture::new("p", "b", "seed-a"));
    let (ns_a, ns_b) = (seed.prepare(&a).await, seed.prepare(&b).await);

    // Without the seed's Extension a shoot's is not ready, and says what is missing.
    let err = g.reconcile_extension(&ns_a, TYPE, None, None).await.unwrap_err().to_string();
    assert!(err.contains("Extension garden/kubelink-wireguard (class seed) is not set"), "{err}");
    g.reconcile_extension("garden", TYPE, Some("seed"), Some(seed_config(CIDR))).await.unwrap();
    g.reconcile_extension(&ns_a, TYPE, None, None).await.unwrap();
    g.reconcile_extension(&ns_b, TYPE, None, None).await.unwrap();
    let (addr_a, key_a) = seed.state(&ns_a).await;
    let (addr_b, _) = seed.state(&ns_b).await;
    assert_eq!((addr_a, addr_b), (ip("192.168.128.3"), ip("192.168.128.4")), "first free, in order");
    assert_eq!(seed.table().await, [(ns_a.clone(), addr_a), (ns_b.clone(), addr_b)]);
    let peer = seed.peer(&ns_a).await.expect("the ShootPeer the agents read");
    assert_eq!((peer.spec.address.as_str(), peer.spec.public_key.as_str()), ("192.168.128.3", key_a.as_str()));
    assert_eq!(peer.spec.shoot, "garden-p/a");
    let secret = seed.shoot_secret(&ns_a).await.expect("the shoot's Secret");
    assert_eq!(private_key_of(&secret).unwrap().public_key().to_string(), key_a);
    let endpoint = secret.data.as_ref().unwrap()["gateway-1-endpoint"].0.clone();
    assert_eq!(String::from_utf8(endpoint).unwrap(), "gw1.seed.example:51820", "endpoints from the configuration");
    let mrs = Api::<ManagedResource>::namespaced(seed.client().await, &ns_a);
    assert!(!mrs.get(names::MANAGED_RESOURCE).await.unwrap().spec.keep_objects);

    // The shoot's nodes edited to garbage: not ready, naming the field; nothing of it is lost.
    let mut banana = a.clone();
    banana.nodes = Some("banana".into());
    seed.prepare(&banana).await;
    let err = g.reconcile_extension(&ns_a, TYPE, None, None).await.unwrap_err().to_string();
    assert!(err.contains("spec.networking.nodes") && err.contains("banana"), "{err}");
    assert!(seed.last_error(&ns_a).await.contains("banana"));
    assert_eq!(seed.state(&ns_a).await, (addr_a, key_a.clone()), "the state is kept");
    assert!(seed.peer(&ns_a).await.is_some() && seed.shoot_secret(&ns_a).await.is_some());
    assert_eq!(seed.table().await.len(), 2);
    seed.prepare(&a).await;
    g.reconcile_extension(&ns_a, TYPE, None, None).await.unwrap();
    assert_eq!(seed.state(&ns_a).await, (addr_a, key_a.clone()), "back with the same address and key");

    // A deleted Extension frees its address and its objects; the next shoot gets it.
    g.delete_extension(&ns_b, TYPE).await.unwrap();
    assert_eq!(seed.table().await, [(ns_a.clone(), addr_a)]);
    assert!(seed.peer(&ns_b).await.is_none() && seed.shoot_secret(&ns_b).await.is_none());
    let mrs = Api::<ManagedResource>::namespaced(seed.client().await, &ns_b);
    assert!(mrs.get_opt(names::MANAGED_RESOURCE).await.unwrap().is_none());
    let c = ShootFixture::new("p", "c", "seed-a");
    let ns_c = seed.prepare(&c).await;
    g.reconcile_extension(&ns_c, TYPE, None, None).await.unwrap();
    assert_eq!(seed.state(&ns_c).await.0, addr_b, "the freed address is first free again");

    // The shoot's annotation turns the tunnel off: released, and ready.
    let mut off = c.clone();
    off.annotations.insert("alpha.featuregates.shoot.gardener.cloud/wireguard-tunnel".into(), json!("false"));
    seed.prepare(&off).await;
    g.reconcile_extension(&ns_c, TYPE, None, None).await.unwrap();
    assert!(seed.peer(&ns_c).await.is_none() && seed.shoot_secret(&ns_c).await.is_none());
    assert_eq!(seed.table().await, [(ns_a.clone(), addr_a)]);
}

#[tokio::test]
async fn a_migrated_shoot_keeps_its_key_and_address_and_the_first_seed_forgets_it() {
    let test = "a_migrated_shoot_keeps_its_key_and_address_and_the_first_seed_forgets_it";
    let Some(one) = seed(test, "seed-one").await else { return };
    let Some(two) = seed(test, "seed-two").await else { return };
    for s in [&one, &two] {
        s.gardenlet.reconcile_extension("garden", TYPE, Some("seed"), Some(seed_config(CIDR))).await.unwrap();
    }
    let (x, y) = (ShootFixture::new("p", "x", "seed-one"), ShootFixture::new("p", "y", "seed-two"));
    let ns = one.prepare(&x).await;
    one.gardenlet.reconcile_extension(&ns, TYPE, None, None).await.unwrap();
    // On the second seed another shoot already holds .3: the migrated one keeps .3 only if free.
    let ns_y = two.prepare(&y).await;
    two.gardenlet.reconcile_extension(&ns_y, TYPE, None, None).await.unwrap();
    let (addr, key) = one.state(&ns).await;
    assert_eq!(addr, ip("192.168.128.3"));
    let secret_before = one.shoot_secret(&ns).await.unwrap();

    let migrated = one.gardenlet.migrate(&ns, TYPE).await.unwrap();
    // The first seed: no table entry, no ShootPeer, the ManagedResource gone (after keepObjects).
    assert!(one.table().await.is_empty());
    assert!(one.peer(&ns).await.is_none());
    let mrs = Api::<ManagedResource>::namespaced(one.client().await, &ns);
    assert!(mrs.get_opt(names::MANAGED_RESOURCE).await.unwrap().is_none());

    let mut moved = x.clone();
    moved.seed = "seed-two".into();
    two.prepare(&moved).await;
    two.gardenlet.restore(&ns, TYPE, None, None, &migrated).await.unwrap();
    let (addr2, key2) = two.state(&ns).await;
    assert_eq!(key2, key, "the key travels with the state");
    assert_eq!(addr2, ip("192.168.128.4"), "the recorded address is taken on the destination: a new one");
    let secret_after = two.shoot_secret(&ns).await.unwrap();
    assert_eq!(private_key_of(&secret_after).unwrap(), private_key_of(&secret_before).unwrap());
    assert_eq!(two.peer(&ns).await.unwrap().spec.public_key, key);
    let table = two.table().await;
    assert!(table.contains(&(ns.clone(), addr2)) && table.len() == 2, "{table:?}");
}

/// Shoot `i` of project `p` on `seed`, prepared (namespace and Cluster); its namespace.
async fn prepared(seed: &Seed, name: &str) -> String {
    seed.prepare(&ShootFixture::new("p", name, "seed-a")).await
}

/// Every version of the allocation table the server committed while `watch` ran: no shoot ever
/// changed its address and no address ever moved to another shoot (a lost update would show as one).
fn assert_history_never_reassigns(versions: &[Vec<(String, IpAddr)>]) {
    let mut holder: std::collections::BTreeMap<IpAddr, String> = Default::default();
    let mut address: std::collections::BTreeMap<String, IpAddr> = Default::default();
    for table in versions {
        for (ns, a) in table {
            assert_eq!(holder.entry(*a).or_insert_with(|| ns.clone()), ns, "{a} moved: {versions:?}");
            assert_eq!(address.entry(ns.clone()).or_insert(*a), a, "{ns} changed its address");
        }
    }
}

/// Every version of the allocation table a watch saw, as (namespace, address) rows.
type Versions = std::sync::Arc<std::sync::Mutex<Vec<Vec<(String, IpAddr)>>>>;

/// Records every version of the allocation table (a watch opened before the first write).
fn record_table_versions(client: kube::Client) -> Versions {
    use futures::StreamExt;
    let versions = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let out = versions.clone();
    let maps = Api::<ConfigMap>::namespaced(client, NAMESPACE);
    let by_name = kube::runtime::watcher::Config::default().fields(&format!("metadata.name={}", table_store::NAME));
    tokio::spawn(kube::runtime::watcher(maps, by_name).for_each(move |event| {
        if let Ok(kube::runtime::watcher::Event::Apply(map) | kube::runtime::watcher::Event::InitApply(map)) = event {
            let (table, _) = table_store::table_of(Some(&map));
            out.lock().unwrap().push(table.iter().map(|(k, a)| (k.namespace.clone(), *a)).collect());
        }
        async {}
    }));
    versions
}

#[tokio::test]
async fn two_controllers_racing_give_every_shoot_an_address_of_its_own() {
    use futures::StreamExt;
    let test = "two_controllers_racing_give_every_shoot_an_address_of_its_own";
    let Some(seed) = seed(test, "seed-a").await else { return };
    let token = seed.cluster.token_for(NAMESPACE, "kubelink-controller").await.unwrap();
    // A second controller with the same identity and configuration: a rolling update or a split brain.
    let _second = spawn_controller(seed.cluster.client_with_token(&token).await.unwrap(), seed.cfg.clone());
    let versions = record_table_versions(seed.client().await);
    let g = &seed.gardenlet;
    g.reconcile_extension("garden", TYPE, Some("seed"), Some(seed_config(CIDR))).await.unwrap();
    const SHOOTS: usize = 40;
    let mut namespaces = Vec::new();
    for i in 0..SHOOTS {
        namespaces.push(prepared(&seed, &format!("s{i:02}")).await);
    }
    let reconciles = futures::stream::iter(&namespaces).map(|ns| g.reconcile_extension(ns, TYPE, None, None));
    for result in reconciles.buffer_unordered(16).collect::<Vec<_>>().await {
        result.unwrap();
    }

    let table = seed.table().await;
    assert_eq!(table.len(), SHOOTS);
    let distinct: std::collections::BTreeSet<IpAddr> = table.iter().map(|(_, a)| *a).collect();
    assert_eq!(distinct.len(), SHOOTS, "an address given twice: {table:?}");
    for (ns, address) in &table {
        assert_eq!(seed.state(ns).await.0, *address, "{ns}: its Extension's state is the table's");
        assert_eq!(seed.peer(ns).await.unwrap().spec.address, address.to_string(), "{ns}: its ShootPeer");
    }
    let versions = versions.lock().unwrap().clone();
    println!("two controllers, {SHOOTS} shoots: {} table versions, none reassigns", versions.len());
    assert!(versions.len() >= 2, "the watch saw the table change");
    assert_history_never_reassigns(&versions);

    // What `kubelink ipam list` shows an operator is what the controllers wrote.
    let out = std::process::Command::new(kubelink_tests::netns::kubelink_bin())
        .args(["ipam", "list", "--json", "--namespace", NAMESPACE])
        .env("KUBELINK_SEED_KUBECONFIG", seed.cluster.admin_kubeconfig_file().unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(listed.len(), SHOOTS);
    for line in &listed {
        let shoot = line["shoot"].as_str().unwrap();
        assert!(shoot.starts_with("garden-p/s"), "{line}");
        assert!(distinct.contains(&ip(line["address"].as_str().unwrap())), "{line}");
    }
}

#[tokio::test]
async fn a_full_pool_holds_the_next_shoot_and_takes_no_address_from_a_served_one() {
    let test = "a_full_pool_holds_the_next_shoot_and_takes_no_address_from_a_served_one";
    let Some(seed) = seed(test, "seed-a").await else { return };
    let g = &seed.gardenlet;
    // A /29 leaves four addresses (.3 to .6) after the network address, the two slots and broadcast.
    g.reconcile_extension("garden", TYPE, Some("seed"), Some(seed_config("192.168.128.0/29"))).await.unwrap();
    let mut served = Vec::new();
    for name in ["a", "b", "c", "d"] {
        let ns = prepared(&seed, name).await;
        g.reconcile_extension(&ns, TYPE, None, None).await.unwrap();
        served.push((ns.clone(), seed.state(&ns).await));
    }
    let ns_e = prepared(&seed, "e").await;
    let err = g.reconcile_extension(&ns_e, TYPE, None, None).await.unwrap_err().to_string();
    assert!(err.contains("is exhausted") && err.contains("use a larger range"), "{err}");
    println!("the fifth shoot on a /29: {err}");
    for (ns, state) in &served {
        assert_eq!(&seed.state(ns).await, state, "{ns} keeps its address and key");
    }
    assert!(seed.peer(&ns_e).await.is_none() && seed.shoot_secret(&ns_e).await.is_none());

    // One shoot leaves: the waiting one gets its address at gardenlet's next reconcile.
    g.delete_extension(&served[1].0, TYPE).await.unwrap();
    g.reconcile_extension(&ns_e, TYPE, None, None).await.unwrap();
    assert_eq!(seed.state(&ns_e).await.0, served[1].1.0);
}

#[tokio::test]
async fn an_ipv6_range_serves_shoots_end_to_end() {
    let test = "an_ipv6_range_serves_shoots_end_to_end";
    let Some(seed) = seed(test, "seed-a").await else { return };
    let g = &seed.gardenlet;
    g.reconcile_extension("garden", TYPE, Some("seed"), Some(seed_config("fd00:4b1::/120"))).await.unwrap();
    let tunnel = Api::<SeedTunnel>::namespaced(seed.client().await, NAMESPACE).get("seed-a").await.unwrap();
    assert_eq!(tunnel.spec.cidr, "fd00:4b1::/120");
    let (ns_a, ns_b) = (prepared(&seed, "a").await, prepared(&seed, "b").await);
    for ns in [&ns_a, &ns_b] {
        g.reconcile_extension(ns, TYPE, None, None).await.unwrap();
    }
    assert_eq!((seed.state(&ns_a).await.0, seed.state(&ns_b).await.0), (ip("fd00:4b1::3"), ip("fd00:4b1::4")));
    let secret = seed.shoot_secret(&ns_a).await.unwrap();
    let address = String::from_utf8(secret.data.as_ref().unwrap()["address"].0.clone()).unwrap();
    assert_eq!(address, "fd00:4b1::3/120", "the sidecar's address with the tunnel's prefix");
}

/// etcd stopped under a running controller (the API server answers with errors) and started again
/// on its data: what was served stays as it was, and a shoot reconciled during the outage becomes
/// ready once etcd is back, with the next free address.
#[tokio::test]
async fn a_shoot_asked_for_while_etcd_is_down_is_served_once_it_is_back() {
    let test = "a_shoot_asked_for_while_etcd_is_down_is_served_once_it_is_back";
    let Some(seed) = seed(test, "seed-a").await else { return };
    let g = &seed.gardenlet;
    g.reconcile_extension("garden", TYPE, Some("seed"), Some(seed_config(CIDR))).await.unwrap();
    let ns_a = prepared(&seed, "a").await;
    g.reconcile_extension(&ns_a, TYPE, None, None).await.unwrap();
    let before = seed.state(&ns_a).await;
    let ns_b = prepared(&seed, "b").await;

    seed.cluster.stop_etcd();
    let outage = std::time::Instant::now();
    // gardenlet's request fails or hangs while etcd is down (the API server waits for etcd up to its
    // request timeout); gardenlet asks again later, as its reconcile retries.
    let during = tokio::time::timeout(Duration::from_secs(8), g.reconcile_extension(&ns_b, TYPE, None, None)).await;
    assert!(!matches!(during, Ok(Ok(()))), "nothing can be written without etcd");
    seed.cluster.start_etcd().await.unwrap();
    println!("etcd down for {:.1} s", outage.elapsed().as_secs_f64());

    let back = std::time::Instant::now();
    g.reconcile_extension(&ns_b, TYPE, None, None).await.unwrap();
    println!("shoot b ready {:.1} s after etcd came back", back.elapsed().as_secs_f64());
    assert_eq!(seed.state(&ns_a).await, before, "the served shoot is unchanged");
    assert_eq!(seed.state(&ns_b).await.0, ip("192.168.128.4"));
    assert_eq!(seed.table().await, [(ns_a.clone(), before.0), (ns_b.clone(), ip("192.168.128.4"))]);
    // The controller's watches recovered: a hand-deleted ShootPeer is put back.
    Api::<ShootPeer>::namespaced(seed.client().await, NAMESPACE).delete(&ns_a, &Default::default()).await.unwrap();
    let start = std::time::Instant::now();
    while seed.peer(&ns_a).await.is_none() {
        assert!(start.elapsed() < Duration::from_secs(30), "the deleted ShootPeer did not come back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The EndpointSlice the seed's endpointslice controller writes for Gardener's Service
/// `vpn-seed-server` in `namespace`: one endpoint per address (the server's Pod), ready or not.
fn vpn_seed_server_slice(namespace: &str, service: &str, endpoints: &[(&str, bool)]) -> EndpointSlice {
    let endpoints: Vec<Value> =
        endpoints.iter().map(|(a, ready)| json!({"addresses": [a], "conditions": {"ready": ready}})).collect();
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{service}-abcde"), "namespace": namespace,
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4", "endpoints": endpoints,
        "ports": [{"name": "openvpn", "port": 1194, "protocol": "TCP"}]
    }))
    .unwrap()
}

/// How long until shoot `namespace`'s ShootPeer names `want` as its VPN server (no gardenlet
/// reconcile in between: the controller watches the slices); `None` if not within 10 s.
async fn vpn_server_becomes(seed: &Seed, namespace: &str, want: Option<&str>) -> Option<Duration> {
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        let peer = seed.peer(namespace).await;
        if peer.is_some_and(|p| p.spec.vpn_server.as_deref() == want) {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Each shoot's ShootPeer names its own control plane's VPN server (`spec.vpnServer`), the ready Pod
/// address of Gardener's Service `vpn-seed-server` in the shoot's namespace, and follows it when the
/// Pod moves or goes; another Service's slice, or another namespace's server, is never taken.
#[tokio::test]
async fn a_shoots_peer_names_its_own_vpn_server_and_follows_it() {
    let test = "a_shoots_peer_names_its_own_vpn_server_and_follows_it";
    let Some(seed) = seed(test, "seed-v").await else { return };
    let g = &seed.gardenlet;
    let (a, b) = (ShootFixture::new("p", "a", "seed-v"), ShootFixture::new("p", "b", "seed-v"));
    let (ns_a, ns_b) = (seed.prepare(&a).await, seed.prepare(&b).await);
    let admin = seed.client().await;
    let slices = |ns: &str| Api::<EndpointSlice>::namespaced(admin.clone(), ns);
    let pp = PostParams::default();
    slices(&ns_a)
        .create(&pp, &vpn_seed_server_slice(&ns_a, "vpn-seed-server", &[("100.64.0.10", true)]))
        .await
        .unwrap();
    slices(&ns_b).create(&pp, &vpn_seed_server_slice(&ns_b, "kube-apiserver", &[("100.64.0.20", true)])).await.unwrap();
    g.reconcile_extension("garden", TYPE, Some("seed"), Some(seed_config(CIDR))).await.unwrap();
    g.reconcile_extension(&ns_a, TYPE, None, None).await.unwrap();
    g.reconcile_extension(&ns_b, TYPE, None, None).await.unwrap();
    assert_eq!(seed.peer(&ns_a).await.unwrap().spec.vpn_server.as_deref(), Some("100.64.0.10"));
    assert_eq!(seed.peer(&ns_b).await.unwrap().spec.vpn_server, None, "another Service's Pod is no VPN server");

    // The server's Pod is replaced: the new one ready, the old one going.
    let name = "vpn-seed-server-abcde";
    let moved = vpn_seed_server_slice(&ns_a, "vpn-seed-server", &[("100.64.0.9", false), ("100.64.0.11", true)]);
    let mut current = slices(&ns_a).get(name).await.unwrap();
    current.endpoints = moved.endpoints;
    slices(&ns_a).replace(name, &pp, &current).await.unwrap();
    let followed = vpn_server_becomes(&seed, &ns_a, Some("100.64.0.11")).await;
    // b's server appears.
    slices(&ns_b)
        .create(&pp, &vpn_seed_server_slice(&ns_b, "vpn-seed-server", &[("100.64.0.21", true)]))
        .await
        .unwrap();
    let appeared = vpn_server_becomes(&seed, &ns_b, Some("100.64.0.21")).await;
    // a's server goes: no translation for a rather than one to a Pod that is gone.
    slices(&ns_a).delete(name, &Default::default()).await.unwrap();
    let gone = vpn_server_becomes(&seed, &ns_a, None).await;
    println!("ShootPeer spec.vpnServer followed the slices: moved {followed:?}, appeared {appeared:?}, gone {gone:?}");
    assert!(followed.is_some() && appeared.is_some() && gone.is_some(), "{followed:?} {appeared:?} {gone:?}");
    assert_eq!(seed.peer(&ns_b).await.unwrap().spec.vpn_server.as_deref(), Some("100.64.0.21"), "b's own server");
}
