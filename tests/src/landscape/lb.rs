//! A stand-in for a cloud load balancer per gateway slot: a namespace that DNATs (and masquerades) UDP
//! to the node whose Pod carries the slot label while that Pod is Ready, as a cloud LB follows its
//! Service's ready endpoints, and flushes stale flows when the target moves. Readiness is the agent's
//! `/readyz`, probed over the LAN from the load balancer's namespace like a kubelet probe: ready after
//! one answer 200, unready after [`FAILURE_THRESHOLD`] failures in a row.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use kube::api::{Patch, PatchParams};

use crate::netns::{Netns, run};
use kubelink_ipam::contract::labels::GATEWAY_SLOT as SLOT_LABEL;

/// The agents' health port (chart value `agent.healthPort`).
pub const HEALTH_PORT: u16 = 8093;
/// Probes failed in a row before a target is taken out (kubelet's failureThreshold).
pub const FAILURE_THRESHOLD: u32 = 2;
/// How long one readiness probe waits.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The HTTP status of `GET /readyz` on `ip`, from the current namespace; `None` when nothing answers.
pub fn readyz(ip: &str) -> Option<u16> {
    let addr = SocketAddr::new(ip.parse().ok()?, HEALTH_PORT);
    let mut s = std::net::TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).ok()?;
    s.set_read_timeout(Some(PROBE_TIMEOUT)).ok()?;
    write!(s, "GET /readyz HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// A kubelet's view of one target's readiness.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Probed {
    pub target: Option<String>,
    pub ready: bool,
    failures: u32,
}

impl Probed {
    /// After a probe of `target` (the labelled node): a new target starts unready.
    pub fn observe(self, target: Option<&str>, ok: bool) -> Self {
        let same = self.target.as_deref() == target;
        let failures = if ok {
            0
        } else if same {
            self.failures + 1
        } else {
            1
        };
        let ready = target.is_some() && (ok || (same && self.ready && failures < FAILURE_THRESHOLD));
        Probed { target: target.map(Into::into), ready, failures }
    }

    /// Where the load balancer sends: the labelled node while it is ready.
    pub fn backend(&self) -> Option<&str> {
        self.target.as_deref().filter(|_| self.ready)
    }
}

/// The nft script that points `port` at `target` (or drops it when no node holds the slot).
pub fn lb_script(port: u16, target: Option<&str>) -> String {
    let rule = target
        .map(|t| format!("udp dport {port} dnat to {t}:{port}"))
        .unwrap_or_else(|| format!("udp dport {port} drop"));
    format!(
        "table ip lb {{}}\ndelete table ip lb\ntable ip lb {{\n  chain pre {{\n    type nat hook prerouting priority dstnat; policy accept;\n    {rule}\n  }}\n  chain post {{\n    type nat hook postrouting priority srcnat; policy accept;\n    udp dport {port} masquerade\n  }}\n}}\n"
    )
}

/// Points the load balancer in `ns` at `target` and forgets flows to the old one. A load balancer that
/// already points there is left alone (a restarted follower must not cut the flows it carries, as a
/// cloud's does not when another load balancer is added).
pub fn program(ns: &Netns, port: u16, target: Option<&str>) -> Result<(), String> {
    let rule = target.map(|t| format!("dnat to {t}:{port}")).unwrap_or_else(|| format!("udp dport {port} drop"));
    if ns.sh(&["nft", "list", "table", "ip", "lb"]).is_ok_and(|current| current.contains(&rule)) {
        return Ok(());
    }
    let path = std::env::temp_dir().join(format!("{}.nft", ns.name));
    std::fs::write(&path, lb_script(port, target)).map_err(|e| format!("{}: {e}", path.display()))?;
    run(ns.command("nft").arg("-f").arg(&path))?;
    // No conntrack tool: nothing to flush (fresh flows only).
    let _ = ns.command("conntrack").arg("-F").output();
    Ok(())
}

/// What a cloud's service controller does once a slot's load balancer exists: writes its address into
/// the status of Service `kubelink-gateway-<slot>` (`status.loadBalancer.ingress`), where the slot
/// holders read the endpoint they publish to shoots.
pub async fn assign_address(client: &kube::Client, namespace: &str, slot: usize, ip: &str) -> Result<(), String> {
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let name = format!("kubelink-gateway-{slot}");
    let status = serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}});
    services
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .map(|_| ())
        .map_err(|e| format!("Service {name}: writing its load-balancer address: {e}"))
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

/// Where each slot's load balancer sends now (a node IP, `None`: it drops), shared with the tests.
pub type Backends = Arc<Mutex<Vec<Option<String>>>>;

/// Follows the slot labels and the labelled Pods' readiness every 100 ms until `stop` is set.
/// `lbs[slot]` is the slot's namespace; `backends` gets what each load balancer sends to.
#[allow(clippy::too_many_arguments)]
pub fn follow(
    client: kube::Client,
    runtime: tokio::runtime::Handle,
    namespace: String,
    lbs: Vec<Arc<Netns>>,
    port: u16,
    node_ip_of_pod: NodeIpOf,
    backends: Backends,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let pods: Api<Pod> = Api::namespaced(client, &namespace);
        let mut probed: Vec<Probed> = vec![Probed::default(); lbs.len()];
        let mut current: Vec<Option<String>> = vec![None; lbs.len()];
        let mut first = true;
        while !stop.load(Ordering::Relaxed) {
            let list = runtime.block_on(pods.list(&Default::default())).map(|l| l.items).unwrap_or_default();
            for (slot, labelled) in targets(&list, lbs.len(), &*node_ip_of_pod).into_iter().enumerate() {
                let ok = labelled
                    .clone()
                    .is_some_and(|ip| lbs[slot].run_in(move || readyz(&ip)).ok().flatten() == Some(200));
                probed[slot] = std::mem::take(&mut probed[slot]).observe(labelled.as_deref(), ok);
                let target = probed[slot].backend().map(str::to_string);
                if first || target != current[slot] {
                    if let Err(e) = program(&lbs[slot], port, target.as_deref()) {
                        eprintln!("load balancer of slot {slot}: {e}");
                    }
                    current[slot] = target;
                }
            }
            *backends.lock().unwrap_or_else(|e| e.into_inner()) = current.clone();
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
    fn a_target_is_used_while_ready_as_a_service_uses_ready_endpoints() {
        let a = Some("10.0.0.1");
        // rows: why, probes in order (labelled node, /readyz answered 200), backend after the last
        type Probes<'a> = &'a [(Option<&'a str>, bool)];
        let rows: &[(&str, Probes, Option<&str>)] = &[
            ("ready after one answer", &[(a, true)], a),
            ("never ready: not used", &[(a, false)], None),
            ("one failed probe is tolerated", &[(a, true), (a, false)], a),
            ("failure threshold reached: taken out", &[(a, true), (a, false), (a, false)], None),
            ("back after one answer", &[(a, true), (a, false), (a, false), (a, true)], a),
            ("a new labelled node starts unready", &[(a, true), (Some("10.0.0.2"), false)], None),
            ("no labelled node: drop", &[(a, true), (None, false)], None),
        ];
        for (why, probes, want) in rows {
            let p = probes.iter().fold(Probed::default(), |p, (t, ok)| p.observe(*t, *ok));
            assert_eq!(p.backend(), *want, "{why}");
        }
    }

    #[test]
    fn script_dnats_and_masquerades_or_drops() {
        let s = lb_script(51820, Some("10.250.0.12"));
        assert!(s.contains("udp dport 51820 dnat to 10.250.0.12:51820") && s.contains("masquerade"));
        assert!(lb_script(51820, None).contains("udp dport 51820 drop"));
    }
}
