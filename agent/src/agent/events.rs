//! Kubernetes Events about the agent's slots, through kube-runtime's recorder (events.k8s.io/v1), on
//! the slot's Lease: `kubectl describe lease kubelink-gateway-0` shows who took, lost or gave up the
//! slot. An Event is a report, not work: publishing runs in the background and a failure is logged.

use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kubelink_contract::{Slot, names};

/// What happened to a slot on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotEvent {
    Taken {
        slot: Slot,
    },
    Lost {
        slot: Slot,
    },
    /// The gateway setup kept failing for `failing_for`; the node takes no slot for `standby`.
    GivenUp {
        slot: Slot,
        failing_for: Duration,
        standby: Duration,
    },
}

impl SlotEvent {
    pub fn slot(&self) -> Slot {
        match self {
            SlotEvent::Taken { slot } | SlotEvent::Lost { slot } | SlotEvent::GivenUp { slot, .. } => *slot,
        }
    }

    /// The Event `node` reports.
    pub fn event(&self, node: &str) -> Event {
        let (type_, reason, action, note) = match self {
            SlotEvent::Taken { slot } => {
                (EventType::Normal, "SlotTaken", "Elect", format!("node {node} took gateway slot {slot}"))
            }
            SlotEvent::Lost { slot } => {
                (EventType::Normal, "SlotLost", "Elect", format!("node {node} no longer holds gateway slot {slot}"))
            }
            SlotEvent::GivenUp { slot, failing_for, standby } => (
                EventType::Warning,
                "SlotGivenUp",
                "GiveUp",
                format!(
                    "node {node} gave gateway slot {slot} up: its device, routes or nftables table kept failing \
                     for {failing_for:?}; standing by for {standby:?} (see the agent's log)"
                ),
            ),
        };
        Event { type_, reason: reason.into(), note: Some(note), action: action.into(), secondary: None }
    }
}

/// Publishes [`SlotEvent`]s of one node.
#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
    namespace: String,
    node: String,
}

impl Events {
    pub fn new(client: kube::Client, namespace: &str, node: &str) -> Self {
        let reporter = Reporter { controller: "kubelink-agent".into(), instance: Some(node.into()) };
        Self { recorder: Recorder::new(client, reporter), namespace: namespace.into(), node: node.into() }
    }

    /// The slot's Lease, which the Events are about.
    fn lease(&self, slot: Slot) -> ObjectReference {
        ObjectReference {
            api_version: Some("coordination.k8s.io/v1".into()),
            kind: Some("Lease".into()),
            name: Some(names::gateway(slot)),
            namespace: Some(self.namespace.clone()),
            ..Default::default()
        }
    }

    /// Publishes `event` now (a repeat within the recorder's window becomes a series: a patch).
    pub async fn publish(&self, event: &SlotEvent) -> Result<(), kube::Error> {
        let lease = self.lease(event.slot());
        self.recorder.publish(&event.event(&self.node), &lease).await
    }

    /// Publishes in the background: the agent's loop never waits for the API server for a report.
    pub fn spawn(&self, event: SlotEvent) {
        let events = self.clone();
        tokio::spawn(async move {
            if let Err(e) = events.publish(&event).await {
                tracing::warn!(slot = event.slot().number(), "cannot record an Event ({event:?}): {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_slot_event_says_what_happened_and_where_to_look() {
        let given_up = SlotEvent::GivenUp {
            slot: Slot::ALL[1],
            failing_for: Duration::from_secs(5),
            standby: Duration::from_secs(60),
        };
        let e = given_up.event("node-a");
        assert_eq!((e.type_, e.reason.as_str()), (EventType::Warning, "SlotGivenUp"));
        let note = e.note.unwrap();
        assert!(note.contains("node-a") && note.contains("slot 1") && note.contains("60s"), "{note}");
        assert_eq!(SlotEvent::Taken { slot: Slot::ALL[0] }.event("n").reason, "SlotTaken");
        assert_eq!(SlotEvent::Lost { slot: Slot::ALL[0] }.event("n").type_, EventType::Normal);
    }
}
