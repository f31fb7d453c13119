//! Pods of the seed as a CNI and a kubelet make them: a namespace of its own behind a veth pair on its
//! node (the node routes the pod's address to the veth, the other nodes route it to the node), and the
//! Pod object bound to the node with its address in `status.podIPs`, in a namespace of the seed (a
//! shoot's control plane, for [`kubelink::pod_scope`]).

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use super::{SeedLandscape, node_ip, node_name};
use crate::netns::Netns;

impl SeedLandscape {
    /// A pod with address `ip` on node `node`: its network only, no object (what a CNI sets up before
    /// the kubelet reports the Pod's address).
    pub fn add_pod_network(&self, node: usize, ip: &str) -> Result<Netns, String> {
        let pod = Netns::new("pod")?;
        let host_end = format!("cali{}", pod.name.rsplit('-').next().unwrap_or("0"));
        self.nodes[node].ip(&["link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &pod.name])?;
        self.nodes[node].ip(&["link", "set", &host_end, "up"])?;
        self.nodes[node].ip(&["route", "add", &format!("{ip}/32"), "dev", &host_end])?;
        pod.ip(&["addr", "add", &format!("{ip}/32"), "dev", "eth0"])?;
        pod.ip(&["link", "set", "eth0", "up"])?;
        // The node answers ARP for its own address on any link.
        pod.ip(&["route", "add", &node_ip(node), "dev", "eth0"])?;
        pod.ip(&["route", "add", "default", "via", &node_ip(node)])?;
        for (i, other) in self.nodes.iter().enumerate().filter(|(i, _)| *i != node) {
            other
                .ip(&["route", "replace", &format!("{ip}/32"), "via", &node_ip(node)])
                .map_err(|e| format!("node {i}: {e}"))?;
        }
        Ok(pod)
    }

    /// [`Self::add_pod_network`] and the Pod `name` in `namespace`, bound to the node, running with `ip`.
    pub async fn add_pod(&self, node: usize, namespace: &str, name: &str, ip: &str) -> Result<Netns, String> {
        let network = self.add_pod_network(node, ip)?;
        // kube-controller-manager's part: the namespace's `default` ServiceAccount, which admission
        // looks up for a Pod that names none.
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client(), namespace);
        let account = serde_json::from_value(json!({"metadata": {"name": "default"}})).map_err(|e| e.to_string())?;
        match accounts.create(&PostParams::default(), &account).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_already_exists() => {}
            Err(e) => return Err(format!("ServiceAccount {namespace}/default: {e}")),
        }
        let pods: Api<Pod> = Api::namespaced(self.client(), namespace);
        let object = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
                            "spec": {"nodeName": node_name(node), "automountServiceAccountToken": false, "containers": [{"name": "c", "image": "pause"}]}});
        let object: Pod = serde_json::from_value(object).map_err(|e| e.to_string())?;
        let e = |e: kube::Error| format!("Pod {namespace}/{name}: {e}");
        pods.create(&PostParams::default(), &object).await.map_err(e)?;
        let status =
            json!({"status": {"phase": "Running", "hostIP": node_ip(node), "podIP": ip, "podIPs": [{"ip": ip}]}});
        pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.map_err(e)?;
        Ok(network)
    }
}
