//! A stand-in for a cloud load balancer per gateway slot: a namespace that DNATs (and masquerades) UDP
//! to the node whose Pod carries the slot label, following the label as a cloud LB follows its Service's
//! endpoints, and flushing stale flows when the target moves.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;

use crate::netns::{Netns, run};
use kubelink_ipam::contract::labels::GATEWAY_SLOT as SLOT_LABEL;

/// The nft script that points `port` at `target` (or drops it when no node holds the slot).
pub fn lb_script(port: u16, target: Option<&str>) -> String {
    let rule = target
        .map(|t| format!("udp dport {port} dnat to {t}:{port}"))
        .unwrap_or_else(|| format!("udp dport {port} drop"));
    format!(
        "table ip lb {{}}\ndelete table ip lb\ntable ip lb {{\n  chain pre {{\n    type nat hook prerouting priority dstnat; policy accept;\n    {rule}\n  }}\n  chain post {{\n    type nat hook postrouting priority srcnat; policy accept;\n    udp dport {port} masquerade\n  }}\n}}\n"
    )
}

/// Points the load balancer in `ns` at `target` and forgets flows to the old one.
pub fn program(ns: &Netns, port: u16, target: Option<&str>) -> Result<(), String> {
    let path = std::env::temp_dir().join(format!("{}.nft", ns.name));
    std::fs::write(&path, lb_script(port, target)).map_err(|e| format!("{}: {e}", path.display()))?;
    run(ns.command("nft").arg("-f").arg(&path))?;
    // No conntrack tool: nothing to flush (fresh flows only).
    let _ = ns.command("conntrack").arg("-F").output();
    Ok(())
}

/// The node IP behind each slot: the Pod with the slot label, mapped to its node by `node_ip_of_pod`.
pub fn targets(pods: &[Pod], slots: usize, node_ip_of_pod: &dyn Fn(&str) -> Option<String>) -> Vec<Option<String>> {
    (0..slots)
        .map(|slot| {
            pods.iter().find_map(|p| {
                let label = p.metadata.labels.as_ref()?.get(SLOT_LABEL)?;
                (label == &slot.to_string()).then(|| node_ip_of_pod(p.metadata.name.as_deref()?)).flatten()
            })
        })
        .collect()
}

/// Maps a Pod name to its node's IP.
pub type NodeIpOf = Box<dyn Fn(&str) -> Option<String> + Send>;

/// Follows the slot labels every 100 ms until `stop` is set. `lbs[slot]` is the slot's namespace.
pub fn follow(
    client: kube::Client,
    runtime: tokio::runtime::Handle,
    namespace: String,
    lbs: Vec<Arc<Netns>>,
    port: u16,
    node_ip_of_pod: NodeIpOf,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let pods: Api<Pod> = Api::namespaced(client, &namespace);
        let mut current: Vec<Option<String>> = vec![None; lbs.len()];
        let mut first = true;
        while !stop.load(Ordering::Relaxed) {
            let list = runtime.block_on(pods.list(&Default::default())).map(|l| l.items).unwrap_or_default();
            for (slot, target) in targets(&list, lbs.len(), &*node_ip_of_pod).into_iter().enumerate() {
                if first || target != current[slot] {
                    if let Err(e) = program(&lbs[slot], port, target.as_deref()) {
                        eprintln!("load balancer of slot {slot}: {e}");
                    }
                    current[slot] = target;
                }
            }
            first = false;
            std::thread::sleep(Duration::from_millis(100));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, slot: Option<&str>) -> Pod {
        let labels = slot.map(|s| serde_json::json!({SLOT_LABEL: s})).unwrap_or(serde_json::json!({}));
        serde_json::from_value(serde_json::json!({"metadata": {"name": name, "labels": labels}})).unwrap()
    }

    #[test]
    fn targets_follow_the_slot_label() {
        let pods = [pod("kubelink-n0", Some("1")), pod("kubelink-n1", None), pod("kubelink-n2", Some("0"))];
        let ip = |p: &str| p.strip_prefix("kubelink-n").map(|n| format!("10.0.0.{n}"));
        assert_eq!(targets(&pods, 2, &ip), vec![Some("10.0.0.2".into()), Some("10.0.0.0".into())]);
        assert_eq!(targets(&pods[1..2], 2, &ip), vec![None, None]);
    }

    #[test]
    fn script_dnats_and_masquerades_or_drops() {
        let s = lb_script(51820, Some("10.250.0.12"));
        assert!(s.contains("udp dport 51820 dnat to 10.250.0.12:51820") && s.contains("masquerade"));
        assert!(lb_script(51820, None).contains("udp dport 51820 drop"));
    }
}
