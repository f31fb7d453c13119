//! A stand-in for a cloud load balancer per gateway slot: a namespace that DNATs (and masquerades) UDP
//! to the ready endpoint of the slot Service's EndpointSlice (which the slot holder writes), as
//! kube-proxy and a cloud LB follow a Service's ready endpoints, while that node is ready itself, and
//! flushes stale flows when the target moves. Readiness is the agent's `/readyz`, probed over the LAN
//! from the load balancer's namespace like a load balancer's health check: ready after one answer
//! 200, unready after [`FAILURE_THRESHOLD`] failures in a row.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use kube::Api;
use kube::api::{Patch, PatchParams};

use crate::netns::{Netns, run};
use kubelink_ipam::contract::labels::SERVICE_NAME;

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
    /// After a probe of `target` (the slot's endpoint): a new target starts unready.
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

    /// Where the load balancer sends: the slot's endpoint while it is ready.
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

/// The address behind each slot: the first ready endpoint of the EndpointSlices of Service
/// `kubelink-gateway-<slot>` (by their service-name label, as kube-proxy finds them; an endpoint
/// without a ready condition counts as ready, as the API says).
pub fn targets(slices: &[EndpointSlice], slots: usize) -> Vec<Option<String>> {
    let target = |slot: usize| {
        let service = format!("kubelink-gateway-{slot}");
        let of_service =
            |s: &&EndpointSlice| s.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME)) == Some(&service);
        let ready = |e: &&Endpoint| e.conditions.as_ref().and_then(|c| c.ready) != Some(false);
        let endpoint = slices.iter().filter(of_service).flat_map(|s| &s.endpoints).find(ready)?;
        endpoint.addresses.first().cloned()
    };
    (0..slots).map(target).collect()
}

/// Where each slot's load balancer sends now (a node IP, `None`: it drops), shared with the tests.
pub type Backends = Arc<Mutex<Vec<Option<String>>>>;

/// Follows the slot EndpointSlices and their endpoints' readiness every 100 ms until `stop` is set.
/// `lbs[slot]` is the slot's namespace; `backends` gets what each load balancer sends to.
pub fn follow(
    client: kube::Client,
    runtime: tokio::runtime::Handle,
    namespace: String,
    lbs: Vec<Arc<Netns>>,
    port: u16,
    backends: Backends,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let slices: Api<EndpointSlice> = Api::namespaced(client, &namespace);
        let mut probed: Vec<Probed> = vec![Probed::default(); lbs.len()];
        let mut current: Vec<Option<String>> = vec![None; lbs.len()];
        let mut first = true;
        while !stop.load(Ordering::Relaxed) {
            let list = runtime.block_on(slices.list(&Default::default())).map(|l| l.items).unwrap_or_default();
            for (slot, endpoint) in targets(&list, lbs.len()).into_iter().enumerate() {
                let ok = endpoint
                    .clone()
                    .is_some_and(|ip| lbs[slot].run_in(move || readyz(&ip)).ok().flatten() == Some(200));
                probed[slot] = std::mem::take(&mut probed[slot]).observe(endpoint.as_deref(), ok);
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

    /// An EndpointSlice of Service `service` with endpoints (address, ready condition).
    fn slice(service: &str, endpoints: &[(&str, Option<bool>)]) -> EndpointSlice {
        let endpoints: Vec<serde_json::Value> = endpoints
            .iter()
            .map(|(ip, ready)| serde_json::json!({"addresses": [ip], "conditions": {"ready": ready}}))
            .collect();
        serde_json::from_value(serde_json::json!({"metadata": {"name": service, "labels": {SERVICE_NAME: service}},
            "addressType": "IPv4", "endpoints": endpoints}))
        .unwrap()
    }

    #[test]
    fn targets_follow_the_slot_services_ready_endpoints() {
        let slices = [
            slice("kubelink-gateway-1", &[("10.0.0.1", Some(true))]),
            slice("kubelink-gateway-0", &[("10.0.0.3", Some(false)), ("10.0.0.2", None)]),
            slice("other", &[("10.0.0.9", Some(true))]),
        ];
        assert_eq!(targets(&slices, 2), vec![Some("10.0.0.2".into()), Some("10.0.0.1".into())]);
        let given_up = [slice("kubelink-gateway-0", &[]), slice("kubelink-gateway-1", &[("10.0.0.1", Some(false))])];
        assert_eq!(targets(&given_up, 2), vec![None, None], "no endpoint, or none ready: drop");
        assert_eq!(targets(&slices[2..], 2), vec![None, None], "another Service's slice is not the slot's");
    }

    #[test]
    fn a_target_is_used_while_ready_as_a_service_uses_ready_endpoints() {
        let a = Some("10.0.0.1");
        // rows: why, probes in order (the slot's endpoint, /readyz answered 200), backend after the last
        type Probes<'a> = &'a [(Option<&'a str>, bool)];
        let rows: &[(&str, Probes, Option<&str>)] = &[
            ("ready after one answer", &[(a, true)], a),
            ("never ready: not used", &[(a, false)], None),
            ("one failed probe is tolerated", &[(a, true), (a, false)], a),
            ("failure threshold reached: taken out", &[(a, true), (a, false), (a, false)], None),
            ("back after one answer", &[(a, true), (a, false), (a, false), (a, true)], a),
            ("a new endpoint starts unready", &[(a, true), (Some("10.0.0.2"), false)], None),
            ("no endpoint: drop", &[(a, true), (None, false)], None),
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
