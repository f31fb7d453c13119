//! The `kubelink ipam` controller: for every Shoot on one seed, keep the allocation table, the shoot's
//! ShootState entry, its Secret, its condition and events in line with the Seed and the Shoot.
//!
//! Each pass is level-triggered: read everything, plan purely, swap the table once, then mirror.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use kube::runtime::{WatchStreamExt, watcher};

use crate::alloc::Pool;
use crate::contract::{Slot, labels, names};
use crate::decode::{self, Raw, Skipped};
use crate::error::IpamError;
use crate::gardener::{Seed, Shoot, ShootKey, ShootState};
use crate::keys::PrivateKey;
use crate::managed::ManagedResource;
use crate::projection::{SeedTunnel, ShootPeer};
use crate::record::{self, Recorded};
use crate::secret::{self, KnownGateway};
use crate::seed_objects;
use crate::status::{self, Condition};
use crate::store::{self, StoreError};
use crate::table::{self, Plan, Table};
use crate::validate;
use kube::runtime::events::Recorder;

#[derive(Debug, Clone)]
pub struct Config {
    /// The Seed whose shoots this controller serves.
    pub seed: String,
    /// kubelink's namespace on the seed: the gateway Secrets `kubelink-gateway-<slot>`, the
    /// SeedTunnel and the ShootPeers the agents read.
    pub namespace: String,
    /// Gateway slots (1 or 2).
    pub slots: u8,
    /// A full pass at least this often, even without events.
    pub resync: Duration,
    /// Parallel writes per pass.
    pub concurrency: usize,
}

impl Config {
    pub fn new(seed: impl Into<String>) -> Self {
        Self {
            seed: seed.into(),
            namespace: "kubelink".into(),
            slots: 2,
            resync: Duration::from_secs(300),
            concurrency: 16,
        }
    }
}

/// The garden client reads this seed's Seed and Shoots and their ShootStates (by name); the seed
/// client holds everything kubelink writes on the seed. They may be the same cluster.
#[derive(Clone)]
pub struct Controller {
    garden: kube::Client,
    seed: kube::Client,
    cfg: Config,
    /// What each shoot's ShootState records, as last read or written here, and when it was read:
    /// a ShootState is read again only after `resync`, so a pass does not read every one.
    states: Arc<Mutex<StateCache>>,
    /// Skipped objects already reported by an Event, by (kind, namespace, name), with the
    /// resourceVersion and field reported: an object is reported again only when it changes.
    reported: Arc<Mutex<Reported>>,
    /// Events on garden objects (Shoots, the Seed) and on seed objects (ShootPeers, ManagedResources).
    garden_events: Recorder,
    seed_events: Recorder,
}

/// Skipped objects reported, by (kind, namespace, name): the state reported.
type Reported = BTreeMap<(String, String, String), String>;

/// Per shoot: when its ShootState was last read or written here, and what it records.
type StateCache = BTreeMap<ShootKey, (Instant, Option<Recorded>)>;

/// What one pass did and found.
#[derive(Debug, Default)]
pub struct PassReport {
    /// The WireGuard CIDR the pass allocated from; `None` when the Seed's configuration is unusable.
    pub cidr: Option<IpNet>,
    pub table: Table,
    pub assigned: Vec<(ShootKey, IpAddr)>,
    pub released: Vec<(ShootKey, IpAddr)>,
    pub exhausted: Vec<ShootKey>,
    pub rejected: Vec<(ShootKey, IpamError)>,
    /// The Seed's own configuration is unusable: nothing was allocated or released.
    pub seed_error: Option<IpamError>,
    /// Entries skipped on the way (garbage records, keys, annotations), each described.
    pub problems: Vec<String>,
    /// Objects skipped because they do not decode (Shoots, ShootStates, ShootPeers, ManagedResources),
    /// each reported by an Event on itself and on the Seed's condition. A skipped shoot keeps the
    /// address it has and gets none while it is skipped.
    pub skipped: Vec<Skipped>,
    /// Objects written (Secrets, ShootStates, conditions, events).
    pub writes: usize,
}

/// What the pure part decides for every shoot, inside the compare-and-swap.
#[derive(Debug)]
struct Decision {
    plan: Plan,
    field: String,
    cidr: IpNet,
    rejected: Vec<(ShootKey, IpamError)>,
    problems: Vec<String>,
}

/// What mirroring one shoot did, and its ShootPeer (by name) when it has an address.
#[derive(Default)]
struct Mirrored {
    writes: usize,
    problems: Vec<String>,
    skipped: Vec<Skipped>,
    peer: Option<(String, ShootPeer)>,
}

/// Everything a pass reads before it decides.
#[derive(Default)]
struct Snapshot {
    shoots: BTreeMap<ShootKey, Shoot>,
    recorded: BTreeMap<ShootKey, Recorded>,
    /// Shoots whose Shoot or ShootState does not decode: each keeps the address it has in the table,
    /// none is given or taken back, and nothing of theirs is written.
    held: BTreeSet<ShootKey>,
    /// Objects that do not decode, to report.
    skipped: Vec<Skipped>,
    parent: Option<(String, String)>,
    /// The seed's parent (a managed seed's) could not be read: the overlap rule cannot be checked.
    parent_error: Option<IpamError>,
    /// kubelink's Secrets in the control-plane namespaces, by (namespace, name).
    secrets: BTreeMap<(String, String), Secret>,
    /// The ManagedResources, by namespace.
    managed: BTreeMap<String, ManagedResource>,
    /// The projection as it is on the seed.
    peers: BTreeMap<String, ShootPeer>,
    tunnel: Option<SeedTunnel>,
    problems: Vec<String>,
}

impl Controller {
    pub fn new(garden: kube::Client, seed: kube::Client, cfg: Config) -> Self {
        let instance = format!("{}-{}", status::COMPONENT, cfg.seed);
        let garden_events = status::recorder(garden.clone(), &instance);
        let seed_events = status::recorder(seed.clone(), &instance);
        Self { garden, seed, cfg, states: Arc::default(), reported: Arc::default(), garden_events, seed_events }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// One full pass.
    pub async fn reconcile(&self) -> Result<PassReport, StoreError> {
        let (seed, decision, snap) = self.settle_table().await?;
        let mut report =
            PassReport { problems: snap.problems.clone(), skipped: snap.skipped.clone(), ..Default::default() };
        let seed_condition = match decision {
            Err(e) => {
                report.seed_error = Some(e.clone());
                Condition::seed_failed(&e)
            }
            Ok(d) => {
                self.mirror(&snap, &d, &mut report).await?;
                let (allocated, exhausted) = (d.plan.table.len(), d.plan.exhausted.len());
                let (rejected, conflicts) = (d.rejected.len(), &d.plan.conflicts);
                let condition = Condition::seed_ok(allocated, exhausted, rejected, &report.skipped, conflicts);
                report.cidr = Some(d.cidr);
                report.table = d.plan.table;
                report.assigned = d.plan.assigned;
                report.released = d.plan.released;
                report.exhausted = d.plan.exhausted;
                report.rejected = d.rejected;
                report.problems.extend(d.problems);
                condition
            }
        };
        report.writes += self.report_skipped(&report.skipped).await?;
        report.writes += status::set_seed_condition(&self.garden, &self.garden_events, &seed, &seed_condition).await?;
        Ok(report)
    }

    /// An Event on each skipped object not reported yet in this state; forgets those no longer skipped.
    async fn report_skipped(&self, skipped: &[Skipped]) -> Result<usize, StoreError> {
        let id = |s: &Skipped| (s.kind.clone(), s.namespace.clone().unwrap_or_default(), s.name.clone());
        let state = |s: &Skipped| format!("{:?} {}", s.resource_version, s.field);
        let fresh: Vec<&Skipped> = {
            let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
            let now: BTreeSet<_> = skipped.iter().map(id).collect();
            reported.retain(|k, _| now.contains(k));
            skipped.iter().filter(|s| reported.insert(id(s), state(s)).as_ref() != Some(&state(s))).collect()
        };
        let mut writes = 0;
        for s in fresh {
            // ShootPeers and ManagedResources live on the seed; Shoots and ShootStates in the garden.
            let events =
                if s.kind == "Shoot" || s.kind == "ShootState" { &self.garden_events } else { &self.seed_events };
            // An Event is a report, not work: one that cannot be written is logged and the pass goes on.
            match status::report_skipped(events, s).await {
                Ok(n) => writes += n,
                Err(e) => tracing::warn!(kind = %s.kind, name = %s.name, error = %e, "cannot record an Event"),
            }
        }
        Ok(writes)
    }

    /// Read the Seed, then everything else, decide, and compare-and-swap the table; again on conflict.
    ///
    /// The snapshot is taken after each read of the Seed: a shoot in the table was listed by the writer
    /// that added it before that write, so a list taken after reading the table includes it unless it was
    /// deleted since. A snapshot older than the table could release a shoot it has not seen yet.
    ///
    /// The Seed is read as it is ([`Raw`]): one whose fields do not decode gets a condition naming the
    /// field, and nothing is allocated or released.
    async fn settle_table(&self) -> Result<(Raw<Seed>, Result<Decision, IpamError>, Snapshot), StoreError> {
        let seeds = Api::<Raw<Seed>>::all(self.garden.clone());
        for attempt in 0..store::MAX_ATTEMPTS {
            let raw = seeds.get(&self.cfg.seed).await?;
            let seed = match decode::typed(&raw) {
                Ok(seed) => seed,
                Err(s) => {
                    let e = IpamError::WrongType {
                        object: format!("Seed {}", s.name),
                        field: s.field,
                        reason: s.reason,
                        fix: format!("see docs/ipam.md; kubelink's settings are {}", crate::gardener::SETTINGS_FIX),
                    };
                    return Ok((raw, Err(e), Snapshot::default()));
                }
            };
            let (current, problems) = store::table_of(&raw);
            let mut snap = self.snapshot(&current).await?;
            snap.problems.extend(problems);
            let decision = decide(&seed, &current, &snap);
            let next = match &decision {
                Ok(d) if d.plan.table != current => &d.plan.table,
                _ => return Ok((raw, decision, snap)),
            };
            match store::write_table(&seeds, raw, next).await? {
                Some(written) => return Ok((written, decision, snap)),
                None => store::backoff(attempt).await,
            }
        }
        let what = format!("Seed {} annotation {}", self.cfg.seed, crate::table::TABLE_ANNOTATION);
        Err(StoreError::Contended { what, attempts: store::MAX_ATTEMPTS })
    }

    async fn snapshot(&self, table: &Table) -> Result<Snapshot, StoreError> {
        let fields = format!("spec.seedName={}", self.cfg.seed);
        let listed = Api::<Raw<Shoot>>::all(self.garden.clone()).list(&ListParams::default().fields(&fields)).await?;
        let ours = listed
            .items
            .into_iter()
            .filter(|s| s.value.pointer("/spec/seedName") == Some(&self.cfg.seed.as_str().into()));
        let (shoots, mut skipped) = decode::split(ours);
        let mut shoots: BTreeMap<ShootKey, Shoot> = shoots.into_iter().map(|s| (s.key(), s)).collect();
        let key_of = |s: &Skipped| ShootKey::new(s.namespace.clone().unwrap_or_default(), &s.name);
        let mut held: BTreeSet<ShootKey> = skipped.iter().map(key_of).collect();
        let mut problems = Vec::new();
        let mut keys: BTreeSet<ShootKey> = shoots.keys().cloned().collect();
        keys.extend(table.iter().map(|(k, _)| k.clone()));
        let (recorded, bad_states) = self.recorded(keys, &mut problems).await?;
        held.extend(bad_states.iter().map(key_of));
        skipped.extend(bad_states);
        shoots.retain(|k, _| !held.contains(k));
        let selector = format!("{}={}", labels::MANAGED_BY, labels::MANAGED_BY_IPAM);
        let labelled = ListParams::default().labels(&selector);
        let secrets = Api::<Secret>::all(self.seed.clone()).list(&labelled).await?;
        let secrets = secrets
            .items
            .into_iter()
            .map(|s| {
                ((s.metadata.namespace.clone().unwrap_or_default(), s.metadata.name.clone().unwrap_or_default()), s)
            })
            .collect();
        // A ManagedResource or ShootPeer that does not decode stands in the snapshot as an empty one with
        // its resourceVersion: the write that follows replaces (or deletes) it with what it should be.
        let managed = Api::<Raw<ManagedResource>>::all(self.seed.clone()).list(&labelled).await?;
        let mut managed_by_ns = BTreeMap::new();
        for raw in managed.items {
            let namespace = raw.metadata.namespace.clone().unwrap_or_default();
            let object = decode::typed(&raw).unwrap_or_else(|s| {
                skipped.push(*s);
                ManagedResource { metadata: raw.metadata.clone(), spec: Default::default() }
            });
            managed_by_ns.insert(namespace, object);
        }
        let api = Api::<Raw<ShootPeer>>::namespaced(self.seed.clone(), &self.cfg.namespace);
        let mut peers = BTreeMap::new();
        for raw in api.list(&ListParams::default()).await?.items {
            let object = decode::typed(&raw).unwrap_or_else(|s| {
                skipped.push(*s);
                ShootPeer { metadata: raw.metadata.clone(), spec: Default::default() }
            });
            peers.insert(raw.name().to_string(), object);
        }
        let tunnel = Api::<Raw<SeedTunnel>>::namespaced(self.seed.clone(), &self.cfg.namespace)
            .get_opt(&self.cfg.seed)
            .await?
            .map(|raw| decode::typed(&raw).unwrap_or(SeedTunnel { metadata: raw.metadata, spec: Default::default() }));
        let (parent, parent_error) = match self.parent_cidr().await? {
            Ok(parent) => (parent, None),
            Err(e) => (None, Some(e)),
        };
        Ok(Snapshot {
            shoots,
            recorded,
            held,
            skipped,
            parent,
            parent_error,
            secrets,
            managed: managed_by_ns,
            peers,
            tunnel,
            problems,
        })
    }

    /// What the ShootStates of `keys` record. Each is read by name (never a garden-wide list) when
    /// this controller has not read or written it within `resync`; the rest come from memory.
    async fn recorded(
        &self,
        keys: BTreeSet<ShootKey>,
        problems: &mut Vec<String>,
    ) -> Result<(BTreeMap<ShootKey, Recorded>, Vec<Skipped>), StoreError> {
        let stale: Vec<ShootKey> = {
            let cache = self.states.lock().unwrap_or_else(|e| e.into_inner());
            let fresh = |k: &ShootKey| cache.get(k).is_some_and(|(at, _)| at.elapsed() < self.cfg.resync);
            keys.iter().filter(|k| !fresh(k)).cloned().collect()
        };
        let reads = stale.into_iter().map(|key| {
            let api = Api::<Raw<ShootState>>::namespaced(self.garden.clone(), &key.namespace);
            async move { Ok::<_, StoreError>((api.get_opt(&key.name).await?, key)) }
        });
        let read: Vec<_> =
            futures::stream::iter(reads).buffer_unordered(self.cfg.concurrency.max(1)).try_collect().await?;
        let mut cache = self.states.lock().unwrap_or_else(|e| e.into_inner());
        let mut skipped = Vec::new();
        for (raw, key) in read {
            // One that does not decode is not cached: it is read again next pass, until it is fixed.
            let state = match raw.as_ref().map(decode::typed) {
                Some(Err(s)) => {
                    cache.remove(&key);
                    skipped.push(*s);
                    continue;
                }
                Some(Ok(state)) => Some(state),
                None => None,
            };
            let rec = match state.as_ref().map(record::read) {
                Some(Ok(rec)) => rec,
                Some(Err(e)) => {
                    problems.push(format!("{e}; skipped"));
                    None
                }
                None => None,
            };
            cache.insert(key, (Instant::now(), rec));
        }
        cache.retain(|k, _| keys.contains(k));
        let recorded = cache.iter().filter_map(|(k, (_, rec))| Some((k.clone(), rec.clone()?))).collect();
        Ok((recorded, skipped))
    }

    fn remember(&self, key: &ShootKey, rec: Option<Recorded>) {
        self.states.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone(), (Instant::now(), rec));
    }

    /// A managed seed runs on a Shoot named like the Seed in namespace `garden`; that shoot's seed is the
    /// parent, whose WireGuard CIDR must not overlap ours.
    ///
    /// Either object not decoding is an error of this seed's configuration: without the parent's CIDR
    /// the overlap rule cannot be checked.
    async fn parent_cidr(&self) -> Result<Result<Option<(String, String)>, IpamError>, StoreError> {
        let wrong = |s: Skipped, fix: &str| IpamError::WrongType {
            object: s.object(),
            field: s.field,
            reason: s.reason,
            fix: fix.into(),
        };
        let hosting = Api::<Raw<Shoot>>::namespaced(self.garden.clone(), "garden").get_opt(&self.cfg.seed).await?;
        let hosting = match hosting.as_ref().map(decode::typed) {
            None => return Ok(Ok(None)),
            Some(Err(s)) => return Ok(Err(wrong(*s, "it is the shoot this seed runs on; fix its type"))),
            Some(Ok(shoot)) => shoot,
        };
        let Some(parent) = hosting.spec.seed_name else { return Ok(Ok(None)) };
        let parent_seed = Api::<Raw<Seed>>::all(self.garden.clone()).get_opt(&parent).await?;
        let parent_seed = match parent_seed.as_ref().map(decode::typed) {
            None => return Ok(Ok(None)),
            Some(Err(s)) => return Ok(Err(wrong(*s, "it is this seed's parent; fix its type"))),
            Some(Ok(seed)) => seed,
        };
        let cidr = parent_seed.wireguard().ok().flatten().and_then(|(_, wg)| wg.cidr);
        Ok(Ok(cidr.map(|c| (parent, c))))
    }

    /// Side effects after the table is settled: Secrets, ShootState entries, ManagedResources,
    /// conditions, events, then the seed-local projection (each ShootPeer only after its ShootState).
    async fn mirror(&self, snap: &Snapshot, d: &Decision, report: &mut PassReport) -> Result<(), StoreError> {
        let cidr = d.cidr;
        let gateways = self.gateways(Pool::new(cidr), &mut report.problems).await?;
        let gateways = &gateways;
        let rejected: BTreeMap<&ShootKey, &IpamError> = d.rejected.iter().map(|(k, e)| (k, e)).collect();
        let exhausted: BTreeSet<&ShootKey> = d.plan.exhausted.iter().collect();
        let moved: BTreeMap<&ShootKey, &table::Conflict> = d.plan.conflicts.iter().map(|c| (&c.moved, c)).collect();
        let mut keys: BTreeSet<ShootKey> = snap.shoots.keys().cloned().collect();
        keys.extend(d.plan.released.iter().map(|(k, _)| k.clone()));
        let jobs = keys.into_iter().map(|key| {
            let address = d.plan.table.get(&key).map(|a| IpNet::new(a, cidr.prefix_len()).expect("prefix of the pool"));
            let condition = match (address, rejected.get(&key), exhausted.contains(&key)) {
                (Some(a), _, _) => Some(allocated(snap.shoots.get(&key), a.addr(), moved.get(&key).copied())),
                (None, Some(e), _) => Some(Condition::failed(e)),
                (None, None, true) => Some(Condition::failed(&exhausted_error(&d.field, cidr))),
                (None, None, false) => {
                    snap.shoots.get(&key).filter(|s| status::shoot_has_condition(s)).map(|_| Condition::released())
                }
            };
            async move {
                match self.mirror_shoot(snap, key, address, condition, gateways).await {
                    Err(StoreError::Skipped(s)) => Ok(Mirrored { skipped: vec![*s], ..Default::default() }),
                    other => other,
                }
            }
        });
        let results: Vec<Mirrored> =
            futures::stream::iter(jobs).buffer_unordered(self.cfg.concurrency.max(1)).try_collect().await?;
        // A held shoot's ShootPeer stays as it is.
        let held: BTreeSet<String> = snap.held.iter().map(ToString::to_string).collect();
        let mut peers: BTreeMap<String, ShootPeer> = snap
            .peers
            .iter()
            .filter(|(_, p)| held.contains(&p.spec.shoot))
            .map(|(n, p)| (n.clone(), p.clone()))
            .collect();
        for m in results {
            report.writes += m.writes;
            report.problems.extend(m.problems);
            report.skipped.extend(m.skipped);
            peers.extend(m.peer);
        }
        report.writes += self.project(snap, cidr, &peers).await?;
        Ok(())
    }

    /// The seed-local projection the agents read: the ShootPeers, then the SeedTunnel.
    async fn project(
        &self,
        snap: &Snapshot,
        cidr: IpNet,
        peers: &BTreeMap<String, ShootPeer>,
    ) -> Result<usize, StoreError> {
        let api = Api::<ShootPeer>::namespaced(self.seed.clone(), &self.cfg.namespace);
        let mut writes = seed_objects::write_peers(&api, &snap.peers, peers).await?;
        let api = Api::<SeedTunnel>::namespaced(self.seed.clone(), &self.cfg.namespace);
        let want = SeedTunnel::of(&self.cfg.namespace, &self.cfg.seed, cidr, self.cfg.slots);
        writes += usize::from(seed_objects::write_tunnel(&api, snap.tunnel.as_ref(), want).await?);
        Ok(writes)
    }

    /// Each slot's public half (its Secret is created here with a fresh key when missing).
    async fn gateways(&self, pool: Pool, problems: &mut Vec<String>) -> Result<Vec<KnownGateway>, StoreError> {
        let api = Api::<Secret>::namespaced(self.seed.clone(), &self.cfg.namespace);
        let mut out = Vec::new();
        for slot in Slot::first(self.cfg.slots) {
            let published = seed_objects::ensure_slot_secret(&api, &names::gateway(slot)).await?;
            let (gateway, mut p) = secret::gateway_from(slot, pool.slot_address(slot), Some(&published));
            problems.append(&mut p);
            out.push(gateway);
        }
        Ok(out)
    }

    /// One shoot: with an address, its Secret, its ManagedResource, then its record; without, remove
    /// them. Then its condition.
    async fn mirror_shoot(
        &self,
        snap: &Snapshot,
        key: ShootKey,
        address: Option<IpNet>,
        condition: Option<Condition>,
        gateways: &[KnownGateway],
    ) -> Result<Mirrored, StoreError> {
        let shoot = snap.shoots.get(&key);
        let namespace = shoot.map(Shoot::control_plane_namespace).unwrap_or_else(|| derived_namespace(&key));
        let secrets = Api::<Secret>::namespaced(self.seed.clone(), &namespace);
        let resources = Api::<ManagedResource>::namespaced(self.seed.clone(), &namespace);
        let states = Api::<Raw<ShootState>>::namespaced(self.garden.clone(), &key.namespace);
        let listed = |name: &str| snap.secrets.get(&(namespace.clone(), name.to_string()));
        let mut m = Mirrored::default();
        match address {
            Some(address) => {
                let existing = listed(names::SHOOT_SECRET);
                let (private, wrote) =
                    self.write_shoot_secret(&secrets, &namespace, existing, address, gateways, &mut m.problems).await?;
                m.writes += usize::from(wrote);
                let data = secret::shoot_secret_data(&private, address, gateways);
                let mr = (listed(names::MANAGED_RESOURCE_SECRET), snap.managed.get(&namespace));
                m.writes += seed_objects::write_managed(&secrets, &resources, &namespace, mr, &data).await?;
                let want = Recorded { address: address.addr(), public_key: private.public_key() };
                if snap.recorded.get(&key) != Some(&want) {
                    m.writes += usize::from(store::write_record(&states, &key, &self.cfg.seed, Some(&want)).await?);
                    self.remember(&key, Some(want.clone()));
                }
                m.peer = Some((namespace.clone(), ShootPeer::of(&self.cfg.namespace, &namespace, &key, &want)));
            }
            None => {
                if snap.recorded.contains_key(&key) {
                    m.writes += usize::from(store::write_record(&states, &key, &self.cfg.seed, None).await?);
                    self.remember(&key, None);
                }
                if listed(names::SHOOT_SECRET).is_some() {
                    m.writes += usize::from(store::delete_secret(&secrets, names::SHOOT_SECRET).await?);
                }
                if snap.managed.contains_key(&namespace) || listed(names::MANAGED_RESOURCE_SECRET).is_some() {
                    m.writes += seed_objects::delete_managed(&secrets, &resources).await?;
                }
            }
        }
        if let (Some(shoot), Some(condition)) = (shoot, condition) {
            m.writes += status::set_shoot_condition(&self.garden, &self.garden_events, shoot, &condition).await?;
        }
        Ok(m)
    }

    /// Writes the shoot Secret, keeping an existing valid private key. Returns the key and whether it wrote.
    async fn write_shoot_secret(
        &self,
        api: &Api<Secret>,
        namespace: &str,
        listed: Option<&Secret>,
        address: IpNet,
        gateways: &[KnownGateway],
        problems: &mut Vec<String>,
    ) -> Result<(PrivateKey, bool), StoreError> {
        if let Some(current) = listed
            && let Ok(key) = secret::private_key_of(current)
            && current.data.as_ref() == Some(&secret::shoot_secret_data(&key, address, gateways))
        {
            return Ok((key, false));
        }
        let fresh = PrivateKey::generate();
        let build = |current: Option<&Secret>| {
            let key = match current.map(secret::private_key_of) {
                Some(Ok(key)) => key,
                _ => fresh.clone(),
            };
            secret::shoot_secret(namespace, &key, address, gateways)
        };
        let written = store::write_secret(api, names::SHOOT_SECRET, build).await?;
        let key = match secret::private_key_of(&written) {
            Ok(key) => key,
            Err(e) => {
                problems.push(e.to_string());
                fresh
            }
        };
        if let Some(Err(e)) = listed.map(secret::private_key_of) {
            problems.push(e.to_string());
        }
        Ok((key, true))
    }

    /// Runs passes on every change to this seed's Shoots, its Seed, the slot Secrets or the
    /// projection (a hand-deleted ShootPeer comes back), and at least every `resync`. A failed pass is
    /// logged and retried on the next trigger. Nothing garden-wide is watched. The watches read objects
    /// as [`Raw`] JSON: one object that does not decode does not stop them.
    pub async fn run(self) -> Result<(), StoreError> {
        self.run_with(|_, _| {}).await
    }

    /// [`Self::run`], telling `observe` each pass's outcome and duration (for metrics).
    pub async fn run_with(
        self,
        mut observe: impl FnMut(&Result<PassReport, StoreError>, Duration),
    ) -> Result<(), StoreError> {
        let by_seed = watcher::Config::default().fields(&format!("spec.seedName={}", self.cfg.seed));
        let shoots = watcher(Api::<Raw<Shoot>>::all(self.garden.clone()), by_seed).default_backoff().map(|_| ());
        let seed_cfg = watcher::Config::default().fields(&format!("metadata.name={}", self.cfg.seed));
        let seeds = watcher(Api::<Raw<Seed>>::all(self.garden.clone()), seed_cfg).default_backoff().map(|_| ());
        // Each slot Secret by name: no other Secret of the namespace (the garden kubeconfig is one)
        // reaches the controller, and the Role grants the watch on these names only.
        let gw_api = Api::<Secret>::namespaced(self.seed.clone(), &self.cfg.namespace);
        let gateways = Slot::first(self.cfg.slots).map(|slot| {
            let by_name = watcher::Config::default().fields(&format!("metadata.name={}", names::gateway(slot)));
            watcher(gw_api.clone(), by_name).default_backoff().map(|_| ()).boxed()
        });
        let peer_api = Api::<Raw<ShootPeer>>::namespaced(self.seed.clone(), &self.cfg.namespace);
        let peers = watcher(peer_api, watcher::Config::default()).default_backoff().map(|_| ());
        let ticks = tokio_stream_interval(self.cfg.resync);
        let mut triggers = futures::stream::select_all(
            [shoots.boxed(), peers.boxed(), seeds.boxed(), ticks.boxed()].into_iter().chain(gateways),
        )
        .ready_chunks(4096);
        while triggers.next().await.is_some() {
            let started = std::time::Instant::now();
            let result = self.reconcile().await;
            observe(&result, started.elapsed());
            match &result {
                Ok(r) => log_pass(r),
                Err(e) => {
                    tracing::warn!(seed = %self.cfg.seed, error = %e, "ipam pass failed; retrying on the next change")
                }
            }
        }
        Ok(())
    }
}

fn tokio_stream_interval(every: Duration) -> impl futures::Stream<Item = ()> {
    futures::stream::unfold(tokio::time::interval(every), |mut i| async move {
        i.tick().await;
        Some(((), i))
    })
}

fn log_pass(r: &PassReport) {
    for s in &r.skipped {
        tracing::warn!(object = %s.object(), field = %s.field, "{s}");
    }
    tracing::info!(
        skipped = r.skipped.len(),
        shoots = r.table.len(),
        assigned = r.assigned.len(),
        released = r.released.len(),
        exhausted = r.exhausted.len(),
        rejected = r.rejected.len(),
        writes = r.writes,
        "ipam pass"
    );
    for p in &r.problems {
        tracing::warn!("{p}");
    }
    if let Some(e) = &r.seed_error {
        tracing::error!(error = %e, "the seed's WireGuard configuration is unusable");
    }
}

fn derived_namespace(key: &ShootKey) -> String {
    Shoot {
        metadata: kube::api::ObjectMeta {
            name: Some(key.name.clone()),
            namespace: Some(key.namespace.clone()),
            ..Default::default()
        },
        ..Default::default()
    }
    .control_plane_namespace()
}

/// The pure decision for one pass: validate the Seed, classify the shoots, plan the table.
fn decide(seed: &Seed, current: &Table, snap: &Snapshot) -> Result<Decision, IpamError> {
    if let Some(e) = &snap.parent_error {
        return Err(e.clone());
    }
    let parent = snap.parent.as_ref().map(|(n, c)| (n.as_str(), c.as_str()));
    let (field, cidr) = validate::seed_wireguard_cidr(seed, parent)?;
    let default_on = seed.wireguard()?.is_some_and(|(_, wg)| wg.enabled);
    let mut d =
        Decision { plan: Plan::default(), field: field.clone(), cidr, rejected: Vec::new(), problems: Vec::new() };
    let mut wanted = BTreeSet::new();
    for (key, shoot) in &snap.shoots {
        let on = match shoot.tunnel_override() {
            Ok(o) => o.unwrap_or(default_on),
            Err(e) => {
                d.problems.push(format!("shoot {key}: {e}; using the seed's default ({default_on})"));
                default_on
            }
        };
        if !on || shoot.being_deleted() {
            continue;
        }
        match validate::shoot_networks(shoot, &field, cidr) {
            Ok(()) => _ = wanted.insert(key.clone()),
            Err(e) => d.rejected.push((key.clone(), e)),
        }
    }
    // A held shoot keeps the address it has; one without gets none while it is held.
    wanted.extend(snap.held.iter().filter(|k| current.get(k).is_some()).cloned());
    let recorded = snap.recorded.iter().map(|(k, r)| (k.clone(), r.address)).collect();
    d.plan = table::plan(current, &Pool::new(cidr), &wanted, &recorded);
    for key in &d.plan.exhausted {
        d.problems.push(format!("shoot {key}: {}", exhausted_error(&field, cidr)));
    }
    for c in &d.plan.conflicts {
        d.problems.push(format!(
            "address {} was claimed by shoots {} and {} (in {}): {} keeps it, {} gets a new address",
            c.address, c.kept, c.moved, c.source, c.kept, c.moved
        ));
    }
    Ok(d)
}

/// An allocated shoot's condition: a conflict it moved away from (this pass, or still reported), else
/// plain `Allocated`.
fn allocated(shoot: Option<&Shoot>, address: IpAddr, moved: Option<&table::Conflict>) -> Condition {
    match (moved, shoot.and_then(|s| Condition::kept_conflict(s, address))) {
        (Some(c), _) => Condition::moved(address, c),
        (None, Some(kept)) => kept,
        (None, None) => Condition::allocated(address),
    }
}

pub(crate) fn exhausted_error(field: &str, cidr: IpNet) -> IpamError {
    IpamError::Exhausted { field: field.into(), cidr, capacity: Pool::new(cidr).capacity() }
}
