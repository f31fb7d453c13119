//! What a slot holder reads and publishes about its slot: the private key from the slot Secret, and
//! the endpoint shoots dial. The endpoint is, in this order, the one configured for the slot
//! (`--slot-endpoints`), the address the slot's LoadBalancer Service got from its cloud
//! (`status.loadBalancer.ingress`), or the node's own IP and listen port. The holder reads both again
//! every [`RECHECK`]: a cloud assigns the load balancer's address minutes after the Service is created,
//! and a rotated key (the Secret deleted, the IPAM writing a new one) reaches the device without a
//! restart.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use kubelink_contract::Slot;
use kubelink_contract::keys::PrivateKey;

use crate::endpoint::Endpoint;

/// How often a holder reads its slot Secret and Service again.
pub const RECHECK: Duration = Duration::from_secs(15);
/// How long such a re-read may take before the key in use is kept until the next one.
pub const RECHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The slot this node holds, its key and the endpoint published for it.
/// `Debug` shows the key as its redacted form ([`PrivateKey`]'s own).
#[derive(Clone, Debug)]
pub struct HeldSlot {
    pub slot: Slot,
    pub key: PrivateKey,
    pub endpoint: String,
    pub checked: Instant,
}

impl HeldSlot {
    /// Whether `slot`'s key can be used as read, without asking the API server.
    pub fn fresh_for(&self, slot: Slot, now: Instant) -> bool {
        self.slot == slot && now.saturating_duration_since(self.checked) < RECHECK
    }
}

/// The Service port shoots dial: the one named `wireguard`, else the first UDP port.
fn service_port(svc: &Service) -> Option<u16> {
    let ports = svc.spec.as_ref()?.ports.as_ref()?;
    let udp = |p: &&k8s_openapi::api::core::v1::ServicePort| p.protocol.as_deref() == Some("UDP");
    let port = ports.iter().find(|p| p.name.as_deref() == Some("wireguard")).or_else(|| ports.iter().find(udp))?;
    u16::try_from(port.port).ok().filter(|p| *p != 0)
}

/// The endpoint a LoadBalancer Service's status publishes: its first ingress IP (or host name) and
/// its WireGuard port. `None` while the cloud has not assigned one, or when what it wrote is not an
/// endpoint.
pub fn lb_endpoint(svc: &Service) -> Option<Endpoint> {
    let ingress = svc.status.as_ref()?.load_balancer.as_ref()?.ingress.as_ref()?;
    let port = service_port(svc)?;
    ingress.iter().find_map(|i| {
        let host = i.ip.as_deref().filter(|s| !s.is_empty()).or(i.hostname.as_deref().filter(|s| !s.is_empty()))?;
        host_port(host, port).parse().ok()
    })
}

/// What shoots dial for a slot: configured, else the load balancer's, else the node's own.
/// `node` is the node's IP as the downward API gives it; an IPv6 one is bracketed.
pub fn choose_endpoint(configured: Option<&str>, load_balancer: Option<&Endpoint>, node: &str, port: u16) -> String {
    if let Some(c) = configured {
        return c.to_string();
    }
    if let Some(lb) = load_balancer {
        return lb.to_string();
    }
    host_port(node, port)
}

/// `host:port`, with an IPv6 literal in brackets, as [`Endpoint`] parses it.
fn host_port(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        Ok(ip) => std::net::SocketAddr::new(ip, port).to_string(),
        Err(_) => format!("{host}:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(ports: serde_json::Value, ingress: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "kubelink-gateway-0"},
            "spec": {"type": "LoadBalancer", "ports": ports},
            "status": {"loadBalancer": {"ingress": ingress}},
        }))
        .unwrap()
    }

    fn wg_port() -> serde_json::Value {
        json!([{"name": "metrics", "port": 8093, "protocol": "TCP"}, {"name": "wireguard", "port": 51820, "protocol": "UDP"}])
    }

    #[test]
    fn the_load_balancer_address_and_the_wireguard_port_are_published() {
        let ip = service(wg_port(), json!([{"ip": "203.0.113.7"}]));
        assert_eq!(lb_endpoint(&ip).unwrap().to_string(), "203.0.113.7:51820");
        let name = service(wg_port(), json!([{"hostname": "gw-0.elb.example.com"}]));
        assert_eq!(lb_endpoint(&name).unwrap().to_string(), "gw-0.elb.example.com:51820");
        let v6 = service(json!([{"port": 4500, "protocol": "UDP"}]), json!([{"ip": "2001:db8::7"}]));
        assert_eq!(lb_endpoint(&v6).unwrap().to_string(), "[2001:db8::7]:4500");
    }

    #[test]
    fn no_address_yet_or_garbage_publishes_nothing() {
        assert!(lb_endpoint(&service(wg_port(), json!([]))).is_none(), "not assigned yet");
        assert!(lb_endpoint(&service(wg_port(), json!([{"ip": ""}]))).is_none());
        assert!(lb_endpoint(&service(wg_port(), json!([{"hostname": "bad host!"}]))).is_none());
        let tcp_only = service(json!([{"port": 443, "protocol": "TCP"}]), json!([{"ip": "203.0.113.7"}]));
        assert!(lb_endpoint(&tcp_only).is_none(), "no UDP port to dial");
        let no_status: Service = serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap();
        assert!(lb_endpoint(&no_status).is_none());
        // The first usable ingress wins.
        let second = service(wg_port(), json!([{"hostname": "bad host!"}, {"ip": "198.51.100.1"}]));
        assert_eq!(lb_endpoint(&second).unwrap().to_string(), "198.51.100.1:51820");
    }

    #[test]
    fn configured_beats_the_load_balancer_which_beats_the_node() {
        let lb: Endpoint = "203.0.113.7:51820".parse().unwrap();
        let node = "10.0.0.5";
        assert_eq!(choose_endpoint(Some("gw.example.org:51820"), Some(&lb), node, 51820), "gw.example.org:51820");
        assert_eq!(choose_endpoint(None, Some(&lb), node, 51820), "203.0.113.7:51820");
        assert_eq!(choose_endpoint(None, None, node, 51820), "10.0.0.5:51820");
        assert_eq!(choose_endpoint(None, None, "fd00::5", 51820), "[fd00::5]:51820");
    }

    #[test]
    fn a_held_key_is_read_again_after_the_recheck_period_or_for_another_slot() {
        let now = Instant::now();
        let held = HeldSlot { slot: Slot::ALL[0], key: PrivateKey::generate(), endpoint: "e:1".into(), checked: now };
        assert!(held.fresh_for(Slot::ALL[0], now + RECHECK / 2));
        assert!(!held.fresh_for(Slot::ALL[0], now + RECHECK));
        assert!(!held.fresh_for(Slot::ALL[1], now));
    }
}
