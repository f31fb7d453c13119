//! kubelink as a Gardener extension of type `kubelink-wireguard` (for seeds and shoots): gardenlet
//! writes `Extension` and `Cluster` objects on the seed and reads the Extensions' status; kubelink
//! needs nothing of the garden.
//!
//! - [`objects`]: the Extension and Cluster types, gardenlet's annotations and operations.
//! - [`config`]: the seed Extension's `providerConfig`, checked (pure).
//! - [`plan`]: one shoot's decision and the status that reports it (pure).
//! - [`table_store`]: the allocation table on a seed ConfigMap, by compare-and-swap.
//! - [`controller`]: the reconcile loop (kube-runtime's `Controller`) and its thin apply.

pub mod config;
pub mod controller;
pub mod objects;
pub mod plan;
pub mod table_store;
