//! kubelink's address management: keys, tunnel address allocation, CIDR rules, the Gardener model and
//! the Kubernetes-backed store and controller.

pub mod alloc;
pub mod contract;
pub mod controller;
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
pub mod status;
pub mod store;
pub mod table;
pub mod validate;

pub use contract::{ShootKey, Slot};
pub use error::{IpamError, excerpt, shorten};
pub use keys::{KeyError, PrivateKey, PublicKey};
