//! The local landscape: seed nodes and shoots as network namespaces on this machine.

pub mod netns;
