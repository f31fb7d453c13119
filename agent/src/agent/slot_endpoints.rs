//! The endpoint behind each slot's LoadBalancer Service: an EndpointSlice `kubelink-gateway-<slot>`
//! that the slot holder writes with one endpoint, its own node (node IP, node name, ready), and
//! empties when it gives the slot up. The Services have no selector, so Kubernetes leaves their
//! EndpointSlices to whoever writes them, and kube-proxy and cloud load balancers follow these.
//!
//! No Pod is written: an agent's token may write only these EndpointSlices, and the chart's
//! admission policy lets it name only its own node in them (the node its token is bound to).

use std::net::IpAddr;

use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::PostParams;
use kubelink_contract::{Slot, labels, names};

/// This node as a slot's endpoint: the node the slot Lease names as holder, and its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub ip: IpAddr,
    /// The WireGuard listen port (the slot Service's target port).
    pub port: u16,
}

/// What to write to a slot's EndpointSlice.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    Nothing,
    Create(EndpointSlice),
    /// Replaces what was read, guarded by its resourceVersion (a concurrent writer makes it a 409).
    Replace(EndpointSlice),
}

#[derive(Debug, thiserror::Error)]
#[error("EndpointSlice {name}: {source}")]
pub struct EndpointError {
    pub name: String,
    #[source]
    pub source: kube::Error,
}

/// The EndpointSlice of `slot` with `node` as its one ready endpoint, or with none.
pub fn slice(slot: Slot, node: &Node, serving: bool) -> EndpointSlice {
    let name = names::gateway(slot);
    let labels = [
        (labels::SERVICE_NAME.to_string(), name.clone()),
        (labels::SLICE_MANAGED_BY.to_string(), labels::SLICE_MANAGER.to_string()),
    ];
    let endpoint = Endpoint {
        addresses: vec![node.ip.to_string()],
        node_name: Some(node.name.clone()),
        conditions: Some(EndpointConditions { ready: Some(true), ..EndpointConditions::default() }),
        ..Endpoint::default()
    };
    EndpointSlice {
        metadata: ObjectMeta { name: Some(name), labels: Some(labels.into()), ..ObjectMeta::default() },
        address_type: if node.ip.is_ipv4() { "IPv4" } else { "IPv6" }.into(),
        endpoints: if serving { vec![endpoint] } else { vec![] },
        ports: Some(vec![EndpointPort {
            name: Some(names::SLOT_PORT.into()),
            protocol: Some("UDP".into()),
            port: Some(i32::from(node.port)),
            ..EndpointPort::default()
        }]),
    }
}

/// Whether `slice` names `node` among its endpoints.
fn names_node(slice: &EndpointSlice, node: &str) -> bool {
    slice.endpoints.iter().any(|e| e.node_name.as_deref() == Some(node))
}

/// What a slice says, without what the server adds (metadata, defaulted fields).
#[derive(PartialEq)]
struct Said {
    labels: std::collections::BTreeMap<String, String>,
    address_type: String,
    /// Per endpoint: addresses, node, ready.
    endpoints: Vec<(Vec<String>, Option<String>, Option<bool>)>,
    /// Per port: name, protocol, number.
    ports: Vec<(Option<String>, Option<String>, Option<i32>)>,
}

fn said(slice: &EndpointSlice) -> Said {
    let endpoint =
        |e: &Endpoint| (e.addresses.clone(), e.node_name.clone(), e.conditions.as_ref().and_then(|c| c.ready));
    Said {
        labels: slice.metadata.labels.clone().unwrap_or_default(),
        address_type: slice.address_type.clone(),
        endpoints: slice.endpoints.iter().map(endpoint).collect(),
        ports: slice.ports.iter().flatten().map(|p| (p.name.clone(), p.protocol.clone(), p.port)).collect(),
    }
}

/// The write that makes `current` (the slice of `slot` as read; `None`: there is none) say that
/// `node` serves the slot, or, when it does not, that the slot has no endpoint of `node`'s. A
/// slice that names another node is replaced when this node serves the slot (the other is a stale
/// holder) and left alone otherwise (it is the current holder's).
pub fn plan(current: Option<&EndpointSlice>, slot: Slot, node: &Node, serving: bool) -> Write {
    let mut desired = slice(slot, node, serving);
    match current {
        None if serving => Write::Create(desired),
        None => Write::Nothing,
        Some(current) if !serving && !names_node(current, &node.name) => Write::Nothing,
        Some(current) if said(current) == said(&desired) => Write::Nothing,
        Some(current) => {
            desired.metadata.resource_version = current.metadata.resource_version.clone();
            Write::Replace(desired)
        }
    }
}

/// Writes the slot EndpointSlices of one node in kubelink's namespace.
pub struct SlotEndpoints {
    api: Api<EndpointSlice>,
    node: Node,
}

impl SlotEndpoints {
    pub fn new(client: kube::Client, namespace: &str, node: Node) -> Self {
        SlotEndpoints { api: Api::namespaced(client, namespace), node }
    }

    /// Publishes this node as the endpoint of `serving` among the first `slots` slots, and takes it
    /// out of every other slot's slice that still names it (a slot it gave up or lost). Each slice
    /// is read by name and written only when it says something else.
    pub async fn publish(&self, serving: Option<Slot>, slots: usize) -> Result<(), EndpointError> {
        for slot in Slot::ALL.into_iter().take(slots) {
            let name = names::gateway(slot);
            let error = |source| EndpointError { name: name.clone(), source };
            let current = self.api.get_opt(&name).await.map_err(error)?;
            let pp = PostParams::default();
            match plan(current.as_ref(), slot, &self.node, serving == Some(slot)) {
                Write::Nothing => continue,
                Write::Create(slice) => self.api.create(&pp, &slice).await.map_err(error)?,
                Write::Replace(slice) => self.api.replace(&name, &pp, &slice).await.map_err(error)?,
            };
            let endpoint = if serving == Some(slot) { "this node" } else { "none" };
            tracing::info!(slot = slot.number(), endpoint, "slot EndpointSlice written");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S0: Slot = Slot::ALL[0];

    fn node(name: &str, ip: &str) -> Node {
        Node { name: name.into(), ip: ip.parse().unwrap(), port: 51820 }
    }

    /// `slice` as the server returns it: a resourceVersion and what it adds.
    fn stored(mut slice: EndpointSlice) -> EndpointSlice {
        slice.metadata.resource_version = Some("42".into());
        slice.metadata.uid = Some("u".into());
        slice
    }

    #[test]
    fn the_slice_names_the_service_this_node_and_the_wireguard_port() {
        let s = serde_json::to_value(slice(S0, &node("node-a", "10.250.0.11"), true)).unwrap();
        let want = serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "kubelink-gateway-0", "labels": {
                "kubernetes.io/service-name": "kubelink-gateway-0",
                "endpointslice.kubernetes.io/managed-by": "agent.kubelink.gardener.cloud"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.250.0.11"], "nodeName": "node-a", "conditions": {"ready": true}}],
            "ports": [{"name": "wireguard", "protocol": "UDP", "port": 51820}]});
        assert_eq!(s, want);
        let v6 = slice(Slot::ALL[1], &node("node-a", "fd00::11"), false);
        assert_eq!((v6.address_type.as_str(), v6.endpoints.len()), ("IPv6", 0), "given up: no endpoint");
    }

    #[test]
    fn a_holder_writes_its_slice_and_a_router_clears_only_its_own() {
        let (a, b) = (node("node-a", "10.250.0.11"), node("node-b", "10.250.0.12"));
        let mine = stored(slice(S0, &a, true));
        let others = stored(slice(S0, &b, true));
        let empty = stored(slice(S0, &a, false));
        let replaced = |w: &Write| match w {
            Write::Replace(s) => (s.metadata.resource_version.clone(), s.endpoints.len()),
            other => panic!("expected a replace, got {other:?}"),
        };
        // rows: why, the slice read, this node serves the slot, the write
        assert!(matches!(plan(None, S0, &a, true), Write::Create(s) if s.endpoints.len() == 1), "no slice yet");
        assert_eq!(plan(None, S0, &a, false), Write::Nothing, "a router creates nothing");
        assert_eq!(plan(Some(&mine), S0, &a, true), Write::Nothing, "already says so: no write");
        assert_eq!(replaced(&plan(Some(&others), S0, &a, true)), (Some("42".into()), 1), "a stale holder replaced");
        assert_eq!(replaced(&plan(Some(&empty), S0, &a, true)), (Some("42".into()), 1), "an emptied slice");
        assert_eq!(replaced(&plan(Some(&mine), S0, &a, false)), (Some("42".into()), 0), "giving up empties it");
        assert_eq!(plan(Some(&others), S0, &a, false), Write::Nothing, "the current holder's slice is left alone");
        assert_eq!(plan(Some(&empty), S0, &a, false), Write::Nothing, "already empty");
        let mut unready = mine.clone();
        unready.endpoints[0].conditions = Some(EndpointConditions { ready: Some(false), ..Default::default() });
        assert_eq!(replaced(&plan(Some(&unready), S0, &a, true)), (Some("42".into()), 1), "ready again");
        let moved = stored(slice(S0, &node("node-a", "10.250.0.99"), true));
        assert_eq!(replaced(&plan(Some(&moved), S0, &a, true)), (Some("42".into()), 1), "this node's address now");
    }
}
