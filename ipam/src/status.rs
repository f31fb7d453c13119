//! What users see: a condition on the Shoot (and one on the Seed) and a Kubernetes Event when it changes.
//! Messages carry addresses, ranges and field names, never key material. Events go through
//! kube-runtime's recorder (events.k8s.io/v1): a repeat within its window is counted in the first
//! Event's series (a patch) instead of a new object.

use std::fmt::Debug;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::api::{Api, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::decode::{Raw, Skipped};
use crate::error::IpamError;
use crate::gardener::{Seed, Shoot};
use crate::store::{MAX_ATTEMPTS, StoreError, is_conflict};

/// Condition type on Shoots.
pub const SHOOT_CONDITION: &str = "WireguardTunnelAddress";
/// Condition type on the Seed.
pub const SEED_CONDITION: &str = "WireguardIPAM";
pub const COMPONENT: &str = "kubelink-ipam";
/// Reason of the Event on an object that was skipped because it does not decode.
pub const SKIPPED_REASON: &str = "InvalidObject";
/// Reason of a shoot's condition (and the Seed's) when two records named one address.
pub const CONFLICT_REASON: &str = "AddressConflict";
/// How many skipped objects the Seed's condition names.
const SKIPPED_NAMED: usize = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub type_: &'static str,
    pub ok: bool,
    pub reason: String,
    pub message: String,
}

impl Condition {
    pub fn allocated(address: IpAddr) -> Self {
        Self {
            type_: SHOOT_CONDITION,
            ok: true,
            reason: "Allocated".into(),
            message: format!("tunnel address {address}"),
        }
    }

    /// A shoot that had to leave an address another shoot also claimed, with the address it has now.
    pub fn moved(address: IpAddr, c: &crate::table::Conflict) -> Self {
        let message = format!(
            "tunnel address {address}: {} was also claimed by shoot {} in {}; {} keeps it and this shoot moved \
             (check for hand edits of the seed's table annotation or restored ShootStates)",
            c.address, c.kept, c.source, c.kept
        );
        Self { type_: SHOOT_CONDITION, ok: true, reason: CONFLICT_REASON.into(), message }
    }

    /// The shoot's conflict condition, kept while the shoot still holds the address it moved to, so
    /// that the report outlives the pass that resolved it.
    pub fn kept_conflict(shoot: &Shoot, address: IpAddr) -> Option<Self> {
        let status = json!({"status": shoot.status.as_ref()?});
        let c = conditions(&status).into_iter().find(|c| c["type"] == SHOOT_CONDITION)?;
        let message = c["message"].as_str()?;
        let current = c["reason"] == CONFLICT_REASON && message.starts_with(&format!("tunnel address {address}:"));
        current.then(|| Self {
            type_: SHOOT_CONDITION,
            ok: true,
            reason: CONFLICT_REASON.into(),
            message: message.into(),
        })
    }

    pub fn failed(e: &IpamError) -> Self {
        Self { type_: SHOOT_CONDITION, ok: false, reason: e.reason().into(), message: e.to_string() }
    }

    /// For a shoot that had an address and no longer uses the tunnel.
    pub fn released() -> Self {
        let message =
            "the shoot does not use the WireGuard tunnel (annotation or seed default); its address was released";
        Self { type_: SHOOT_CONDITION, ok: false, reason: "Released".into(), message: message.into() }
    }

    /// The Seed's condition after a pass that could allocate. It is `True` (`Ready`) only when every
    /// shoot was served: a pool that is full makes it `False` (`Exhausted`), and so does an object that
    /// was skipped because it does not decode (`ObjectsSkipped`; the first few are named with their field,
    /// each also has an Event).
    /// Two table entries on one address (`conflicts`, a hand edit) make it `False` (`AddressConflict`).
    pub fn seed_ok(
        allocated: usize,
        exhausted: usize,
        rejected: usize,
        skipped: &[Skipped],
        conflicts: &[crate::table::Conflict],
    ) -> Self {
        let mut message =
            format!("{allocated} shoots allocated, {exhausted} waiting for a free address, {rejected} rejected");
        for c in conflicts.iter().take(SKIPPED_NAMED) {
            message += &format!(
                "; {} was claimed by {} and {} in {}: {} moved",
                c.address, c.kept, c.moved, c.source, c.moved
            );
        }
        if !skipped.is_empty() {
            message += &format!(", {} objects skipped because they do not decode: ", skipped.len());
            let named: Vec<String> = skipped
                .iter()
                .take(SKIPPED_NAMED)
                .map(|s| format!("{} {}: {}", s.object(), s.field, s.reason))
                .collect();
            message += &named.join("; ");
            if skipped.len() > SKIPPED_NAMED {
                message += &format!("; and {} more (see the Events)", skipped.len() - SKIPPED_NAMED);
            }
        }
        let hand_edits = conflicts.iter().any(|c| c.source == crate::table::ConflictSource::Table);
        let reason = match (exhausted, skipped.len(), hand_edits) {
            (0, 0, false) => "Ready",
            (0, 0, true) => CONFLICT_REASON,
            (0, _, _) => "ObjectsSkipped",
            _ => "Exhausted",
        };
        let ok = exhausted == 0 && skipped.is_empty() && !hand_edits;
        Self { type_: SEED_CONDITION, ok, reason: reason.into(), message }
    }

    pub fn seed_failed(e: &IpamError) -> Self {
        Self { type_: SEED_CONDITION, ok: false, reason: e.reason().into(), message: e.to_string() }
    }

    fn status(&self) -> &'static str {
        if self.ok { "True" } else { "False" }
    }

    /// True when `conditions` already holds this condition (time stamps aside).
    fn present_in(&self, object: &Value) -> bool {
        conditions(object).iter().any(|c| {
            c["type"] == self.type_
                && c["status"] == self.status()
                && c["reason"] == *self.reason
                && c["message"] == *self.message
        })
    }

    /// The object's conditions with this one set; the transition time moves only when the status does.
    fn apply_to(&self, object: &mut Value, now: &str) {
        let mut list = conditions(object);
        let previous = list.iter().position(|c| c["type"] == self.type_);
        let since = match previous.map(|i| &list[i]) {
            Some(old) if old["status"] == self.status() => old["lastTransitionTime"].clone(),
            _ => json!(now),
        };
        let entry = json!({"type": self.type_, "status": self.status(), "reason": self.reason, "message": self.message,
                           "lastTransitionTime": since, "lastUpdateTime": now});
        match previous {
            Some(i) => list[i] = entry,
            None => list.push(entry),
        }
        if !object["status"].is_object() {
            object["status"] = json!({});
        }
        object["status"]["conditions"] = Value::Array(list);
    }
}

/// True when the shoot carries kubelink's condition at all.
pub fn shoot_has_condition(shoot: &Shoot) -> bool {
    shoot
        .status
        .as_ref()
        .is_some_and(|s| conditions(&json!({"status": s})).iter().any(|c| c["type"] == SHOOT_CONDITION))
}

fn conditions(object: &Value) -> Vec<Value> {
    object.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default()
}

fn now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

/// Sets the condition through the `status` subresource (guarded by resourceVersion, retried on `409`),
/// then records an Event. Returns how many objects were written.
async fn set_condition<K>(
    api: Api<K>,
    events: &Recorder,
    object: &K,
    condition: &Condition,
) -> Result<usize, StoreError>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let mut value = serde_json::to_value(object).map_err(|e| StoreError::Kube(kube::Error::SerdeError(e)))?;
    for attempt in 0..MAX_ATTEMPTS {
        if attempt > 0 {
            value = serde_json::to_value(api.get(&name).await?)
                .map_err(|e| StoreError::Kube(kube::Error::SerdeError(e)))?;
        }
        if condition.present_in(&value) {
            return Ok(0);
        }
        condition.apply_to(&mut value, &now().round(k8s_openapi::jiff::Unit::Second).unwrap_or(now()).to_string());
        let next: K =
            serde_json::from_value(value.clone()).map_err(|e| StoreError::Kube(kube::Error::SerdeError(e)))?;
        match api.replace_status(&name, &PostParams::default(), &next).await {
            Ok(_) => {
                // An Event is a report, not work: the condition is written; a failed Event is logged.
                if let Err(e) = events.publish(&condition.event(), &object.object_ref(&())).await {
                    tracing::warn!(name = %name, reason = %condition.reason, "cannot record an Event: {e}");
                    return Ok(1);
                }
                return Ok(2);
            }
            Err(e) if is_conflict(&e) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Contended { what: format!("{} {name} status", K::kind(&())), attempts: MAX_ATTEMPTS })
}

pub async fn set_shoot_condition(
    client: &kube::Client,
    events: &Recorder,
    shoot: &Shoot,
    condition: &Condition,
) -> Result<usize, StoreError> {
    let ns = shoot.metadata.namespace.clone().unwrap_or_default();
    let value = serde_json::to_value(shoot).unwrap_or_default();
    if condition.present_in(&value) {
        return Ok(0);
    }
    let api = Api::<Shoot>::namespaced(client.clone(), &ns);
    set_condition(api, events, shoot, condition).await
}

/// The Seed is written as it was read ([`Raw`]): one whose fields do not decode still gets its condition.
/// Its Events go to the `default` namespace (the recorder's place for cluster-scoped objects).
pub async fn set_seed_condition(
    client: &kube::Client,
    events: &Recorder,
    seed: &Raw<Seed>,
    condition: &Condition,
) -> Result<usize, StoreError> {
    let api = Api::<Raw<Seed>>::all(client.clone());
    set_condition(api, events, seed, condition).await
}

/// The IPAM's recorder on one cluster: the garden (Shoots, the Seed) or the seed (ShootPeers,
/// ManagedResources). `instance` names this controller (one per seed).
pub fn recorder(client: kube::Client, instance: &str) -> Recorder {
    Recorder::new(client, Reporter { controller: COMPONENT.into(), instance: Some(instance.into()) })
}

/// A Warning Event on an object that was skipped because it does not decode, naming the field.
pub async fn report_skipped(events: &Recorder, skipped: &Skipped) -> Result<usize, StoreError> {
    let reference = ObjectReference {
        api_version: Some(skipped.api_version.clone()),
        kind: Some(skipped.kind.clone()),
        name: Some(skipped.name.clone()),
        namespace: skipped.namespace.clone(),
        uid: skipped.uid.clone(),
        resource_version: skipped.resource_version.clone(),
        ..Default::default()
    };
    events.publish(&skipped_event(skipped), &reference).await?;
    Ok(1)
}

fn skipped_event(skipped: &Skipped) -> Event {
    Event {
        type_: EventType::Warning,
        reason: SKIPPED_REASON.into(),
        note: Some(format!("{}: {}; kubelink skips this object until it is fixed", skipped.field, skipped.reason)),
        action: "Skip".into(),
        secondary: None,
    }
}

impl Condition {
    /// The Event recorded when this condition is set.
    fn event(&self) -> Event {
        // A shoot that had to move is served, but someone must look at how its address got claimed twice.
        let warning = !self.ok || self.reason == CONFLICT_REASON;
        Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: self.reason.clone(),
            note: Some(self.message.clone()),
            action: "Allocate".into(),
            secondary: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_with_the_status() {
        let mut obj = json!({"status": {"conditions": [{"type": "Other", "status": "True"}]}});
        let a = Condition::allocated("192.168.128.3".parse().unwrap());
        assert!(!a.present_in(&obj));
        a.apply_to(&mut obj, "t1");
        assert!(a.present_in(&obj));
        let b = Condition::allocated("192.168.128.4".parse().unwrap());
        b.apply_to(&mut obj, "t2");
        assert_eq!(obj["status"]["conditions"][1]["lastTransitionTime"], "t1");
        let c = Condition { ok: false, reason: "Exhausted".into(), ..b };
        c.apply_to(&mut obj, "t3");
        assert_eq!(obj["status"]["conditions"][1]["lastTransitionTime"], "t3");
        assert_eq!(obj["status"]["conditions"][0]["type"], "Other", "other conditions are kept");
    }
}

#[cfg(test)]
mod seed_condition_tests {
    use super::*;

    fn skipped(name: &str) -> Skipped {
        Skipped {
            api_version: "core.gardener.cloud/v1beta1".into(),
            kind: "Shoot".into(),
            namespace: Some("garden-dev".into()),
            name: name.into(),
            uid: None,
            resource_version: None,
            field: "spec.networking.pods".into(),
            reason: "invalid type: integer `5`, expected a string".into(),
        }
    }

    #[test]
    fn the_seed_is_ready_only_when_nothing_was_skipped_or_exhausted() {
        let ready = Condition::seed_ok(3, 0, 1, &[], &[]);
        assert_eq!((ready.ok, ready.reason.as_str()), (true, "Ready"));
        let some: Vec<Skipped> = (0..5).map(|i| skipped(&format!("s{i}"))).collect();
        let c = Condition::seed_ok(3, 0, 0, &some, &[]);
        assert_eq!((c.ok, c.reason.as_str()), (false, "ObjectsSkipped"));
        assert!(
            c.message.contains("5 objects skipped") && c.message.contains("Shoot garden-dev/s0 spec.networking.pods")
        );
        assert!(c.message.contains("and 2 more") && !c.message.contains("s3"), "{}", c.message);
        assert_eq!(Condition::seed_ok(3, 1, 0, &some, &[]).reason, "Exhausted");
        let key = |n: &str| crate::gardener::ShootKey::new("garden-dev", n);
        let conflict = |source| crate::table::Conflict {
            address: "192.168.128.3".parse().unwrap(),
            kept: key("a"),
            moved: key("b"),
            source,
        };
        let hand_edit = Condition::seed_ok(3, 0, 0, &[], &[conflict(crate::table::ConflictSource::Table)]);
        assert_eq!((hand_edit.ok, hand_edit.reason.as_str()), (false, "AddressConflict"));
        assert!(hand_edit.message.contains("192.168.128.3 was claimed by garden-dev/a and garden-dev/b"));
        let migrated = Condition::seed_ok(3, 0, 0, &[], &[conflict(crate::table::ConflictSource::Record)]);
        assert_eq!((migrated.ok, migrated.reason.as_str()), (true, "Ready"), "{}", migrated.message);
    }
}
