//! The Secret the shoot side mounts: its private key, its address and the gateways to dial.
//!
//! One per shoot, named [`names::SHOOT_SECRET`], in the shoot's control-plane namespace on the seed. Its
//! keys are [`crate::shoot_secret`]'s. A gateway's public key is derived from the private key the
//! extension controller generated into the slot Secret [`names::gateway`]; its endpoint is the seed's
//! configuration or the slot Service's load-balancer address ([`crate::endpoint`]).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use crate::error::InvalidValue;
use crate::keys::{PrivateKey, PublicKey};
use crate::{Slot, names, secret_data, shoot_secret};

/// What the IPAM knows about one gateway slot, to write into the shoot Secret (the sidecar's own
/// `shoot::config::Gateway` is what it reads back). Missing parts are written later, when they appear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownGateway {
    pub slot: Slot,
    pub address: Option<IpAddr>,
    pub endpoint: Option<String>,
    pub public_key: Option<PublicKey>,
}

/// A Secret's value as trimmed text; `None` when absent, empty or not UTF-8.
pub fn text(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// The shoot Secret's data.
pub fn shoot_secret_data(
    private_key: &PrivateKey,
    address: IpNet,
    gateways: &[KnownGateway],
    mtu: Option<u16>,
) -> BTreeMap<String, ByteString> {
    let mut data = secret_data([
        (shoot_secret::PRIVATE_KEY, private_key.expose_base64().to_string()),
        (shoot_secret::ADDRESS, address.to_string()),
    ]);
    // The seed's MTU when it sets one (the gateways use the same); else the sidecar derives its own.
    if let Some(mtu) = mtu {
        data.insert(shoot_secret::MTU.into(), ByteString(mtu.to_string().into_bytes()));
    }
    for g in gateways {
        let keys = shoot_secret::gateway(g.slot);
        let mut put = |k: String, v: Option<String>| _ = v.map(|v| data.insert(k, ByteString(v.into_bytes())));
        put(keys.endpoint, g.endpoint.clone());
        put(keys.public_key, g.public_key.map(|k| k.to_string()));
        put(keys.address, g.address.map(|a| a.to_string()));
    }
    data
}

/// The shoot's Secret `kubelink-shoot` in its control-plane namespace: what the ManagedResource
/// carries into the shoot, and (with the extension) what gardenlet carries on migration.
pub fn shoot_secret(
    namespace: &str,
    key: &PrivateKey,
    address: IpNet,
    gateways: &[KnownGateway],
    mtu: Option<u16>,
) -> Secret {
    let mut secret = Secret::default();
    secret.metadata.name = Some(names::SHOOT_SECRET.into());
    secret.metadata.namespace = Some(namespace.into());
    secret.metadata.labels = Some(crate::labels::managed());
    secret.type_ = Some("Opaque".into());
    secret.data = Some(shoot_secret_data(key, address, gateways, mtu));
    secret
}

/// The private key stored in a shoot Secret.
pub fn private_key_of(secret: &Secret) -> Result<PrivateKey, InvalidValue> {
    let namespace = secret.metadata.namespace.as_deref().unwrap_or_default();
    let invalid = |reason: String| InvalidValue {
        field: format!("Secret {namespace}/{} data.{}", names::SHOOT_SECRET, shoot_secret::PRIVATE_KEY),
        value: "(redacted)".into(),
        reason,
    };
    let text = text(secret, shoot_secret::PRIVATE_KEY).ok_or_else(|| invalid("missing".into()))?;
    text.parse().map_err(|e| invalid(format!("{e}; a new key pair is generated")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_has_the_documented_keys() {
        let key = PrivateKey::generate();
        let [s0, s1] = Slot::ALL;
        let gw0 = KnownGateway {
            slot: s0,
            address: Some("192.168.128.1".parse().unwrap()),
            endpoint: Some("gw0.example.test:51820".into()),
            public_key: Some(PrivateKey::generate().public_key()),
        };
        let gw1 = KnownGateway {
            slot: s1,
            address: Some("192.168.128.2".parse().unwrap()),
            endpoint: None,
            public_key: None,
        };
        let data = shoot_secret_data(&key, "192.168.128.10/22".parse().unwrap(), &[gw0.clone(), gw1.clone()], None);
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
        // The seed's MTU, when it has one, is the `mtu` key.
        let data = shoot_secret_data(&key, "192.168.128.10/22".parse().unwrap(), &[gw0, gw1], Some(1380));
        assert_eq!(data["mtu"].0, b"1380");
    }

    #[test]
    fn a_bad_private_key_is_reported_without_its_value() {
        let data = [("privateKey".to_string(), ByteString(b"c2VjcmV0LWJ1dC10b28tc2hvcnQ=".to_vec()))].into();
        let secret = Secret { data: Some(data), ..Default::default() };
        let err = private_key_of(&secret).unwrap_err().to_string();
        assert!(err.contains("data.privateKey") && !err.contains("c2VjcmV0"), "{err}");
    }
}
