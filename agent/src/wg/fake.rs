//! An in-memory WireGuard backend for unit tests: devices by name, updates applied as a device would,
//! every call recorded in order. No root, no kernel, no gotatun.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use kubelink_contract::keys::PublicKey;

use super::{BackendKind, DeviceSpec, DeviceUpdate, ObservedDevice, ObservedPeer, WgBackend, WgError};

/// What the fake was asked to do (never a key's secret half).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Ensure(String),
    Read(String),
    /// The update's [`DeviceUpdate::summary`].
    Apply(String, String),
    Remove(String),
    Handshake(String, PublicKey),
}

#[derive(Debug, Default)]
pub struct FakeWg {
    devices: Mutex<BTreeMap<String, ObservedDevice>>,
    calls: Mutex<Vec<Call>>,
}

impl FakeWg {
    /// The calls so far, and forgets them.
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut *lock(&self.calls))
    }

    /// The device as it is now.
    pub fn device(&self, name: &str) -> Option<ObservedDevice> {
        lock(&self.devices).get(name).cloned()
    }

    /// Changes the device behind kubelink's back (`wg set` by hand, a handshake, traffic).
    pub fn edit(&self, name: &str, f: impl FnOnce(&mut ObservedDevice)) {
        if let Some(device) = lock(&self.devices).get_mut(name) {
            f(device);
        }
    }

    fn record(&self, call: Call) {
        lock(&self.calls).push(call);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `update` applied to `device` as WireGuard applies it: on top of the current state.
fn apply(device: &mut ObservedDevice, spec: &DeviceSpec, update: &DeviceUpdate) {
    if update.set_private_key {
        device.public_key = Some(spec.private_key.public_key());
    }
    if let Some(port) = update.listen_port {
        device.listen_port = port;
    }
    if let Some(mark) = update.fwmark {
        device.fwmark = Some(mark).filter(|m| *m != 0);
    }
    for key in &update.remove_peers {
        device.peers.remove(key);
    }
    for peer in &update.add_peers {
        let observed = ObservedPeer { spec: peer.clone(), last_handshake: None, rx_bytes: 0, tx_bytes: 0 };
        device.peers.insert(peer.public_key, observed);
    }
    for (key, change) in &update.change_peers {
        let Some(peer) = device.peers.get_mut(key) else { continue };
        if let Some(endpoint) = change.endpoint {
            peer.spec.endpoint = Some(endpoint);
        }
        if let Some(ips) = &change.allowed_ips {
            peer.spec.allowed_ips = ips.clone();
        }
        if let Some(k) = change.persistent_keepalive {
            peer.spec.persistent_keepalive = Some(k).filter(|k| *k > 0);
        }
    }
}

#[async_trait]
impl WgBackend for FakeWg {
    fn kind(&self) -> BackendKind {
        BackendKind::Userspace
    }

    async fn ensure(&self, spec: &DeviceSpec) -> Result<(), WgError> {
        self.record(Call::Ensure(spec.name.to_string()));
        lock(&self.devices).entry(spec.name.to_string()).or_default();
        Ok(())
    }

    async fn read(&self, name: &str) -> Result<Option<ObservedDevice>, WgError> {
        self.record(Call::Read(name.into()));
        Ok(self.device(name))
    }

    async fn apply(&self, spec: &DeviceSpec, update: &DeviceUpdate) -> Result<(), WgError> {
        self.record(Call::Apply(spec.name.to_string(), update.summary()));
        let mut devices = lock(&self.devices);
        let device = devices.get_mut(spec.name.as_ref()).ok_or_else(|| WgError::NoDevice(spec.name.to_string()))?;
        apply(device, spec, update);
        Ok(())
    }

    async fn remove(&self, name: &str) -> Result<(), WgError> {
        self.record(Call::Remove(name.into()));
        lock(&self.devices).remove(name);
        Ok(())
    }

    async fn force_handshake(&self, name: &str, peer: &PublicKey) -> Result<(), WgError> {
        self.record(Call::Handshake(name.into(), *peer));
        Ok(())
    }
}

/// A handshake `ago` on `peer` of `device` (for [`FakeWg::edit`]).
pub fn handshake(device: &mut ObservedDevice, peer: &PublicKey, ago: Duration) {
    if let Some(p) = device.peers.get_mut(peer) {
        p.last_handshake = Some(ago);
    }
}
