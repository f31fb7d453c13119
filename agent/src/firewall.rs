//! The gateway's nftables: one table, `inet kubelink`, owned entirely by kubelink and replaced
//! atomically (one `nft -f` transaction). It source-NATs seed traffic entering the WireGuard device to
//! the slot's tunnel address (so each shoot answers to the gateway it came through), clamps TCP MSS
//! to the route MTU in both directions, and lets nothing out of the tunnel but replies to the seed's
//! flows and the sidecar's probe of the slot address: shoots are hostile, and what else they send is
//! dropped and counted ([`plan`] has every rule and why; [`Drops`] the counts). Two counting chains
//! tell whether the node forwards what it should: `forward_early` counts packets into and out of the
//! tunnel as they enter the forward hook, after the shoot filter and before any other chain (priority
//! -400), `forward_done` counts them as they leave it, after every other chain (priority 400). Both
//! sit on the forward hook, which sees forwarded packets only (a postrouting chain would count the
//! node's own packets too). Packets that enter and never leave were dropped on this node
//! ([`ForwardCounters`]).
//!
//! The table is current when the kernel's listing (`nft -j list table`, handles dropped) equals the
//! desired ruleset, so a rule edited or deleted by hand is put back on the next pass. Should an nft
//! version report our rules in another normal form, the form read back right after our own write is
//! accepted too (one rewrite per start at most, never a rewrite every pass). The I/O sits behind
//! [`Firewall`]: [`Nft`] runs `nft` as a child process without blocking the async runtime, and
//! [`FakeFirewall`] keeps the table in memory for unit tests.

pub mod plan;

pub use plan::{desired, render};

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use ipnet::IpNet;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

pub const TABLE: &str = "kubelink";

/// What the gateway's firewall must do.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FirewallSpec {
    /// The WireGuard device.
    pub device: String,
    /// The WireGuard CIDR (shoot addresses live here).
    pub cidr: IpNet,
    /// The slot's own tunnel address: the source of seed traffic into the tunnel, and the one address
    /// of the node a shoot may probe (ICMP echo).
    pub snat_to: IpAddr,
    /// A shoot's tunnel address -> its control plane's VPN server: the shoot's connection to the slot
    /// address, TCP [`plan::VPN_PORT`], goes there and nowhere else (docs/security.md).
    pub vpn_servers: BTreeMap<IpAddr, IpAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("running nft: {0} (is the nftables package installed?)")]
    Spawn(std::io::Error),
    #[error("nft rejected the kubelink table: {0}")]
    Rejected(String),
    #[error("nft -j list table inet {TABLE}: {0}")]
    Listing(String),
}

/// The counting chains: as packets enter the forward hook, and as they leave the node.
const EARLY: &str = "forward_early";
const DONE: &str = "forward_done";

/// Packets of forwarded traffic counted by the table, per direction: as they entered the forward
/// hook and as they left it. The node's own packets never cross the forward hook.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwardCounters {
    /// Seed traffic towards the shoots: (entered, left).
    pub into_tunnel: (u64, u64),
    /// Shoot traffic towards the seed: (entered, left).
    pub from_tunnel: (u64, u64),
}

/// Packets from shoots the table dropped, by where they were going (the counters of the drop rules,
/// found by their comments). Counted since the table was last written: a rewrite (a new gateway, a
/// repaired hand edit) starts them from zero, as Prometheus expects of a counter that resets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Drops {
    /// Into the tunnel again: another shoot.
    pub shoot_to_shoot: u64,
    /// Through the gateway to anything else: seed pods, other nodes, beyond.
    pub shoot_to_seed: u64,
    /// To the gateway node itself: its listeners on any address, echo to any but the slot address.
    pub shoot_to_node: u64,
}

impl Drops {
    fn from_comments(counted: &BTreeMap<String, u64>) -> Self {
        let at = |comment: &str| counted.get(comment).copied().unwrap_or(0);
        Drops {
            shoot_to_shoot: at(plan::SHOOT_TO_SHOOT),
            shoot_to_seed: at(plan::SHOOT_TO_SEED),
            shoot_to_node: at(plan::SHOOT_TO_NODE),
        }
    }
}

/// A table as comparable data: each chain's definition and each chain's rules in order, every object
/// as canonical JSON (keys sorted, handles and counter values dropped). `Debug` shows it for a diff
/// in a log. The counter values ride along but are state, not configuration: equality ignores them.
#[derive(Debug, Clone, Default)]
pub struct Ruleset {
    pub chains: BTreeSet<String>,
    pub rules: BTreeMap<String, Vec<String>>,
    pub counters: ForwardCounters,
    pub drops: Drops,
}

impl PartialEq for Ruleset {
    fn eq(&self, other: &Self) -> bool {
        self.chains == other.chains && self.rules == other.rules
    }
}

impl Eq for Ruleset {}

/// The packet count of a rule's `counter` statement, if it has one.
fn counted(rule: &Value) -> Option<u64> {
    rule["expr"].as_array()?.iter().find_map(|e| e.get("counter")?.get("packets")?.as_u64())
}

fn forward_counters(raw: &BTreeMap<String, Vec<u64>>) -> ForwardCounters {
    let at = |chain: &str, i: usize| raw.get(chain).and_then(|c| c.get(i)).copied().unwrap_or(0);
    ForwardCounters { into_tunnel: (at(EARLY, 0), at(DONE, 0)), from_tunnel: (at(EARLY, 1), at(DONE, 1)) }
}

impl Ruleset {
    /// From the objects of `nft -j list table` (metainfo and the table object are skipped).
    pub fn from_listing(listing: &Value) -> Result<Ruleset, FirewallError> {
        let objects =
            listing["nftables"].as_array().ok_or_else(|| FirewallError::Listing("no nftables array".into()))?;
        let mut set = Ruleset::default();
        let mut raw: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let mut by_comment: BTreeMap<String, u64> = BTreeMap::new();
        for object in objects {
            if let Some(chain) = object.get("chain") {
                set.chains.insert(canonical(chain));
            } else if let Some(rule) = object.get("rule") {
                let chain = rule["chain"].as_str().unwrap_or_default().to_string();
                if let Some(n) = counted(rule) {
                    raw.entry(chain.clone()).or_default().push(n);
                    if let Some(comment) = rule["comment"].as_str() {
                        *by_comment.entry(comment.to_string()).or_default() += n;
                    }
                }
                set.rules.entry(chain).or_default().push(canonical(rule));
            }
        }
        set.counters = forward_counters(&raw);
        set.drops = Drops::from_comments(&by_comment);
        Ok(set)
    }

    /// What differs from `want`, one line per object, for the log of a repair.
    pub fn diff(&self, want: &Ruleset) -> Vec<String> {
        let mut out: Vec<String> = want.chains.difference(&self.chains).map(|c| format!("missing chain {c}")).collect();
        out.extend(self.chains.difference(&want.chains).map(|c| format!("unexpected chain {c}")));
        let names: BTreeSet<&String> = want.rules.keys().chain(self.rules.keys()).collect();
        for name in names {
            let (w, h) = (want.rules.get(name), self.rules.get(name));
            if w != h {
                out.push(format!("chain {name}: want {w:?}, kernel has {h:?}"));
            }
        }
        out
    }
}

/// `v` as JSON with object keys sorted, `handle` dropped (nft numbers objects per write) and counter
/// values emptied (they count traffic).
pub(crate) fn canonical(v: &Value) -> String {
    fn strip(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let value = |k: &String, v: &Value| if k == "counter" { json!({}) } else { strip(v) };
                let sorted: BTreeMap<&String, Value> =
                    m.iter().filter(|(k, _)| k.as_str() != "handle").map(|(k, v)| (k, value(k, v))).collect();
                Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(strip).collect()),
            other => other.clone(),
        }
    }
    strip(v).to_string()
}

/// The kernel side of the table. Implementations must not block the async runtime.
#[async_trait]
pub trait Firewall: Send + Sync {
    /// The table as the kernel has it; `None` when there is none.
    async fn read(&self) -> Result<Option<Ruleset>, FirewallError>;
    /// Replaces the table with `spec`'s in one transaction.
    async fn write(&self, spec: &FirewallSpec) -> Result<(), FirewallError>;
    /// Deletes the table if it exists.
    async fn remove(&self) -> Result<(), FirewallError>;
}

/// Keeps the kernel's table equal to a spec: reads, compares, rewrites on any difference.
pub struct FirewallTable {
    io: Arc<dyn Firewall>,
    /// The spec last written and the kernel's form of it read right after the write.
    written: Mutex<Option<(FirewallSpec, Ruleset)>>,
    /// The counters of the last read; the drops shared with [`DropMetrics`].
    counters: Mutex<Option<ForwardCounters>>,
    drops: Arc<Mutex<Option<Drops>>>,
}

impl FirewallTable {
    pub fn new(io: Arc<dyn Firewall>) -> Self {
        Self { io, written: Mutex::new(None), counters: Mutex::new(None), drops: Arc::default() }
    }

    fn remember(&self, read: Option<&Ruleset>) {
        *self.counters.lock().unwrap_or_else(|e| e.into_inner()) = read.map(|h| h.counters);
        *self.drops.lock().unwrap_or_else(|e| e.into_inner()) = read.map(|h| h.drops);
    }

    /// Makes the kernel's table match `spec`; returns whether it had to write.
    pub async fn ensure(&self, spec: &FirewallSpec) -> Result<bool, FirewallError> {
        let want = desired(spec);
        let have = self.io.read().await?;
        self.remember(have.as_ref());
        if have.as_ref().is_some_and(|h| *h == want || self.is_our_write(spec, h)) {
            return Ok(false);
        }
        if let Some(h) = &have {
            tracing::warn!(table = TABLE, changes = ?h.diff(&want), "nftables table differs; rewriting it");
        }
        self.io.write(spec).await?;
        let back = self.io.read().await?.unwrap_or_default();
        if back != want {
            tracing::debug!(changes = ?back.diff(&want), "nft reports the table in another form; accepting it");
        }
        *self.written.lock().unwrap_or_else(|e| e.into_inner()) = Some((spec.clone(), back));
        Ok(true)
    }

    /// The forwarding counters as the last [`Self::ensure`] read them (`None`: no table then).
    pub fn forward_counters(&self) -> Option<ForwardCounters> {
        *self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The drops as the last [`Self::ensure`] read them (`None`: no table then).
    pub fn drops(&self) -> Option<Drops> {
        *self.drops.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The drops as metrics, read at scrape time from what the last pass read (a scrape never runs
    /// `nft`: whoever reaches the health server cannot make the node spawn processes).
    pub fn drop_metrics(&self) -> DropMetrics {
        DropMetrics(self.drops.clone())
    }

    fn is_our_write(&self, spec: &FirewallSpec, have: &Ruleset) -> bool {
        let written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        written.as_ref().is_some_and(|(s, form)| s == spec && form == have)
    }

    /// Deletes the table if it exists.
    pub async fn remove(&self) -> Result<(), FirewallError> {
        *self.written.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.remember(None);
        self.io.remove().await
    }

    /// [`Self::remove`] only when the kernel reports a table: a node that never was a gateway runs
    /// one read, and one without `nft` has no table of ours to remove.
    pub async fn remove_if_present(&self) -> Result<(), FirewallError> {
        match self.io.read().await {
            Ok(None) | Err(FirewallError::Spawn(_)) => Ok(()),
            Ok(Some(_)) | Err(_) => self.remove().await,
        }
    }
}

/// `kubelink_agent_tunnel_dropped_packets_total{towards}`: what the shoot filter dropped, by where
/// it was going (`shoot`, `seed`, `gateway_node`). Absent on a node without the table (a router).
#[derive(Debug, Clone)]
pub struct DropMetrics(Arc<Mutex<Option<Drops>>>);

impl DropMetrics {
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register_collector(Box::new(self.clone()));
    }
}

impl prometheus_client::collector::Collector for DropMetrics {
    fn encode(&self, mut encoder: prometheus_client::encoding::DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        let Some(drops) = *self.0.lock().unwrap_or_else(|e| e.into_inner()) else { return Ok(()) };
        let help =
            "Packets out of the tunnel the gateway's filter dropped (since the table was written), by destination";
        let name = "kubelink_agent_tunnel_dropped_packets";
        let kind = prometheus_client::metrics::MetricType::Counter;
        let mut family = encoder.encode_descriptor(name, help, None, kind)?;
        let by =
            [("shoot", drops.shoot_to_shoot), ("seed", drops.shoot_to_seed), ("gateway_node", drops.shoot_to_node)];
        for (towards, n) in by {
            let labels = [("towards".to_string(), towards.to_string())];
            prometheus_client::metrics::counter::ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// The real table, through the `nft` tool run as a child process (tokio::process: the runtime's
/// threads never wait for it).
pub struct Nft;

#[async_trait]
impl Firewall for Nft {
    async fn read(&self) -> Result<Option<Ruleset>, FirewallError> {
        match list_table(TABLE).await? {
            Some(listing) => Ruleset::from_listing(&listing).map(Some),
            None => Ok(None),
        }
    }

    async fn write(&self, spec: &FirewallSpec) -> Result<(), FirewallError> {
        nft_script(&render(spec)).await
    }

    async fn remove(&self) -> Result<(), FirewallError> {
        nft_script(&remove_script()).await
    }
}

/// `nft -j list table inet <table>` as JSON; `None` when there is no such table (or no nftables in
/// the kernel): there is nothing of ours.
pub(crate) async fn list_table(table: &str) -> Result<Option<Value>, FirewallError> {
    let out = tokio::process::Command::new(crate::tools::NFT)
        .args(["-j", "list", "table", "inet", table])
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(FirewallError::Spawn)?;
    if !out.status.success() {
        return Ok(None);
    }
    serde_json::from_slice(&out.stdout).map(Some).map_err(|e| FirewallError::Listing(e.to_string()))
}

fn remove_script() -> String {
    format!("table inet {TABLE} {{}}\ndelete table inet {TABLE}\n")
}

pub(crate) async fn nft_script(script: &str) -> Result<(), FirewallError> {
    let mut child = tokio::process::Command::new(crate::tools::NFT)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(FirewallError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).await.map_err(FirewallError::Spawn)?;
    }
    let out = child.wait_with_output().await.map_err(FirewallError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(FirewallError::Rejected(String::from_utf8_lossy(&out.stderr).into_owned()))
    }
}

/// An in-memory table for unit tests: a write stores [`desired`], [`FakeFirewall::edit`] plays the
/// person with `nft` in hand.
#[derive(Default)]
pub struct FakeFirewall {
    table: Mutex<Option<Ruleset>>,
    writes: std::sync::atomic::AtomicUsize,
}

impl FakeFirewall {
    /// Changes the table as a hand edit would.
    pub fn edit(&self, f: impl FnOnce(&mut Ruleset)) {
        if let Some(t) = self.table.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            f(t);
        }
    }

    pub fn writes(&self) -> usize {
        self.writes.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn table(&self) -> Option<Ruleset> {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[async_trait]
impl Firewall for FakeFirewall {
    async fn read(&self) -> Result<Option<Ruleset>, FirewallError> {
        Ok(self.table())
    }

    async fn write(&self, spec: &FirewallSpec) -> Result<(), FirewallError> {
        self.writes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        *self.table.lock().unwrap_or_else(|e| e.into_inner()) = Some(desired(spec));
        Ok(())
    }

    async fn remove(&self) -> Result<(), FirewallError> {
        *self.table.lock().unwrap_or_else(|e| e.into_inner()) = None;
        Ok(())
    }
}

/// Forgets the connection-tracking entries of flows towards `cidr`, so that their next packet is
/// NATed (or not) by the rules as they are now: NAT is decided once per flow, and a flow that began
/// while this node routed to another gateway keeps its un-NATed entry after the node becomes the
/// gateway (and the other way round), which breaks it for as long as it stays busy. Uses the
/// `conntrack` tool (conntrack-tools); without it, stale flows recover only when they go idle.
pub fn forget_flows(cidr: ipnet::IpNet) {
    let out = Command::new(crate::tools::CONNTRACK).args(["-D", "-d", &cidr.to_string()]).stdin(Stdio::null()).output();
    match out {
        // Exit status 1 with "0 flow entries" means there was nothing to delete.
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stderr);
            tracing::debug!(%cidr, "conntrack: {}", text.trim());
        }
        Err(e) => tracing::warn!(%cidr, "cannot run conntrack to reset flows towards the tunnel: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gateway of the tests, also the plan's (`plan::tests`).
    pub(super) fn spec() -> FirewallSpec {
        FirewallSpec {
            device: "kubelink0".into(),
            cidr: "192.168.128.0/22".parse().unwrap(),
            snat_to: "192.168.128.1".parse().unwrap(),
            vpn_servers: [("192.168.128.10".parse().unwrap(), "100.64.7.10".parse().unwrap())].into(),
        }
    }

    /// `nft -j list table inet kubelink` of nftables 1.0.6 after `render(&spec())`, one object a line;
    /// the counter values set to tell the rules apart.
    const LISTING: &str = include_str!("firewall/listing-nft-1.0.6.json");

    #[test]
    fn the_kernel_listing_of_the_rendered_table_is_the_desired_ruleset() {
        let have = Ruleset::from_listing(&serde_json::from_str(LISTING).unwrap()).unwrap();
        assert_eq!(have.diff(&desired(&spec())), Vec::<String>::new());
        assert_eq!(have, desired(&spec()));
        let other = FirewallSpec { snat_to: "192.168.128.2".parse().unwrap(), ..spec() };
        assert_ne!(have, desired(&other));
    }

    #[test]
    fn forwarding_and_drop_counters_are_read_and_ignored_by_the_comparison() {
        let have = Ruleset::from_listing(&serde_json::from_str(LISTING).unwrap()).unwrap();
        assert_eq!(have.counters, ForwardCounters { into_tunnel: (17, 17), from_tunnel: (17, 17) });
        let mut zero = have.clone();
        zero.counters = ForwardCounters::default();
        zero.drops = Drops::default();
        assert_eq!(have, zero, "counter values are traffic, not configuration");
        let text = render(&spec());
        assert!(text.contains("hook forward priority -400") && text.contains("hook forward priority 400"), "{text}");
    }

    #[test]
    fn drops_are_read_by_the_comments_of_the_drop_rules() {
        let have = Ruleset::from_listing(&serde_json::from_str(LISTING).unwrap()).unwrap();
        assert_eq!(have.drops, Drops { shoot_to_shoot: 3, shoot_to_seed: 5, shoot_to_node: 7 });
    }

    fn scrape(metrics: &DropMetrics) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        metrics.register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    #[tokio::test]
    async fn the_drops_of_the_last_read_are_the_metric_and_a_removed_table_has_none() {
        let (fake, table) = table();
        let metrics = table.drop_metrics();
        assert!(!scrape(&metrics).contains("dropped"), "no table read yet: no series");
        table.ensure(&spec()).await.unwrap();
        fake.edit(|t| t.drops = Drops { shoot_to_shoot: 3, shoot_to_seed: 5, shoot_to_node: 7 });
        table.ensure(&spec()).await.unwrap();
        assert_eq!(table.drops(), Some(Drops { shoot_to_shoot: 3, shoot_to_seed: 5, shoot_to_node: 7 }));
        let text = scrape(&metrics);
        for line in [
            "kubelink_agent_tunnel_dropped_packets_total{towards=\"shoot\"} 3",
            "kubelink_agent_tunnel_dropped_packets_total{towards=\"seed\"} 5",
            "kubelink_agent_tunnel_dropped_packets_total{towards=\"gateway_node\"} 7",
            "# TYPE kubelink_agent_tunnel_dropped_packets counter",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        table.remove().await.unwrap();
        assert_eq!(table.drops(), None);
        assert!(!scrape(&metrics).contains("dropped"), "a router has no such series:\n{}", scrape(&metrics));
    }

    fn table() -> (Arc<FakeFirewall>, FirewallTable) {
        let fake = Arc::new(FakeFirewall::default());
        (fake.clone(), FirewallTable::new(fake))
    }

    #[tokio::test]
    async fn a_current_table_is_left_alone() {
        let (fake, table) = table();
        assert!(table.ensure(&spec()).await.unwrap(), "absent: written");
        assert!(!table.ensure(&spec()).await.unwrap(), "current: not written again");
        assert_eq!(fake.writes(), 1);
    }

    #[tokio::test]
    async fn a_hand_edited_rule_is_repaired() {
        let (fake, table) = table();
        table.ensure(&spec()).await.unwrap();
        fake.edit(|t| _ = t.rules.get_mut("forward").unwrap().pop());
        assert!(table.ensure(&spec()).await.unwrap(), "a deleted rule is put back");
        fake.edit(|t| t.rules.get_mut("postrouting").unwrap()[0] = "accept".into());
        assert!(table.ensure(&spec()).await.unwrap(), "a changed rule is put back");
        fake.edit(|t| _ = t.rules.get_mut("shoot_forward").unwrap().pop());
        assert!(table.ensure(&spec()).await.unwrap(), "the last drop of the shoot filter is put back");
        fake.edit(|t| {
            t.chains.retain(|c| !c.contains("shoot_input"));
            t.rules.remove("shoot_input");
        });
        assert!(table.ensure(&spec()).await.unwrap(), "a deleted chain is put back");
        assert_eq!(fake.table(), Some(desired(&spec())));
        assert_eq!(fake.writes(), 5);
    }

    #[tokio::test]
    async fn a_new_spec_rewrites_and_remove_forgets() {
        let (fake, table) = table();
        table.ensure(&spec()).await.unwrap();
        let other = FirewallSpec { snat_to: "192.168.128.2".parse().unwrap(), ..spec() };
        assert!(table.ensure(&other).await.unwrap());
        table.remove().await.unwrap();
        assert_eq!(fake.table(), None);
        assert!(table.ensure(&other).await.unwrap(), "removed: written again");
    }

    /// An nft that reports our rules in another normal form: accepted after our own write, so no
    /// rewrite every pass; a later edit still differs from that form and is repaired.
    #[tokio::test]
    async fn another_normal_form_is_accepted_once_written() {
        struct Shifted(FakeFirewall);
        #[async_trait]
        impl Firewall for Shifted {
            async fn read(&self) -> Result<Option<Ruleset>, FirewallError> {
                Ok(self.0.table().map(|mut t| {
                    t.chains.insert("{\"reported\":\"differently\"}".into());
                    t
                }))
            }
            async fn write(&self, spec: &FirewallSpec) -> Result<(), FirewallError> {
                self.0.write(spec).await
            }
            async fn remove(&self) -> Result<(), FirewallError> {
                self.0.remove().await
            }
        }
        let io = Arc::new(Shifted(FakeFirewall::default()));
        let table = FirewallTable::new(io.clone());
        assert!(table.ensure(&spec()).await.unwrap());
        assert!(!table.ensure(&spec()).await.unwrap());
        io.0.edit(|t| _ = t.rules.remove("forward"));
        assert!(table.ensure(&spec()).await.unwrap());
        assert_eq!(io.0.writes(), 2);
    }
}
