//! Gardener objects and kubelink's own as the IPAM and the agents read them from the API: any JSON.
//! Decoding never panics, and neither does anything the IPAM derives from a decoded object.
#![no_main]

use kubelink_ipam::decode::{Raw, typed};
use kubelink_ipam::gardener::{Seed, Shoot, ShootState};
use kubelink_ipam::projection::{SeedTunnel, ShootPeer};
use kubelink_ipam::{record, validate};
use libfuzzer_sys::fuzz_target;

const MAX_ERROR: usize = 2048;

fn short(message: String) {
    assert!(message.len() <= MAX_ERROR, "{} byte error", message.len());
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    match typed(&Raw::<Seed>::new(value.clone())) {
        Ok(seed) => {
            let _ = seed.wireguard().map_err(|e| short(e.to_string()));
            let _ = validate::seed_wireguard_cidr(&seed, None).map_err(|e| short(e.to_string()));
        }
        Err(skipped) => short(skipped.to_string()),
    }
    match typed(&Raw::<Shoot>::new(value.clone())) {
        Ok(shoot) => {
            let _ = shoot.tunnel_override().map_err(|e| short(e.to_string()));
            let _ = (shoot.key(), shoot.being_deleted(), shoot.control_plane_namespace());
            let wg = "192.168.128.0/22".parse().expect("a CIDR");
            let _ = validate::shoot_networks(&shoot, "spec.wireguard.cidr", wg).map_err(|e| short(e.to_string()));
        }
        Err(skipped) => short(skipped.to_string()),
    }
    if let Ok(state) = typed(&Raw::<ShootState>::new(value.clone())) {
        let _ = record::read(&state).map_err(|e| short(e.to_string()));
    }
    if let Ok(peer) = typed(&Raw::<ShootPeer>::new(value.clone())) {
        let _ = peer.parse().map_err(|e| short(e.to_string()));
    }
    if let Ok(tunnel) = typed(&Raw::<SeedTunnel>::new(value)) {
        let _ = tunnel.cidr().map_err(|e| short(e.to_string()));
    }
});
