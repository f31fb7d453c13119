//! Gardener objects and kubelink's own as the extension controller and the agents read them from the
//! API: any JSON. Decoding never panics, and neither does anything derived from a decoded object.
#![no_main]

use kubelink_contract::decode::{Raw, typed};
use kubelink_contract::projection::{SeedTunnel, ShootPeer};
use kubelink_ipam::extension::objects::Extension;
use kubelink_ipam::extension::{config, plan};
use kubelink_ipam::gardener::{Seed, Shoot};
use kubelink_ipam::validate;
use libfuzzer_sys::fuzz_target;

const MAX_ERROR: usize = 2048;

fn short(message: String) {
    assert!(message.len() <= MAX_ERROR, "{} byte error", message.len());
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let seed = typed(&Raw::<Seed>::new(value.clone()));
    match &seed {
        Ok(seed) => {
            let _ = seed.wireguard().map_err(|e| short(e.to_string()));
            let _ = validate::seed_wireguard_cidr(seed, None).map_err(|e| short(e.to_string()));
        }
        Err(skipped) => short(skipped.to_string()),
    }
    match typed(&Raw::<Shoot>::new(value.clone())) {
        Ok(shoot) => {
            let _ = shoot.tunnel_override().map_err(|e| short(e.to_string()));
            let _ = shoot.key();
            let wg = "192.168.128.0/22".parse().expect("a CIDR");
            let _ = validate::shoot_networks(&shoot, "spec.wireguard.cidr", wg).map_err(|e| short(e.to_string()));
        }
        Err(skipped) => short(skipped.to_string()),
    }
    if let Ok(ext) = typed(&Raw::<Extension>::new(value.clone())) {
        let state = ext.status.as_ref().and_then(|s| s.state.as_ref());
        let _ = plan::recorded_of(state, "Extension x/y").map_err(|e| short(e.to_string()));
        let seed = seed.unwrap_or_default();
        let _ = config::seed_config(&ext, &seed, None).map_err(|e| short(e.to_string()));
    }
    if let Ok(peer) = typed(&Raw::<ShootPeer>::new(value.clone())) {
        let _ = peer.parse().map_err(|e| short(e.to_string()));
    }
    if let Ok(tunnel) = typed(&Raw::<SeedTunnel>::new(value)) {
        let _ = tunnel.cidr().map_err(|e| short(e.to_string()));
    }
});
