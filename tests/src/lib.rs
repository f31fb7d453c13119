//! kubelink's test support, kept out of the product: network namespaces as hosts and the test
//! harness, the local landscapes (`kubelink-landscape` and the end-to-end tests run them), the real
//! Kubernetes control plane (kube-apiserver and etcd built from their Go modules), Helm, and a
//! stand-in for gardenlet.

pub mod bench;
pub mod gardenlet;
pub mod gateway_file;
pub mod helm;
pub mod k8s;
pub mod landscape;
pub mod netns;
pub mod skip;
pub mod wire;
