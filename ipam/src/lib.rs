//! kubelink's address management: keys, tunnel address allocation and CIDR rules.

pub mod keys;

pub use keys::{KeyError, PrivateKey, PublicKey};
