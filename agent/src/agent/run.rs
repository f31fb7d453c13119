//! The agent's loop, the I/O shell around [`super::role`]: an election round every retry period, a
//! data-plane pass after it and on every watch or netlink event, a resync in between. It turns what
//! it sees into observations, steps the role state with them and performs the actions.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use kubelink_contract::Slot;
use kubelink_contract::keys::{PrivateKey, PublicKey};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::{Notify, mpsc};

use super::cluster::{AgentPods, Cluster, ClusterError};
use super::datapath::{self, Check, Fault, Heard};
use super::events::SlotEvent;
use super::next_hops::{self, NodeIpProblem};
use super::role::{self, Action, Delays, NotReady, Now, Observation, RoleState, Setup};
use super::slot_endpoints::{EndpointError, SlotEndpoints};
use super::slot_key::{self, HeldSlot};
use super::view::{self, NodeView};
use super::{Settings, gateway_desired};
use crate::driver::{self, Backoff, Due, Role, Schedule};
use crate::election::Round;
use crate::election::kube::LeaseElection;
use crate::firewall::ForwardCounters;
use crate::metrics::{Labels, PeerSample, PeerTraffic};
use crate::reconcile::{ReconcileError, Reconciler};
use crate::routing::router_routes;

/// What the node applied, kept between passes; the role logic's state is [`RoleState`].
#[derive(Debug, Default)]
struct DataPath {
    /// The slot held and its key, read again every [`slot_key::RECHECK`].
    held: Option<HeldSlot>,
    /// What the last pass applied, re-applied between passes without asking the API server.
    applied: Option<Applied>,
    /// The way this node forwards tunnel traffic changed (role, warm-up routes): flows towards the
    /// CIDR must be NATed afresh once the new state is in place.
    forget_flows: bool,
    /// What the data-path checks know about each peer of the gateway device.
    heard: BTreeMap<PublicKey, Heard>,
    /// The forwarding counters at the last data-path check.
    forward: Option<ForwardCounters>,
    /// The shoot (`namespace/name`) of each peer key, for the per-peer metrics.
    shoots: BTreeMap<PublicKey, String>,
    /// The gateway device as the last data-path check read it.
    observed: Option<crate::wg::ObservedDevice>,
    /// The last round came before the agent Pods were listed, so its next hops could not be checked
    /// (all were dropped): no pass until a round has checked them against the list.
    next_hops_unchecked: bool,
    /// Why the last round dropped next hops ([`next_hops::verify_node_ips`]); logged when it changes.
    node_ip_problems: Vec<NodeIpProblem>,
}

/// How long one probe through the gateway device waits for its answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Readiness computed longer ago than this means the loop stalls: the node is not ready.
const STALLED: Duration = Duration::from_secs(10);

/// The node-local state of the last pass: a gateway's device, routes and table, or a router's routes.
#[derive(Debug)]
enum Applied {
    Gateway(Box<crate::config::Desired>),
    Router(Vec<crate::config::RouteSpec>),
}

/// The role's readiness after a step, and when it was computed.
type Snapshot = Option<(Result<(), NotReady>, Instant)>;

/// Shared with `/readyz` and `/metrics`.
#[derive(Clone)]
pub struct Status {
    /// The role's readiness after the last step, and when it was computed.
    pub readiness: Arc<Mutex<Snapshot>>,
    pub ready: Gauge,
    /// 1 for the slot this node holds, 0 for the others the SeedTunnel has.
    pub slot_held: Family<Labels, Gauge>,
    /// Slots taken and lost (`change`), per slot.
    pub slot_changes: Family<Labels, Counter>,
    pub give_ups: Family<Labels, Counter>,
    pub peers: Gauge,
    pub routes: Gauge,
    /// Data-plane passes by `result` (ok, failed), and how long they took.
    pub passes: Family<Labels, Counter>,
    pub pass_duration: Histogram,
    /// Resyncs that found the device, peers or routes changed by someone else and repaired them.
    pub drift_repairs: Counter,
    /// Each shoot's handshake and traffic on this gateway.
    pub peer_traffic: PeerTraffic,
    /// What `/status` shows, as of the last pass or election round.
    pub view: Arc<Mutex<NodeView>>,
}

impl Default for Status {
    fn default() -> Self {
        Self {
            readiness: Arc::default(),
            ready: Gauge::default(),
            slot_held: Family::default(),
            slot_changes: Family::default(),
            give_ups: Family::default(),
            peers: Gauge::default(),
            routes: Gauge::default(),
            passes: Family::default(),
            pass_duration: crate::metrics::pass_histogram(),
            drift_repairs: Counter::default(),
            peer_traffic: PeerTraffic::new("kubelink_gateway_peer", "the shoot"),
            view: Arc::default(),
        }
    }
}

fn labels<const N: usize>(pairs: [(&str, String); N]) -> Labels {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

impl Status {
    pub fn register(&self, r: &mut Registry) {
        crate::metrics::register_build_info(r, "agent");
        r.register("kubelink_agent_slot_held", "1 for the gateway slot this node holds", self.slot_held.clone());
        let changes = "Gateway slots this node took or lost (label change)";
        r.register("kubelink_agent_slot_changes", changes, self.slot_changes.clone());
        let give_ups = "Slots this node gave up because its gateway setup kept failing";
        r.register("kubelink_agent_slot_give_ups", give_ups, self.give_ups.clone());
        r.register("kubelink_agent_peers", "WireGuard peers on this gateway", self.peers.clone());
        r.register("kubelink_agent_routes", "Routes this router installs", self.routes.clone());
        r.register("kubelink_agent_ready", "1 while /readyz answers 200", self.ready.clone());
        r.register("kubelink_agent_passes", "Data-plane passes by result", self.passes.clone());
        let duration = "Duration of data-plane passes";
        r.register_with_unit(
            "kubelink_agent_pass_duration",
            duration,
            prometheus_client::registry::Unit::Seconds,
            self.pass_duration.clone(),
        );
        let drift = "Resyncs that repaired a device, peer or route changed by someone else";
        r.register("kubelink_agent_drift_repairs", drift, self.drift_repairs.clone());
        self.peer_traffic.register(r);
        r.register_collector(Box::new(crate::metrics::PacketsWithoutEndpoint));
    }

    fn pass_done(&self, ok: bool, took: Duration) {
        let result = if ok { "ok" } else { "failed" };
        self.passes.get_or_create(&labels([("result", result.into())])).inc();
        self.pass_duration.observe(took.as_secs_f64());
    }

    /// Slot metrics after a step: which of `slots` this node holds, and the change if any.
    fn slot_step(&self, slots: usize, before: Option<Slot>, after: Option<Slot>) {
        for slot in Slot::ALL.into_iter().take(slots) {
            self.slot_held.get_or_create(&labels([("slot", slot.to_string())])).set((after == Some(slot)) as i64);
        }
        if before == after {
            return;
        }
        for (slot, change) in [(before, "lost"), (after, "taken")] {
            if let Some(slot) = slot {
                self.slot_changes.get_or_create(&labels([("slot", slot.to_string()), ("change", change.into())])).inc();
            }
        }
    }

    /// What the role logic last said ([`role::readiness`]), unless the loop stopped saying anything.
    pub fn ready(&self) -> Result<(), String> {
        match &*self.readiness.lock().unwrap_or_else(|e| e.into_inner()) {
            None => Err("starting: nothing is in place yet".into()),
            Some((_, at)) if at.elapsed() > STALLED => {
                Err(format!("the agent's loop has not run for {:?}", at.elapsed()))
            }
            Some((result, _)) => result.clone().map_err(|e| e.to_string()),
        }
    }

    /// `/status`: the last pass's view with the readiness of now.
    pub fn node_view(&self) -> NodeView {
        let mut view = self.view.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let ready = self.ready();
        view.ready = ready.is_ok();
        view.not_ready = ready.err();
        view
    }

    fn record(&self, readiness: Result<(), NotReady>) {
        self.ready.set(readiness.is_ok() as i64);
        *self.readiness.lock().unwrap_or_else(|e| e.into_inner()) = Some((readiness, Instant::now()));
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    #[error(
        "waiting for the first complete list of the SeedTunnel, the ShootPeers and the agent Pods; nothing changed on this node"
    )]
    NotSynced,
    #[error("the WireGuard CIDR {0} has no room for gateway slot {1}")]
    NoSlotAddress(IpNet, Slot),
}

impl PassError {
    /// Whether a failed gateway setup is this node's (device, routes, table, the slot's address) or one
    /// every node would share.
    fn setup(result: &Result<(), PassError>) -> Setup {
        match result {
            Ok(()) => Setup::Done,
            Err(PassError::Reconcile(_) | PassError::NoSlotAddress(..)) => Setup::NodeLocalFailure,
            Err(_) => Setup::SharedFailure,
        }
    }
}

/// What performing an action led to: an observation to step at once, and an error that fails the pass.
type Performed = (Option<Observation>, Result<(), PassError>);

pub struct Agent {
    pub election: LeaseElection,
    pub cluster: Cluster,
    pub rec: Reconciler,
    pub settings: Settings,
    /// The slot EndpointSlices this node writes as a slot holder; `None`: it writes none (it is no
    /// Pod of the DaemonSet, and the admission policy lets only a Pod's token write them).
    pub endpoints: Option<SlotEndpoints>,
    pub status: Status,
    /// Kubernetes Events on the slot Leases; `None`: none are recorded.
    pub events: Option<super::events::Events>,
    /// Which of this node's pods may reach which shoot; `None`: not enforced here.
    pub scope: Option<super::local_pods::Scope>,
    roles: RoleState,
    data: DataPath,
}

fn now() -> Now {
    Now { instant: Instant::now(), wall: k8s_openapi::jiff::Timestamp::now() }
}

impl Agent {
    pub fn new(election: LeaseElection, cluster: Cluster, rec: Reconciler, settings: Settings) -> Self {
        let delays = Delays {
            warmup: settings.warmup,
            give_up_after: settings.give_up_after,
            standby: settings.standby,
            renew_deadline: election.timing.renew_deadline,
        };
        let roles = RoleState::new(delays);
        Agent {
            election,
            cluster,
            rec,
            settings,
            endpoints: None,
            status: Status::default(),
            events: None,
            scope: None,
            roles,
            data: DataPath::default(),
        }
    }

    /// Runs until SIGTERM or SIGINT: an election round and a pass every retry period, a pass on every
    /// wake-up, a resync in between; after a failed pass only the election's pass until one succeeds.
    pub async fn run(mut self, wake: Arc<Notify>, mut signals: mpsc::Receiver<driver::Signal>) {
        let retry = self.election.timing.retry;
        let schedule = Schedule {
            resync: self.settings.resync,
            poll: None,
            tick: Some(retry),
            // A back-off at least as long as the retry period never ends before the next round's pass:
            // wake-ups and resyncs wait until a pass succeeds.
            backoff: Backoff { initial: retry, max: retry.saturating_mul(8) },
            pass_at_start: false,
        };
        driver::run(&mut self, schedule, &wake, &mut signals).await;
        tracing::info!(slot = ?self.roles.role.slot(), "stopping; the device and routes stay for the next start");
    }

    /// Re-applies what the last pass applied: a peer or route removed by hand comes back within one
    /// resync period, without an election round or API reads. Route deletions also wake a full pass
    /// through the netlink monitor; `wg set` on a userspace device makes no netlink event. What it
    /// finds is an observation like a pass's: readiness follows it.
    async fn reapply(&mut self) {
        let (result, observation) = match &self.data.applied {
            Some(Applied::Gateway(desired)) => {
                let result = self.rec.reconcile(desired).await.map(|o| o.changed());
                let setup = if result.is_ok() { Setup::Done } else { Setup::NodeLocalFailure };
                (result, Observation::GatewayApplied(setup))
            }
            Some(Applied::Router(routes)) => {
                let result = self.rec.reconcile_routes(routes).await.map(|(r, d)| r + d > 0);
                let observation = if result.is_ok() { Observation::RoutesApplied } else { Observation::RoutesFailed };
                (result, observation)
            }
            None => return,
        };
        match result {
            Ok(true) => {
                self.status.drift_repairs.inc();
                tracing::info!("resync repaired drift")
            }
            Ok(false) => {}
            Err(e) => tracing::warn!("resync: {e}"),
        }
        self.drive_logged(observation).await;
    }

    /// [`Self::drive`] outside a pass: an error is logged, the next pass retries.
    async fn drive_logged(&mut self, observation: Observation) {
        if let Err(e) = self.drive(observation).await {
            tracing::warn!("{e}");
        }
    }

    /// An election round with the slot count of the SeedTunnel (until it is known, none is contended
    /// for). Its outcome, or its failure, is an observation: it never fails the pass.
    async fn elect(&mut self) {
        if let Some(slots) = self.cluster.slot_count() {
            self.election.slots = usize::from(slots);
        }
        if let Err(e) = self.drive(Observation::ElectionDue).await {
            tracing::warn!("election: {e}");
        }
    }

    /// One data-plane pass, timed for the metrics.
    async fn timed_pass(&mut self) -> Result<(), PassError> {
        let started = Instant::now();
        let result = self.data_pass().await;
        self.status.pass_done(result.is_ok(), started.elapsed());
        self.refresh_view();
        result
    }

    /// What `/status` shows: the role held and the node-local state of the last pass.
    fn refresh_view(&self) {
        let slot = self.roles.role.slot();
        let mut view = NodeView {
            node: self.election.me.clone(),
            role: if slot.is_some() { "gateway" } else { "router" }.into(),
            slot: slot.map(|s| s.number()),
            ..NodeView::default()
        };
        match &self.data.applied {
            Some(Applied::Gateway(desired)) => {
                view.peers = view::gateway_peers(&desired.device.peers, &self.data.shoots, self.data.observed.as_ref());
                view.public_key = Some(desired.device.private_key.public_key().to_string());
                view.dropped = self.rec.firewall.drops();
            }
            Some(Applied::Router(routes)) => view.routes = view::routes(routes),
            None => {}
        }
        view.endpoint = slot.and_then(|s| self.cluster.endpoint(s));
        *self.status.view.lock().unwrap_or_else(|e| e.into_inner()) = view;
    }

    /// One data-plane pass: the role's desired state, from what the watches and the last round show.
    pub async fn data_pass(&mut self) -> Result<(), PassError> {
        if !self.cluster.synced() || self.data.next_hops_unchecked {
            return Err(PassError::NotSynced);
        }
        // Without the SeedTunnel there is no CIDR: nothing on this node changes.
        let cidr = self.cluster.cidr()?;
        let result = self.drive(Observation::PassDue).await;
        if let Some(scope) = &self.scope {
            scope.apply(&self.rec.link, cidr, &self.settings.device, &self.cluster.shoots()).await;
        }
        result
    }

    /// Steps the role state with `observation` and performs the actions in order; what an action
    /// reports back is stepped at once and its actions come next. The first error is the result.
    async fn drive(&mut self, observation: Observation) -> Result<(), PassError> {
        let mut queue = VecDeque::from(self.step(observation));
        let mut result = Ok(());
        while let Some(action) = queue.pop_front() {
            let (report, outcome) = self.perform(action).await;
            if let Some(report) = report {
                self.step(report).into_iter().rev().for_each(|a| queue.push_front(a));
            }
            if result.is_ok() {
                result = outcome;
            }
        }
        result
    }

    fn step(&mut self, observation: Observation) -> Vec<Action> {
        let before = self.roles.role.slot();
        let placeholder = RoleState::new(self.roles.delays);
        let state = std::mem::replace(&mut self.roles, placeholder);
        let actions;
        (self.roles, actions) = role::step(state, observation, now());
        let after = self.roles.role.slot();
        if after != before {
            // As numbers: `to=Some(0)` is what operators and the qemu scenario read.
            let (from, to) = (before.map(Slot::number), after.map(Slot::number));
            tracing::info!(node = %self.election.me, ?from, ?to, "gateway slot changed");
            self.record_change(before, after);
        }
        self.status.slot_step(self.election.slots, before, after);
        self.status.record(role::readiness(&self.roles, Instant::now()));
        actions
    }

    /// Events for a slot change: the slot left, then the slot taken.
    fn record_change(&self, before: Option<Slot>, after: Option<Slot>) {
        let Some(events) = &self.events else { return };
        if let Some(slot) = before {
            events.spawn(SlotEvent::Lost { slot });
        }
        if let Some(slot) = after {
            events.spawn(SlotEvent::Taken { slot });
        }
    }

    async fn perform(&mut self, action: Action) -> Performed {
        match action {
            Action::Elect { acquire } => (Some(self.round(acquire).await), Ok(())),
            Action::RestartWatches => {
                tracing::info!("the API server answers again; restarting the watches");
                self.cluster.rewatch();
                if let Some(scope) = &mut self.scope {
                    scope.pods.rewatch();
                }
                (None, Ok(()))
            }
            Action::BecomeGateway { .. } | Action::BecomeRouter => {
                // The old role's state must not be re-applied by a resync before the next pass.
                self.data.applied = None;
                self.data.forget_flows = true;
                self.data.heard.clear();
                self.status.peer_traffic.set(Vec::new());
                (None, Ok(()))
            }
            Action::HoldWithoutRenewal { slot } => {
                let deadline = self.election.timing.renew_deadline;
                tracing::warn!(
                    slot = slot.number(),
                    "cannot renew for more than {deadline:?}; keeping the data path as it is until the API server answers"
                );
                (None, Ok(()))
            }
            Action::ApplyGateway { slot, sessionless_via } => {
                let result = self.apply_gateway(slot, sessionless_via).await;
                (Some(Observation::GatewayApplied(PassError::setup(&result))), result)
            }
            Action::ApplyRouter { gateways } => {
                let result = self.apply_router(&gateways).await;
                let report = if result.is_ok() { Observation::RoutesApplied } else { Observation::RoutesFailed };
                (Some(report), result)
            }
            Action::CheckDataPath { slot } => {
                (Some(Observation::DataPathChecked(self.check_data_path(slot).await)), Ok(()))
            }
            Action::RemoveGatewayState => (Some(self.remove_gateway_state().await), Ok(())),
            Action::PublishEndpoint { slot } => match self.publish_endpoint(slot).await {
                Ok(()) => (Some(Observation::EndpointPublished { slot }), Ok(())),
                Err(e) => (None, Err(e.into())),
            },
            Action::GiveUp { slot, failing_for } => {
                self.give_up(slot, failing_for).await;
                (None, Ok(()))
            }
        }
    }

    /// A round of the election, bounded by the renew deadline: a partitioned API server lets requests
    /// hang, and the loop must go on resyncing.
    async fn round(&mut self, acquire: bool) -> Observation {
        let bound = self.election.timing.renew_deadline;
        match tokio::time::timeout(bound, self.election.round_with(acquire)).await {
            Ok(Ok(round)) => Observation::Elected(self.checked(round)),
            Ok(Err(e)) => {
                tracing::warn!("election: {e}");
                Observation::ApiUnreachable
            }
            Err(_) => {
                self.election.forget_observations();
                tracing::warn!("election: no answer from the API server within {bound:?}");
                Observation::ApiUnreachable
            }
        }
    }

    /// The round with each slot's next hop checked against the holder's agent Pod: a node IP that is
    /// not the Pod's host IP is dropped before the role logic sees it, so no route goes via it.
    /// Before the Pods are listed every next hop is dropped and no pass runs
    /// ([`DataPath::next_hops_unchecked`]); without Pods to check against they are taken as written.
    fn checked(&mut self, mut round: Round) -> Round {
        let (pods, listed) = match self.cluster.agent_pods() {
            AgentPods::Unchecked => return round,
            AgentPods::Listing => (vec![], false),
            AgentPods::Listed(pods) => (pods, true),
        };
        let problems;
        (round.slots, problems) = next_hops::verify_node_ips(round.slots, &pods);
        self.data.next_hops_unchecked = !listed;
        if listed && problems != self.data.node_ip_problems {
            problems.iter().for_each(|p| tracing::warn!("{p}"));
            if problems.is_empty() {
                tracing::info!("every slot Lease's node IP is its holder's host IP again");
            }
            self.data.node_ip_problems = problems;
        }
        round
    }

    /// Makes the slot EndpointSlices name this node for `slot` and for no other slot.
    async fn publish_endpoint(&self, slot: Option<Slot>) -> Result<(), EndpointError> {
        let Some(endpoints) = &self.endpoints else { return Ok(()) };
        endpoints.publish(slot, self.election.slots).await
    }

    /// Releases the slot's Lease, bounded by the renew deadline; if that fails the Lease expires.
    async fn give_up(&self, slot: Slot, failing_for: Duration) {
        self.status.give_ups.get_or_create(&labels([("slot", slot.to_string())])).inc();
        if let Some(events) = &self.events {
            events.spawn(SlotEvent::GivenUp { slot, failing_for, standby: self.settings.standby });
        }
        tracing::error!(slot = slot.number(), ?failing_for, standby = ?self.settings.standby, "this node cannot serve as gateway; giving the slot up");
        let bound = self.election.timing.renew_deadline;
        match tokio::time::timeout(bound, self.election.release(slot.index())).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(slot = slot.number(), "releasing the slot: {e}; it expires instead"),
            Err(_) => tracing::warn!(
                slot = slot.number(),
                "releasing the slot: no answer within {bound:?}; it expires instead"
            ),
        }
    }

    async fn apply_gateway(&mut self, slot: Slot, sessionless_via: Option<IpAddr>) -> Result<(), PassError> {
        let cidr = self.cluster.cidr()?;
        let (key, news) = self.slot_key(slot).await?;
        let sessionless_via = if news.warms_up_again() {
            let at = now();
            self.roles.rekeyed = Some(at.wall);
            tracing::info!(slot = slot.number(), "the shoots do not have the slot's key yet; warming up");
            sessionless_via.or_else(|| super::role::warm_fallback(&self.roles, slot, Some(at.wall), at))
        } else {
            sessionless_via
        };
        let shoots = self.cluster.shoots();
        self.data.shoots = shoots.iter().map(|s| (s.public_key, s.shoot.clone())).collect();
        let mut desired =
            gateway_desired(&self.settings, cidr, slot, &key, &shoots).ok_or(PassError::NoSlotAddress(cidr, slot))?;
        if let Some(warm) = sessionless_via {
            let observed = self.rec.wg.read(&desired.device.name).await.ok().flatten().unwrap_or_default();
            let keyed = self.roles.rekeyed.map(|t| now().wall.duration_since(t).unsigned_abs());
            desired.routes = sessionless(&desired, &observed, warm, keyed);
        }
        // Forwarding is turned on when the node takes the slot; found off later, something on the node
        // turned it off, and the data-path check counts that against this node instead of fighting it.
        let new = !matches!(self.data.applied, Some(Applied::Gateway(_)));
        let outcome = self.rec.reconcile(&desired).await?;
        if outcome.changed() {
            tracing::info!(slot = slot.number(), peers = desired.device.peers.len(), changes = ?outcome, "gateway reconciled");
        }
        self.status.peers.set(desired.device.peers.len() as i64);
        self.status.routes.set(0);
        if std::mem::take(&mut self.data.forget_flows) || outcome.routes_removed > 0 || outcome.routes_replaced > 0 {
            crate::firewall::forget_flows(cidr);
        }
        self.data.applied = Some(Applied::Gateway(Box::new(desired)));
        if new {
            enable_forwarding(cidr);
        }
        Ok(())
    }

    /// Checks that the gateway of `slot` forwards, and says so when it does not.
    async fn check_data_path(&mut self, slot: Slot) -> Check {
        let check = self.inspect_data_path(slot).await;
        if let Check::Fault(fault) = check {
            tracing::warn!(slot = slot.number(), "data-path check: {fault}");
        }
        check
    }

    /// Whether forwarding is on, and whether shoots heard from lately answer a probe from the slot
    /// address through the device ([`datapath`] plans whom to ask).
    async fn inspect_data_path(&mut self, slot: Slot) -> Check {
        let Some(Applied::Gateway(desired)) = &self.data.applied else { return Check::Unprobed };
        let Some(source) = desired.addresses.iter().next().map(|a| a.addr()) else { return Check::Unprobed };
        let addresses: BTreeMap<PublicKey, IpAddr> =
            desired.device.peers.iter().filter_map(|(k, p)| Some((*k, p.allowed_ips.iter().next()?.addr()))).collect();
        // Read before the forwarding check: the per-shoot metrics follow the device even while it fails.
        let read = self.rec.wg.read(&desired.device.name).await;
        if let Ok(Some(observed)) = &read {
            self.status.peer_traffic.set(peer_samples(slot, &self.data.shoots, observed));
        }
        self.data.observed = read.as_ref().ok().cloned().flatten();
        if !forwarding_on(source) {
            return Check::Fault(Fault::ForwardingOff);
        }
        // Probes are the node's own packets and never cross the forward hook; the table's counters
        // show what happens to the routers' traffic.
        let counters = self.rec.firewall.forward_counters();
        let before = std::mem::replace(&mut self.data.forward, counters);
        if let Some(fault) = before.zip(counters).and_then(|(b, n)| datapath::dropped(&b, &n)) {
            return Check::Fault(fault);
        }
        let observed = match read {
            Ok(Some(observed)) => observed,
            Ok(None) => return Check::Unprobed,
            Err(e) => {
                tracing::debug!(slot = slot.number(), "data-path check: reading the device: {e}");
                return Check::Unprobed;
            }
        };
        let now = Instant::now();
        self.data.heard = datapath::heard_from(&self.data.heard, &observed, now);
        if self.rekey_warming() {
            // Shoots that have not got the new key yet cannot answer through it: no verdict until
            // they have had the warm-up to switch.
            return Check::Unprobed;
        }
        let asked = datapath::targets(&self.data.heard, &addresses, now);
        let answers = probe_all(&asked, source).await;
        datapath::record(&mut self.data.heard, &asked, &answers);
        datapath::verdict(&asked, &answers)
    }

    /// Whether the slot's key is newer than the warm-up: shoots may still be on the old one.
    fn rekey_warming(&self) -> bool {
        let since = |t: k8s_openapi::jiff::Timestamp| now().wall.duration_since(t).unsigned_abs();
        self.roles.rekeyed.is_some_and(|t| since(t) < self.settings.warmup)
    }

    /// The slot's key, read when the slot is taken and again every [`slot_key::RECHECK`], and whether
    /// it is new to the shoots: it replaced the key in use (a rotation). A failed re-read keeps the
    /// key in use: the Secret may be between a deletion and the IPAM's new one.
    async fn slot_key(&mut self, slot: Slot) -> Result<(PrivateKey, KeyNews), PassError> {
        let now = Instant::now();
        if let Some(held) = self.data.held.as_ref().filter(|h| h.fresh_for(slot, now)) {
            return Ok((held.key.clone(), KeyNews::Known));
        }
        let previous = self.data.held.take().filter(|h| h.slot == slot);
        let read = self.cluster.slot_key(slot);
        let Some(previous) = previous else {
            let key = read.await?;
            self.data.held = Some(HeldSlot { slot, key: key.clone(), checked: now });
            return Ok((key, KeyNews::Known));
        };
        // A re-read must not hold the pass up: the API server may not answer (the election says so
        // on its own), and the key in use stays meanwhile.
        let key = match tokio::time::timeout(slot_key::RECHECK_TIMEOUT, read).await {
            Ok(Ok(key)) => key,
            Ok(Err(e)) => {
                tracing::warn!(slot = slot.number(), "cannot read the slot Secret again: {e}; keeping the key in use");
                return Ok(self.keep(previous, now));
            }
            Err(_) => {
                tracing::warn!(slot = slot.number(), "no answer reading the slot Secret again; keeping the key in use");
                return Ok(self.keep(previous, now));
            }
        };
        let news = if previous.key.public_key() != key.public_key() { KeyNews::Rotated } else { KeyNews::Known };
        if news == KeyNews::Rotated {
            tracing::info!(slot = slot.number(), public_key = %key.public_key(), "the slot's key changed: the device takes it now");
        }
        self.data.held = Some(HeldSlot { slot, key: key.clone(), checked: now });
        Ok((key, news))
    }

    /// Keeps the slot key in use until the next re-read.
    fn keep(&mut self, previous: HeldSlot, now: Instant) -> (PrivateKey, KeyNews) {
        let key = previous.key.clone();
        self.data.held = Some(HeldSlot { checked: now, ..previous });
        (key, KeyNews::Known)
    }

    async fn apply_router(&mut self, gateways: &[(usize, IpAddr)]) -> Result<(), PassError> {
        let cidr = self.cluster.cidr()?;
        let addresses: Vec<IpAddr> = self.cluster.shoots().iter().map(|s| s.address).collect();
        let routes = router_routes(cidr, gateways, &addresses);
        let (replaced, removed) = self.rec.reconcile_routes(&routes).await?;
        if replaced + removed > 0 {
            tracing::info!(routes = routes.len(), replaced, removed, ?gateways, "routes reconciled");
        }
        self.status.routes.set(routes.len() as i64);
        self.status.peers.set(0);
        if std::mem::take(&mut self.data.forget_flows) {
            crate::firewall::forget_flows(cidr);
        }
        self.data.applied = Some(Applied::Router(routes));
        Ok(())
    }

    /// Removes the device and the nftables table (after a lost slot, or leftovers at start). Best
    /// effort: a failure is logged and retried on the next pass.
    async fn remove_gateway_state(&mut self) -> Observation {
        let mut complete = true;
        if let Err(e) = self.rec.wg.remove(&self.settings.device).await {
            complete = false;
            tracing::warn!("removing the gateway device: {e}");
        }
        if let Err(e) = self.rec.firewall.remove_if_present().await {
            complete = false;
            tracing::warn!("removing the nftables table: {e}");
        }
        self.data.held = None;
        if complete {
            tracing::info!(device = %self.settings.device, "no gateway here: device and nftables table removed (if any)");
        }
        Observation::GatewayRemoved { complete }
    }
}

/// What a read of the slot Secret says about the key the shoots have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyNews {
    /// The key in use (or the first read after taking the slot: the shoots have had the slot's
    /// public key from the extension controller since it generated the key).
    Known,
    /// The key replaced the one in use: a rotation.
    Rotated,
}

impl KeyNews {
    /// Whether the gateway warms up again from now: the shoots do not have the key yet, so shoots
    /// without a session with it go via the other gateway until their Secret has it, and sessions
    /// from before do not count. Only a rotation does so, even right after taking the slot: shoots
    /// that were answering with the old key stop.
    fn warms_up_again(self) -> bool {
        self == KeyNews::Rotated
    }
}

/// The agent's timers are the [`driver`]'s: its own timer is the election round.
impl Role for Agent {
    type Error = PassError;

    async fn pass(&mut self) -> Result<(), PassError> {
        self.timed_pass().await
    }

    fn failed(&mut self, error: &PassError, retry_in: Duration) {
        tracing::warn!("pass failed, retrying in {retry_in:?}: {error}");
    }

    /// Not a pass: the last pass's state re-applied.
    async fn resync(&mut self) -> Due {
        self.reapply().await;
        Due::Nothing
    }

    /// The election round, then a pass: the round may have changed the node's role.
    async fn tick(&mut self) -> Due {
        self.elect().await;
        self.drive_logged(Observation::DataPathDue).await;
        self.refresh_view();
        Due::Pass
    }
}

/// One sample per shoot peer on the device, labelled with the shoot's name and the slot.
fn peer_samples(
    slot: Slot,
    shoots: &BTreeMap<PublicKey, String>,
    observed: &crate::wg::ObservedDevice,
) -> Vec<PeerSample> {
    let unknown = String::from("unknown");
    observed
        .peers
        .iter()
        .map(|(key, p)| PeerSample {
            labels: labels([("shoot", shoots.get(key).unwrap_or(&unknown).clone()), ("slot", slot.to_string())]),
            last_handshake: p.last_handshake.map(crate::metrics::unix_seconds_ago),
            rx_bytes: p.rx_bytes,
            tx_bytes: p.tx_bytes,
        })
        .collect()
}

/// Pings each target from `source` at once; whether each answered, in order.
async fn probe_all(asked: &[datapath::Target], source: IpAddr) -> Vec<bool> {
    let pings = asked.iter().map(|t| {
        let dst = t.address;
        tokio::task::spawn_blocking(move || {
            crate::probe::ping_burst(dst, Some(source), crate::probe::BURST, PROBE_TIMEOUT)
        })
    });
    let results = futures::future::join_all(pings).await;
    results.into_iter().map(|r| matches!(r, Ok(Ok(_)))).collect()
}

/// The forwarding sysctl of `addr`'s family in this network namespace.
fn forwarding_path(addr: IpAddr) -> &'static str {
    if addr.is_ipv4() { "/proc/sys/net/ipv4/ip_forward" } else { "/proc/sys/net/ipv6/conf/all/forwarding" }
}

/// Whether forwarding is on for `addr`'s family (unreadable counts as on: no evidence).
fn forwarding_on(addr: IpAddr) -> bool {
    std::fs::read_to_string(forwarding_path(addr)).map_or(true, |v| v.trim() == "1")
}

/// Turns on forwarding for the CIDR's family in this network namespace (idempotent).
fn enable_forwarding(cidr: IpNet) {
    let path = forwarding_path(cidr.addr());
    if forwarding_on(cidr.addr()) {
        return;
    }
    if let Err(e) = std::fs::write(path, "1") {
        tracing::warn!("cannot enable forwarding ({path}): {e}");
    }
}

/// /32 routes via `warm` for the desired peers that have no live session on the device. With the key
/// in use for `keyed`, a handshake older than that was made with the previous key and does not count.
fn sessionless(
    desired: &crate::config::Desired,
    observed: &crate::wg::ObservedDevice,
    warm: IpAddr,
    keyed: Option<Duration>,
) -> Vec<crate::config::RouteSpec> {
    let fresh = |age: Duration| age < crate::wg::STALE_HANDSHAKE && keyed.is_none_or(|k| age < k);
    let live = |k| observed.peers.get(k).and_then(|p| p.last_handshake).is_some_and(fresh);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(status: &Status) -> Vec<String> {
        let mut registry = Registry::default();
        status.register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out.lines().map(String::from).collect()
    }

    #[test]
    fn a_rotated_key_warms_up_again_even_while_taking_over() {
        // A rotation right after a take-over: the shoots that answered with the old key stop
        // answering, and without a new warm-up the probe verdict would give the slot up.
        assert!(KeyNews::Rotated.warms_up_again());
        // The key the controller generated is the one the shoots have: reading it is no news.
        assert!(!KeyNews::Known.warms_up_again());
    }

    #[test]
    fn slot_changes_and_passes_are_counted_without_sentinels() {
        let status = Status::default();
        status.slot_step(2, None, Some(Slot::ALL[1]));
        status.slot_step(2, Some(Slot::ALL[1]), Some(Slot::ALL[1]));
        status.slot_step(2, Some(Slot::ALL[1]), None);
        status.pass_done(true, Duration::from_millis(3));
        status.pass_done(false, Duration::from_millis(30));
        status.drift_repairs.inc();
        let lines = scrape(&status);
        for want in [
            "kubelink_agent_slot_held{slot=\"0\"} 0",
            "kubelink_agent_slot_held{slot=\"1\"} 0",
            "kubelink_agent_slot_changes_total{slot=\"1\",change=\"taken\"} 1",
            "kubelink_agent_slot_changes_total{slot=\"1\",change=\"lost\"} 1",
            "kubelink_agent_passes_total{result=\"ok\"} 1",
            "kubelink_agent_passes_total{result=\"failed\"} 1",
            "kubelink_agent_pass_duration_seconds_count 2",
            "kubelink_agent_drift_repairs_total 1",
            "kubelink_gateway_packets_without_endpoint_total 0",
        ] {
            assert!(lines.iter().any(|l| l == want), "missing {want:?} in\n{}", lines.join("\n"));
        }
        assert!(!lines.iter().any(|l| l.ends_with(" -1")), "no sentinels:\n{}", lines.join("\n"));
        status.slot_step(2, None, Some(Slot::ALL[0]));
        let held = scrape(&status);
        assert!(held.iter().any(|l| l == "kubelink_agent_slot_held{slot=\"0\"} 1"), "{}", held.join("\n"));
    }
}
