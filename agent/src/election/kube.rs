//! Lease I/O for the election: read every slot, then create, renew or take over one, each guarded by
//! resourceVersion so that two nodes can never both win a slot (the loser gets 409 Conflict).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;

pub use super::Round;
use super::{Action, SlotLease, Timing, decide, labels};
use kubelink_contract::{Slot, names};

/// One node's view of the slot Leases (`kubelink-gateway-<slot>`, [`names::gateway`]) in one namespace.
pub struct LeaseElection {
    api: Api<Lease>,
    pub me: String,
    pub node_ip: String,
    pub slots: usize,
    pub timing: Timing,
    /// Per slot: the Lease's resourceVersion and when we first read that version. Cleared when a
    /// read fails, so that after an outage every Lease gets a fresh lease duration of grace.
    seen: Mutex<BTreeMap<usize, (String, Instant)>>,
}

impl LeaseElection {
    pub fn new(client: kube::Client, namespace: &str, me: &str, node_ip: &str, slots: usize, timing: Timing) -> Self {
        LeaseElection {
            api: Api::namespaced(client, namespace),
            me: me.into(),
            node_ip: node_ip.into(),
            slots,
            timing,
            seen: Mutex::new(BTreeMap::new()),
        }
    }

    /// The contended slots: the first `slots`, never more than exist. A round's per-slot lists are
    /// indexed by [`Slot::index`].
    fn contended(&self) -> impl Iterator<Item = Slot> {
        Slot::ALL.into_iter().take(self.slots)
    }

    /// Reads every slot's Lease.
    pub async fn read(&self) -> Result<Vec<Option<Lease>>, kube::Error> {
        let mut out = Vec::with_capacity(self.slots);
        for slot in self.contended() {
            out.push(self.api.get_opt(&names::gateway(slot)).await?);
        }
        Ok(out)
    }

    /// One round: decide from what is there, write, and report what we hold. A lost race (409) is
    /// not an error: the round simply ends without the slot.
    pub async fn round(&self) -> Result<Round, kube::Error> {
        self.round_with(true).await
    }

    /// A round in which this node renews what it holds but, unless `acquire`, takes no new slot (a
    /// node that just gave its slot up because it could not serve it).
    pub async fn round_with(&self, acquire: bool) -> Result<Round, kube::Error> {
        let mut leases = match self.read().await {
            Ok(l) => l,
            Err(e) => {
                self.forget_observations();
                return Err(e);
            }
        };
        let now = Timestamp::now();
        let views = self.observe(now, &leases);
        let (slot, written) = match decide(&self.me, now, &views) {
            Action::Wait => return Ok(Round { holding: None, slots: views }),
            Action::Create(_) | Action::TakeOver(_) if !acquire => return Ok(Round { holding: None, slots: views }),
            Action::Create(i) => (i, self.create(i, now).await),
            Action::Renew(i) => (i, self.replace(leases[i].take(), now, false).await),
            Action::TakeOver(i) => (i, self.replace(leases[i].take(), now, true).await),
        };
        let mut views = views;
        match written {
            Ok(lease) => {
                views[slot] = Some(view(&lease));
                Ok(Round { holding: Some(slot), slots: views })
            }
            Err(kube::Error::Api(status)) if status.is_conflict() || status.is_already_exists() => {
                tracing::debug!(slot, "lost the race for the slot");
                Ok(Round { holding: None, slots: views })
            }
            Err(e) => Err(e),
        }
    }

    /// After a gap in reading (an error, a round that timed out): every Lease starts a new grace.
    pub fn forget_observations(&self) {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The views of the Leases just read, each counted as renewed no earlier than one retry period
    /// before we first saw it.
    fn observe(&self, now: Timestamp, leases: &[Option<Lease>]) -> Vec<Option<SlotLease>> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let at = Instant::now();
        let observe = |(slot, lease): (usize, &Option<Lease>)| {
            let lease = lease.as_ref()?;
            let rv = lease.metadata.resource_version.clone().unwrap_or_default();
            let entry = seen.entry(slot).or_insert_with(|| (rv.clone(), at));
            if entry.0 != rv {
                *entry = (rv, at);
            }
            // Reads come every retry period, so a version is first seen up to one retry after it was
            // written: counting from one retry before first sight adds no delay to a take-over.
            let bounded = view(lease).bounded(now, self.timing.lease_duration);
            Some(bounded.observed(now, at.duration_since(entry.1) + self.timing.retry))
        };
        leases.iter().enumerate().map(observe).collect()
    }

    async fn create(&self, index: usize, now: Timestamp) -> Result<Lease, kube::Error> {
        // `decide` picks an index of the round's list, which has one entry per contended slot.
        let name = self.contended().nth(index).map(names::gateway);
        let lease = Lease { metadata: ObjectMeta { name, ..ObjectMeta::default() }, spec: None };
        self.api.create(&PostParams::default(), &self.held(lease, now, true)).await
    }

    async fn replace(&self, lease: Option<Lease>, now: Timestamp, take_over: bool) -> Result<Lease, kube::Error> {
        let lease = lease.unwrap_or_default();
        let name = lease.metadata.name.clone().unwrap_or_default();
        // The resourceVersion we read travels with the object: a concurrent writer makes this a 409.
        self.api.replace(&name, &PostParams::default(), &self.held(lease, now, take_over)).await
    }

    /// The Lease with us as holder, renewed now; a take-over counts a transition.
    fn held(&self, mut lease: Lease, now: Timestamp, acquire: bool) -> Lease {
        let mut spec = lease.spec.take().unwrap_or_default();
        if acquire {
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions =
                Some(spec.lease_transitions.unwrap_or(0) + i32::from(spec.holder_identity.is_some()));
        }
        spec.holder_identity = Some(self.me.clone());
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(self.timing.lease_duration.as_secs().max(1) as i32);
        lease.spec = Some(spec);
        let annotations = lease.metadata.annotations.get_or_insert_with(BTreeMap::new);
        annotations.insert(labels::NODE_IP.into(), self.node_ip.clone());
        lease
    }

    /// Gives a slot up at once (clean shutdown, or a gateway that lost its data path), so another
    /// node takes it without waiting for the Lease to expire.
    /// A slot index that names no slot holds nothing to release.
    pub async fn release(&self, slot: usize) -> Result<(), kube::Error> {
        let Ok(slot) = Slot::try_from(slot) else { return Ok(()) };
        let name = names::gateway(slot);
        let Some(mut lease) = self.api.get_opt(&name).await? else { return Ok(()) };
        let spec: &mut LeaseSpec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(&self.me) {
            return Ok(());
        }
        spec.holder_identity = None;
        self.api.replace(&name, &PostParams::default(), &lease).await.map(|_| ())
    }
}

/// The election's view of a Lease object.
pub fn view(lease: &Lease) -> SlotLease {
    let spec = lease.spec.clone().unwrap_or_default();
    SlotLease {
        holder: spec.holder_identity.filter(|h| !h.is_empty()),
        renewed: spec.renew_time.map(|t| t.0),
        acquired: spec.acquire_time.map(|t| t.0),
        duration: std::time::Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64),
        node_ip: lease.metadata.annotations.as_ref().and_then(|a| a.get(labels::NODE_IP).cloned()),
    }
}
