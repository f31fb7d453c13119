//! kubelink's address management: tunnel address allocation, CIDR rules, the Gardener model, the
//! Kubernetes-backed store and the Gardener extension controller.
//!
//! What the controller agrees on with the agents and the sidecar (names, labels, Secret keys, keys, the
//! seed-local CRDs, decoding) is the crate `kubelink-contract`; it is re-exported here under the module
//! names the controller's code uses.

pub mod alloc;
pub mod error;
pub mod extension;
pub mod gardener;
pub mod managed;
pub mod projection;
pub mod record;
pub mod seed_objects;
pub mod store;
pub mod table;
pub mod validate;
pub mod vpn_server;

pub use kubelink_contract as contract;
pub use kubelink_contract::{decode, keys, secret};

pub use contract::{ShootKey, Slot};
pub use error::{IpamError, excerpt, shorten};
pub use keys::{KeyError, PrivateKey, PublicKey};
