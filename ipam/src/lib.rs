//! kubelink's address management: keys, tunnel address allocation, CIDR rules, the Gardener model, the
//! Kubernetes-backed store and the Gardener extension controller.

pub mod alloc;
pub mod contract;
pub mod decode;
pub mod error;
pub mod extension;
pub mod gardener;
pub mod keys;
pub mod managed;
pub mod projection;
pub mod record;
pub mod secret;
pub mod seed_objects;
pub mod store;
pub mod table;
pub mod validate;

pub use contract::{ShootKey, Slot};
pub use error::{IpamError, excerpt, shorten};
pub use keys::{KeyError, PrivateKey, PublicKey};
