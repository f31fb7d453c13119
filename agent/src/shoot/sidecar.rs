//! The sidecar loop: config directory -> re-advertiser -> desired device -> the shared reconcile pass,
//! plus liveness of each gateway (handshake age, an ICMP probe to its slot address through the
//! tunnel), metrics and readiness.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::Notify;

use super::config::{self, Inputs, ShootConfig, ShootConfigError, Sources};
use super::readvertise::{self, Event, Readvertiser, ResolveTiming};
use crate::driver::{self, Due, Role, Schedule};
use crate::health::{Health, HealthError};
use crate::metrics::{PeerSample, PeerTraffic};
use crate::reconcile::{ReconcileError, Reconciler, report_failure};
use crate::wg::{ObservedDevice, STALE_HANDSHAKE};
use kubelink_contract::Slot;

#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error(transparent)]
    Config(#[from] ShootConfigError),
    #[error(transparent)]
    Health(#[from] HealthError),
    #[error("starting the netlink monitor: {0}")]
    Monitor(std::io::Error),
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
    #[error("cleanup incomplete: {0}")]
    Teardown(String),
}

pub struct Options {
    pub device: crate::ifname::IfName,
    pub sources: Sources,
    pub timing: ResolveTiming,
    pub resolve_timeout: Duration,
    pub resync_interval: Duration,
    /// ICMP probe of each slot address through the tunnel; `None` turns probing off.
    pub probe_interval: Option<Duration>,
    /// A gateway counts as up while its last handshake is younger than this.
    pub handshake_window: Duration,
    pub health_listen: SocketAddr,
    pub remove_on_exit: bool,
}

/// Per-slot liveness, shared with the readiness check.
#[derive(Debug, Clone, Default)]
struct Liveness {
    slots: BTreeMap<Slot, SlotLive>,
    handshake_window: Duration,
    /// Probe answers older than this do not count; `None`: probing is off.
    probe_grace: Option<Duration>,
}

#[derive(Debug, Clone, Default)]
struct SlotLive {
    handshake_at: Option<Instant>,
    probe_ok_at: Option<Instant>,
    /// Probes unanswered in a row.
    probe_failures: u32,
    /// When the first of them was sent.
    failing_since: Option<Instant>,
    /// When the session with this gateway was last restarted.
    restarted_at: Option<Instant>,
}

impl SlotLive {
    /// Records the result of a probe `sent` then; returns the unanswered probes in a row, how long
    /// ago the session was last restarted, and how long ago a handshake made since the first of those
    /// probes was (as last observed): a session newer than the failures.
    fn probed(&mut self, answered: bool, sent: Instant, now: Instant) -> (u32, Option<Duration>, Option<Duration>) {
        if answered {
            self.probe_ok_at = Some(now);
            self.probe_failures = 0;
            self.failing_since = None;
        } else {
            self.probe_failures = self.probe_failures.saturating_add(1);
            self.failing_since = self.failing_since.or(Some(sent));
        }
        let new_session = self.handshake_at.filter(|h| self.failing_since.is_some_and(|f| *h > f));
        let ago = |t: Instant| now.saturating_duration_since(t);
        (self.probe_failures, self.restarted_at.map(ago), new_session.map(ago))
    }
}

/// WireGuard's REKEY_TIMEOUT: a handshake initiation unanswered for this long is sent again. A
/// session restarted sooner than this after the last restart would throw away a handshake still
/// under way (over a lossy, slow underlay that was a loop: restart, lose the answer, restart).
const RESTART_SPACING: Duration = Duration::from_secs(5);

/// Whether to restart the session with a gateway after `failures` unanswered probes in a row, the
/// last restart `since_restart` ago, and `new_session` ago a handshake made while the probes were
/// failing: from the second failure on, once per [`RESTART_SPACING`] for a while (a failover
/// completes within seconds), then only on every fifth failure (a gateway that stays away costs one
/// handshake initiation per five probes). Not within [`RESTART_SPACING`] of such a handshake: the
/// failed probes were sent before that session came up, and the gateway routes into the session it
/// has just made; throwing it away cuts that traffic off until the next handshake gets through.
fn restart_due(failures: u32, since_restart: Option<Duration>, new_session: Option<Duration>) -> bool {
    failures >= 2
        && (failures <= 10 || failures.is_multiple_of(5))
        && since_restart.is_none_or(|d| d >= RESTART_SPACING)
        && new_session.is_none_or(|d| d >= RESTART_SPACING)
}

impl Liveness {
    fn up(&self, s: &SlotLive, now: Instant) -> bool {
        let fresh =
            |at: Option<Instant>, window: Duration| at.is_some_and(|t| now.saturating_duration_since(t) < window);
        fresh(s.handshake_at, self.handshake_window) && self.probe_grace.is_none_or(|g| fresh(s.probe_ok_at, g))
    }

    /// Ready when at least one gateway is up.
    fn ready(&self, now: Instant) -> Result<(), String> {
        if self.slots.values().any(|s| self.up(s, now)) {
            return Ok(());
        }
        let probe = if self.probe_grace.is_some() { " and an answered probe" } else { "" };
        Err(format!(
            "no gateway has a handshake younger than {:?}{probe} (slots: {:?})",
            self.handshake_window,
            self.slots.keys().collect::<Vec<_>>()
        ))
    }
}

use crate::metrics::Labels;

fn slot_label(slot: Slot) -> Labels {
    vec![("slot".into(), slot.to_string())]
}

struct Metrics {
    /// Handshake and traffic of each gateway peer.
    traffic: PeerTraffic,
    up: Family<Labels, Gauge>,
    endpoint_changes: Family<Labels, Counter>,
    resolve_failures: Family<Labels, Counter>,
    ready: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            traffic: PeerTraffic::new("kubelink_shoot_gateway", "the gateway"),
            up: Family::default(),
            endpoint_changes: Family::default(),
            resolve_failures: Family::default(),
            ready: Gauge::default(),
        }
    }
}

impl Metrics {
    fn register(&self, r: &mut Registry) {
        crate::metrics::register_build_info(r, "shoot");
        self.traffic.register(r);
        r.register(
            "kubelink_shoot_gateway_up",
            "1 when the gateway has a fresh handshake (and answers probes)",
            self.up.clone(),
        );
        r.register(
            "kubelink_shoot_endpoint_changes",
            "re-resolutions that changed the gateway's address",
            self.endpoint_changes.clone(),
        );
        r.register(
            "kubelink_shoot_resolve_failures",
            "failed resolutions of the gateway's endpoint",
            self.resolve_failures.clone(),
        );
        r.register("kubelink_shoot_ready", "1 when at least one gateway is up", self.ready.clone());
    }
}

struct Sidecar {
    opts: Options,
    rec: Reconciler,
    inputs: Inputs,
    config: ShootConfig,
    readv: Readvertiser,
    metrics: Metrics,
    live: Arc<Mutex<Liveness>>,
}

/// Runs the sidecar until SIGTERM/SIGINT. A bad configuration at start is an error; later, a bad
/// change is logged and the last good configuration stays.
pub async fn run(opts: Options, rec: Reconciler) -> Result<(), SidecarError> {
    let inputs = opts.sources.read()?;
    let config = config::parse(&inputs, &opts.device)?;
    let mut s = Sidecar::new(opts, rec, inputs, config);
    let bound = s.serve_health().await?;
    tracing::info!(device = %s.config.device, backend = ?s.rec.wg.kind(), health = %bound, gateways = s.config.gateways.len(), "shoot sidecar starting");
    let wake = Arc::new(Notify::new());
    crate::monitor::spawn(wake.clone()).map_err(SidecarError::Monitor)?;
    let mut signals = driver::os_signals().map_err(SidecarError::Signal)?;
    let schedule =
        Schedule { poll: Some(POLL), tick: s.opts.probe_interval, ..Schedule::resync_every(s.opts.resync_interval) };
    driver::run(&mut s, schedule, &wake, &mut signals).await;
    s.exit().await
}

impl Sidecar {
    fn new(opts: Options, rec: Reconciler, inputs: Inputs, config: ShootConfig) -> Self {
        let mut readv = Readvertiser::new(opts.timing);
        readv.configure(&config.gateways);
        let live = Liveness {
            slots: config.gateways.iter().map(|g| (g.slot, SlotLive::default())).collect(),
            handshake_window: opts.handshake_window,
            probe_grace: opts.probe_interval.map(|i| 3 * i),
        };
        Self { opts, rec, inputs, config, readv, metrics: Metrics::default(), live: Arc::new(Mutex::new(live)) }
    }

    async fn serve_health(&self) -> Result<SocketAddr, HealthError> {
        let mut registry = Registry::default();
        self.metrics.register(&mut registry);
        let live = self.live.clone();
        let ready = Arc::new(move || live.lock().unwrap_or_else(|e| e.into_inner()).ready(Instant::now()));
        Health { ready, registry: Arc::new(Mutex::new(registry)), status: None }.serve(self.opts.health_listen).await
    }

    /// Re-reads the inputs; applies a valid change. Returns whether anything changed.
    fn reread(&mut self) -> bool {
        let inputs = match self.opts.sources.read() {
            Ok(i) if i == self.inputs => return false,
            Ok(i) => i,
            Err(e) => {
                tracing::error!("keeping the previous configuration: {e}");
                return false;
            }
        };
        self.inputs = inputs;
        match config::parse(&self.inputs, &self.opts.device) {
            Ok(c) if c == self.config => false,
            Ok(c) => {
                tracing::info!(gateways = c.gateways.len(), "configuration changed; applying it");
                self.readv.configure(&c.gateways);
                let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
                live.slots.retain(|n, _| c.gateways.iter().any(|g| g.slot == *n));
                for g in &c.gateways {
                    live.slots.entry(g.slot).or_default();
                }
                drop(live);
                self.config = c;
                true
            }
            Err(e) => {
                tracing::error!("keeping the previous configuration: {e}");
                false
            }
        }
    }

    /// One pass: read the device, re-resolve what is due, reconcile, update liveness and metrics.
    async fn step(&mut self) -> Result<(), ReconcileError> {
        let observed = self.rec.wg.read(&self.config.device).await.ok().flatten();
        let ages = self.handshake_ages(observed.as_ref());
        for (slot, endpoint) in self.readv.due(Instant::now(), &ages) {
            let answers = readvertise::resolve(&endpoint, self.opts.resolve_timeout).await;
            let event = self.readv.record(slot, Instant::now(), answers);
            self.report(slot, &endpoint.to_string(), event);
        }
        let desired = self.config.desired(&self.readv.endpoints());
        let result = self.rec.pass(&desired).await.map(drop);
        if let Some(o) = observed {
            self.observe(&o, &ages);
        }
        result
    }

    fn handshake_ages(&self, observed: Option<&ObservedDevice>) -> BTreeMap<Slot, Option<Duration>> {
        let peer = |g: &config::Gateway| observed.and_then(|o| o.peers.get(&g.public_key));
        self.config.gateways.iter().map(|g| (g.slot, peer(g).and_then(|p| p.last_handshake))).collect()
    }

    fn report(&self, slot: Slot, endpoint: &str, event: Event) {
        match event {
            Event::Unchanged => tracing::debug!(slot = slot.number(), endpoint, "endpoint unchanged"),
            Event::Changed { from: None, to } => {
                tracing::info!(slot = slot.number(), endpoint, %to, "gateway endpoint resolved")
            }
            Event::Changed { from: Some(from), to } => {
                self.metrics.endpoint_changes.get_or_create(&slot_label(slot)).inc();
                // A handshake under way went to the old address: the next failed probe may restart.
                let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
                live.slots.entry(slot).or_default().restarted_at = None;
                drop(live);
                tracing::info!(slot = slot.number(), endpoint, %from, %to, "gateway endpoint changed; updating that peer only");
            }
            Event::Failed { message, keeping } => {
                self.metrics.resolve_failures.get_or_create(&slot_label(slot)).inc();
                let keeping = keeping.map(|k| k.to_string()).unwrap_or_else(|| "none".into());
                tracing::warn!(slot = slot.number(), endpoint, %keeping, "{message}; retrying");
            }
        }
    }

    fn observe(&self, o: &ObservedDevice, ages: &BTreeMap<Slot, Option<Duration>>) {
        let now = Instant::now();
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let mut samples = Vec::new();
        for g in &self.config.gateways {
            let l = slot_label(g.slot);
            let age = ages.get(&g.slot).copied().flatten();
            if let Some(p) = o.peers.get(&g.public_key) {
                let last_handshake = age.map(crate::metrics::unix_seconds_ago);
                samples.push(PeerSample {
                    labels: l.clone(),
                    last_handshake,
                    rx_bytes: p.rx_bytes,
                    tx_bytes: p.tx_bytes,
                });
            }
            let slot = live.slots.entry(g.slot).or_default();
            slot.handshake_at = age.and_then(|a| now.checked_sub(a));
            let up = live.up(&live.slots[&g.slot], now);
            self.metrics.up.get_or_create(&l).set(up as i64);
        }
        self.metrics.traffic.set(samples);
        self.metrics.ready.set(live.ready(now).is_ok() as i64);
    }

    /// Pings every slot address through the tunnel from the shoot's own address. A gateway that stops
    /// answering gets a fresh handshake: after a failover its successor has the same key but not our
    /// session, and without a kick WireGuard would wait 15 s of unanswered data before re-keying.
    async fn probe(&self) {
        for (g, source) in self.config.gateways.iter().zip(probe_sources(&self.config)) {
            let dst = g.address;
            let sent = Instant::now();
            let ping = tokio::task::spawn_blocking(move || {
                crate::probe::ping_burst(dst, source, crate::probe::BURST, Duration::from_secs(1))
            });
            let answered = match ping.await {
                Ok(Ok(_)) => true,
                Ok(Err(e)) => {
                    tracing::debug!(slot = g.slot.number(), "probe: {e}");
                    false
                }
                Err(e) => {
                    tracing::debug!(slot = g.slot.number(), "probe task: {e}");
                    false
                }
            };
            let (failures, since_restart, new_session) = self.record_probe(g.slot, answered, sent);
            if restart_due(failures, since_restart, new_session) {
                self.record_restart(g.slot);
                tracing::info!(
                    slot = g.slot.number(),
                    failures,
                    "gateway does not answer probes; restarting the session"
                );
                let device = self.config.desired(&self.readv.endpoints()).device;
                if let Err(e) = self.rec.wg.restart_session(&device, &g.public_key).await {
                    tracing::warn!(slot = g.slot.number(), "restarting the session: {e}");
                }
            }
        }
    }

    /// Records the result of a probe `sent` then (see [`SlotLive::probed`]).
    fn record_probe(&self, slot: Slot, answered: bool, sent: Instant) -> (u32, Option<Duration>, Option<Duration>) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.slots.entry(slot).or_default().probed(answered, sent, Instant::now())
    }

    fn record_restart(&self, slot: Slot) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.slots.entry(slot).or_default().restarted_at = Some(Instant::now());
    }

    async fn exit(&self) -> Result<(), SidecarError> {
        let desired = self.config.desired(&self.readv.endpoints());
        if !self.opts.remove_on_exit {
            tracing::info!(device = %self.config.device, "exiting; device and routes stay for the next start to adopt");
            return Ok(());
        }
        self.rec.teardown(&desired).await.map_err(|es| SidecarError::Teardown(es.join("; ")))?;
        tracing::info!(device = %self.config.device, "removed device and routes");
        Ok(())
    }
}

/// The role's passes and timers are the [`driver`]'s: a pass on wake-ups, resyncs and changed
/// inputs, probes on the role's own timer.
impl Role for Sidecar {
    type Error = ReconcileError;

    async fn pass(&mut self) -> Result<(), ReconcileError> {
        self.step().await
    }

    fn failed(&mut self, error: &ReconcileError, retry_in: Duration) {
        report_failure(&self.config.device, error, retry_in);
    }

    fn reload(&mut self) {
        self.reread();
    }

    fn poll(&mut self) -> bool {
        self.reread()
    }

    async fn tick(&mut self) -> Due {
        self.probe().await;
        Due::Nothing
    }
}

/// How often the mounted Secret is read for changes.
const POLL: Duration = Duration::from_secs(1);

/// The default freshness window: WireGuard's REJECT_AFTER_TIME, after which a session is dead.
pub const DEFAULT_HANDSHAKE_WINDOW: Duration = STALE_HANDSHAKE;

/// The source of each gateway's probe: our tunnel address when its family is the gateway's (ICMPv6
/// to an IPv6 gateway), so that the answer comes back through the tunnel; else the kernel's choice.
fn probe_sources(config: &ShootConfig) -> Vec<Option<IpAddr>> {
    let own = config.address.addr();
    config.gateways.iter().map(|g| (own.is_ipv4() == g.address.is_ipv4()).then_some(own)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn config(address: &str, gateways: &[&str]) -> ShootConfig {
        let gateway = |(slot, a): (usize, &&str)| config::Gateway {
            slot: Slot::try_from(slot).unwrap(),
            endpoint: format!("lb{slot}:51820").parse().unwrap(),
            public_key: kubelink_contract::keys::PublicKey::from_bytes([slot as u8; 32]),
            address: a.parse().unwrap(),
        };
        ShootConfig {
            device: "kubelink0".parse().unwrap(),
            private_key: kubelink_contract::keys::PrivateKey::from_bytes([7; 32]),
            address: address.parse().unwrap(),
            gateways: gateways.iter().enumerate().map(gateway).collect(),
            keepalive: 21,
            mtu: crate::mtu::MtuSetting::Auto,
        }
    }

    #[test]
    fn ipv6_gateways_are_probed_over_icmpv6_from_the_tunnel_address() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let v6 = config("fd00:8::10/64", &["fd00:8::1", "fd00:8::2"]);
        assert_eq!(probe_sources(&v6), vec![ip("fd00:8::10"), ip("fd00:8::10")], "every IPv6 gateway is probed");
        let v4 = config("192.168.128.10/22", &["192.168.128.1", "192.168.128.2"]);
        assert_eq!(probe_sources(&v4), vec![ip("192.168.128.10"), ip("192.168.128.10")]);
        // A gateway of the other family is still probed, from the address the kernel picks.
        assert_eq!(probe_sources(&config("fd00:8::10/64", &["192.168.128.1"])), vec![None]);
    }

    #[test]
    fn sessions_restart_from_the_second_failed_probe_then_back_off() {
        let due: Vec<u32> = (0..=30).filter(|f| restart_due(*f, None, None)).collect();
        assert_eq!(due, [2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 20, 25, 30]);
    }

    #[test]
    fn a_restart_waits_for_the_handshake_of_the_last_one() {
        let ago = Duration::from_secs;
        assert!(!restart_due(3, Some(ago(2)), None), "the last restart's handshake may still be under way");
        assert!(restart_due(3, Some(RESTART_SPACING), None), "one REKEY_TIMEOUT later it is retried");
        assert!(!restart_due(11, Some(ago(60)), None), "past the tenth failure only every fifth");
        assert!(!restart_due(1, None, None), "one lost probe is no evidence");
    }

    #[test]
    fn a_session_just_made_is_not_thrown_away_for_probes_sent_before_it() {
        // After a failover: the successor answered a handshake a moment ago and routes into that
        // session; the failures counted were probes sent while it was not up yet.
        let ago = Duration::from_secs;
        assert!(!restart_due(5, Some(ago(6)), Some(ago(1))), "a session made 1 s ago is new");
        assert!(restart_due(5, Some(ago(6)), Some(RESTART_SPACING)), "one that answers no probe is restarted later");
        assert!(restart_due(2, None, None), "a session older than the failures does not delay a restart");
    }

    #[test]
    fn only_a_handshake_made_while_probes_fail_is_a_new_session() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // The last handshake with the gateway that then died: older than the failures.
        let mut slot = SlotLive { handshake_at: Some(at(0)), ..SlotLive::default() };
        assert_eq!(slot.probed(false, at(10), at(11)), (1, None, None));
        assert_eq!(slot.probed(false, at(12), at(13)), (2, None, None));
        // Its successor answers a handshake while the probes still fail.
        slot.handshake_at = Some(at(14));
        assert_eq!(slot.probed(false, at(14), at(15)), (3, None, Some(Duration::from_secs(1))));
        // An answer ends the run.
        assert_eq!(slot.probed(true, at(16), at(16)), (0, None, None));
    }

    /// (slot, handshake seconds ago, probe answered seconds ago)
    type Row = (Slot, Option<u64>, Option<u64>);

    fn s(n: u8) -> Slot {
        Slot::new(n).unwrap()
    }

    fn live(probe: bool, slots: &[Row], now: Instant) -> Liveness {
        let at = |ago: Option<u64>| ago.map(|a| now - Duration::from_secs(a));
        Liveness {
            slots: slots
                .iter()
                .map(|(n, h, p)| (*n, SlotLive { handshake_at: at(*h), probe_ok_at: at(*p), ..SlotLive::default() }))
                .collect(),
            handshake_window: 180 * S,
            probe_grace: probe.then_some(3 * S),
        }
    }

    #[test]
    fn ready_when_any_gateway_is_up() {
        let now = Instant::now() + 1000 * S;
        // rows: probing on, slots (slot, handshake seconds ago, probe answered seconds ago), ready?
        let rows: [(bool, Vec<Row>, bool); 8] = [
            (false, vec![(s(0), Some(10), None), (s(1), Some(10), None)], true),
            (false, vec![(s(0), None, None), (s(1), Some(179), None)], true),
            (false, vec![(s(0), None, None), (s(1), Some(181), None)], false),
            (true, vec![(s(0), Some(10), Some(1)), (s(1), Some(10), Some(1))], true),
            (true, vec![(s(0), Some(10), Some(10)), (s(1), Some(10), Some(2))], true),
            (true, vec![(s(0), Some(10), Some(10)), (s(1), Some(10), Some(10))], false),
            (true, vec![(s(0), None, Some(1))], false),
            (true, vec![], false),
        ];
        for (i, (probe, slots, want)) in rows.iter().enumerate() {
            let got = live(*probe, slots, now).ready(now);
            assert_eq!(got.is_ok(), *want, "row {i}: {got:?}");
        }
    }
}
