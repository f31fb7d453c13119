//! The pure part of the extension controller: what one shoot's Extension should lead to, given the
//! seed's configuration, the shoot as its Cluster describes it, the allocation table and the state
//! gardenlet carried; and the status that reports it, read by gardenlet's health check.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde_json::{Value, json};

use crate::alloc::{Pool, PoolExhausted};
use crate::contract::ShootKey;
use crate::error::IpamError;
use crate::gardener::Shoot;
use crate::keys::PublicKey;
use crate::record::Recorded;
use crate::table::Table;
use crate::validate;

use super::config::SeedConfig;
use super::objects::Operation;

/// How a shoot came by its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignment {
    /// The table already had it.
    Kept,
    /// From the Extension's `status.state` (a restore, or a table that lost the entry).
    Adopted,
    /// First free.
    New,
}

/// What to do with one shoot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShootDecision {
    /// The shoot uses the tunnel: it holds `address`; `table` is the next table when it changed.
    Serve { address: IpAddr, assignment: Assignment, table: Option<Table> },
    /// The shoot left the tunnel (its annotation says so): release its address and objects.
    Release { table: Option<Table> },
    /// Some input is unusable: nothing of the shoot's is changed (it keeps its address, key and
    /// objects), and `error` is reported until the input is fixed.
    Hold { error: IpamError },
}

/// The decision for the shoot keyed `key`. `recorded` is the address its Extension's `status.state`
/// carries.
pub fn decide_shoot(
    key: &ShootKey,
    seed: Result<&SeedConfig, &IpamError>,
    shoot: Result<&Shoot, &IpamError>,
    table: &Table,
    recorded: Option<IpAddr>,
) -> ShootDecision {
    let hold = |error: &IpamError| ShootDecision::Hold { error: error.clone() };
    let (seed, shoot) = match (seed, shoot) {
        (Err(e), _) | (_, Err(e)) => return hold(e),
        (Ok(seed), Ok(shoot)) => (seed, shoot),
    };
    match shoot.tunnel_override() {
        Err(e) => return hold(&e),
        Ok(Some(false)) => return ShootDecision::Release { table: release(table, key) },
        Ok(_) => {}
    }
    if let Err(e) = validate::shoot_networks(shoot, &seed.field, seed.cidr) {
        return hold(&e);
    }
    match allocate(table, &Pool::new(seed.cidr), key, recorded) {
        Ok((address, assignment, table)) => ShootDecision::Serve { address, assignment, table },
        Err(_) => hold(&IpamError::exhausted(&seed.field, seed.cidr)),
    }
}

/// `key`'s address: the table's when it is still in the pool, else the recorded one when free, else
/// the first free. Other entries are left as they are. `Err` when the pool is full.
pub fn allocate(
    table: &Table,
    pool: &Pool,
    key: &ShootKey,
    recorded: Option<IpAddr>,
) -> Result<(IpAddr, Assignment, Option<Table>), PoolExhausted> {
    if let Some(address) = table.get(key).filter(|a| pool.is_assignable(*a)) {
        return Ok((address, Assignment::Kept, None));
    }
    let taken: BTreeSet<IpAddr> = table.iter().filter(|(k, _)| *k != key).map(|(_, a)| *a).collect();
    let (address, assignment) = match recorded.filter(|a| pool.is_assignable(*a) && !taken.contains(a)) {
        Some(address) => (address, Assignment::Adopted),
        None => (pool.first_free(&taken)?, Assignment::New),
    };
    let next = table.iter().filter(|(k, _)| *k != key).map(|(k, a)| (k.clone(), *a));
    let next: Table = next.chain([(key.clone(), address)]).collect();
    Ok((address, assignment, Some(next)))
}

/// The table without `key`; `None` when it has no entry.
pub fn release(table: &Table, key: &ShootKey) -> Option<Table> {
    table.get(key)?;
    Some(table.iter().filter(|(k, _)| *k != key).map(|(k, a)| (k.clone(), *a)).collect())
}

/// `status.state` as kubelink writes it: what gardenlet carries to another seed on migration.
pub fn state_of(rec: &Recorded) -> Value {
    json!({"address": rec.address.to_string(), "publicKey": rec.public_key.to_string()})
}

/// The address and key in `status.state`; `Ok(None)` without a state. An error names the field.
pub fn recorded_of(state: Option<&Value>, object: &str) -> Result<Option<Recorded>, IpamError> {
    let Some(state) = state.filter(|s| !s.is_null()) else { return Ok(None) };
    let field = |f: &str| format!("{object} status.state.{f}");
    let text = |f: &str| state.get(f).and_then(Value::as_str).unwrap_or_default().to_string();
    let invalid = |f: &str, reason: String| {
        IpamError::InvalidValue(crate::error::InvalidValue { field: field(f), value: text(f), reason })
    };
    let address = text("address").parse::<IpAddr>().map_err(|e| invalid("address", e.to_string()))?;
    let public_key = text("publicKey").parse::<PublicKey>().map_err(|e| invalid("publicKey", e.to_string()))?;
    Ok(Some(Recorded { address, public_key }))
}

/// What a reconcile ended with, for the status.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Done. `state` replaces `status.state` (and `resources` names the Secret when there is a state).
    Succeeded { description: String, state: Option<Recorded> },
    /// Not done: gardenlet sees `lastError` and waits; the state is left as it is.
    Failed { error: String, configuration: bool },
}

/// Gardener's error code for input the user must fix (`v1beta1.ErrorConfigurationProblem`).
pub const ERR_CONFIGURATION_PROBLEM: &str = "ERR_CONFIGURATION_PROBLEM";

/// The merge patch of `status` for `outcome`: `lastOperation`, `lastError`, `observedGeneration`,
/// and on success `state` and `resources`. `secret` names the Secret `resources` references.
pub fn status_patch(op: Operation, generation: Option<i64>, outcome: &Outcome, now: &str, secret: &str) -> Value {
    let op_type = op.type_name();
    let mut status = match outcome {
        Outcome::Succeeded { description, state } => {
            let resources = match state {
                Some(_) => {
                    json!([{"name": secret, "resourceRef": {"apiVersion": "v1", "kind": "Secret", "name": secret}}])
                }
                None => json!([]),
            };
            json!({
                "lastOperation": {"type": op_type, "state": "Succeeded", "progress": 100,
                                  "description": description, "lastUpdateTime": now},
                "lastError": null,
                "state": state.as_ref().map(state_of),
                "resources": resources,
            })
        }
        Outcome::Failed { error, configuration } => {
            let codes = if *configuration { json!([ERR_CONFIGURATION_PROBLEM]) } else { json!(null) };
            json!({
                "lastOperation": {"type": op_type, "state": "Error", "progress": 50,
                                  "description": error, "lastUpdateTime": now},
                "lastError": {"description": error, "codes": codes, "lastUpdateTime": now},
            })
        }
    };
    if let Some(generation) = generation {
        status["observedGeneration"] = json!(generation);
    }
    json!({ "status": status })
}

/// Whether writing `patch` (from [`status_patch`]) is needed: it changes `current` beyond the times it
/// stamps, or gardenlet's request at `requested` (its timestamp annotation) is newer than the last
/// answer (`lastOperation.lastUpdateTime`, which gardenlet compares with it). kubelink writes its
/// status only then: a write is a watch event, and an event is the next reconcile.
pub fn status_changes(current: Option<&Value>, patch: &Value, requested: Option<&str>) -> bool {
    let null = Value::Null;
    let current = current.unwrap_or(&null);
    let differs = patch["status"].as_object().is_some_and(|want| {
        want.iter().any(|(k, v)| without_times(current.get(k).unwrap_or(&null)) != without_times(v))
    });
    differs || unanswered(current, requested)
}

fn without_times(value: &Value) -> Value {
    let mut value = value.clone();
    if let Some(map) = value.as_object_mut() {
        map.remove("lastUpdateTime");
    }
    value
}

/// A request newer than the last answer (whole seconds, as gardenlet compares them); an unreadable
/// time counts as unanswered.
fn unanswered(current: &Value, requested: Option<&str>) -> bool {
    use k8s_openapi::jiff::Timestamp;
    let Some(requested) = requested else { return false };
    let seconds = |t: &str| t.parse::<Timestamp>().ok().map(|t| t.as_second());
    let answered = current["lastOperation"]["lastUpdateTime"].as_str().and_then(seconds);
    match (seconds(requested), answered) {
        (Some(requested), Some(answered)) => answered < requested,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PrivateKey;
    use serde_json::json;

    fn seed(cidr: &str) -> SeedConfig {
        SeedConfig { field: "f".into(), cidr: cidr.parse().unwrap(), slots: 2, endpoints: vec![None, None], mtu: None }
    }

    fn shoot(annotations: Value, nodes: &str) -> Shoot {
        serde_json::from_value(json!({"metadata": {"name": "a", "namespace": "garden-p", "annotations": annotations},
            "spec": {"networking": {"nodes": nodes, "pods": "100.96.0.0/11"}}}))
        .unwrap()
    }

    fn key(n: &str) -> ShootKey {
        ShootKey::new(format!("shoot--p--{n}"), "kubelink-wireguard")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn first_free_then_kept() {
        let (s, sh) = (seed("192.168.128.0/22"), shoot(json!({}), "10.0.0.0/16"));
        let d = decide_shoot(&key("a"), Ok(&s), Ok(&sh), &Table::default(), None);
        let ShootDecision::Serve { address, assignment: Assignment::New, table: Some(t) } = d else { panic!("{d:?}") };
        assert_eq!(address, ip("192.168.128.3"));
        let d = decide_shoot(&key("a"), Ok(&s), Ok(&sh), &t, None);
        assert_eq!(d, ShootDecision::Serve { address, assignment: Assignment::Kept, table: None });
        let d = decide_shoot(&key("b"), Ok(&s), Ok(&sh), &t, Some(address));
        let ShootDecision::Serve { address: b, assignment: Assignment::New, .. } = d else { panic!("{d:?}") };
        assert_eq!(b, ip("192.168.128.4"), "a recorded address another shoot holds is not adopted");
    }

    #[test]
    fn a_recorded_address_is_adopted_when_free_and_in_the_pool() {
        let (s, sh) = (seed("192.168.128.0/22"), shoot(json!({}), "10.0.0.0/16"));
        let d = decide_shoot(&key("a"), Ok(&s), Ok(&sh), &Table::default(), Some(ip("192.168.129.7")));
        let ShootDecision::Serve { address, assignment: Assignment::Adopted, .. } = d else { panic!("{d:?}") };
        assert_eq!(address, ip("192.168.129.7"));
        // Restored into a seed with another CIDR: a new address there.
        let d = decide_shoot(&key("a"), Ok(&s), Ok(&sh), &Table::default(), Some(ip("10.9.0.7")));
        assert!(matches!(d, ShootDecision::Serve { assignment: Assignment::New, .. }), "{d:?}");
        // A table entry outside a changed CIDR is replaced.
        let old: Table = [(key("a"), ip("192.168.200.3"))].into_iter().collect();
        let d = decide_shoot(&key("a"), Ok(&s), Ok(&sh), &old, None);
        let ShootDecision::Serve { table: Some(t), .. } = d else { panic!("{d:?}") };
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn bad_input_holds_everything_and_says_why() {
        let s = seed("192.168.128.0/22");
        let t: Table = [(key("a"), ip("192.168.128.3"))].into_iter().collect();
        let banana = shoot(json!({}), "banana");
        let d = decide_shoot(&key("a"), Ok(&s), Ok(&banana), &t, None);
        let ShootDecision::Hold { error } = d else { panic!("{d:?}") };
        assert_eq!(error.reason(), "InvalidCidr");
        assert!(error.to_string().contains("spec.networking.nodes"), "{error}");
        let inside = shoot(json!({}), "192.168.128.0/24");
        assert!(matches!(decide_shoot(&key("a"), Ok(&s), Ok(&inside), &t, None), ShootDecision::Hold { .. }));
        let odd = shoot(json!({"alpha.featuregates.shoot.gardener.cloud/wireguard-tunnel": "maybe"}), "10.0.0.0/16");
        assert!(matches!(decide_shoot(&key("a"), Ok(&s), Ok(&odd), &t, None), ShootDecision::Hold { .. }));
        let seed_error = IpamError::Missing { field: "x".into(), fix: "y".into() };
        let ok = shoot(json!({}), "10.0.0.0/16");
        let d = decide_shoot(&key("a"), Err(&seed_error), Ok(&ok), &t, None);
        assert_eq!(d, ShootDecision::Hold { error: seed_error });
    }

    #[test]
    fn the_annotation_turns_a_shoot_off_and_releases_it() {
        let s = seed("192.168.128.0/22");
        let t: Table = [(key("a"), ip("192.168.128.3")), (key("b"), ip("192.168.128.4"))].into_iter().collect();
        let off = shoot(json!({"alpha.featuregates.shoot.gardener.cloud/wireguard-tunnel": "false"}), "10.0.0.0/16");
        let d = decide_shoot(&key("a"), Ok(&s), Ok(&off), &t, None);
        let ShootDecision::Release { table: Some(next) } = d else { panic!("{d:?}") };
        assert_eq!(next.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(), [key("b")]);
        assert_eq!(release(&next, &key("a")), None);
    }

    #[test]
    fn a_full_pool_holds_and_says_exhausted() {
        let s = seed("192.168.128.0/29");
        let sh = shoot(json!({}), "10.0.0.0/16");
        let full: Table = (3..7).map(|i| (key(&i.to_string()), ip(&format!("192.168.128.{i}")))).collect();
        let d = decide_shoot(&key("z"), Ok(&s), Ok(&sh), &full, None);
        let ShootDecision::Hold { error } = d else { panic!("{d:?}") };
        assert_eq!(error.reason(), "Exhausted");
    }

    #[test]
    fn state_round_trips_and_garbage_names_the_field() {
        let rec = Recorded { address: ip("192.168.128.3"), public_key: PrivateKey::generate().public_key() };
        assert_eq!(recorded_of(Some(&state_of(&rec)), "Extension x").unwrap(), Some(rec));
        assert_eq!(recorded_of(None, "Extension x").unwrap(), None);
        assert_eq!(recorded_of(Some(&Value::Null), "Extension x").unwrap(), None);
        let err = recorded_of(Some(&json!({"address": "banana", "publicKey": "k"})), "Extension x").unwrap_err();
        assert!(err.to_string().starts_with("Extension x status.state.address: \"banana\" is invalid"), "{err}");
    }

    #[test]
    fn status_reads_as_gardenlets_health_check_expects() {
        let rec = Recorded { address: ip("192.168.128.3"), public_key: PrivateKey::generate().public_key() };
        let ok = Outcome::Succeeded { description: "d".into(), state: Some(rec) };
        let p = status_patch(Operation::Restore, Some(4), &ok, "2026-12-07T14:00:00Z", "kubelink-shoot");
        assert_eq!(p["status"]["lastOperation"]["type"], "Restore");
        assert_eq!(p["status"]["lastOperation"]["state"], "Succeeded");
        assert_eq!(p["status"]["lastError"], Value::Null, "a merge patch with null removes lastError");
        assert_eq!(p["status"]["observedGeneration"], 4);
        assert_eq!(p["status"]["resources"][0]["resourceRef"]["kind"], "Secret");
        assert_eq!(p["status"]["state"]["address"], "192.168.128.3");
        let failed = Outcome::Failed { error: "bad".into(), configuration: true };
        let p = status_patch(Operation::Reconcile, Some(4), &failed, "t", "kubelink-shoot");
        assert_eq!(p["status"]["lastError"]["codes"][0], ERR_CONFIGURATION_PROBLEM);
        assert_eq!(p["status"]["lastOperation"]["state"], "Error");
        assert!(p["status"].get("state").is_none(), "a failure leaves the state as it is");
    }

    #[test]
    fn the_status_is_written_only_when_it_changes_or_a_request_is_unanswered() {
        let outcome = Outcome::Succeeded { description: "ok".into(), state: None };
        let first = status_patch(Operation::Reconcile, Some(2), &outcome, "2026-12-07T10:00:00Z", "s");
        assert!(status_changes(None, &first, None), "nothing written yet");
        let written = first["status"].clone();
        let later = status_patch(Operation::Reconcile, Some(2), &outcome, "2026-12-07T10:05:00Z", "s");
        assert!(!status_changes(Some(&written), &later, None), "only the time differs");
        assert!(!status_changes(Some(&written), &later, Some("2026-12-07T09:59:59.5Z")), "answered");
        assert!(status_changes(Some(&written), &later, Some("2026-12-07T10:00:01Z")), "a newer request");
        assert!(status_changes(Some(&written), &later, Some("yesterday")), "an unreadable request");
        let newer = status_patch(Operation::Reconcile, Some(3), &outcome, "2026-12-07T10:05:00Z", "s");
        assert!(status_changes(Some(&written), &newer, None), "a new generation");
        let failed = Outcome::Failed { error: "bad".into(), configuration: true };
        let failing = status_patch(Operation::Reconcile, Some(2), &failed, "2026-12-07T10:05:00Z", "s");
        assert!(status_changes(Some(&written), &failing, None));
    }
}
