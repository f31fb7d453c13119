//! `kubelink shoot`: the sidecar of the shoot's vpn-shoot pod. It dials the seed's gateway slots
//! (the shoot has no inbound endpoint: the reversed VPN), keeps their endpoints resolved, and tells
//! through `/readyz` whether any gateway is reachable.

pub mod config;
pub mod readvertise;
pub mod sidecar;

pub use config::{ShootConfig, ShootConfigError, Sources};
pub use sidecar::{Options, SidecarError};
