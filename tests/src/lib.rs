//! kubelink's test support: the network-namespace harness, the Kubernetes API test server and the
//! kernel scenario driver.

pub use kubelink_apiserver as apiserver;
pub mod helm;
pub mod landscape;
pub mod netns;
