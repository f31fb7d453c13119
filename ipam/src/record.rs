//! What kubelink records of a shoot across its life on a seed and across a migration: its tunnel address
//! and public key (never the private key). The Extension's `status.state` carries it
//! (`extension::plan::recorded_of`).

use std::net::IpAddr;

use crate::keys::PublicKey;

/// A shoot's address and public key as last recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub address: IpAddr,
    pub public_key: PublicKey,
}
