//! kubelink: WireGuard device, routes and roles for Gardener's reversed cluster VPN.

pub mod cmd;
pub mod telemetry;

pub use kubelink_ipam::keys;
