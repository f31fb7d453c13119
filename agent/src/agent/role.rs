//! The agent's role logic as a pure state machine. A node is a router or the gateway of one slot;
//! [`step`] takes what the node observed (an election round or its failure, a pass being due, what
//! an action reported back) and returns the next [`RoleState`] and the [`Action`]s to perform.
//! [`super::run`] gathers the observations and performs the actions; nothing here does I/O, so every
//! transition is table-tested without root, network or API server. Which slot to take is the
//! election's decision ([`crate::election`]); this module decides what the node does about it.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kubelink_contract::Slot;

use super::datapath::{Check, Fault};
use crate::election::{LiveGateway, Round, live_gateways, usable_gateways, warmed_up};

/// The moment of an observation: the monotonic clock for the node's own deadlines (give-up, standby,
/// API silence), the wall clock for what the Leases say (warm-up counts from their acquireTime).
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub instant: Instant,
    pub wall: Timestamp,
}

/// How long the role logic waits before it acts (flags of `kubelink agent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delays {
    /// How long a new slot holder gets no router traffic while shoots re-handshake with it.
    pub warmup: Duration,
    /// How long a gateway's node-local state may keep failing before the node gives its slot up.
    pub give_up_after: Duration,
    /// How long a node that gave a slot up takes no slot.
    pub standby: Duration,
    /// A holder that has not renewed for this long keeps forwarding, and says so.
    pub renew_deadline: Duration,
}

/// What the node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Routes shoot addresses to the gateway nodes.
    Router,
    /// Holds `slot`: the WireGuard device, the slot's key and address, SNAT.
    Gateway { slot: Slot, acquired: Option<Timestamp> },
}

impl Role {
    pub fn slot(&self) -> Option<Slot> {
        match self {
            Role::Router => None,
            Role::Gateway { slot, .. } => Some(*slot),
        }
    }
}

/// Whether the last election round got an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiState {
    Answering,
    /// The watches may hang on a dead connection: they restart when the API server answers again.
    Unreachable,
}

/// Whether this node may take a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eligibility {
    Eligible,
    /// It gave a slot up because it could not serve it, and takes no slot until then.
    StandbyUntil(Instant),
}

/// How the gateway role's node-local state (device, routes, table) fares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayHealth {
    Serving,
    FailingSince(Instant),
}

/// Whether the gateway forwards, as its data-path checks found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarding {
    /// No check found a fault.
    Serving,
    FailingSince(Instant, Fault),
}

/// The slot whose EndpointSlice names this node as its endpoint, as this node last wrote them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// Not written since start: an earlier run may have left this node in any slot's slice.
    Unknown,
    /// In no slot's slice.
    Nowhere,
    Slot(Slot),
}

impl Published {
    fn of(slot: Option<Slot>) -> Self {
        slot.map_or(Published::Nowhere, Published::Slot)
    }
}

/// Whether a gateway device or nftables table may be on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leftovers {
    /// This node was a gateway, or an earlier run may have left them.
    Possible,
    Removed,
}

/// Everything the role logic remembers between observations.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleState {
    pub delays: Delays,
    pub role: Role,
    /// Every live gateway as of the last answered round, with when it took its slot.
    pub live: Vec<LiveGateway>,
    pub api: ApiState,
    /// When the last election round got an answer.
    pub last_answer: Option<Instant>,
    pub eligibility: Eligibility,
    pub health: GatewayHealth,
    pub forwarding: Forwarding,
    /// The node-local state of the current role (gateway device and table, or routes) was put in place
    /// by the last attempt to apply it.
    pub in_place: bool,
    pub published: Published,
    pub leftovers: Leftovers,
    /// When this gateway published its slot's key into a slot Secret that did not name it yet (the
    /// Secret was created afresh: a key rotation): no shoot has a session with that key, as with a
    /// new holder, so its sessionless shoots are routed via a warm gateway for a warm-up from then.
    pub rekeyed: Option<Timestamp>,
}

impl RoleState {
    /// A node at start: a router until a round says otherwise, with whatever an earlier run left.
    pub fn new(delays: Delays) -> Self {
        RoleState {
            delays,
            role: Role::Router,
            live: vec![],
            api: ApiState::Answering,
            last_answer: None,
            eligibility: Eligibility::Eligible,
            health: GatewayHealth::Serving,
            forwarding: Forwarding::Serving,
            in_place: false,
            published: Published::Unknown,
            leftovers: Leftovers::Possible,
            rekeyed: None,
        }
    }
}

/// How a gateway pass's node-local setup went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    Done,
    /// The device, routes or table failed here: another node may do better.
    NodeLocalFailure,
    /// What every node would share failed (the SeedTunnel, the slot Secret): moving the slot cannot help.
    SharedFailure,
}

/// What the node observed.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// The election tick (every retry period).
    ElectionDue,
    /// An election round got its answer.
    Elected(Round),
    /// The round failed or got no answer within the renew deadline. Roles change only on what a
    /// successful read shows, so this changes none.
    ApiUnreachable,
    /// A data-plane pass is due (election tick, watch or netlink event) and the projection is complete.
    PassDue,
    GatewayApplied(Setup),
    /// The router's routes are in place.
    RoutesApplied,
    /// The router's routes could not be applied.
    RoutesFailed,
    /// A data-plane check is due (every retry period).
    DataPathDue,
    /// What a check of the gateway's data path found.
    DataPathChecked(Check),
    /// The slot EndpointSlices name this node for `slot` only (`None`: for none).
    EndpointPublished {
        slot: Option<Slot>,
    },
    /// The gateway device and table were removed; `complete` is false when one of them failed.
    GatewayRemoved {
        complete: bool,
    },
}

/// What the node has to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run an election round; without `acquire` it renews what it holds but takes no new slot.
    Elect { acquire: bool },
    /// The API server answers again: restart the watches instead of waiting for stalled connections.
    RestartWatches,
    /// The node took `slot`: what the router applied must not be re-applied, and flows towards the
    /// CIDR must be NATed afresh once the gateway is in place.
    BecomeGateway { slot: Slot },
    /// The node lost or gave up its slot: the same reset, the other way round.
    BecomeRouter,
    /// The holder could not renew within the renew deadline: it keeps forwarding, since tearing the
    /// device down would cut every shoot off while nobody else can take the slot either.
    HoldWithoutRenewal { slot: Slot },
    /// Apply the gateway of `slot` (slot key, published endpoint, device, table, forwarding). While it
    /// warms up, shoots without a live session are routed via `sessionless_via`, a warm gateway.
    ApplyGateway { slot: Slot, sessionless_via: Option<IpAddr> },
    /// Apply the router's routes to these gateways (slot, node IP).
    ApplyRouter { gateways: Vec<(usize, IpAddr)> },
    /// Remove the gateway device and nftables table (best effort).
    RemoveGatewayState,
    /// Make the slot EndpointSlices name this node as the endpoint of `slot` and of no other slot.
    PublishEndpoint { slot: Option<Slot> },
    /// Check that the gateway of `slot` forwards: forwarding on, shoots answering through its device.
    CheckDataPath { slot: Slot },
    /// Release the slot's Lease at once, so that a healthy node takes it without waiting for expiry.
    GiveUp { slot: Slot, failing_for: Duration },
}

/// The next state and what to do, for `observation` made at `now`.
pub fn step(state: RoleState, observation: Observation, now: Now) -> (RoleState, Vec<Action>) {
    match observation {
        Observation::ElectionDue => election_due(state, now),
        Observation::Elected(round) => elected(state, &round, now),
        Observation::ApiUnreachable => api_unreachable(state, now),
        Observation::PassDue => pass_due(state, now),
        Observation::GatewayApplied(setup) => gateway_applied(state, setup, now),
        Observation::RoutesApplied => routes_applied(state, true),
        Observation::RoutesFailed => routes_applied(state, false),
        Observation::DataPathDue => data_path_due(state),
        Observation::DataPathChecked(check) => data_path_checked(state, check, now),
        Observation::EndpointPublished { slot } => (RoleState { published: Published::of(slot), ..state }, vec![]),
        Observation::GatewayRemoved { complete } => {
            let leftovers = if complete { Leftovers::Removed } else { state.leftovers };
            (RoleState { leftovers, ..state }, vec![])
        }
    }
}

fn election_due(mut state: RoleState, now: Now) -> (RoleState, Vec<Action>) {
    if matches!(state.eligibility, Eligibility::StandbyUntil(until) if now.instant >= until) {
        state.eligibility = Eligibility::Eligible;
    }
    let acquire = state.eligibility == Eligibility::Eligible;
    (state, vec![Action::Elect { acquire }])
}

fn elected(mut state: RoleState, round: &Round, now: Now) -> (RoleState, Vec<Action>) {
    let mut actions = vec![];
    if state.api == ApiState::Unreachable {
        actions.push(Action::RestartWatches);
    }
    state.api = ApiState::Answering;
    state.last_answer = Some(now.instant);
    state.live = live_gateways(now.wall, &round.slots);
    let role = role_after(round);
    if role.slot() != state.role.slot() {
        actions.push(role.slot().map_or(Action::BecomeRouter, |slot| Action::BecomeGateway { slot }));
        // A failure count belongs to the slot it was counted for; the new role is not in place yet.
        state.health = GatewayHealth::Serving;
        state.forwarding = Forwarding::Serving;
        state.in_place = false;
        state.rekeyed = None;
    }
    state.role = role;
    (state, actions)
}

/// The role a round leaves this node in.
fn role_after(round: &Round) -> Role {
    let Some(slot) = round.holding.and_then(|s| Slot::try_from(s).ok()) else { return Role::Router };
    let acquired = round.slots.get(slot.index()).and_then(|l| l.as_ref()?.acquired);
    Role::Gateway { slot, acquired }
}

fn api_unreachable(mut state: RoleState, now: Now) -> (RoleState, Vec<Action>) {
    state.api = ApiState::Unreachable;
    let deadline = state.delays.renew_deadline;
    let stale = state.last_answer.is_none_or(|t| now.instant.saturating_duration_since(t) > deadline);
    let actions = match state.role.slot() {
        Some(slot) if stale => vec![Action::HoldWithoutRenewal { slot }],
        _ => vec![],
    };
    (state, actions)
}

fn pass_due(mut state: RoleState, now: Now) -> (RoleState, Vec<Action>) {
    match state.role {
        Role::Gateway { slot, acquired } => {
            state.leftovers = Leftovers::Possible;
            let since = acquired.max(state.rekeyed);
            let sessionless_via = warm_fallback(&state, slot, since, now);
            (state, vec![Action::ApplyGateway { slot, sessionless_via }])
        }
        Role::Router => {
            let mut actions = vec![];
            if state.leftovers == Leftovers::Possible {
                actions.push(Action::RemoveGatewayState);
            }
            actions.push(Action::ApplyRouter { gateways: routable(&state, now) });
            (state, actions)
        }
    }
}

/// While this gateway warms up (the shoots have no sessions with it yet: it took the slot, or began
/// using a new key, at `since`), the node IP of another gateway that has warmed up itself. Only warm
/// gateways take traffic away, so two gateways cannot bounce a packet between them.
pub fn warm_fallback(state: &RoleState, slot: Slot, acquired: Option<Timestamp>, now: Now) -> Option<IpAddr> {
    let warmup = state.delays.warmup;
    let warming = acquired.is_some_and(|a| !warmed_up(a, warmup, now.wall));
    if !warming {
        return None;
    }
    let warm = |g: &&LiveGateway| g.slot != slot.index() && g.acquired.is_some_and(|a| warmed_up(a, warmup, now.wall));
    state.live.iter().find(warm).and_then(|g| g.node_ip.as_ref()?.parse().ok())
}

/// The gateways routers send traffic to: warmed-up ones, or every live one when none has.
fn routable(state: &RoleState, now: Now) -> Vec<(usize, IpAddr)> {
    usable_gateways(now.wall, state.delays.warmup, &state.live)
        .into_iter()
        .filter_map(|g| Some((g.slot, g.node_ip?.parse().ok()?)))
        .collect()
}

/// A gateway whose node-local state keeps failing cannot forward: after `give_up_after` it releases
/// its slot, removes what it had and stands by. Shared failures do not count.
fn gateway_applied(mut state: RoleState, setup: Setup, now: Now) -> (RoleState, Vec<Action>) {
    let Role::Gateway { slot, .. } = state.role else { return (state, vec![]) };
    let since = match (setup, state.health) {
        (Setup::NodeLocalFailure, GatewayHealth::FailingSince(since)) => since,
        (Setup::NodeLocalFailure, GatewayHealth::Serving) => now.instant,
        (Setup::Done, _) => {
            let state = RoleState { health: GatewayHealth::Serving, in_place: true, ..state };
            return publish_for(state, Some(slot));
        }
        // The device may still be up from before: whether it is in place is unchanged.
        (Setup::SharedFailure, _) => return (RoleState { health: GatewayHealth::Serving, ..state }, vec![]),
    };
    state.in_place = false;
    state.health = GatewayHealth::FailingSince(since);
    give_up_after(state, slot, since, now)
}

fn routes_applied(state: RoleState, ok: bool) -> (RoleState, Vec<Action>) {
    if state.role != Role::Router {
        return (state, vec![]);
    }
    let state = RoleState { in_place: ok, ..state };
    if ok { publish_for(state, None) } else { (state, vec![]) }
}

/// A gateway whose device is in place checks that it forwards; nothing else has a data path to check.
fn data_path_due(state: RoleState) -> (RoleState, Vec<Action>) {
    match state.role {
        Role::Gateway { slot, .. } if state.in_place => (state, vec![Action::CheckDataPath { slot }]),
        _ => (state, vec![]),
    }
}

/// A gateway that does not forward (forwarding off, shoots heard from lately not answering through its
/// device) gives its slot up after `give_up_after`, as for node-local setup failures. Checks without
/// evidence either way stop the clock.
fn data_path_checked(mut state: RoleState, check: Check, now: Now) -> (RoleState, Vec<Action>) {
    let Role::Gateway { slot, .. } = state.role else { return (state, vec![]) };
    let fault = match check {
        Check::Forwards | Check::Unprobed => {
            return (RoleState { forwarding: Forwarding::Serving, ..state }, vec![]);
        }
        Check::Fault(fault) => fault,
    };
    let since = match state.forwarding {
        Forwarding::FailingSince(since, _) => since,
        Forwarding::Serving => now.instant,
    };
    state.forwarding = Forwarding::FailingSince(since, fault);
    give_up_after(state, slot, since, now)
}

/// Gives `slot` up once it has been failing since `since` for `give_up_after`: releases the Lease,
/// removes what the gateway had and stands by.
fn give_up_after(mut state: RoleState, slot: Slot, since: Instant, now: Now) -> (RoleState, Vec<Action>) {
    let failing_for = now.instant.saturating_duration_since(since);
    if failing_for < state.delays.give_up_after {
        return (state, vec![]);
    }
    state.role = Role::Router;
    state.health = GatewayHealth::Serving;
    state.forwarding = Forwarding::Serving;
    state.in_place = false;
    state.eligibility = Eligibility::StandbyUntil(now.instant + state.delays.standby);
    (state, vec![Action::GiveUp { slot, failing_for }, Action::BecomeRouter, Action::RemoveGatewayState])
}

/// Why the node is not ready.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    #[error("the gateway of slot {slot} is not in place (device, peers, table)")]
    GatewayNotInPlace { slot: Slot },
    #[error("the routes are not in place")]
    RoutesNotInPlace,
    #[error(
        "slot {slot} does not forward: {fault} (for {failing_for:?}; the slot is given up after {give_up_after:?})"
    )]
    NotForwarding { slot: Slot, fault: Fault, failing_for: Duration, give_up_after: Duration },
}

/// Readiness from what the node does, never from the API server: a gateway is ready while its device
/// is in place and it forwards, a router while its routes are in place. A load balancer that follows
/// readiness then keeps a gateway that lost the API server but still forwards.
pub fn readiness(state: &RoleState, now: Instant) -> Result<(), NotReady> {
    match (&state.role, state.forwarding) {
        (Role::Router, _) if state.in_place => Ok(()),
        (Role::Router, _) => Err(NotReady::RoutesNotInPlace),
        (Role::Gateway { slot, .. }, _) if !state.in_place => Err(NotReady::GatewayNotInPlace { slot: *slot }),
        (Role::Gateway { slot, .. }, Forwarding::FailingSince(since, fault)) => Err(NotReady::NotForwarding {
            slot: *slot,
            fault,
            failing_for: now.saturating_duration_since(since),
            give_up_after: state.delays.give_up_after,
        }),
        (Role::Gateway { .. }, Forwarding::Serving) => Ok(()),
    }
}

/// Publishes this node as the endpoint of `slot` (of none: `None`) unless it already is: a gateway
/// once its device is in place, a router once its routes are.
fn publish_for(state: RoleState, slot: Option<Slot>) -> (RoleState, Vec<Action>) {
    if state.role.slot() != slot || state.published == Published::of(slot) {
        return (state, vec![]);
    }
    (state, vec![Action::PublishEndpoint { slot }])
}

#[cfg(test)]
mod tests;
