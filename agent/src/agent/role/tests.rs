//! One row per transition: given a state, an observation and a time (seconds after the start), the
//! actions in order and a check of the state after. Each row's name says why.

use std::sync::OnceLock;

use super::*;
use crate::agent::datapath::{Check, Fault};
use crate::election::SlotLease;

const ME: &str = "node-a";
const S0: Slot = Slot::ALL[0];
const S1: Slot = Slot::ALL[1];
const MY_IP: &str = "10.0.0.1";
const OTHER_IP: &str = "10.0.0.2";

fn delays() -> Delays {
    Delays {
        warmup: Duration::from_secs(30),
        give_up_after: Duration::from_secs(5),
        standby: Duration::from_secs(60),
        renew_deadline: Duration::from_secs(3),
    }
}

fn instant(secs: u64) -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now) + Duration::from_secs(secs)
}

fn wall(secs: u64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs as i64).unwrap()
}

fn at(secs: u64) -> Now {
    Now { instant: instant(secs), wall: wall(secs) }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A Lease renewed at `renewed`, held since `acquired`.
fn lease(holder: &str, node_ip: &str, acquired: u64, renewed: u64) -> Option<SlotLease> {
    Some(SlotLease {
        holder: Some(holder.into()),
        renewed: Some(wall(renewed)),
        acquired: Some(wall(acquired)),
        duration: Duration::from_secs(4),
        node_ip: Some(node_ip.into()),
    })
}

fn released(renewed: u64) -> Option<SlotLease> {
    Some(SlotLease {
        holder: None,
        renewed: Some(wall(renewed)),
        acquired: None,
        duration: Duration::from_secs(4),
        node_ip: None,
    })
}

fn elected(holding: Option<usize>, slots: Vec<Option<SlotLease>>) -> Observation {
    Observation::Elected(Round { holding, slots })
}

fn live(slot: usize, node_ip: Option<&str>, acquired: u64) -> LiveGateway {
    LiveGateway { slot, node: format!("node-{slot}"), node_ip: node_ip.map(Into::into), acquired: Some(wall(acquired)) }
}

/// A node just started: a router that may have leftovers and be left in a slot's EndpointSlice.
fn started() -> RoleState {
    RoleState::new(delays())
}

/// A router in steady state: last answer at 100, nothing left over, in no EndpointSlice, routes in place.
fn router() -> RoleState {
    RoleState {
        last_answer: Some(instant(100)),
        published: Published::Nowhere,
        leftovers: Leftovers::Removed,
        in_place: true,
        ..started()
    }
}

/// The gateway of `slot` since `acquired`, published in its EndpointSlice, last answer at 100.
fn gateway(slot: Slot, acquired: u64) -> RoleState {
    RoleState {
        role: Role::Gateway { slot, acquired: Some(wall(acquired)) },
        published: Published::Slot(slot),
        leftovers: Leftovers::Possible,
        in_place: true,
        ..router()
    }
}

fn failing_since(secs: u64) -> RoleState {
    RoleState { health: GatewayHealth::FailingSince(instant(secs)), ..gateway(S0, 0) }
}

fn not_forwarding_since(secs: u64, fault: Fault) -> RoleState {
    RoleState { forwarding: Forwarding::FailingSince(instant(secs), fault), ..gateway(S0, 0) }
}

const OFF: Fault = Fault::ForwardingOff;
const SILENT: Fault = Fault::NoAnswer { asked: 2 };

fn on_standby_until(secs: u64) -> RoleState {
    RoleState { eligibility: Eligibility::StandbyUntil(instant(secs)), ..router() }
}

fn cut_off(state: RoleState) -> RoleState {
    RoleState { api: ApiState::Unreachable, ..state }
}

fn with_live(state: RoleState, live: Vec<LiveGateway>) -> RoleState {
    RoleState { live, ..state }
}

fn is_gateway(s: &RoleState, slot: Slot) -> bool {
    s.role.slot() == Some(slot)
}

macro_rules! table {
    ($($name:ident: $given:expr, $observed:expr, at $secs:expr => [$($action:expr),* $(,)?], then $then:expr;)+) => {
        $(
            #[test]
            fn $name() {
                let (state, actions) = step($given, $observed, at($secs));
                assert_eq!(actions, vec![$($action),*], "actions");
                let then: fn(&RoleState) -> bool = $then;
                assert!(then(&state), "state after: {state:#?}");
            }
        )+
    };
}

table! {
    // Take, keep, lose.
    router_takes_a_free_slot_and_becomes_its_gateway:
        router(), elected(Some(0), vec![lease(ME, MY_IP, 100, 100)]), at 100
        => [Action::BecomeGateway { slot: S0 }],
        then |s| s.role == Role::Gateway { slot: S0, acquired: Some(wall(100)) };
    spare_takes_a_slot_released_by_its_holder_at_once:
        with_live(router(), vec![live(0, Some(OTHER_IP), 0)]), elected(Some(0), vec![lease(ME, MY_IP, 101, 101)]), at 101
        => [Action::BecomeGateway { slot: S0 }],
        then |s| is_gateway(s, S0) && s.live == vec![LiveGateway { node: ME.into(), ..live(0, Some(MY_IP), 101) }];
    router_stays_router_while_every_slot_is_held_by_others:
        router(), elected(None, vec![lease("node-b", OTHER_IP, 0, 100)]), at 101
        => [],
        then |s| s.role == Role::Router && s.live.len() == 1;
    router_waits_for_a_released_slot_it_did_not_win:
        router(), elected(None, vec![released(100)]), at 101
        => [],
        then |s| s.role == Role::Router && s.live.is_empty();
    gateway_keeps_its_slot_when_the_round_renews_it:
        gateway(S0, 0), elected(Some(0), vec![lease(ME, MY_IP, 0, 101)]), at 101
        => [],
        then |s| is_gateway(s, S0) && s.last_answer == Some(instant(101));
    gateway_that_lost_its_slot_to_another_node_becomes_a_router:
        gateway(S0, 0), elected(None, vec![lease("node-b", OTHER_IP, 101, 101)]), at 101
        => [Action::BecomeRouter],
        then |s| s.role == Role::Router && s.leftovers == Leftovers::Possible;
    gateway_moved_to_another_slot_resets_like_a_new_holder:
        gateway(S0, 0), elected(Some(1), vec![lease("node-b", OTHER_IP, 101, 101), lease(ME, MY_IP, 101, 101)]), at 101
        => [Action::BecomeGateway { slot: S1 }],
        then |s| is_gateway(s, S1);
    lost_slot_forgets_the_failures_counted_for_it:
        failing_since(100), elected(None, vec![lease("node-b", OTHER_IP, 101, 101)]), at 101
        => [Action::BecomeRouter],
        then |s| s.health == GatewayHealth::Serving;

    // API outage.
    holder_keeps_slot_while_api_unreachable_within_renew_deadline:
        gateway(S0, 0), Observation::ApiUnreachable, at 103
        => [],
        then |s| is_gateway(s, S0) && s.api == ApiState::Unreachable;
    holder_keeps_forwarding_past_renew_deadline_and_says_so:
        cut_off(gateway(S0, 0)), Observation::ApiUnreachable, at 130
        => [Action::HoldWithoutRenewal { slot: S0 }],
        then |s| is_gateway(s, S0);
    holder_keeps_applying_its_gateway_while_api_unreachable:
        cut_off(gateway(S0, 0)), Observation::PassDue, at 130
        => [Action::ApplyGateway { slot: S0, sessionless_via: None }],
        then |s| is_gateway(s, S0);
    router_changes_nothing_while_api_unreachable:
        router(), Observation::ApiUnreachable, at 130
        => [],
        then |s| s.role == Role::Router && s.api == ApiState::Unreachable;
    watches_restart_when_the_api_answers_again:
        cut_off(gateway(S0, 0)), elected(Some(0), vec![lease(ME, MY_IP, 0, 131)]), at 131
        => [Action::RestartWatches],
        then |s| is_gateway(s, S0) && s.api == ApiState::Answering;
    gateway_cut_off_alone_steps_down_when_it_reads_the_lease_again:
        cut_off(gateway(S0, 0)), elected(None, vec![lease("node-b", OTHER_IP, 110, 131)]), at 131
        => [Action::RestartWatches, Action::BecomeRouter],
        then |s| s.role == Role::Router;

    // Warm-up.
    fresh_holder_routes_sessionless_shoots_via_a_warm_gateway:
        with_live(gateway(S0, 100), vec![live(0, Some(MY_IP), 100), live(1, Some(OTHER_IP), 0)]), Observation::PassDue, at 110
        => [Action::ApplyGateway { slot: S0, sessionless_via: Some(ip(OTHER_IP)) }],
        then |s| is_gateway(s, S0);
    warmed_up_holder_routes_nothing_away:
        with_live(gateway(S0, 100), vec![live(0, Some(MY_IP), 100), live(1, Some(OTHER_IP), 0)]), Observation::PassDue, at 130
        => [Action::ApplyGateway { slot: S0, sessionless_via: None }],
        then |s| is_gateway(s, S0);
    rekeyed_holder_warms_up_again_from_its_new_key:
        RoleState { rekeyed: Some(wall(120)), ..with_live(gateway(S0, 0), vec![live(0, Some(MY_IP), 0), live(1, Some(OTHER_IP), 0)]) },
        Observation::PassDue, at 130
        => [Action::ApplyGateway { slot: S0, sessionless_via: Some(ip(OTHER_IP)) }],
        then |s| is_gateway(s, S0);
    rekeyed_holder_is_warm_a_warm_up_after_its_new_key:
        RoleState { rekeyed: Some(wall(120)), ..with_live(gateway(S0, 0), vec![live(0, Some(MY_IP), 0), live(1, Some(OTHER_IP), 0)]) },
        Observation::PassDue, at 150
        => [Action::ApplyGateway { slot: S0, sessionless_via: None }],
        then |s| is_gateway(s, S0);
    fresh_holder_keeps_every_shoot_when_no_other_gateway_is_warm:
        with_live(gateway(S0, 100), vec![live(0, Some(MY_IP), 100), live(1, Some(OTHER_IP), 105)]), Observation::PassDue, at 110
        => [Action::ApplyGateway { slot: S0, sessionless_via: None }],
        then |s| is_gateway(s, S0);
    router_avoids_a_warming_gateway_while_a_warm_one_is_live:
        with_live(router(), vec![live(0, Some(MY_IP), 100), live(1, Some(OTHER_IP), 0)]), Observation::PassDue, at 110
        => [Action::ApplyRouter { gateways: vec![(1, ip(OTHER_IP))] }],
        then |s| s.role == Role::Router;
    router_uses_a_warming_gateway_when_it_is_the_only_one:
        with_live(router(), vec![live(0, Some(OTHER_IP), 100)]), Observation::PassDue, at 101
        => [Action::ApplyRouter { gateways: vec![(0, ip(OTHER_IP))] }],
        then |s| s.role == Role::Router;
    router_uses_both_gateways_once_both_have_warmed_up:
        with_live(router(), vec![live(0, Some(MY_IP), 100), live(1, Some(OTHER_IP), 0)]), Observation::PassDue, at 130
        => [Action::ApplyRouter { gateways: vec![(0, ip(MY_IP)), (1, ip(OTHER_IP))] }],
        then |s| s.role == Role::Router;
    router_cannot_route_to_a_gateway_without_a_node_ip:
        with_live(router(), vec![live(0, None, 0), live(1, Some(OTHER_IP), 0)]), Observation::PassDue, at 130
        => [Action::ApplyRouter { gateways: vec![(1, ip(OTHER_IP))] }],
        then |s| s.role == Role::Router;

    // Gateway leftovers.
    started_router_removes_what_an_earlier_run_left_before_routing:
        started(), Observation::PassDue, at 0
        => [Action::RemoveGatewayState, Action::ApplyRouter { gateways: vec![] }],
        then |s| s.leftovers == Leftovers::Possible;
    router_that_lost_its_slot_removes_the_device_before_routing:
        RoleState { role: Role::Router, ..gateway(S0, 0) }, Observation::PassDue, at 101
        => [Action::RemoveGatewayState, Action::ApplyRouter { gateways: vec![] }],
        then |s| s.role == Role::Router;
    complete_removal_is_not_repeated:
        started(), Observation::GatewayRemoved { complete: true }, at 0
        => [],
        then |s| s.leftovers == Leftovers::Removed;
    failed_removal_is_retried_on_the_next_pass:
        started(), Observation::GatewayRemoved { complete: false }, at 0
        => [],
        then |s| s.leftovers == Leftovers::Possible;
    gateway_pass_may_leave_a_device_behind:
        RoleState { leftovers: Leftovers::Removed, ..gateway(S0, 0) }, Observation::PassDue, at 101
        => [Action::ApplyGateway { slot: S0, sessionless_via: None }],
        then |s| s.leftovers == Leftovers::Possible;

    // The slot's EndpointSlice.
    new_gateway_publishes_itself_once_its_device_is_up:
        RoleState { published: Published::Nowhere, ..gateway(S0, 0) }, Observation::GatewayApplied(Setup::Done), at 101
        => [Action::PublishEndpoint { slot: Some(S0) }],
        then |s| s.published == Published::Nowhere;
    published_gateway_does_not_publish_again:
        gateway(S0, 0), Observation::GatewayApplied(Setup::Done), at 101
        => [],
        then |s| s.published == Published::Slot(S0);
    new_router_leaves_its_slots_slice_once_its_routes_are_in_place:
        RoleState { published: Published::Slot(S0), ..router() }, Observation::RoutesApplied, at 101
        => [Action::PublishEndpoint { slot: None }],
        then |s| s.role == Role::Router;
    started_router_leaves_whatever_slice_an_earlier_run_left_it_in:
        started(), Observation::RoutesApplied, at 0
        => [Action::PublishEndpoint { slot: None }],
        then |s| s.published == Published::Unknown;
    settled_router_does_not_publish_again:
        router(), Observation::RoutesApplied, at 101
        => [],
        then |s| s.published == Published::Nowhere;
    what_was_published_is_remembered:
        RoleState { published: Published::Nowhere, ..gateway(S0, 0) }, Observation::EndpointPublished { slot: Some(S0) }, at 101
        => [],
        then |s| s.published == Published::Slot(S0);
    router_report_does_not_unpublish_a_node_that_became_gateway:
        RoleState { published: Published::Unknown, ..gateway(S0, 0) }, Observation::RoutesApplied, at 101
        => [],
        then |s| s.published == Published::Unknown;

    // Give up, standby.
    first_node_local_failure_starts_the_give_up_clock:
        gateway(S0, 0), Observation::GatewayApplied(Setup::NodeLocalFailure), at 100
        => [],
        then |s| s.health == GatewayHealth::FailingSince(instant(100)) && is_gateway(s, S0);
    gateway_failing_for_less_than_give_up_after_keeps_its_slot:
        failing_since(100), Observation::GatewayApplied(Setup::NodeLocalFailure), at 104
        => [],
        then |s| s.health == GatewayHealth::FailingSince(instant(100)) && is_gateway(s, S0);
    gateway_failing_for_give_up_after_releases_its_slot_and_stands_by:
        failing_since(100), Observation::GatewayApplied(Setup::NodeLocalFailure), at 105
        => [Action::GiveUp { slot: S0, failing_for: Duration::from_secs(5) }, Action::BecomeRouter, Action::RemoveGatewayState],
        then |s| s.role == Role::Router
            && s.eligibility == Eligibility::StandbyUntil(instant(165))
            && s.health == GatewayHealth::Serving;
    shared_failure_does_not_count_towards_giving_up:
        failing_since(100), Observation::GatewayApplied(Setup::SharedFailure), at 110
        => [],
        then |s| s.health == GatewayHealth::Serving && is_gateway(s, S0);
    good_pass_stops_the_give_up_clock:
        failing_since(100), Observation::GatewayApplied(Setup::Done), at 104
        => [],
        then |s| s.health == GatewayHealth::Serving;
    router_report_of_a_failed_gateway_pass_is_ignored:
        router(), Observation::GatewayApplied(Setup::NodeLocalFailure), at 101
        => [],
        then |s| s.health == GatewayHealth::Serving && s.role == Role::Router;
    eligible_node_may_take_a_slot:
        router(), Observation::ElectionDue, at 101
        => [Action::Elect { acquire: true }],
        then |s| s.eligibility == Eligibility::Eligible;
    standby_node_takes_no_slot:
        on_standby_until(165), Observation::ElectionDue, at 120
        => [Action::Elect { acquire: false }],
        then |s| s.eligibility == Eligibility::StandbyUntil(instant(165));
    standby_ends_and_the_node_may_take_a_slot_again:
        on_standby_until(165), Observation::ElectionDue, at 165
        => [Action::Elect { acquire: true }],
        then |s| s.eligibility == Eligibility::Eligible;
    standby_node_still_routes:
        with_live(on_standby_until(165), vec![live(0, Some(OTHER_IP), 0)]), Observation::PassDue, at 120
        => [Action::ApplyRouter { gateways: vec![(0, ip(OTHER_IP))] }],
        then |s| s.role == Role::Router;

    // Data path: a gateway that does not forward gives its slot up like one whose device fails.
    gateway_in_place_checks_its_data_path_every_period:
        gateway(S0, 0), Observation::DataPathDue, at 101
        => [Action::CheckDataPath { slot: S0 }],
        then |s| is_gateway(s, S0);
    gateway_not_in_place_has_no_data_path_to_check:
        RoleState { in_place: false, ..gateway(S0, 0) }, Observation::DataPathDue, at 101
        => [],
        then |s| is_gateway(s, S0);
    router_has_no_data_path_to_check:
        router(), Observation::DataPathDue, at 101
        => [],
        then |s| s.role == Role::Router;
    forwarding_off_starts_the_give_up_clock:
        gateway(S0, 0), Observation::DataPathChecked(Check::Fault(OFF)), at 100
        => [],
        then |s| s.forwarding == Forwarding::FailingSince(instant(100), OFF) && is_gateway(s, S0);
    shoots_silent_through_the_device_keep_the_clock_running:
        not_forwarding_since(100, OFF), Observation::DataPathChecked(Check::Fault(SILENT)), at 104
        => [],
        then |s| s.forwarding == Forwarding::FailingSince(instant(100), SILENT) && is_gateway(s, S0);
    gateway_not_forwarding_for_give_up_after_releases_its_slot_and_stands_by:
        not_forwarding_since(100, OFF), Observation::DataPathChecked(Check::Fault(OFF)), at 105
        => [Action::GiveUp { slot: S0, failing_for: Duration::from_secs(5) }, Action::BecomeRouter, Action::RemoveGatewayState],
        then |s| s.role == Role::Router
            && s.eligibility == Eligibility::StandbyUntil(instant(165))
            && s.forwarding == Forwarding::Serving
            && !s.in_place;
    an_answer_through_the_device_stops_the_clock:
        not_forwarding_since(100, SILENT), Observation::DataPathChecked(Check::Forwards), at 104
        => [],
        then |s| s.forwarding == Forwarding::Serving;
    no_shoot_to_ask_is_no_evidence_against_the_gateway:
        not_forwarding_since(100, SILENT), Observation::DataPathChecked(Check::Unprobed), at 110
        => [],
        then |s| s.forwarding == Forwarding::Serving && is_gateway(s, S0);
    router_report_of_a_data_path_check_is_ignored:
        router(), Observation::DataPathChecked(Check::Fault(OFF)), at 101
        => [],
        then |s| s.forwarding == Forwarding::Serving;
    a_new_slot_is_not_in_place_until_its_device_is_up:
        router(), elected(Some(0), vec![lease(ME, MY_IP, 101, 101)]), at 101
        => [Action::BecomeGateway { slot: S0 }],
        then |s| !s.in_place && readiness(s, instant(101)) == Err(NotReady::GatewayNotInPlace { slot: S0 });
    failed_routes_are_not_in_place:
        router(), Observation::RoutesFailed, at 101
        => [],
        then |s| readiness(s, instant(101)) == Err(NotReady::RoutesNotInPlace);
    failed_device_setup_takes_the_gateway_out_of_place:
        gateway(S0, 0), Observation::GatewayApplied(Setup::NodeLocalFailure), at 101
        => [],
        then |s| !s.in_place;
    shared_failure_leaves_the_device_in_place:
        gateway(S0, 0), Observation::GatewayApplied(Setup::SharedFailure), at 101
        => [],
        then |s| s.in_place;
}

/// Readiness by reason: what the node does decides, never whether the API server answers.
#[test]
fn readiness_rows() {
    let at = instant(103);
    // rows: why, state, readiness
    let rows: Vec<(&str, RoleState, Result<(), NotReady>)> = vec![
        ("gateway forwarding", gateway(S0, 0), Ok(())),
        ("gateway cut off from the API server, still forwarding", cut_off(gateway(S0, 0)), Ok(())),
        ("router with its routes, API server cut off", cut_off(router()), Ok(())),
        ("router at start", started(), Err(NotReady::RoutesNotInPlace)),
        (
            "gateway with forwarding off",
            not_forwarding_since(100, OFF),
            Err(NotReady::NotForwarding {
                slot: S0,
                fault: OFF,
                failing_for: Duration::from_secs(3),
                give_up_after: delays().give_up_after,
            }),
        ),
        (
            "gateway whose setup fails",
            RoleState { in_place: false, ..failing_since(100) },
            Err(NotReady::GatewayNotInPlace { slot: S0 }),
        ),
    ];
    for (why, state, want) in rows {
        assert_eq!(readiness(&state, at), want, "{why}");
    }
}
