//! What shoots dial for a gateway slot (`host:port`): the form the extension controller accepts from
//! the seed's configuration, and the address a slot's LoadBalancer Service got from its cloud. Only
//! the extension controller decides a slot's endpoint; no node writes one.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Service, ServicePort};

/// `host:port` or `[v6]:port`, the form the shoot sidecar dials and re-resolves; why not otherwise.
pub fn check(value: &str) -> Result<(), String> {
    let value = value.trim();
    let (host, port) = value.rsplit_once(':').ok_or("write it as host:port, e.g. gw0.seed.example:51820")?;
    port.parse::<u16>().ok().filter(|p| *p != 0).ok_or("the port must be 1 to 65535")?;
    let bracketed = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    if bracketed.is_none() && host.contains(':') {
        return Err("an IPv6 address goes in brackets: [fd00::1]:51820".into());
    }
    let host = bracketed.unwrap_or(host);
    let valid_name = !host.is_empty()
        && host.len() <= 253
        && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == ':');
    if !valid_name {
        return Err("the host must be an IP address or a DNS name".into());
    }
    Ok(())
}

/// The Service port shoots dial: the one named `wireguard`, else the first UDP port.
fn service_port(svc: &Service) -> Option<u16> {
    let ports = svc.spec.as_ref()?.ports.as_ref()?;
    let udp = |p: &&ServicePort| p.protocol.as_deref() == Some("UDP");
    let port = ports.iter().find(|p| p.name.as_deref() == Some("wireguard")).or_else(|| ports.iter().find(udp))?;
    u16::try_from(port.port).ok().filter(|p| *p != 0)
}

/// The endpoint a LoadBalancer Service's status gives: its first usable ingress IP (or host name)
/// and its WireGuard port. `None` while the cloud has not assigned one, or when what it wrote is not
/// an endpoint.
pub fn of_load_balancer(svc: &Service) -> Option<String> {
    let ingress = svc.status.as_ref()?.load_balancer.as_ref()?.ingress.as_ref()?;
    let port = service_port(svc)?;
    ingress.iter().find_map(|i| {
        let host = i.ip.as_deref().filter(|s| !s.is_empty()).or(i.hostname.as_deref().filter(|s| !s.is_empty()))?;
        let endpoint = host_port(host, port);
        check(&endpoint).is_ok().then_some(endpoint)
    })
}

/// `host:port`, with an IPv6 literal in brackets.
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
    fn the_load_balancer_address_and_the_wireguard_port_are_the_endpoint() {
        let ip = service(wg_port(), json!([{"ip": "203.0.113.7"}]));
        assert_eq!(of_load_balancer(&ip).as_deref(), Some("203.0.113.7:51820"));
        let name = service(wg_port(), json!([{"hostname": "gw-0.elb.example.com"}]));
        assert_eq!(of_load_balancer(&name).as_deref(), Some("gw-0.elb.example.com:51820"));
        let v6 = service(json!([{"port": 4500, "protocol": "UDP"}]), json!([{"ip": "2001:db8::7"}]));
        assert_eq!(of_load_balancer(&v6).as_deref(), Some("[2001:db8::7]:4500"));
    }

    #[test]
    fn no_address_yet_or_garbage_is_no_endpoint() {
        assert!(of_load_balancer(&service(wg_port(), json!([]))).is_none(), "not assigned yet");
        assert!(of_load_balancer(&service(wg_port(), json!([{"ip": ""}]))).is_none());
        assert!(of_load_balancer(&service(wg_port(), json!([{"hostname": "bad host!"}]))).is_none());
        let tcp_only = service(json!([{"port": 443, "protocol": "TCP"}]), json!([{"ip": "203.0.113.7"}]));
        assert!(of_load_balancer(&tcp_only).is_none(), "no UDP port to dial");
        let no_status: Service = serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap();
        assert!(of_load_balancer(&no_status).is_none());
        // The first usable ingress wins.
        let second = service(wg_port(), json!([{"hostname": "bad host!"}, {"ip": "198.51.100.1"}]));
        assert_eq!(of_load_balancer(&second).as_deref(), Some("198.51.100.1:51820"));
    }

    #[test]
    fn configured_endpoints_are_host_and_port() {
        for ok in ["gw0.seed.example:51820", "203.0.113.7:1", "[fd00::1]:51821", " gw:2 "] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("gw0", "host:port"),
            ("gw0:0", "1 to 65535"),
            ("gw0:x", "1 to 65535"),
            (":51820", "IP address or a DNS name"),
            ("bad host!:1", "IP address or a DNS name"),
            ("fd00::1:51820", "brackets"),
        ] {
            let e = check(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
