//! kubelink: WireGuard device, routes and roles for Gardener's reversed cluster VPN.

pub mod agent;
pub mod cmd;
pub mod config;
pub mod driver;
pub mod election;
pub mod endpoint;
pub mod extension_metrics;
pub mod firewall;
pub mod garden_admission;
pub mod health;
pub mod ifname;
pub mod link;
pub mod metrics;
pub mod monitor;
pub mod mtu;
pub mod node_lock;
pub mod pod_scope;
pub mod probe;
pub mod reconcile;
pub mod route;
pub mod routing;
pub mod seed_view;
pub mod shoot;
pub mod shoot_webhook;
pub mod standalone;
pub mod telemetry;
pub mod tools;
pub mod underlay;
pub mod webhook;
pub mod wg;

pub use kubelink_contract::keys;

#[cfg(test)]
mod crate_boundary;
