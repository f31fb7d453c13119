//! The extension controller: reconciles gardenlet's `kubelink-wireguard` Extensions on the seed.
//!
//! It runs on kube-runtime's `Controller`: one queue of Extensions, each reconciled on its own
//! (never two reconciles of one object at once), triggered by the Extension, its namespace's
//! `Cluster`, its ShootPeer (a hand-deleted one comes back) and, for every shoot, a change of the
//! seed's own Extension's spec, of a slot's key or of a slot Service's load-balancer address; retried with a growing back-off after a failure and resynced every few minutes. Each
//! reconcile reads, decides with the pure [`super::plan`], then applies; the one shared object, the
//! allocation table, is written by compare-and-swap ([`super::table_store`]).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::utils::{PredicateConfig, predicates};
use kube::runtime::{WatchStreamExt, watcher};

use crate::alloc::Pool;
use crate::contract::{ShootKey, Slot, names};
use crate::error::IpamError;
use crate::gardener::{Seed, Shoot};
use crate::keys::PrivateKey;
use crate::managed::ManagedResource;
use crate::projection::{SeedTunnel, ShootPeer};
use crate::record::Recorded;
use crate::secret::{self, KnownGateway};
use crate::seed_objects;
use crate::store::{self, StoreError};
use crate::vpn_server;

use super::config::{SeedConfig, missing_endpoints, seed_config, within_release};
use super::objects::{Cluster, Extension, FINALIZER, Operation, SEED_NAMESPACE, TYPE, annotations};
use super::plan::{self, Outcome, ShootDecision};
use super::table_store;

#[derive(Debug, Clone)]
pub struct Config {
    /// kubelink's namespace on the seed: the allocation table, the slot Secrets, the SeedTunnel and
    /// the ShootPeers.
    pub namespace: String,
    /// The seed's name (gardenlet's `SEED_NAME`).
    pub seed_name: String,
    /// The Seed as gardenlet describes it to its extensions (`gardener.seed.spec` of the chart's
    /// values): the networks the seed's WireGuard CIDR must stay out of. `None`: only Gardener's
    /// reserved ranges are checked for the seed's Extension.
    pub seed: Option<Seed>,
    /// Every Extension is reconciled at least this often (drift repair).
    pub resync: Duration,
    /// The gateway slots kubelink's release deployed (the chart's slots): a seed Extension asking for
    /// more is not ready ([`within_release`]).
    pub deployed_slots: u8,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// What one reconcile did, for metrics and readiness.
#[derive(Debug, Clone)]
pub struct Reconciled {
    /// `lastOperation.type` of the operation.
    pub operation: &'static str,
    /// `succeeded` (ready), `failed` (not ready, reported in the status) or `error` (an API call
    /// failed; retried with back-off).
    pub result: &'static str,
    /// The error of an `error` result.
    pub error: Option<String>,
    /// The pool after a shoot's allocation: addresses it can hand out, and taken.
    pub pool: Option<PoolUse>,
    /// The shoot got a new address (first free, or adopted from its state).
    pub assigned: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUse {
    pub capacity: u128,
    pub used: usize,
}

/// Told about every reconcile.
pub type Observer = Arc<dyn Fn(&Reconciled) + Send + Sync>;

struct Ctx {
    client: kube::Client,
    cfg: Config,
    observe: Observer,
    /// Failures in a row per Extension, for the back-off.
    failures: Mutex<HashMap<ObjectRef<Extension>, u32>>,
}

/// Runs until the watches end; logs every reconcile's outcome and tells `observe`.
pub async fn run(client: kube::Client, cfg: Config, observe: Observer) {
    let by_name = || watcher::Config::default().fields(&format!("metadata.name={TYPE}"));
    let extensions = Api::<Extension>::all(client.clone());
    // A change of the seed's Extension (its CIDR, its slots) concerns every shoot.
    let seed_ext = Api::<Extension>::namespaced(client.clone(), SEED_NAMESPACE);
    // Only its spec counts (its generation): gardenlet's periodic requests and kubelink's own status
    // writes must not reconcile every shoot.
    let seed_changes = watcher(seed_ext, by_name())
        .default_backoff()
        .applied_objects()
        .predicate_filter(predicates::generation, PredicateConfig::default())
        .map(|_| ());
    // So does a slot's key (a deleted Secret is a key rotation): recreated, and every shoot's Secret
    // gets the new public key. Watched by name, one watch per slot.
    let secrets = Api::<Secret>::namespaced(client.clone(), &cfg.namespace);
    let slot_changes = Slot::ALL.map(|slot| {
        let by_name = watcher::Config::default().fields(&format!("metadata.name={}", names::gateway(slot)));
        changes(watcher(secrets.clone(), by_name).default_backoff(), |s: &Secret| {
            secret::text(s, crate::contract::gateway_secret::PRIVATE_KEY)
        })
        .boxed()
    });
    // And a slot Service's load-balancer address (the cloud assigns it minutes after the Service is
    // created): the endpoint of a slot without a configured one. Watched by name, one watch per slot.
    let services = Api::<Service>::namespaced(client.clone(), &cfg.namespace);
    let address_changes = Slot::ALL.map(|slot| {
        let by_name = watcher::Config::default().fields(&format!("metadata.name={}", names::gateway(slot)));
        changes(watcher(services.clone(), by_name).default_backoff(), crate::contract::endpoint::of_load_balancer)
            .boxed()
    });
    let slots = slot_changes.into_iter().chain(address_changes);
    let everything = futures::stream::select_all(slots.chain([seed_changes.boxed()]));
    let peers = Api::<ShootPeer>::namespaced(client.clone(), &cfg.namespace);
    let ctx = Arc::new(Ctx { client: client.clone(), cfg, observe, failures: Mutex::default() });
    Controller::new(extensions, by_name())
        .watches(Api::<Cluster>::all(client.clone()), watcher::Config::default(), |c: Cluster| {
            c.metadata.name.map(|ns| ObjectRef::new(TYPE).within(&ns))
        })
        .watches(peers, watcher::Config::default(), |p: ShootPeer| {
            p.metadata.name.map(|ns| ObjectRef::new(TYPE).within(&ns))
        })
        // A shoot's VPN server comes, moves (a new Pod, a new address) or goes: its ShootPeer follows.
        .watches(
            Api::<EndpointSlice>::all(client.clone()),
            watcher::Config::default().labels(&vpn_server::selector()),
            |s: EndpointSlice| s.metadata.namespace.map(|ns| ObjectRef::new(TYPE).within(&ns)),
        )
        .reconcile_all_on(everything)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(%object, "reconciled"),
                // A watched object mapped to an Extension that does not exist (a vpn-seed-server of a
                // shoot without kubelink, a Cluster before its Extension): nothing to do.
                Err(kube::runtime::controller::Error::ObjectNotFound(object)) => {
                    tracing::debug!(%object, "no such Extension; nothing to reconcile")
                }
                Err(e) => tracing::warn!(error = %e, "extension controller"),
            }
        })
        .await;
}

/// One item per object created, deleted or with a new `what` (a slot Secret's private key, a slot
/// Service's load-balancer endpoint): anything else written into these objects must not reconcile
/// every shoot.
fn changes<K, T: Hash>(
    events: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    what: impl Fn(&K) -> T + Send + 'static,
) -> impl futures::Stream<Item = ()> + Send
where
    K: kube::Resource + Send + 'static,
{
    let mut seen: HashMap<String, u64> = HashMap::new();
    events.filter_map(move |event| {
        let changed = match event {
            Ok(watcher::Event::Delete(o)) => seen.remove(&o.meta().name.clone().unwrap_or_default()).map(drop),
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                // A hash of what counts (a private key among them), kept in memory only, to see that
                // it changed.
                let mut hasher = DefaultHasher::new();
                what(&o).hash(&mut hasher);
                let digest = hasher.finish();
                (seen.insert(o.meta().name.clone().unwrap_or_default(), digest) != Some(digest)).then_some(())
            }
            _ => None,
        };
        futures::future::ready(changed)
    })
}

fn error_policy(ext: Arc<Extension>, error: &ReconcileError, ctx: Arc<Ctx>) -> Action {
    let object = ObjectRef::from(ext.as_ref());
    let n = {
        let mut failures = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(object.clone()).or_default();
        *n = n.saturating_add(1);
        *n
    };
    let delay = backoff(n);
    tracing::warn!(%object, error = %error, retry_in = ?delay, "reconcile failed");
    let operation = Operation::of(&ext).type_name();
    (ctx.observe)(&Reconciled {
        operation,
        result: "error",
        error: Some(error.to_string()),
        pool: None,
        assigned: false,
    });
    Action::requeue(delay)
}

/// 1 s, doubling, at most 5 minutes.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(8)).min(Duration::from_secs(300))
}

async fn reconcile(ext: Arc<Extension>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    if ext.spec.type_ != TYPE {
        return Ok(Action::await_change());
    }
    let r = Reconciler { client: &ctx.client, cfg: &ctx.cfg, allocation: Mutex::default() };
    let ready = if ext.is_seed_class() { r.seed(&ext).await? } else { r.shoot(&ext).await? };
    let result = if ready { "succeeded" } else { "failed" };
    let allocation = r.allocation.lock().unwrap_or_else(|e| e.into_inner()).take();
    let (pool, assigned) = allocation.map_or((None, false), |(p, a)| (Some(p), a));
    (ctx.observe)(&Reconciled { operation: Operation::of(&ext).type_name(), result, error: None, pool, assigned });
    ctx.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(&ObjectRef::from(ext.as_ref()));
    Ok(Action::requeue(ctx.cfg.resync))
}

struct Reconciler<'a> {
    client: &'a kube::Client,
    cfg: &'a Config,
    /// What a shoot's allocation left: the pool's use, and whether the shoot got a new address.
    allocation: Mutex<Option<(PoolUse, bool)>>,
}

impl Reconciler<'_> {
    fn extensions(&self, namespace: &str) -> Api<Extension> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// The seed's Extension: validate, then the slot Secrets and the SeedTunnel the agents read.
    /// Whether the Extension is ready (its status says why not).
    async fn seed(&self, ext: &Extension) -> Result<bool, ReconcileError> {
        let op = Operation::of(ext);
        if op == Operation::Delete {
            // Nothing is released with the seed's Extension: the agents keep serving until the
            // chart is removed.
            return Ok(true);
        }
        self.start(ext, op).await?;
        let seed = self.cfg.seed.clone().unwrap_or_else(|| named_seed(&self.cfg.seed_name));
        let outcome = match seed_config(ext, &seed, None).and_then(|c| within_release(c, self.cfg.deployed_slots)) {
            Err(e) => Outcome::Failed { error: e.to_string(), configuration: true },
            Ok(config) => {
                let gateways = self.project_seed(&config).await?;
                let mut description = format!("WireGuard CIDR {}, {} gateway slot(s)", config.cidr, config.slots);
                if let Some(missing) = self.missing_endpoints(&gateways) {
                    tracing::warn!("{missing}");
                    description = format!("{description}; {missing}");
                }
                Outcome::Succeeded { description, state: None }
            }
        };
        self.finish(ext, op, &outcome).await
    }

    /// The slot Secrets (created when missing) and the SeedTunnel, with each slot's endpoint; the
    /// gateways as shoots get them.
    async fn project_seed(&self, config: &SeedConfig) -> Result<Vec<KnownGateway>, ReconcileError> {
        let gateways = self.gateways(config).await?;
        let endpoints: Vec<Option<String>> = gateways.iter().map(|g| g.endpoint.clone()).collect();
        let tunnels = Api::<SeedTunnel>::namespaced(self.client.clone(), &self.cfg.namespace);
        let current = tunnels.get_opt(&self.cfg.seed_name).await?;
        let want = SeedTunnel::of(&self.cfg.namespace, &self.cfg.seed_name, config.cidr, config.slots, &endpoints);
        seed_objects::write_tunnel(&tunnels, current.as_ref(), want).await?;
        Ok(gateways)
    }

    /// A shoot's Extension, by what gardenlet asks for.
    async fn shoot(&self, ext: &Extension) -> Result<bool, ReconcileError> {
        let (namespace, name) = ext.namespace_name();
        let key = ShootKey::new(&namespace, &name);
        match Operation::of(ext) {
            Operation::WaitForState | Operation::Migrated => Ok(true),
            Operation::Delete if ext.is_migrated() => self.remove_finalizer(ext).await.map(|()| true),
            Operation::Delete => {
                self.release(&key, &namespace, Keep::Nothing).await?;
                self.remove_finalizer(ext).await.map(|()| true)
            }
            Operation::Migrate => {
                // The shoot keeps its Secret (keepObjects) and gardenlet carries the state and the
                // key Secret to the next seed; this seed forgets the shoot.
                self.release(&key, &namespace, Keep::ShootObjects).await?;
                let state = plan::recorded_of(state(ext), &object_name(ext)).ok().flatten();
                let outcome = Outcome::Succeeded { description: "migrated: released on this seed".into(), state };
                self.finish(ext, Operation::Migrate, &outcome).await?;
                self.remove_finalizer(ext).await.map(|()| true)
            }
            op @ (Operation::Reconcile | Operation::Restore) => {
                self.start(ext, op).await?;
                let outcome = self.serve(ext, &key, &namespace).await?;
                self.finish(ext, op, &outcome).await
            }
        }
    }

    /// Decides and applies a shoot's allocation; the outcome for its status.
    async fn serve(&self, ext: &Extension, key: &ShootKey, namespace: &str) -> Result<Outcome, ReconcileError> {
        let seed_ext = self.extensions(SEED_NAMESPACE).get_opt(TYPE).await?;
        let cluster = Api::<Cluster>::all(self.client.clone()).get_opt(namespace).await?;
        let (shoot, seed) = cluster_view(cluster.as_ref(), namespace);
        let config = match (&seed_ext, &seed) {
            (None, _) => Err(IpamError::Missing {
                field: format!("Extension {SEED_NAMESPACE}/{TYPE} (class seed)"),
                fix: format!("enable {TYPE} for the seed: an entry in spec.extensions of gardenlet's seed config"),
            }),
            (Some(_), Err(e)) => Err(e.clone()),
            (Some(s), Ok(seed)) => seed_config(s, seed, None).and_then(|c| within_release(c, self.cfg.deployed_slots)),
        };
        let recorded = match plan::recorded_of(state(ext), &object_name(ext)) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(extension = %key, "{e}; a new address is chosen if the table has none");
                None
            }
        };
        let tables = Api::<ConfigMap>::namespaced(self.client.clone(), &self.cfg.namespace);
        let (decision, used) = table_store::swap(&tables, |table| {
            let d =
                plan::decide_shoot(key, config.as_ref(), shoot.as_ref(), table, recorded.as_ref().map(|r| r.address));
            let next = match &d {
                ShootDecision::Serve { table, .. } | ShootDecision::Release { table } => table.clone(),
                ShootDecision::Hold { .. } => None,
            };
            let used = next.as_ref().unwrap_or(table).len();
            (next, (d, used))
        })
        .await?;
        if let (Ok(config), ShootDecision::Serve { assignment, .. }) = (&config, &decision) {
            let pool = PoolUse { capacity: Pool::new(config.cidr).capacity(), used };
            let assigned = *assignment != plan::Assignment::Kept;
            *self.allocation.lock().unwrap_or_else(|e| e.into_inner()) = Some((pool, assigned));
        }
        match decision {
            ShootDecision::Hold { error } => Ok(Outcome::Failed { error: error.to_string(), configuration: true }),
            ShootDecision::Release { .. } => {
                self.release(key, namespace, Keep::Nothing).await?;
                let description = "the shoot's annotation turns the tunnel off: released".into();
                Ok(Outcome::Succeeded { description, state: None })
            }
            ShootDecision::Serve { address, .. } => {
                let config = config.expect("a shoot is served only with a valid seed configuration");
                let garden_key = shoot.as_ref().map(Shoot::key).unwrap_or_else(|_| key.clone());
                let (rec, missing) = self.write_shoot(namespace, &garden_key, &config, address).await?;
                let mut description = format!("tunnel address {}", rec.address);
                if let Some(missing) = missing {
                    description = format!("{description}; {missing}");
                }
                Ok(Outcome::Succeeded { description, state: Some(rec) })
            }
        }
    }

    /// The shoot's Secret (its key kept when valid), its ManagedResource and its ShootPeer; and which
    /// slots it has no endpoint for ([`missing_endpoints`]).
    async fn write_shoot(
        &self,
        namespace: &str,
        shoot: &ShootKey,
        config: &SeedConfig,
        address: IpAddr,
    ) -> Result<(Recorded, Option<String>), ReconcileError> {
        let address = IpNet::new(address, config.cidr.prefix_len()).expect("an address of the pool");
        let gateways = self.gateways(config).await?;
        let secrets = Api::<Secret>::namespaced(self.client.clone(), namespace);
        let fresh = PrivateKey::generate();
        let build = |current: Option<&Secret>| {
            let key = current.and_then(|s| secret::private_key_of(s).ok()).unwrap_or_else(|| fresh.clone());
            secret::shoot_secret(namespace, &key, address, &gateways, config.mtu)
        };
        let written = store::write_secret(&secrets, names::SHOOT_SECRET, build).await?;
        let private = secret::private_key_of(&written).map_err(|e| StoreError::Ipam(e.into()))?;
        let data = secret::shoot_secret_data(&private, address, &gateways, config.mtu);
        let resources = Api::<ManagedResource>::namespaced(self.client.clone(), namespace);
        let listed =
            (secrets.get_opt(names::MANAGED_RESOURCE_SECRET).await?, resources.get_opt(names::MANAGED_RESOURCE).await?);
        seed_objects::write_managed(&secrets, &resources, namespace, (listed.0.as_ref(), listed.1.as_ref()), &data)
            .await?;
        let rec = Recorded { address: address.addr(), public_key: private.public_key() };
        let peers = Api::<ShootPeer>::namespaced(self.client.clone(), &self.cfg.namespace);
        let mut want = ShootPeer::of(&self.cfg.namespace, namespace, shoot, rec.address, &rec.public_key);
        want.spec.vpn_server = self.vpn_server(namespace, config.cidr.addr().is_ipv4()).await?.map(|a| a.to_string());
        let current = peers.get_opt(namespace).await?;
        let (current, want) = (current.into_iter().map(named).collect(), [named(want)].into());
        seed_objects::write_peers(&peers, &current, &want).await?;
        Ok((rec, self.missing_endpoints(&gateways)))
    }

    /// The shoot's own VPN server ([`vpn_server`]): listed in its control-plane namespace by label.
    async fn vpn_server(&self, namespace: &str, ipv4: bool) -> Result<Option<IpAddr>, ReconcileError> {
        let slices = Api::<EndpointSlice>::namespaced(self.client.clone(), namespace);
        let listed = slices.list(&ListParams::default().labels(&vpn_server::selector())).await?;
        Ok(vpn_server::of_slices(&listed.items, ipv4))
    }

    fn missing_endpoints(&self, gateways: &[KnownGateway]) -> Option<String> {
        let missing: Vec<Slot> = gateways.iter().filter(|g| g.endpoint.is_none()).map(|g| g.slot).collect();
        missing_endpoints(&self.cfg.namespace, &missing)
    }

    /// Each slot's address, endpoint and public key, derived from the private key in the slot Secret
    /// this controller created: nothing an agent wrote reaches the shoots. The endpoint is the
    /// configured one, else the address the slot Service's load balancer got from the cloud; no
    /// node's address.
    async fn gateways(&self, config: &SeedConfig) -> Result<Vec<KnownGateway>, ReconcileError> {
        let secrets = Api::<Secret>::namespaced(self.client.clone(), &self.cfg.namespace);
        let services = Api::<Service>::namespaced(self.client.clone(), &self.cfg.namespace);
        let pool = Pool::new(config.cidr);
        let mut out = Vec::new();
        for slot in Slot::first(config.slots) {
            let slot_secret = seed_objects::ensure_slot_secret(&secrets, &names::gateway(slot)).await?;
            let public_key = secret::text(&slot_secret, crate::contract::gateway_secret::PRIVATE_KEY)
                .and_then(|k| k.parse::<PrivateKey>().ok())
                .map(|k| k.public_key());
            let endpoint = match config.endpoint(slot) {
                Some(configured) => Some(configured.to_string()),
                None => services
                    .get_opt(&names::gateway(slot))
                    .await?
                    .as_ref()
                    .and_then(crate::contract::endpoint::of_load_balancer),
            };
            out.push(KnownGateway { slot, address: pool.slot_address(slot), endpoint, public_key });
        }
        Ok(out)
    }

    /// Releases the shoot's table entry and its ShootPeer, and its Secret and ManagedResource unless
    /// they are kept for a migration (then the ManagedResource is deleted with `keepObjects`, so
    /// that the shoot keeps its Secret).
    async fn release(&self, key: &ShootKey, namespace: &str, keep: Keep) -> Result<(), ReconcileError> {
        let tables = Api::<ConfigMap>::namespaced(self.client.clone(), &self.cfg.namespace);
        table_store::swap(&tables, |table| (plan::release(table, key), ())).await?;
        let peers = Api::<ShootPeer>::namespaced(self.client.clone(), &self.cfg.namespace);
        seed_objects::delete(&peers, namespace).await?;
        let secrets = Api::<Secret>::namespaced(self.client.clone(), namespace);
        let resources = Api::<ManagedResource>::namespaced(self.client.clone(), namespace);
        if keep == Keep::ShootObjects && resources.get_opt(names::MANAGED_RESOURCE).await?.is_some() {
            let patch = serde_json::json!({"spec": {"keepObjects": true}});
            resources.patch(names::MANAGED_RESOURCE, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        }
        seed_objects::delete_managed(&secrets, &resources).await?;
        if keep == Keep::Nothing {
            seed_objects::delete(&secrets, names::SHOOT_SECRET).await?;
        }
        Ok(())
    }

    /// At the start: kubelink's finalizer, and gardenlet's `reconcile` annotation removed (as
    /// Gardener's extension library does, so that a later one is a new request), in one write
    /// guarded by the resourceVersion read. Later writes of this reconcile need no guard.
    async fn start(&self, ext: &Extension, op: Operation) -> Result<(), ReconcileError> {
        let reconcile_requested =
            op == Operation::Reconcile && super::objects::annotation(ext, annotations::OPERATION).is_some();
        if ext.has_finalizer() && !reconcile_requested {
            return Ok(());
        }
        let mut finalizers: Vec<String> = ext.metadata.finalizers.clone().unwrap_or_default();
        if !ext.has_finalizer() {
            finalizers.push(FINALIZER.into());
        }
        let mut meta = serde_json::json!({"finalizers": finalizers, "resourceVersion": ext.metadata.resource_version});
        if reconcile_requested {
            meta["annotations"] = serde_json::json!({annotations::OPERATION: null});
        }
        let (namespace, name) = ext.namespace_name();
        let patch = serde_json::json!({ "metadata": meta });
        self.extensions(&namespace).patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        Ok(())
    }

    /// The status, then (after a migrate or a restore) the operation annotation. Whether it succeeded.
    async fn finish(&self, ext: &Extension, op: Operation, outcome: &Outcome) -> Result<bool, ReconcileError> {
        let (namespace, name) = ext.namespace_name();
        let patch = plan::status_patch(op, ext.metadata.generation, outcome, &now(), names::SHOOT_SECRET);
        let current = ext.status.as_ref().and_then(|s| serde_json::to_value(s).ok());
        let requested = super::objects::annotation(ext, annotations::TIMESTAMP);
        // Unchanged: not written, so this reconcile does not trigger the next one.
        if plan::status_changes(current.as_ref(), &patch, requested) {
            self.extensions(&namespace).patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        }
        match outcome {
            Outcome::Succeeded { .. } => {
                tracing::info!(extension = %format!("{namespace}/{name}"), op = op.type_name(), "succeeded")
            }
            Outcome::Failed { error, .. } => {
                tracing::warn!(extension = %format!("{namespace}/{name}"), op = op.type_name(), "{error}")
            }
        }
        if matches!(op, Operation::Migrate | Operation::Restore) && matches!(outcome, Outcome::Succeeded { .. }) {
            self.remove_operation(ext).await?;
        }
        Ok(matches!(outcome, Outcome::Succeeded { .. }))
    }

    async fn remove_operation(&self, ext: &Extension) -> Result<(), ReconcileError> {
        let (namespace, name) = ext.namespace_name();
        let patch = serde_json::json!({"metadata": {"annotations": {annotations::OPERATION: null}}});
        self.extensions(&namespace).patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        Ok(())
    }

    /// Removes kubelink's finalizer: a JSON patch that tests the entry it removes, so that it needs
    /// no resourceVersion and removes no one else's.
    async fn remove_finalizer(&self, ext: &Extension) -> Result<(), ReconcileError> {
        let finalizers = ext.metadata.finalizers.clone().unwrap_or_default();
        let Some(i) = finalizers.iter().position(|f| f == FINALIZER) else { return Ok(()) };
        let path = format!("/metadata/finalizers/{i}");
        let ops = serde_json::json!([{"op": "test", "path": path, "value": FINALIZER}, {"op": "remove", "path": path}]);
        let patch: json_patch::Patch = serde_json::from_value(ops).expect("a valid JSON patch");
        let (namespace, name) = ext.namespace_name();
        match self.extensions(&namespace).patch(&name, &PatchParams::default(), &Patch::Json::<()>(patch)).await {
            Ok(_) => Ok(()),
            Err(e) if store::is_not_found(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    Nothing,
    ShootObjects,
}

fn state(ext: &Extension) -> Option<&serde_json::Value> {
    ext.status.as_ref().and_then(|s| s.state.as_ref())
}

fn object_name(ext: &Extension) -> String {
    let (namespace, name) = ext.namespace_name();
    format!("Extension {namespace}/{name}")
}

fn named(peer: ShootPeer) -> (String, ShootPeer) {
    (peer.metadata.name.clone().unwrap_or_default(), peer)
}

fn named_seed(name: &str) -> Seed {
    let mut seed = Seed::default();
    seed.metadata.name = Some(name.into());
    seed
}

/// The shoot and the seed of a Cluster, each decoded on its own; an error names the field.
fn cluster_view(cluster: Option<&Cluster>, namespace: &str) -> (Result<Shoot, IpamError>, Result<Seed, IpamError>) {
    let Some(cluster) = cluster else {
        let missing = IpamError::Missing {
            field: format!("Cluster {namespace}"),
            fix: "gardenlet writes it before the Extension; wait for the shoot's next reconcile".into(),
        };
        return (Err(missing.clone()), Err(missing));
    };
    let decode = |part: &str, value: &serde_json::Value| IpamError::WrongType {
        object: format!("Cluster {namespace}"),
        field: format!("spec.{part}"),
        reason: match value {
            serde_json::Value::Null => "missing".into(),
            _ => "does not decode".into(),
        },
        fix: "gardenlet writes it; see its logs".into(),
    };
    let shoot = match &cluster.spec.shoot {
        v if v.is_object() => typed(namespace, "shoot", v),
        v => Err(decode("shoot", v)),
    };
    let seed = match &cluster.spec.seed {
        v if v.is_object() => typed(namespace, "seed", v),
        v => Err(decode("seed", v)),
    };
    (shoot, seed)
}

fn typed<T: serde::de::DeserializeOwned>(
    namespace: &str,
    part: &str,
    value: &serde_json::Value,
) -> Result<T, IpamError> {
    crate::decode::decode_value(value).map_err(|(path, reason)| IpamError::WrongType {
        object: format!("Cluster {namespace}"),
        field: format!("spec.{part}.{path}"),
        reason,
        fix: "gardenlet writes it; see its logs".into(),
    })
}

/// Now, rounded up to the second (the status's resolution): gardenlet takes a `lastUpdateTime`
/// before its own timestamp annotation for an outdated status.
fn now() -> String {
    use k8s_openapi::jiff::{RoundMode, TimestampRound, Unit};
    let now = k8s_openapi::jiff::Timestamp::now();
    now.round(TimestampRound::new().smallest(Unit::Second).mode(RoundMode::Ceil)).unwrap_or(now).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(6), Duration::from_secs(32));
        assert_eq!(backoff(40), Duration::from_secs(256));
    }

    #[test]
    fn a_cluster_part_that_does_not_decode_is_named() {
        let cluster: Cluster = serde_json::from_value(serde_json::json!({"metadata": {"name": "shoot--p--a"},
            "spec": {"shoot": {"metadata": {"name": "a", "namespace": "garden-p"},
                               "spec": {"networking": {"nodes": 7}}}}}))
        .unwrap();
        let (shoot, seed) = cluster_view(Some(&cluster), "shoot--p--a");
        let shoot = shoot.unwrap_err().to_string();
        assert!(shoot.starts_with("Cluster shoot--p--a spec.shoot.spec.networking.nodes:"), "{shoot}");
        assert!(seed.unwrap_err().to_string().contains("spec.seed: missing"));
        let (shoot, _) = cluster_view(None, "shoot--p--a");
        assert!(shoot.unwrap_err().to_string().starts_with("Cluster shoot--p--a is not set"));
    }

    #[test]
    fn status_times_are_whole_seconds_not_before_now() {
        let before = k8s_openapi::jiff::Timestamp::now();
        let t: k8s_openapi::jiff::Timestamp = now().parse().unwrap();
        assert!(t >= before.round(Unit::Second).unwrap_or(before) || t >= before, "{t} {before}");
        assert_eq!(t.subsec_nanosecond(), 0);
    }
    use k8s_openapi::jiff::Unit;
}
