//! The re-advertiser: gateway endpoints are often host names of cloud load balancers whose addresses
//! change. Each slot's name is re-resolved on an interval, and sooner when the slot's handshake is
//! stale; a changed address becomes that peer's new pinned endpoint (the reconciler then changes the
//! endpoint only). The decisions (when to resolve, what a result means) are pure; resolving is not.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use kubelink_contract::Slot;

use super::config::Gateway;
use crate::endpoint::Endpoint;

/// When a slot's name is resolved again (the election's timing is `election::Timing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolveTiming {
    /// Re-resolve every name this often.
    pub interval: Duration,
    /// A handshake older than this (or none) makes the slot suspect: resolve sooner.
    pub stale_handshake: Duration,
    /// How often a suspect or failing slot is re-resolved.
    pub retry: Duration,
}

impl Default for ResolveTiming {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            // WireGuard rekeys a session in use every 120 s (REKEY_AFTER_TIME); with keepalive on, a
            // live gateway's handshake is never much older. 135 s leaves room for a retried handshake.
            stale_handshake: Duration::from_secs(135),
            // WireGuard's REKEY_TIMEOUT: the pace of handshake retries.
            retry: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Resolution {
    endpoint: Endpoint,
    current: Option<SocketAddr>,
    last_attempt: Option<Instant>,
    failing: bool,
}

/// What one resolution meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The current address is still among the answers (round-robin DNS does not make it flap).
    Unchanged,
    Changed {
        from: Option<SocketAddr>,
        to: SocketAddr,
    },
    /// Resolution failed; the previous address, if any, stays in use. Retried, never fatal.
    Failed {
        message: String,
        keeping: Option<SocketAddr>,
    },
}

#[derive(Debug, Default)]
pub struct Readvertiser {
    timing: ResolveTiming,
    slots: BTreeMap<Slot, Resolution>,
}

impl Readvertiser {
    pub fn new(timing: ResolveTiming) -> Self {
        Self { timing, slots: BTreeMap::new() }
    }

    /// Takes the configured gateways. A slot whose endpoint text is unchanged keeps its resolution;
    /// a new or changed one starts over (a literal IP is its own resolution).
    pub fn configure(&mut self, gateways: &[Gateway]) {
        self.slots.retain(|n, _| gateways.iter().any(|g| g.slot == *n));
        for g in gateways {
            if self.slots.get(&g.slot).is_some_and(|s| s.endpoint == g.endpoint) {
                continue;
            }
            let slot = Resolution {
                endpoint: g.endpoint.clone(),
                current: g.endpoint.literal(),
                last_attempt: None,
                failing: false,
            };
            self.slots.insert(g.slot, slot);
        }
    }

    /// The current address of every resolved slot.
    pub fn endpoints(&self) -> BTreeMap<Slot, SocketAddr> {
        self.slots.iter().filter_map(|(n, s)| s.current.map(|a| (*n, a))).collect()
    }

    /// The slots to resolve now, given each slot's handshake age (`None`: no handshake yet).
    pub fn due(&self, now: Instant, handshakes: &BTreeMap<Slot, Option<Duration>>) -> Vec<(Slot, Endpoint)> {
        let t = &self.timing;
        let due = |n: &Slot, s: &Resolution| {
            if s.endpoint.literal().is_some() {
                return false;
            }
            let Some(last) = s.last_attempt else { return true };
            let since = now.saturating_duration_since(last);
            let stale = handshakes.get(n).copied().flatten().is_none_or(|age| age > t.stale_handshake);
            since >= t.interval || ((s.failing || stale) && since >= t.retry)
        };
        self.slots.iter().filter(|(n, s)| due(n, s)).map(|(n, s)| (*n, s.endpoint.clone())).collect()
    }

    /// Records a resolution of `slot` (answers in resolver order) and says what changed.
    pub fn record(&mut self, slot: Slot, now: Instant, answers: Result<Vec<SocketAddr>, String>) -> Event {
        let Some(s) = self.slots.get_mut(&slot) else { return Event::Unchanged };
        s.last_attempt = Some(now);
        let answers = answers.and_then(|a| {
            if a.is_empty() { Err(format!("{} resolves to no address", s.endpoint.host())) } else { Ok(a) }
        });
        match answers {
            Err(message) => {
                s.failing = true;
                Event::Failed { message, keeping: s.current }
            }
            Ok(a) => {
                s.failing = false;
                if s.current.is_some_and(|c| a.contains(&c)) {
                    return Event::Unchanged;
                }
                let (from, to) = (s.current, a[0]);
                s.current = Some(to);
                Event::Changed { from, to }
            }
        }
    }
}

/// Resolves an endpoint with the system resolver (hosts file, DNS), off the async threads, giving
/// up after `timeout` (the lookup thread finishes on its own).
pub async fn resolve(endpoint: &Endpoint, timeout: Duration) -> Result<Vec<SocketAddr>, String> {
    let (host, port) = (endpoint.host().to_string(), endpoint.port());
    let lookup = tokio::task::spawn_blocking(move || (host.as_str(), port).to_socket_addrs().map(Iterator::collect));
    match tokio::time::timeout(timeout, lookup).await {
        Ok(Ok(Ok(addrs))) => Ok(addrs),
        Ok(Ok(Err(e))) => Err(format!("cannot resolve {endpoint}: {e}")),
        Ok(Err(e)) => Err(format!("cannot resolve {endpoint}: {e}")),
        Err(_) => Err(format!("cannot resolve {endpoint}: no answer within {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use kubelink_contract::keys::PublicKey;

    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn s(n: u8) -> Slot {
        Slot::new(n).unwrap()
    }

    fn gw(slot: u8, host: &str) -> Gateway {
        Gateway {
            slot: s(slot),
            endpoint: format!("{host}:51820").parse().unwrap(),
            public_key: PublicKey::from_bytes([slot + 1; 32]),
            address: format!("192.168.128.{}", slot + 1).parse().unwrap(),
        }
    }

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::new([10, 0, 0, last].into(), 51820)
    }

    fn ages(rows: &[(u8, Option<u64>)]) -> BTreeMap<Slot, Option<Duration>> {
        rows.iter().map(|(n, a)| (s(*n), a.map(Duration::from_secs))).collect()
    }

    fn slots(due: Vec<(Slot, Endpoint)>) -> Vec<u8> {
        due.into_iter().map(|(n, _)| n.number()).collect()
    }

    #[test]
    fn literal_addresses_need_no_resolution() {
        let mut r = Readvertiser::new(ResolveTiming::default());
        r.configure(&[gw(0, "10.0.0.9"), gw(1, "gw1.example.org")]);
        assert_eq!(r.endpoints(), [(s(0), addr(9))].into());
        assert_eq!(slots(r.due(Instant::now(), &ages(&[]))), vec![1], "only the name is resolved");
    }

    #[test]
    fn when_a_slot_is_due() {
        let t0 = Instant::now();
        let timing = ResolveTiming { interval: 30 * S, stale_handshake: 135 * S, retry: 5 * S };
        // rows: seconds since the last resolution, handshake age, failing, due?
        let rows = [
            (1, Some(10), false, false),
            (29, Some(10), false, false),
            (30, Some(10), false, true),
            (4, None, false, false),
            (5, None, false, true),
            (5, Some(136), false, true),
            (5, Some(134), false, false),
            (5, Some(10), true, true),
            (4, Some(10), true, false),
        ];
        for (since, age, failing, want) in rows {
            let mut r = Readvertiser::new(timing);
            r.configure(&[gw(0, "gw0.example.org")]);
            assert_eq!(slots(r.due(t0, &ages(&[]))), vec![0], "never resolved: due at once");
            let answers = if failing { Err("no such host".into()) } else { Ok(vec![addr(1)]) };
            r.record(s(0), t0, answers);
            let got = !r.due(t0 + since * S, &ages(&[(0, age)])).is_empty();
            assert_eq!(got, want, "since {since}s, handshake {age:?}, failing {failing}");
        }
    }

    #[test]
    fn what_a_resolution_means() {
        let t0 = Instant::now();
        let mut r = Readvertiser::new(ResolveTiming::default());
        r.configure(&[gw(0, "gw0.example.org"), gw(1, "gw1.example.org")]);
        let failed = r.record(s(0), t0, Err("no such host".into()));
        assert_eq!(failed, Event::Failed { message: "no such host".into(), keeping: None });
        assert_eq!(r.record(s(0), t0, Ok(vec![addr(1)])), Event::Changed { from: None, to: addr(1) });
        assert_eq!(r.record(s(1), t0, Ok(vec![addr(7)])), Event::Changed { from: None, to: addr(7) });
        assert_eq!(r.record(s(0), t0, Ok(vec![addr(3), addr(1)])), Event::Unchanged, "still among the answers");
        assert_eq!(
            r.record(s(0), t0, Ok(vec![])),
            Event::Failed { message: "gw0.example.org resolves to no address".into(), keeping: Some(addr(1)) }
        );
        assert_eq!(r.record(s(0), t0, Ok(vec![addr(2)])), Event::Changed { from: Some(addr(1)), to: addr(2) });
        assert_eq!(r.endpoints(), [(s(0), addr(2)), (s(1), addr(7))].into(), "the other slot is undisturbed");
    }

    #[test]
    fn reconfiguring_keeps_unchanged_slots() {
        let t0 = Instant::now();
        let mut r = Readvertiser::new(ResolveTiming::default());
        r.configure(&[gw(0, "gw0.example.org"), gw(1, "gw1.example.org")]);
        r.record(s(0), t0, Ok(vec![addr(1)]));
        r.record(s(1), t0, Ok(vec![addr(2)]));
        let mut moved = gw(1, "gw1.example.org");
        moved.endpoint = "gw1.example.org:51821".parse().unwrap();
        r.configure(&[gw(0, "gw0.example.org"), moved]);
        assert_eq!(r.endpoints(), [(s(0), addr(1))].into(), "a changed endpoint starts over");
        assert_eq!(slots(r.due(t0, &ages(&[(0, Some(1))]))), vec![1]);
        r.configure(&[gw(0, "gw0.example.org")]);
        assert_eq!(r.endpoints().len(), 1, "a removed slot is forgotten");
    }

    #[tokio::test]
    async fn resolving_localhost() {
        // Only the hosts file: unit tests send no DNS queries.
        let ok = resolve(&"localhost:51820".parse().unwrap(), 5 * S).await.unwrap();
        assert!(ok.iter().all(|a| a.port() == 51820 && a.ip().is_loopback()), "{ok:?}");
    }
}
