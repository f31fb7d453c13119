//! Gateway election with one `coordination.k8s.io/v1` Lease per gateway slot (the client-go
//! algorithm: get, then create or replace guarded by resourceVersion). A node holds at most one slot,
//! so two gateways are always on two nodes. The decision is pure ([`decide`]); [`kube`] does the I/O.
//!
//! Timing: a holder renews every `retry` and steps down when it could not renew for `renew_deadline`;
//! others take a slot over once `renewTime + lease_duration` has passed. A dead gateway's slot is
//! therefore free after at most `lease_duration` and taken within one `retry` more.
//!
//! A Lease is written by whichever node holds it, so nothing in it is taken on trust beyond what the
//! election needs ([`SlotLease::bounded`]): its `leaseDurationSeconds` counts for at most the
//! configured lease duration, and a `renewTime` more than [`CLOCK_SKEW`] ahead of this node's clock
//! counts as no renewal. A node that writes either cannot keep a slot live after it stops renewing.

pub mod kube;

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

pub use kubelink_contract::labels;

/// What the election knows of one slot's Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotLease {
    pub holder: Option<String>,
    pub renewed: Option<Timestamp>,
    /// When the current holder acquired the slot.
    pub acquired: Option<Timestamp>,
    pub duration: Duration,
    pub node_ip: Option<String>,
}

impl SlotLease {
    /// Held and renewed recently enough.
    pub fn is_live(&self, now: Timestamp) -> bool {
        let (Some(h), Some(renewed)) = (&self.holder, self.renewed) else { return false };
        let Ok(duration) = k8s_openapi::jiff::SignedDuration::try_from(self.duration) else { return false };
        !h.is_empty() && renewed.checked_add(duration).is_ok_and(|until| until > now)
    }

    pub fn held_by(&self, me: &str) -> bool {
        self.holder.as_deref() == Some(me)
    }

    /// The Lease as seen by a node that first read this version of it `seen_for` ago (on its own
    /// clock) and has read the API without a gap since: it counts as renewed no earlier than then.
    /// So a spare takes a slot over only after watching it unchanged for a whole lease duration,
    /// never right after an API outage during which nobody could renew (client-go's observedTime).
    pub fn observed(mut self, now: Timestamp, seen_for: Duration) -> Self {
        let seen = k8s_openapi::jiff::SignedDuration::try_from(seen_for).ok().and_then(|d| now.checked_sub(d).ok());
        self.renewed = match (self.renewed, seen) {
            (Some(r), Some(s)) => Some(r.max(s)),
            (r, s) => r.or(s),
        };
        self
    }
}

/// How far ahead of this node's clock a Lease's `renewTime` may be and still count: the clocks of two
/// seed nodes (NTP-synchronised, as Kubernetes requires for its own Leases) differ by far less; one
/// second is a quarter of the default lease duration, so a skewed honest holder still keeps its
/// slot, while a renewTime beyond it is a clock that is wrong or a node that lies.
pub const CLOCK_SKEW: Duration = Duration::from_secs(1);

impl SlotLease {
    /// The Lease as this node trusts it: the duration capped at `max_duration` (the configured one,
    /// which every agent writes), and a renewTime more than [`CLOCK_SKEW`] after `now` dropped (no
    /// renewal; [`SlotLease::observed`] then counts it from when this node saw it).
    pub fn bounded(mut self, now: Timestamp, max_duration: Duration) -> Self {
        self.duration = self.duration.min(max_duration);
        let skew = k8s_openapi::jiff::SignedDuration::try_from(CLOCK_SKEW).unwrap_or_default();
        let latest = now.checked_add(skew).unwrap_or(now);
        self.renewed = self.renewed.filter(|r| *r <= latest);
        self
    }
}

/// What to do in this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Keep holding `slot`: update its renewTime.
    Renew(usize),
    /// The slot has no Lease yet: create it with us as holder.
    Create(usize),
    /// The slot's Lease expired (or was released): take it over.
    TakeOver(usize),
    /// Every slot is live and held by others, or we hold one already.
    Wait,
}

/// Decides the next step for node `me` given every slot's Lease (`None`: no Lease object yet).
/// Prefers keeping what it holds (sticky), then the lowest free slot.
pub fn decide(me: &str, now: Timestamp, slots: &[Option<SlotLease>]) -> Action {
    if let Some(held) = slots.iter().position(|s| s.as_ref().is_some_and(|l| l.held_by(me))) {
        return Action::Renew(held);
    }
    for (i, slot) in slots.iter().enumerate() {
        match slot {
            None => return Action::Create(i),
            Some(l) if !l.is_live(now) => return Action::TakeOver(i),
            Some(_) => {}
        }
    }
    Action::Wait
}

/// The outcome of one round: plain data, so that the agent's role logic can be tested without I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Round {
    /// The slot this node holds after the round, if any.
    pub holding: Option<usize>,
    /// Every slot's Lease as read at the start of the round (after our own write for our slot).
    pub slots: Vec<Option<SlotLease>>,
}

/// A slot with a live holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveGateway {
    pub slot: usize,
    pub node: String,
    pub node_ip: Option<String>,
    pub acquired: Option<Timestamp>,
}

/// The gateway of every slot that has a live holder.
pub fn live_gateways(now: Timestamp, slots: &[Option<SlotLease>]) -> Vec<LiveGateway> {
    let live = |(slot, s): (usize, &Option<SlotLease>)| {
        let l = s.as_ref().filter(|l| l.is_live(now))?;
        Some(LiveGateway { slot, node: l.holder.clone()?, node_ip: l.node_ip.clone(), acquired: l.acquired })
    };
    slots.iter().enumerate().filter_map(live).collect()
}

/// The gateways routers should send traffic to: those that have held their slot for `warmup` (a new
/// holder has no WireGuard sessions yet; the shoots re-handshake with it within about a keepalive
/// interval plus 15 s). When none has warmed up, every live one: something beats nothing.
pub fn usable_gateways(now: Timestamp, warmup: Duration, live: &[LiveGateway]) -> Vec<LiveGateway> {
    let warm: Vec<LiveGateway> =
        live.iter().filter(|g| g.acquired.is_none_or(|a| warmed_up(a, warmup, now))).cloned().collect();
    if warm.is_empty() { live.to_vec() } else { warm }
}

/// Whether a holder that acquired its slot at `acquired` has held it for `warmup` by `now` (a warm-up
/// too long to add to a timestamp never ends).
pub fn warmed_up(acquired: Timestamp, warmup: Duration, now: Timestamp) -> bool {
    let ready = k8s_openapi::jiff::SignedDuration::try_from(warmup).ok().and_then(|w| acquired.checked_add(w).ok());
    ready.is_some_and(|ready| ready <= now)
}

/// Election timing (flags of `kubelink agent`).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry: Duration,
}

impl Default for Timing {
    /// Failover within lease_duration + retry = 5 s (GEP-14 accepts 30-60 s).
    fn default() -> Self {
        Timing {
            lease_duration: Duration::from_secs(4),
            renew_deadline: Duration::from_secs(3),
            retry: Duration::from_secs(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn lease(holder: &str, renewed: i64) -> Option<SlotLease> {
        Some(SlotLease {
            holder: Some(holder.into()),
            renewed: Some(t(renewed)),
            acquired: Some(t(renewed - 100)),
            duration: Duration::from_secs(4),
            node_ip: None,
        })
    }

    #[test]
    fn a_lease_counts_as_renewed_no_earlier_than_first_seen() {
        let expired = lease("a", 0).unwrap();
        assert!(!expired.is_live(t(10)));
        // Just read again after an outage: a whole lease duration of grace before a take-over.
        assert!(expired.clone().observed(t(10), Duration::ZERO).is_live(t(10)));
        assert!(expired.clone().observed(t(13), Duration::from_secs(3)).is_live(t(13)));
        assert!(!expired.clone().observed(t(14), Duration::from_secs(4)).is_live(t(14)));
        // Watched since before it expired: the renewTime decides.
        assert!(!expired.observed(t(10), Duration::from_secs(60)).is_live(t(10)));
        assert_eq!(decide("b", t(10), &[lease("a", 0).map(|l| l.observed(t(10), Duration::ZERO))]), Action::Wait);
    }

    #[test]
    fn a_lease_is_trusted_only_within_the_configured_duration_and_the_clock_skew() {
        let max = Duration::from_secs(4);
        let with = |renewed: i64, duration: u64| SlotLease {
            duration: Duration::from_secs(duration),
            ..lease("a", renewed).unwrap()
        };
        // rows: renewTime, leaseDurationSeconds written, now -> live (as decided after `bounded`)
        let rows: &[(i64, u64, i64, bool, &str)] = &[
            (0, 4, 3, true, "an honest holder"),
            (0, 4, 4, false, "an honest holder's expiry"),
            (0, 3600, 3, true, "an hour asked for, within the configured 4 s"),
            (0, 3600, 4, false, "an hour asked for: expires after the configured 4 s"),
            (0, i32::MAX as u64, 100, false, "the largest duration a Lease can hold"),
            (1, 4, 0, true, "renewed 1 s ahead of our clock: within the skew"),
            (2, 4, 0, false, "renewed 2 s ahead of our clock: no renewal"),
            (3600, 4, 0, false, "renewed an hour ahead: no renewal"),
        ];
        for &(renewed, duration, now, live, why) in rows {
            let bounded = with(renewed, duration).bounded(t(now), max);
            assert_eq!(bounded.is_live(t(now)), live, "{why}");
            assert!(bounded.duration <= max, "{why}");
        }
        // A future renewTime counts from when this node first saw that version of the Lease: the
        // holder keeps the slot only while it keeps writing, like any holder.
        let future = with(3600, 3600).bounded(t(0), max);
        assert!(future.clone().observed(t(3), Duration::from_secs(3)).is_live(t(3)));
        assert!(!future.observed(t(4), Duration::from_secs(4)).is_live(t(4)));
        assert_eq!(decide("b", t(4), &[Some(with(3600, 3600).bounded(t(4), max))]), Action::TakeOver(0));
    }

    #[test]
    fn missing_leases_are_created_lowest_first() {
        assert_eq!(decide("a", t(0), &[None, None]), Action::Create(0));
        assert_eq!(decide("a", t(0), &[lease("b", 0), None]), Action::Create(1));
    }

    #[test]
    fn a_holder_renews_and_never_takes_a_second_slot() {
        assert_eq!(decide("a", t(0), &[lease("a", 0), None]), Action::Renew(0));
        assert_eq!(decide("a", t(10), &[lease("b", 0), lease("a", 0)]), Action::Renew(1), "sticky, even if expired");
    }

    #[test]
    fn expired_slots_are_taken_over_live_ones_are_not() {
        // rows: (now, renewed) -> live?
        assert_eq!(decide("a", t(3), &[lease("b", 0)]), Action::Wait);
        assert_eq!(decide("a", t(4), &[lease("b", 0)]), Action::TakeOver(0));
        assert_eq!(decide("a", t(5), &[lease("b", 4), lease("c", 0)]), Action::TakeOver(1));
    }

    #[test]
    fn released_lease_is_free() {
        let released = Some(SlotLease {
            holder: None,
            renewed: Some(t(0)),
            acquired: None,
            duration: Duration::from_secs(4),
            node_ip: None,
        });
        assert_eq!(decide("a", t(1), &[released]), Action::TakeOver(0));
    }

    #[test]
    fn live_gateways_lists_only_live_holders() {
        let mut l0 = lease("n1", 0);
        l0.as_mut().unwrap().node_ip = Some("10.0.0.1".into());
        let got = live_gateways(t(2), &[l0, lease("n2", -10), None]);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].slot, got[0].node.as_str(), got[0].node_ip.as_deref()), (0, "n1", Some("10.0.0.1")));
    }

    #[test]
    fn fresh_holders_warm_up_unless_nobody_else_is_there() {
        let gw =
            |slot, acquired| LiveGateway { slot, node: format!("n{slot}"), node_ip: None, acquired: Some(t(acquired)) };
        let warmup = Duration::from_secs(45);
        // slot 0 just changed hands, slot 1 is old: only slot 1 carries traffic.
        let both = [gw(0, 100), gw(1, 0)];
        assert_eq!(usable_gateways(t(110), warmup, &both), vec![gw(1, 0)]);
        // After the warm-up both carry.
        assert_eq!(usable_gateways(t(145), warmup, &both).len(), 2);
        // The only gateway is fresh: it is used anyway.
        assert_eq!(usable_gateways(t(101), warmup, &[gw(0, 100)]), vec![gw(0, 100)]);
    }
}
