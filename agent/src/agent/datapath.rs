//! Whether a gateway forwards, planned without I/O: which shoots to probe through the gateway's own
//! device and what the answers say. A shoot is asked only when it was heard from lately (its received
//! byte counter grew: the sidecar's keepalive every 21 s is enough), so shoots that are down, or a load
//! balancer that sends nothing here, never count against the gateway. Silence counts only from shoots
//! that answered a probe before, so a shoot that never answers ICMP is no evidence either. A probe is
//! the node's own packet and never crosses the forward hook, so a drop rule there is found by the
//! firewall table's counters instead ([`dropped`]): forwarded packets that entered and none that left.
//! [`super::run`] reads the device and sends the probes; [`super::role`] decides what a fault costs.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use kubelink_contract::keys::PublicKey;

use crate::firewall::ForwardCounters;
use crate::wg::ObservedDevice;

/// A shoot heard from within this long is expected to answer a probe.
pub const HEARD_WITHIN: Duration = Duration::from_secs(30);
/// Shoots probed per check: one answer is enough, one shoot going away is not a fault.
pub const PROBES: usize = 3;

/// Why a gateway does not forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    #[error("IP forwarding is off on this node")]
    ForwardingOff,
    #[error("none of {asked} shoot(s) heard from lately answered a probe through the device")]
    NoAnswer { asked: usize },
    #[error(
        "{entered} forwarded packet(s) {direction} entered the forward hook and none left the node: something on it drops them"
    )]
    ForwardDropped { direction: &'static str, entered: u64 },
}

/// Packets that must have entered between two checks before none leaving counts as a fault: a
/// packet or two in flight at the moment of a reading is not evidence.
pub const DROPPED_AFTER: u64 = 5;

/// A fault when, between two readings, forwarded packets entered the forward hook in a direction and
/// not one of them left the node. Some leaving is policy (a rule that drops some traffic), not a
/// broken node.
pub fn dropped(before: &ForwardCounters, now: &ForwardCounters) -> Option<Fault> {
    let rows = [
        ("into the tunnel", before.into_tunnel, now.into_tunnel),
        ("out of the tunnel", before.from_tunnel, now.from_tunnel),
    ];
    rows.into_iter().find_map(|(direction, (e0, l0), (e1, l1))| {
        let (entered, left) = (e1.saturating_sub(e0), l1.saturating_sub(l0));
        (entered >= DROPPED_AFTER && left == 0).then_some(Fault::ForwardDropped { direction, entered })
    })
}

/// What a data-path check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// A shoot answered through the device.
    Forwards,
    /// Nobody to ask, or no answer from shoots that never answered: no evidence either way.
    Unprobed,
    Fault(Fault),
}

/// What the gateway knows about one peer between checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Heard {
    /// The peer's received bytes at the last check.
    pub rx: u64,
    /// When the counter last grew (or, at first sight, when the peer last completed a handshake).
    pub at: Option<Instant>,
    /// It answered a probe once: its silence now means something.
    pub answered: bool,
}

/// The peers' [`Heard`] after reading the device at `now`.
pub fn heard_from(
    prev: &BTreeMap<PublicKey, Heard>,
    observed: &ObservedDevice,
    now: Instant,
) -> BTreeMap<PublicKey, Heard> {
    let updated = |(key, peer): (&PublicKey, &crate::wg::ObservedPeer)| {
        let heard = match prev.get(key) {
            Some(h) if h.rx == peer.rx_bytes => *h,
            Some(h) => Heard { rx: peer.rx_bytes, at: Some(now), answered: h.answered },
            None => {
                Heard { rx: peer.rx_bytes, at: peer.last_handshake.and_then(|a| now.checked_sub(a)), answered: false }
            }
        };
        (*key, heard)
    };
    observed.peers.iter().map(updated).collect()
}

/// A probe to send: the peer and its tunnel address (the first host address it may use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub peer: PublicKey,
    pub address: IpAddr,
    pub answered_before: bool,
}

/// Up to [`PROBES`] peers heard from within [`HEARD_WITHIN`], those that answered before first, then
/// the most recently heard.
pub fn targets(
    heard: &BTreeMap<PublicKey, Heard>,
    addresses: &BTreeMap<PublicKey, IpAddr>,
    now: Instant,
) -> Vec<Target> {
    let mut live: Vec<(&PublicKey, &Heard)> =
        heard.iter().filter(|(_, h)| h.at.is_some_and(|at| now.saturating_duration_since(at) < HEARD_WITHIN)).collect();
    live.sort_by_key(|(_, h)| (!h.answered, std::cmp::Reverse(h.at)));
    live.into_iter()
        .filter_map(|(k, h)| Some(Target { peer: *k, address: *addresses.get(k)?, answered_before: h.answered }))
        .take(PROBES)
        .collect()
}

/// The verdict of one round of probes: `answers[i]` is whether `asked[i]` answered.
pub fn verdict(asked: &[Target], answers: &[bool]) -> Check {
    if answers.iter().any(|a| *a) {
        return Check::Forwards;
    }
    let counted = asked.iter().filter(|t| t.answered_before).count();
    if counted == 0 { Check::Unprobed } else { Check::Fault(Fault::NoAnswer { asked: asked.len() }) }
}

/// Remembers who answered.
pub fn record(heard: &mut BTreeMap<PublicKey, Heard>, asked: &[Target], answers: &[bool]) {
    for (t, _) in asked.iter().zip(answers).filter(|(_, a)| **a) {
        if let Some(h) = heard.get_mut(&t.peer) {
            h.answered = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wg::{ObservedPeer, PeerSpec};

    fn key(n: u8) -> PublicKey {
        PublicKey::from_bytes([n; 32])
    }

    fn device(peers: &[(u8, u64, Option<u64>)]) -> ObservedDevice {
        let peer = |(n, rx, hs): &(u8, u64, Option<u64>)| {
            let p = ObservedPeer {
                spec: PeerSpec::new(key(*n)),
                last_handshake: hs.map(Duration::from_secs),
                rx_bytes: *rx,
                tx_bytes: 0,
            };
            (key(*n), p)
        };
        ObservedDevice { peers: peers.iter().map(peer).collect(), ..Default::default() }
    }

    fn addresses(n: u8) -> BTreeMap<PublicKey, IpAddr> {
        (1..=n).map(|i| (key(i), IpAddr::from([192, 168, 128, 10 + i]))).collect()
    }

    #[test]
    fn a_peer_is_heard_from_when_its_counter_grows_or_at_first_sight_by_its_handshake() {
        let t0 = Instant::now() + Duration::from_secs(1000);
        let first = heard_from(&BTreeMap::new(), &device(&[(1, 100, Some(5)), (2, 0, None)]), t0);
        assert_eq!(first[&key(1)].at, Some(t0 - Duration::from_secs(5)));
        assert_eq!(first[&key(2)].at, None, "never handshaked: never heard from");
        let later = t0 + Duration::from_secs(10);
        let second = heard_from(&first, &device(&[(1, 100, Some(15)), (2, 60, Some(1))]), later);
        assert_eq!(second[&key(1)].at, first[&key(1)].at, "no new bytes: still heard at the old time");
        assert_eq!(second[&key(2)].at, Some(later));
    }

    #[test]
    fn targets_are_recent_peers_that_answered_before_first_at_most_three() {
        let now = Instant::now() + Duration::from_secs(1000);
        let h = |ago: u64, answered| Heard { rx: 1, at: Some(now - Duration::from_secs(ago)), answered };
        let heard: BTreeMap<_, _> = [
            (key(1), h(1, false)),
            (key(2), h(5, true)),
            (key(3), h(40, true)),
            (key(4), h(2, false)),
            (key(5), h(3, false)),
        ]
        .into();
        let got: Vec<PublicKey> = targets(&heard, &addresses(5), now).iter().map(|t| t.peer).collect();
        assert_eq!(got, vec![key(2), key(1), key(4)], "silent for 40 s: not asked; at most three");
        assert!(targets(&BTreeMap::new(), &addresses(5), now).is_empty());
    }

    #[test]
    fn verdict_rows() {
        let t = |answered_before| Target { peer: key(1), address: IpAddr::from([192, 168, 128, 11]), answered_before };
        // rows: asked (answered before), answers, verdict
        let rows: &[(&[Target], &[bool], Check)] = &[
            (&[t(true), t(false)], &[false, true], Check::Forwards),
            (&[t(true), t(true)], &[false, false], Check::Fault(Fault::NoAnswer { asked: 2 })),
            (&[t(false)], &[false], Check::Unprobed),
            (&[], &[], Check::Unprobed),
        ];
        for (asked, answers, want) in rows {
            assert_eq!(verdict(asked, answers), *want, "{asked:?} {answers:?}");
        }
    }

    #[test]
    fn packets_that_enter_the_forward_hook_and_never_leave_are_a_fault() {
        let at = |into: (u64, u64), from: (u64, u64)| ForwardCounters { into_tunnel: into, from_tunnel: from };
        let before = at((100, 100), (50, 50));
        let rows = [
            ("all forwarded", at((200, 200), (90, 90)), None),
            ("nothing forwarded: no evidence", before, None),
            ("a few in flight", at((104, 100), (50, 50)), None),
            ("some dropped: policy, not a broken node", at((200, 150), (50, 50)), None),
            (
                "none into the tunnel left",
                at((110, 100), (50, 50)),
                Some(Fault::ForwardDropped { direction: "into the tunnel", entered: 10 }),
            ),
            (
                "none out of the tunnel left",
                at((100, 100), (60, 50)),
                Some(Fault::ForwardDropped { direction: "out of the tunnel", entered: 10 }),
            ),
            ("a new table starts from zero", at((3, 3), (0, 0)), None),
        ];
        for (why, now, want) in rows {
            assert_eq!(dropped(&before, &now), want, "{why}");
        }
        let text = Fault::ForwardDropped { direction: "into the tunnel", entered: 10 }.to_string();
        assert!(text.contains("none left the node"), "{text}");
    }

    #[test]
    fn an_answer_is_remembered() {
        let mut heard: BTreeMap<_, _> = [(key(1), Heard::default()), (key(2), Heard::default())].into();
        let asked: Vec<Target> = targets(
            &heard.keys().map(|k| (*k, Heard { at: Some(Instant::now()), ..Heard::default() })).collect(),
            &addresses(2),
            Instant::now(),
        );
        record(&mut heard, &asked, &[true, false]);
        assert_eq!(heard.values().filter(|h| h.answered).count(), 1);
    }
}
