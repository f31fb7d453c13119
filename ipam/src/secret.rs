//! The Secret the shoot side mounts: its private key, its address and the gateways to dial.
//!
//! One per shoot, named [`SHOOT_SECRET_NAME`], in the shoot's control-plane namespace on the seed. Keys:
//! `privateKey`, `address` (CIDR form with the WireGuard prefix), and per gateway slot N
//! `gateway-N-endpoint` (`host:port`), `gateway-N-publicKey`, `gateway-N-address`. Gateway fields appear
//! once the seed agent has published them in Secret `kubelink-gateway-<N>`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use crate::error::IpamError;
use crate::keys::{PrivateKey, PublicKey};

pub const SHOOT_SECRET_NAME: &str = "kubelink-shoot";
/// Label on every shoot Secret, so one list finds them all.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "kubelink-ipam";

/// The Secret a gateway slot publishes (written by the seed agent).
pub fn gateway_secret_name(slot: u8) -> String {
    format!("kubelink-gateway-{slot}")
}

/// What is known about one gateway slot. Missing parts are written later, when they appear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    pub slot: u8,
    pub address: Option<IpAddr>,
    pub endpoint: Option<String>,
    pub public_key: Option<PublicKey>,
}

/// A Secret's value as trimmed text; `None` when absent, empty or not UTF-8.
pub fn text(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// Reads a gateway slot's public Secret. Only `publicKey` and `endpoint` are read, never `privateKey`.
pub fn gateway_from(slot: u8, address: Option<IpAddr>, secret: Option<&Secret>) -> (Gateway, Vec<String>) {
    let mut problems = Vec::new();
    let mut gateway = Gateway { slot, address, endpoint: None, public_key: None };
    let Some(secret) = secret else { return (gateway, problems) };
    gateway.endpoint = text(secret, "endpoint");
    if let Some(key) = text(secret, "publicKey") {
        match key.parse() {
            Ok(k) => gateway.public_key = Some(k),
            Err(e) => problems.push(format!("Secret {} data.publicKey: {e}; skipped", gateway_secret_name(slot))),
        }
    }
    (gateway, problems)
}

/// The shoot Secret's data.
pub fn shoot_secret_data(
    private_key: &PrivateKey,
    address: IpNet,
    gateways: &[Gateway],
) -> BTreeMap<String, ByteString> {
    let mut data = BTreeMap::new();
    let mut put = |k: String, v: String| _ = data.insert(k, ByteString(v.into_bytes()));
    put("privateKey".into(), private_key.expose_base64().to_string());
    put("address".into(), address.to_string());
    for g in gateways {
        if let Some(endpoint) = &g.endpoint {
            put(format!("gateway-{}-endpoint", g.slot), endpoint.clone());
        }
        if let Some(key) = &g.public_key {
            put(format!("gateway-{}-publicKey", g.slot), key.to_string());
        }
        if let Some(addr) = g.address {
            put(format!("gateway-{}-address", g.slot), addr.to_string());
        }
    }
    data
}

/// The private key stored in a shoot Secret.
pub fn private_key_of(secret: &Secret) -> Result<PrivateKey, IpamError> {
    let namespace = secret.metadata.namespace.as_deref().unwrap_or_default();
    let invalid = |reason: String| IpamError::InvalidValue {
        field: format!("Secret {namespace}/{SHOOT_SECRET_NAME} data.privateKey"),
        value: "(redacted)".into(),
        reason,
    };
    let text = text(secret, "privateKey").ok_or_else(|| invalid("missing".into()))?;
    text.parse().map_err(|e| invalid(format!("{e}; a new key pair is generated")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_has_the_documented_keys() {
        let key = PrivateKey::generate();
        let gw0 = Gateway {
            slot: 0,
            address: Some("192.168.128.1".parse().unwrap()),
            endpoint: Some("gw0.example.test:51820".into()),
            public_key: Some(PrivateKey::generate().public_key()),
        };
        let gw1 =
            Gateway { slot: 1, address: Some("192.168.128.2".parse().unwrap()), endpoint: None, public_key: None };
        let data = shoot_secret_data(&key, "192.168.128.10/22".parse().unwrap(), &[gw0, gw1]);
        let keys: Vec<&str> = data.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "address",
                "gateway-0-address",
                "gateway-0-endpoint",
                "gateway-0-publicKey",
                "gateway-1-address",
                "privateKey"
            ]
        );
        assert_eq!(data["address"].0, b"192.168.128.10/22");
        let secret = Secret { data: Some(data), ..Default::default() };
        assert_eq!(private_key_of(&secret).unwrap(), key);
    }

    #[test]
    fn a_bad_private_key_is_reported_without_its_value() {
        let data = [("privateKey".to_string(), ByteString(b"c2VjcmV0LWJ1dC10b28tc2hvcnQ=".to_vec()))].into();
        let secret = Secret { data: Some(data), ..Default::default() };
        let err = private_key_of(&secret).unwrap_err().to_string();
        assert!(err.contains("data.privateKey") && !err.contains("c2VjcmV0"), "{err}");
    }
}
