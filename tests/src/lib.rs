//! kubelink's test support, kept out of the product: network namespaces as hosts and the test
//! harness, the local landscapes (`kubelink-landscape` and the end-to-end tests run them), the
//! Kubernetes API test server, Helm, and a stand-in for gardenlet.

pub use kubelink_apiserver as apiserver;
pub mod bench;
pub mod gardenlet;
pub mod helm;
pub mod k8s;
pub mod landscape;
pub mod netns;
pub mod skip;
pub mod wire;
