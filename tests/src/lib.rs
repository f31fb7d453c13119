//! kubelink's test support: the network-namespace harness, the Kubernetes API test server and the
//! kernel scenario driver.

pub mod apiserver;
pub mod netns;
