//! The next hops routers take from the slot Leases, checked against the holders' agent Pods.
//!
//! A slot Lease's node-IP annotation ([`labels::NODE_IP`]) is written by whichever node writes the
//! Lease, and every agent's token may update every slot Lease: one node could point another
//! holder's slot at itself. A Pod's host IPs (`status.hostIPs`, `status.hostIP`) are written by the
//! kubelet of the Pod's node only (NodeRestriction), so the holder's agent Pod (the one of the agent
//! DaemonSet whose `spec.nodeName` is the Lease's holder) says which addresses that node has. A
//! next hop that is not among them is dropped before the role logic sees it: no route via it.

use std::borrow::Cow;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kubelink_contract::{Slot, excerpt, labels, names};
use serde::Deserialize;

use crate::election::SlotLease;

/// An agent Pod as the agent keeps it: its name, node and host IPs, nothing else of the object.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentPod {
    metadata: ObjectMeta,
    pub node: Option<String>,
    pub host_ips: Vec<IpAddr>,
}

impl AgentPod {
    pub fn new(name: &str, node: &str, host_ips: &[IpAddr]) -> Self {
        let metadata = ObjectMeta { name: Some(name.into()), ..ObjectMeta::default() };
        AgentPod { metadata, node: Some(node.into()), host_ips: host_ips.to_vec() }
    }

    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }
}

/// The fields of a Pod the check reads.
#[derive(Deserialize)]
struct PodFields {
    metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<PodSpecFields>,
    #[serde(default)]
    status: Option<PodStatusFields>,
}

#[derive(Deserialize)]
struct PodSpecFields {
    #[serde(rename = "nodeName")]
    node_name: Option<String>,
}

#[derive(Deserialize)]
struct PodStatusFields {
    #[serde(rename = "hostIP")]
    host_ip: Option<String>,
    #[serde(rename = "hostIPs", default)]
    host_ips: Vec<HostIp>,
}

#[derive(Deserialize)]
struct HostIp {
    ip: Option<String>,
}

/// Keeps the name, the node and the host IPs (both fields: `hostIPs` lists both families of a
/// dual-stack node, `hostIP` is its first); an address that does not parse is no host IP.
impl<'de> Deserialize<'de> for AgentPod {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let pod = PodFields::deserialize(deserializer)?;
        let status = pod.status.unwrap_or(PodStatusFields { host_ip: None, host_ips: vec![] });
        let listed = status.host_ips.into_iter().filter_map(|h| h.ip);
        let mut host_ips: Vec<IpAddr> =
            status.host_ip.into_iter().chain(listed).filter_map(|s| s.parse().ok()).collect();
        host_ips.sort();
        host_ips.dedup();
        // The watcher resumes from the last object's resourceVersion.
        let m = pod.metadata;
        let metadata = ObjectMeta {
            name: m.name,
            namespace: m.namespace,
            resource_version: m.resource_version,
            ..ObjectMeta::default()
        };
        Ok(AgentPod { metadata, node: pod.spec.and_then(|s| s.node_name), host_ips })
    }
}

impl Resource for AgentPod {
    type DynamicType = ();
    type Scope = <Pod as Resource>::Scope;
    fn kind(_: &()) -> Cow<'_, str> {
        Pod::kind(&())
    }
    fn group(_: &()) -> Cow<'_, str> {
        Pod::group(&())
    }
    fn version(_: &()) -> Cow<'_, str> {
        Pod::version(&())
    }
    fn plural(_: &()) -> Cow<'_, str> {
        Pod::plural(&())
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Why a slot Lease's node IP is no next hop.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeIpProblem {
    #[error(
        "Lease {lease} annotation {annotation}: {ip} is not a host IP of the holder's agent Pod {pods} on node \
         {node} ({host_ips}); no route via it (was the Lease written by another node?)",
        annotation = labels::NODE_IP
    )]
    NotHostIp { lease: String, ip: IpAddr, node: String, pods: String, host_ips: String },
    #[error(
        "Lease {lease} annotation {annotation}: {ip}, but no agent Pod runs on the holder's node {node} to check it \
         against; no route via it",
        annotation = labels::NODE_IP
    )]
    NoPod { lease: String, ip: IpAddr, node: String },
    #[error("Lease {lease} annotation {annotation}: {value} is not an IP address; no route via it", annotation = labels::NODE_IP)]
    NotAnAddress { lease: String, value: String },
}

/// Every slot's Lease with its node IP kept only where the holder's agent Pod has it as a host IP,
/// and why each one dropped was dropped. A Lease without a holder or a node IP claims nothing.
pub fn verify_node_ips(
    slots: Vec<Option<SlotLease>>,
    pods: &[AgentPod],
) -> (Vec<Option<SlotLease>>, Vec<NodeIpProblem>) {
    let mut problems = Vec::new();
    let verified = slots
        .into_iter()
        .enumerate()
        .map(|(index, lease)| {
            let mut lease = lease?;
            if let Err(problem) = check(index, &lease, pods) {
                lease.node_ip = None;
                problems.push(problem);
            }
            Some(lease)
        })
        .collect();
    (verified, problems)
}

/// The Lease of slot `index`, by name.
fn lease_name(index: usize) -> String {
    Slot::try_from(index).map_or_else(|_| format!("of slot {index}"), names::gateway)
}

fn check(index: usize, lease: &SlotLease, pods: &[AgentPod]) -> Result<(), NodeIpProblem> {
    let (Some(node), Some(value)) = (&lease.holder, &lease.node_ip) else { return Ok(()) };
    let ip: IpAddr =
        value.parse().map_err(|_| NodeIpProblem::NotAnAddress { lease: lease_name(index), value: excerpt(value) })?;
    let on_node: Vec<&AgentPod> = pods.iter().filter(|p| p.node.as_ref() == Some(node)).collect();
    if on_node.is_empty() {
        return Err(NodeIpProblem::NoPod { lease: lease_name(index), ip, node: node.clone() });
    }
    if on_node.iter().any(|p| p.host_ips.contains(&ip)) {
        return Ok(());
    }
    let list = |items: Vec<String>| if items.is_empty() { "none".to_string() } else { items.join(", ") };
    Err(NodeIpProblem::NotHostIp {
        lease: lease_name(index),
        ip,
        node: node.clone(),
        pods: list(on_node.iter().map(|p| p.name().to_string()).collect()),
        host_ips: list(on_node.iter().flat_map(|p| &p.host_ips).map(IpAddr::to_string).collect()),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn lease(holder: Option<&str>, node_ip: Option<&str>) -> Option<SlotLease> {
        Some(SlotLease {
            holder: holder.map(Into::into),
            renewed: None,
            acquired: None,
            duration: Duration::from_secs(4),
            node_ip: node_ip.map(Into::into),
        })
    }

    fn pods() -> Vec<AgentPod> {
        vec![
            AgentPod::new("kubelink-agent-a", "node-a", &[ip("10.250.0.11")]),
            AgentPod::new("kubelink-agent-b", "node-b", &[ip("10.250.0.12"), ip("fd00::12")]),
            // A DaemonSet's rolling update: the old and the new Pod on one node, the new one not
            // started yet (no host IP).
            AgentPod::new("kubelink-agent-c-old", "node-c", &[ip("10.250.0.13")]),
            AgentPod::new("kubelink-agent-c-new", "node-c", &[]),
        ]
    }

    #[test]
    fn a_next_hop_is_kept_only_where_the_holders_pod_has_it() {
        // rows: why, holder, node IP written, kept, words the problem must contain
        type Row<'a> = (&'a str, Option<&'a str>, Option<&'a str>, bool, &'a [&'a str]);
        let rows: &[Row] = &[
            ("the holder's own host IP", Some("node-a"), Some("10.250.0.11"), true, &[]),
            ("the other family of a dual-stack node", Some("node-b"), Some("fd00::12"), true, &[]),
            ("written in another spelling", Some("node-b"), Some("fd00:0::12"), true, &[]),
            ("one of two Pods on the node has it", Some("node-c"), Some("10.250.0.13"), true, &[]),
            (
                "another node's address",
                Some("node-a"),
                Some("10.250.0.12"),
                false,
                &["Lease kubelink-gateway-0", labels::NODE_IP, "10.250.0.12", "kubelink-agent-a", "(10.250.0.11)"],
            ),
            (
                "an address no node has",
                Some("node-b"),
                Some("10.250.0.99"),
                false,
                &["kubelink-agent-b", "10.250.0.12, fd00::12", "no route via it"],
            ),
            ("a holder without an agent Pod", Some("node-x"), Some("10.250.0.11"), false, &["no agent Pod", "node-x"]),
            ("not an address", Some("node-a"), Some("node-a.example"), false, &["\"node-a.example\"", "not an IP"]),
            ("no node IP: nothing to route via", Some("node-a"), None, true, &[]),
            ("released: no holder", None, Some("10.250.0.99"), true, &[]),
        ];
        for (why, holder, node_ip, kept, words) in rows {
            let (verified, problems) = verify_node_ips(vec![lease(*holder, *node_ip), None], &pods());
            assert_eq!(verified.len(), 2, "{why}: one entry per slot");
            assert_eq!(verified[1], None, "{why}: a slot without a Lease stays without one");
            let got = verified[0].as_ref().unwrap();
            assert_eq!(got.holder.as_deref(), *holder, "{why}: the holder is the election's, untouched");
            assert_eq!(got.node_ip.as_deref(), if *kept { *node_ip } else { None }, "{why}");
            assert_eq!(problems.len(), usize::from(!kept), "{why}: {problems:?}");
            let text = problems.first().map(ToString::to_string).unwrap_or_default();
            for word in words.iter() {
                assert!(text.contains(word), "{why}: {word:?} missing in {text}");
            }
        }
    }

    #[test]
    fn each_slot_is_checked_on_its_own() {
        let slots = vec![lease(Some("node-a"), Some("10.250.0.12")), lease(Some("node-b"), Some("10.250.0.12"))];
        let (verified, problems) = verify_node_ips(slots, &pods());
        let hops: Vec<Option<&str>> = verified.iter().map(|l| l.as_ref().unwrap().node_ip.as_deref()).collect();
        assert_eq!(hops, [None, Some("10.250.0.12")], "node-b's address in slot 0's Lease is dropped, slot 1 kept");
        assert_eq!(problems.len(), 1);
        assert!(problems[0].to_string().starts_with("Lease kubelink-gateway-0 "), "{}", problems[0]);
        // No Pods listed at all: nothing is routed.
        let (verified, problems) = verify_node_ips(vec![lease(Some("node-a"), Some("10.250.0.11"))], &[]);
        assert_eq!(verified[0].as_ref().unwrap().node_ip, None);
        assert!(matches!(problems[..], [NodeIpProblem::NoPod { .. }]), "{problems:?}");
    }

    #[test]
    fn a_pod_is_kept_as_name_node_and_host_ips() {
        let pod = serde_json::json!({
            "metadata": {"name": "kubelink-agent-a", "namespace": "kubelink", "resourceVersion": "7",
                         "labels": {"app.kubernetes.io/component": "agent"}, "annotations": {"big": "x".repeat(1000)}},
            "spec": {"nodeName": "node-a", "containers": [{"name": "agent", "image": "kubelink"}]},
            "status": {"hostIP": "10.250.0.11", "hostIPs": [{"ip": "10.250.0.11"}, {"ip": "fd00::11"}, {"ip": "x"}],
                       "podIP": "10.250.0.11"}});
        let kept: AgentPod = serde_json::from_value(pod).unwrap();
        assert_eq!(kept.name(), "kubelink-agent-a");
        assert_eq!(kept.node.as_deref(), Some("node-a"));
        assert_eq!(kept.host_ips, [ip("10.250.0.11"), ip("fd00::11")]);
        assert_eq!(kept.meta().resource_version.as_deref(), Some("7"), "the watch resumes from it");
        assert!(kept.meta().annotations.is_none() && kept.meta().labels.is_none(), "only what the check reads");
        // Pending: not scheduled, no status yet.
        let pending: AgentPod = serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}})).unwrap();
        assert_eq!((pending.node, pending.host_ips), (None, vec![]));
    }
}
