//! The ShootState entry that records a shoot's tunnel address and public key.

use std::net::IpAddr;

use serde_json::json;

use crate::error::IpamError;
use crate::gardener::{GardenerResourceData, ShootKey, ShootState};
use crate::keys::PublicKey;

/// `spec.gardener[].name` of kubelink's entry.
pub const ENTRY_NAME: &str = "wireguard-tunnel";
/// `spec.gardener[].type` of kubelink's entry.
pub const ENTRY_TYPE: &str = "kubelink.gardener.cloud/wireguard-tunnel";

/// What the entry says: the shoot's address and public key (never the private key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub address: IpAddr,
    pub public_key: PublicKey,
}

impl Recorded {
    pub fn to_entry(&self, seed: &str) -> GardenerResourceData {
        GardenerResourceData {
            name: ENTRY_NAME.into(),
            type_: ENTRY_TYPE.into(),
            data: json!({"address": self.address.to_string(), "publicKey": self.public_key.to_string(), "seed": seed}),
            extra: Default::default(),
        }
    }
}

/// Reads kubelink's entry of a ShootState: `Ok(None)` without one, an error naming the field when garbage.
pub fn read(state: &ShootState) -> Result<Option<Recorded>, IpamError> {
    let Some(entry) = state.entry(ENTRY_NAME) else { return Ok(None) };
    let key = ShootKey::of(&state.metadata);
    let field = |f: &str| format!("ShootState {key} spec.gardener[{ENTRY_NAME}].data.{f}");
    let text = |f: &str| entry.data.get(f).and_then(|v| v.as_str()).unwrap_or_default().to_string();
    let address = text("address").parse::<IpAddr>().map_err(|e| IpamError::InvalidValue {
        field: field("address"),
        value: text("address"),
        reason: format!("{e}; expected an IP address like 192.168.128.3"),
    })?;
    let public_key = text("publicKey").parse::<PublicKey>().map_err(|e| IpamError::InvalidValue {
        field: field("publicKey"),
        value: text("publicKey"),
        reason: format!("{e}; expected a base64 WireGuard public key"),
    })?;
    Ok(Some(Recorded { address, public_key }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PrivateKey;

    #[test]
    fn entry_round_trips_and_garbage_names_the_field() {
        let key = ShootKey::new("garden-p", "a");
        let mut state = ShootState::for_shoot(&key);
        assert_eq!(read(&state), Ok(None));
        let rec =
            Recorded { address: "192.168.128.3".parse().unwrap(), public_key: PrivateKey::generate().public_key() };
        state.set_entry(rec.to_entry("seed-a"));
        assert_eq!(read(&state), Ok(Some(rec)));
        state.spec.gardener[0].data["publicKey"] = json!("not-a-key");
        let err = read(&state).unwrap_err().to_string();
        assert!(err.contains("ShootState garden-p/a spec.gardener[wireguard-tunnel].data.publicKey"), "{err}");
        state.spec.gardener[0].data["address"] = json!(12);
        assert!(read(&state).unwrap_err().to_string().contains("data.address"));
    }
}
