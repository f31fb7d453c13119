//! The agent's loop: one pass per retry period and on every watch or netlink event.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use kubelink_ipam::keys::PrivateKey;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::Notify;

use super::cluster::{Cluster, ClusterError};
use super::{Settings, ShootPeer, gateway_desired};
use crate::election::kube::LeaseElection;
use crate::election::{live_gateways, usable_gateways};
use crate::reconcile::{ReconcileError, Reconciler};
use crate::routing::router_routes;

/// What the agent currently is, and what it has to clean up when that changes.
#[derive(Debug, Default)]
struct RoleState {
    holding: Option<u8>,
    /// Every live gateway, with when it took its slot.
    live: Vec<crate::election::LiveGateway>,
    /// When we acquired the slot we hold (from its Lease).
    acquired: Option<k8s_openapi::jiff::Timestamp>,
    last_round_ok: Option<Instant>,
    /// The last election round failed: the watches may hang on a dead connection.
    round_failed: bool,
    /// Since when the gateway role's node-local state has been failing (device, routes, table).
    gateway_failing_since: Option<Instant>,
    /// This node gave its slot up and takes none until then.
    standby_until: Option<Instant>,
    /// The way this node forwards tunnel traffic changed (role, warm-up routes): flows towards the
    /// CIDR must be NATed afresh once the new state is in place.
    forget_flows: bool,
    gateways: Vec<(usize, IpAddr)>,
    slot_key: Option<(u8, PrivateKey)>,
    /// True until removed: leftovers of an earlier run are cleaned up once we know we are no gateway.
    gateway_state_present: bool,
    labelled: Option<Option<u8>>,
    /// What the last pass applied, re-applied between passes without asking the API server.
    applied: Option<Applied>,
}

/// The node-local state of the last pass: a gateway's device, routes and table, or a router's routes.
#[derive(Debug)]
enum Applied {
    Gateway(Box<crate::config::Desired>),
    Router(Vec<crate::config::RouteSpec>),
}

/// Shared with `/readyz` and `/metrics`.
#[derive(Clone, Default)]
pub struct Status {
    pub last_pass_ok: Arc<Mutex<Option<Instant>>>,
    pub slot: Gauge,
    pub peers: Gauge,
    pub routes: Gauge,
}

impl Status {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "kubelink_agent_gateway_slot",
            "Gateway slot this node holds, -1 for none",
            self.slot.clone(),
        );
        registry.register("kubelink_agent_peers", "WireGuard peers on this gateway", self.peers.clone());
        registry.register("kubelink_agent_routes", "Routes this router installs", self.routes.clone());
    }

    /// Ready once a pass succeeded within the last 10 s.
    pub fn ready(&self) -> Result<(), String> {
        match *self.last_pass_ok.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(t) if t.elapsed() < Duration::from_secs(10) => Ok(()),
            Some(t) => Err(format!("last good pass {:?} ago", t.elapsed())),
            None => Err("no good pass yet".into()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
    #[error("waiting for the first complete list of the SeedTunnel and the ShootPeers; nothing changed on this node")]
    NotSynced,
    #[error("the WireGuard CIDR {0} has no room for gateway slot {1}")]
    NoSlotAddress(IpNet, u8),
}

pub struct Agent {
    pub election: LeaseElection,
    pub cluster: Cluster,
    pub rec: Reconciler,
    pub settings: Settings,
    /// What shoots dial for each slot (`host:port`, the slot's load balancer); a slot without one
    /// publishes NODE_IP:LISTEN_PORT.
    pub endpoints: Vec<String>,
    pub status: Status,
    state: RoleState,
}

impl Agent {
    pub fn new(
        election: LeaseElection,
        cluster: Cluster,
        rec: Reconciler,
        settings: Settings,
        endpoints: Vec<String>,
    ) -> Self {
        let state = RoleState { gateway_state_present: true, ..RoleState::default() };
        Agent { election, cluster, rec, settings, endpoints, status: Status::default(), state }
    }

    fn endpoint(&self, slot: u8) -> String {
        self.endpoints
            .get(usize::from(slot))
            .cloned()
            .unwrap_or_else(|| format!("{}:{}", self.election.node_ip, self.settings.listen_port))
    }

    /// Runs passes until `stop` resolves.
    pub async fn run(mut self, wake: Arc<Notify>, stop: impl std::future::Future<Output = ()>) {
        let mut tick = tokio::time::interval(self.election.timing.retry);
        let mut resync = tokio::time::interval(self.settings.resync);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        // After a failed pass only the retry period starts the next: a failing pass makes netlink
        // events of its own, which must not turn into a busy loop.
        let mut failed = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = wake.notified(), if !failed => {}
                _ = resync.tick(), if !failed => { self.resync().await; continue }
                _ = &mut stop => break,
            }
            let result = self.pass().await;
            failed = result.is_err();
            match result {
                Ok(()) => *self.status.last_pass_ok.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now()),
                Err(e) => tracing::warn!("pass failed, retrying: {e}"),
            }
        }
        tracing::info!(slot = ?self.state.holding, "stopping; the device and routes stay for the next start");
    }

    /// Re-applies what the last pass applied: a peer or route removed by hand comes back within one
    /// resync period, without an election round or API reads. Route deletions also wake a full pass
    /// through the netlink monitor; `wg set` on a userspace device makes no netlink event.
    async fn resync(&mut self) {
        let result = match &self.state.applied {
            Some(Applied::Gateway(desired)) => self.rec.reconcile(desired).await.map(|o| o.changed()),
            Some(Applied::Router(routes)) => self.rec.reconcile_routes(routes).await.map(|(r, d)| r + d > 0),
            None => return,
        };
        match result {
            Ok(true) => tracing::info!("resync repaired drift"),
            Ok(false) => {}
            Err(e) => tracing::warn!("resync: {e}"),
        }
    }

    /// One pass: election, then the role's desired state.
    pub async fn pass(&mut self) -> Result<(), PassError> {
        // The slot count is the SeedTunnel's; until it is known no slot is contended for.
        if let Some(slots) = self.cluster.slots() {
            self.election.slots = usize::from(slots);
        }
        self.elect().await;
        self.status.slot.set(self.state.holding.map_or(-1, i64::from));
        if !self.cluster.synced() {
            return Err(PassError::NotSynced);
        }
        let cidr = self.cluster.cidr()?;
        let shoots = self.cluster.shoots();
        match self.state.holding {
            Some(slot) => {
                let result = self.gateway(cidr, slot, &shoots).await;
                self.gateway_health(slot, &result).await;
                result
            }
            None => self.router(cidr, &shoots).await,
        }
    }

    /// A gateway whose node-local state keeps failing (the device cannot be created or configured,
    /// nftables refuses the table, routes fail) cannot forward: after `give_up_after` it releases its
    /// slot so that a healthy node takes it at once, and takes no slot for `standby`. Errors that
    /// every node would share (the Seed, the slot Secret) do not count: moving the slot cannot help.
    async fn gateway_health(&mut self, slot: u8, result: &Result<(), PassError>) {
        if !matches!(result, Err(PassError::Reconcile(_) | PassError::NoSlotAddress(..))) {
            self.state.gateway_failing_since = None;
            return;
        }
        let since = *self.state.gateway_failing_since.get_or_insert_with(Instant::now);
        if since.elapsed() < self.settings.give_up_after {
            return;
        }
        tracing::error!(slot, failing_for = ?since.elapsed(), standby = ?self.settings.standby, "this node cannot serve as gateway; giving the slot up");
        let bound = self.election.timing.renew_deadline;
        match tokio::time::timeout(bound, self.election.release(usize::from(slot))).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(slot, "releasing the slot: {e}; it expires instead"),
            Err(_) => tracing::warn!(slot, "releasing the slot: no answer within {bound:?}; it expires instead"),
        }
        self.state.standby_until = Some(Instant::now() + self.settings.standby);
        self.state.gateway_failing_since = None;
        self.state.holding = None;
        self.state.applied = None;
        self.state.forget_flows = true;
        self.remove_gateway_state().await;
        self.status.slot.set(-1);
    }

    /// A round of the election. When the API server cannot be reached nothing changes: tearing the
    /// device down would cut every shoot off while nobody else can take the slot either. Roles change
    /// only on what a successful read shows (another holder of our slot: we step down then).
    async fn elect(&mut self) {
        // A partitioned API server lets requests hang: bound the round so the loop keeps resyncing.
        let bound = self.election.timing.renew_deadline;
        let acquire = self.state.standby_until.is_none_or(|t| Instant::now() >= t);
        let round = match tokio::time::timeout(bound, self.election.round_with(acquire)).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => {
                self.election.forget_observations();
                Err(format!("no answer from the API server within {bound:?}"))
            }
        };
        match round {
            Ok(round) => {
                if self.state.round_failed {
                    tracing::info!("the API server answers again; restarting the watches");
                    self.cluster.rewatch();
                    self.state.round_failed = false;
                }
                self.state.last_round_ok = Some(Instant::now());
                let now = k8s_openapi::jiff::Timestamp::now();
                let live = live_gateways(now, &round.slots);
                self.state.live = live.clone();
                self.state.gateways = usable_gateways(now, self.settings.warmup, &live)
                    .into_iter()
                    .filter_map(|g| Some((g.slot, g.node_ip?.parse().ok()?)))
                    .collect();
                let holding = round.holding.and_then(|s| u8::try_from(s).ok());
                self.state.acquired = round.holding.and_then(|s| round.slots.get(s)?.as_ref()?.acquired);
                if holding != self.state.holding {
                    // The old role's state must not be re-applied by a resync before the next pass.
                    self.state.applied = None;
                    self.state.forget_flows = true;
                    tracing::info!(node = %self.election.me, from = ?self.state.holding, to = ?holding, "gateway slot changed");
                }
                self.state.holding = holding;
            }
            Err(e) => {
                self.state.round_failed = true;
                let deadline = self.election.timing.renew_deadline;
                let stale = self.state.last_round_ok.is_none_or(|t| t.elapsed() > deadline);
                tracing::warn!("election: {e}");
                if stale && self.state.holding.is_some() {
                    tracing::warn!(
                        "cannot renew for more than {deadline:?}; keeping the data path as it is until the API server answers"
                    );
                }
            }
        }
    }

    async fn gateway(&mut self, cidr: IpNet, slot: u8, shoots: &BTreeSet<ShootPeer>) -> Result<(), PassError> {
        let key = match &self.state.slot_key {
            Some((s, k)) if *s == slot => k.clone(),
            _ => {
                let k = self.cluster.slot_key(slot, &self.endpoint(slot)).await?;
                self.state.slot_key = Some((slot, k.clone()));
                k
            }
        };
        let mut desired =
            gateway_desired(&self.settings, cidr, slot, &key, shoots).ok_or(PassError::NoSlotAddress(cidr, slot))?;
        desired.routes = self.warmup_routes(slot, &desired).await;
        self.state.gateway_state_present = true;
        let outcome = self.rec.reconcile(&desired).await?;
        if outcome.changed() {
            tracing::info!(slot, peers = desired.device.peers.len(), changes = ?outcome, "gateway reconciled");
        }
        self.status.peers.set(desired.device.peers.len() as i64);
        self.status.routes.set(0);
        if std::mem::take(&mut self.state.forget_flows) || outcome.routes_removed > 0 || outcome.routes_replaced > 0 {
            crate::firewall::forget_flows(cidr);
        }
        self.state.applied = Some(Applied::Gateway(Box::new(desired)));
        enable_forwarding(cidr);
        self.label(Some(slot)).await
    }

    /// While this gateway warms up (a new holder: the shoots have no sessions with it yet), shoots
    /// without a live session are routed to a warm gateway. Warm gateways never route away, so two
    /// gateways cannot bounce a packet between them.
    async fn warmup_routes(&self, slot: u8, desired: &crate::config::Desired) -> Vec<crate::config::RouteSpec> {
        let now = k8s_openapi::jiff::Timestamp::now();
        let warmup = k8s_openapi::jiff::SignedDuration::try_from(self.settings.warmup).unwrap_or_default();
        let warming = self.state.acquired.is_some_and(|a| a.checked_add(warmup).is_ok_and(|ready| ready > now));
        if !warming {
            return vec![];
        }
        // Only a gateway that has warmed up itself takes traffic away from us: no ping-pong.
        let others: Vec<_> = self.state.live.iter().filter(|g| g.slot != usize::from(slot)).cloned().collect();
        let warm_other = usable_gateways(now, self.settings.warmup, &others)
            .into_iter()
            .find(|g| g.acquired.is_some_and(|a| a.checked_add(warmup).is_ok_and(|ready| ready <= now)));
        let Some(warm) = warm_other.and_then(|g| g.node_ip?.parse().ok()) else { return vec![] };
        let observed = self.rec.wg.read(&desired.device.name).await.ok().flatten().unwrap_or_default();
        sessionless(desired, &observed, warm)
    }

    async fn router(&mut self, cidr: IpNet, shoots: &BTreeSet<ShootPeer>) -> Result<(), PassError> {
        if self.state.gateway_state_present {
            self.remove_gateway_state().await;
        }
        let addresses: Vec<IpAddr> = shoots.iter().map(|s| s.address).collect();
        let routes = router_routes(cidr, &self.state.gateways, &addresses);
        let (replaced, removed) = self.rec.reconcile_routes(&routes).await?;
        if replaced + removed > 0 {
            tracing::info!(routes = routes.len(), replaced, removed, gateways = ?self.state.gateways, "routes reconciled");
        }
        self.status.routes.set(routes.len() as i64);
        self.status.peers.set(0);
        if std::mem::take(&mut self.state.forget_flows) {
            crate::firewall::forget_flows(cidr);
        }
        self.state.applied = Some(Applied::Router(routes));
        self.label(None).await
    }

    /// Removes the device and the nftables table (after a lost slot, or leftovers at start). Best
    /// effort: a failure is logged and retried on the next pass.
    async fn remove_gateway_state(&mut self) {
        let mut ok = true;
        if let Err(e) = self.rec.wg.remove(&self.settings.device).await {
            ok = false;
            tracing::warn!("removing the gateway device: {e}");
        }
        if crate::firewall::list().is_some()
            && let Err(e) = crate::firewall::remove()
        {
            ok = false;
            tracing::warn!("removing the nftables table: {e}");
        }
        self.state.slot_key = None;
        self.state.gateway_state_present = !ok;
        if ok {
            tracing::info!(device = %self.settings.device, "no gateway here: device and nftables table removed (if any)");
        }
    }

    async fn label(&mut self, slot: Option<u8>) -> Result<(), PassError> {
        if self.state.labelled != Some(slot) {
            self.cluster.label_pod(slot).await?;
            self.state.labelled = Some(slot);
        }
        Ok(())
    }
}

/// Turns on forwarding for the CIDR's family in this network namespace (idempotent).
fn enable_forwarding(cidr: IpNet) {
    let path =
        if cidr.addr().is_ipv4() { "/proc/sys/net/ipv4/ip_forward" } else { "/proc/sys/net/ipv6/conf/all/forwarding" };
    if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == "1") {
        return;
    }
    if let Err(e) = std::fs::write(path, "1") {
        tracing::warn!("cannot enable forwarding ({path}): {e}");
    }
}

/// /32 routes via `warm` for the desired peers that have no live session on the device.
fn sessionless(
    desired: &crate::config::Desired,
    observed: &crate::wg::ObservedDevice,
    warm: IpAddr,
) -> Vec<crate::config::RouteSpec> {
    let live =
        |k| observed.peers.get(k).and_then(|p| p.last_handshake).is_some_and(|age| age < crate::wg::STALE_HANDSHAKE);
    desired
        .device
        .peers
        .iter()
        .filter(|(k, _)| !live(*k))
        .flat_map(|(_, p)| p.allowed_ips.iter())
        .map(|net| crate::config::RouteSpec {
            destination: *net,
            gateway: Some(warm),
            device: None,
            table: crate::route::MAIN_TABLE,
        })
        .collect()
}
