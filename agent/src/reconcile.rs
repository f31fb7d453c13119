//! One reconcile pass: desired state -> read what the kernel/device has -> pure plans -> thin applies.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kubelink_contract::keys::PublicKey;

use crate::config::{Desired, RouteSpec};
use crate::firewall::{Firewall, FirewallTable, Nft};
use crate::link::{Link, LinkError};
use crate::mtu::{self, MtuSetting};
use crate::route::{self, Route, RouteError, Routes};
use crate::underlay;
use crate::wg::{self, WgBackend, WgError};

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Wg(#[from] WgError),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("{}", join(.0))]
    Routes(Vec<RouteError>),
    #[error(transparent)]
    Firewall(#[from] crate::firewall::FirewallError),
    #[error("route to {destination}: device {device} does not exist")]
    RouteDevice { destination: ipnet::IpNet, device: String },
}

fn join(errors: &[RouteError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl From<RouteError> for ReconcileError {
    fn from(e: RouteError) -> Self {
        ReconcileError::Routes(vec![e])
    }
}

/// What a pass changed, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub device_changes: Option<String>,
    pub routes_replaced: usize,
    pub routes_removed: usize,
    pub firewall_written: bool,
}

impl Outcome {
    pub fn changed(&self) -> bool {
        self.device_changes.is_some() || self.routes_replaced > 0 || self.routes_removed > 0 || self.firewall_written
    }
}

pub struct Reconciler {
    pub link: Link,
    pub routes: Routes,
    pub wg: Arc<dyn WgBackend>,
    pub firewall: FirewallTable,
    device: DeviceSync,
    /// The MTU last resolved, so that a change is logged once.
    mtu: Mutex<Option<mtu::Resolved>>,
}

/// The WireGuard part of a pass, over the backend alone: read the device, kick dead sessions, plan,
/// apply the difference.
pub struct DeviceSync {
    wg: Arc<dyn WgBackend>,
    /// When each dialled peer was last kicked, so a dead one is retried every REKEY_TIMEOUT, not
    /// every pass.
    kicks: Mutex<HashMap<PublicKey, Instant>>,
}

impl DeviceSync {
    pub fn new(wg: Arc<dyn WgBackend>) -> Self {
        Self { wg, kicks: Mutex::new(HashMap::new()) }
    }

    /// Makes the existing device `spec`; returns the summary of the update, if one was needed.
    pub async fn sync(&self, spec: &wg::DeviceSpec) -> Result<Option<String>, WgError> {
        let observed = self.wg.read(&spec.name).await?.ok_or_else(|| WgError::NoDevice(spec.name.to_string()))?;
        self.kick_dead_sessions(spec, &observed).await;
        let update = wg::plan(spec, &observed);
        if update.is_empty() {
            return Ok(None);
        }
        self.wg.apply(spec, &update).await?;
        Ok(Some(update.summary()))
    }

    /// Dialled peers without a live session get a fresh handshake (at most every 5 s each).
    async fn kick_dead_sessions(&self, spec: &wg::DeviceSpec, observed: &wg::ObservedDevice) {
        let due: Vec<PublicKey> = {
            let mut kicks = self.kicks.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let stale = spec.peers.iter().filter(|(k, want)| {
                observed.peers.get(*k).is_some_and(|seen| wg::needs_handshake(want, seen))
                    && kicks.get(*k).is_none_or(|t| now.duration_since(*t) >= KICK_EVERY)
            });
            let due: Vec<PublicKey> = stale.map(|(k, _)| *k).collect();
            due.iter().for_each(|k| {
                kicks.insert(*k, now);
            });
            due
        };
        for key in due {
            if let Err(e) = self.wg.force_handshake(&spec.name, &key).await {
                tracing::debug!(peer = %key, "handshake kick failed: {e}");
            }
        }
    }
}

/// The log line of a failed [`Reconciler::pass`].
pub fn report_failure(device: &str, error: &ReconcileError, retry_in: Duration) {
    tracing::error!(device, "reconcile failed, will retry in {retry_in:?}: {error}");
}

/// WireGuard's REKEY_TIMEOUT: the pace of handshake retries.
const KICK_EVERY: Duration = Duration::from_secs(5);

impl Reconciler {
    pub fn new(link: Link, routes: Routes, wg: Arc<dyn WgBackend>) -> Self {
        let device = DeviceSync::new(wg.clone());
        Self { link, routes, wg, firewall: FirewallTable::new(Arc::new(Nft)), device, mtu: Mutex::new(None) }
    }

    /// The same with another firewall backend (a fake in tests).
    pub fn with_firewall(self, io: Arc<dyn Firewall>) -> Self {
        Self { firewall: FirewallTable::new(io), ..self }
    }

    pub async fn reconcile(&self, desired: &Desired) -> Result<Outcome, ReconcileError> {
        // The firewall first: a new device never forwards what comes out of the tunnel unfiltered, and
        // without a table there is no device. Its rules name the device, so they may precede it.
        let firewall_written = match &desired.firewall {
            Some(fw) => self.firewall.ensure(fw).await?,
            None => false,
        };
        let mut outcome =
            Outcome { device_changes: self.reconcile_device(desired).await?, firewall_written, ..Outcome::default() };
        (outcome.routes_replaced, outcome.routes_removed) = self.reconcile_routes(&desired.routes).await?;
        Ok(outcome)
    }

    /// [`Self::reconcile`] with a log line for what it changed: the pass of `run` and `shoot`.
    pub async fn pass(&self, desired: &Desired) -> Result<Outcome, ReconcileError> {
        let outcome = self.reconcile(desired).await?;
        if outcome.changed() {
            tracing::info!(
                device = %desired.device.name,
                device_changes = outcome.device_changes.as_deref().unwrap_or("none"),
                routes_replaced = outcome.routes_replaced,
                routes_removed = outcome.routes_removed,
                firewall_written = outcome.firewall_written,
                "reconciled"
            );
        } else {
            tracing::debug!("in sync");
        }
        Ok(outcome)
    }

    /// Makes the routes of our protocol exactly `specs`; returns (replaced, removed).
    pub async fn reconcile_routes(&self, specs: &[RouteSpec]) -> Result<(usize, usize), ReconcileError> {
        let plan = route::plan(&self.resolve(specs).await?, &self.routes.ours().await?);
        self.routes.apply(&plan).await.map_err(ReconcileError::Routes)?;
        Ok((plan.replace.len(), plan.remove.len()))
    }

    async fn reconcile_device(&self, desired: &Desired) -> Result<Option<String>, ReconcileError> {
        let spec = &desired.device;
        self.wg.ensure(spec).await?;
        let mtu = self.mtu_for(desired).await?;
        self.link.ensure_up(&spec.name, Some(mtu)).await?;
        self.wg.mtu_set(&spec.name).await;
        let summary = self.device.sync(spec).await?;
        // After the device update: a kernel key change rewrites the device and flushes addresses.
        self.link.ensure_addresses(&spec.name, &desired.addresses).await?;
        Ok(summary)
    }

    /// The MTU the device should have now; `auto` reads the underlay every pass (a route or a link
    /// MTU may change under us). Logged when it changes.
    async fn mtu_for(&self, desired: &Desired) -> Result<u32, ReconcileError> {
        let paths = match desired.mtu {
            MtuSetting::Fixed(_) => Vec::new(),
            MtuSetting::Auto => {
                let endpoints: Vec<IpAddr> =
                    desired.device.peers.values().filter_map(|p| p.endpoint.map(|e| e.ip())).collect();
                underlay::read(self.link.handle(), &endpoints, &desired.device.name).await?
            }
        };
        let resolved = mtu::resolve(desired.mtu, &paths, desired.carries_ipv6());
        let mut last = self.mtu.lock().unwrap_or_else(|e| e.into_inner());
        if last.replace(resolved) != Some(resolved) {
            match resolved.why {
                mtu::Why::Floor { .. } => tracing::warn!(device = %desired.device.name, "{resolved}"),
                _ => tracing::info!(device = %desired.device.name, "{resolved}"),
            }
        }
        Ok(resolved.mtu)
    }

    /// Resolves route device names to indices.
    async fn resolve(&self, specs: &[RouteSpec]) -> Result<Vec<Route>, ReconcileError> {
        let mut routes = Vec::with_capacity(specs.len());
        for s in specs {
            let oif = match &s.device {
                Some(dev) => Some(self.link.get(dev).await?.map(|l| l.index).ok_or_else(|| {
                    ReconcileError::RouteDevice { destination: s.destination, device: dev.to_string() }
                })?),
                None => None,
            };
            routes.push(Route { destination: s.destination, table: s.table, gateway: s.gateway, oif });
        }
        Ok(routes)
    }

    /// Removes what this desired state created: our routes, the device, then the firewall (which
    /// filters the device as long as it exists). Best effort: every step runs, all errors are reported
    /// together.
    pub async fn teardown(&self, desired: &Desired) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        match self.routes.ours().await {
            Ok(ours) => {
                let plan = route::plan(&[], &ours);
                if let Err(es) = self.routes.apply(&plan).await {
                    errors.extend(es.iter().map(ToString::to_string));
                }
            }
            Err(e) => errors.push(e.to_string()),
        }
        if let Err(e) = self.wg.remove(&desired.device.name).await {
            errors.push(e.to_string());
        }
        if desired.firewall.is_some()
            && let Err(e) = self.firewall.remove().await
        {
            errors.push(e.to_string());
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }
}

#[cfg(test)]
mod tests;
