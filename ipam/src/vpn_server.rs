//! Where a shoot's VPN connection goes: the address of its own control plane's VPN server, the
//! vpn-seed-server Pod of the shoot's control-plane namespace, as the EndpointSlices of Gardener's
//! Service `vpn-seed-server` list it. The gateway translates the shoot's connection to exactly this
//! address (ShootPeer `spec.vpnServer`, agent `firewall::plan`). A Pod address and not the Service's
//! cluster IP: a connection is translated once per direction (the gateway's DNAT), and kube-proxy's
//! rules would not translate a cluster IP again after it.

use std::net::IpAddr;

use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Gardener's Service of the VPN server in a shoot's control-plane namespace
/// (`pkg/component/networking/vpn/seedserver`), and the label its EndpointSlices carry.
pub const SERVICE: &str = "vpn-seed-server";
pub const SERVICE_LABEL: &str = "kubernetes.io/service-name";

/// The label selector of the EndpointSlices of every shoot's VPN server.
pub fn selector() -> String {
    format!("{SERVICE_LABEL}={SERVICE}")
}

/// The VPN server's address of the CIDR's family (`ipv4`), from the Service's EndpointSlices: the
/// lowest address of a ready endpoint, so that every reconcile picks the same one while a rollout
/// briefly runs two servers. `None` while no server is ready: the shoot's VPN connection is dropped
/// like anything else it opens, rather than sent to a server that is going away.
pub fn of_slices<'a>(slices: impl IntoIterator<Item = &'a EndpointSlice>, ipv4: bool) -> Option<IpAddr> {
    let family = if ipv4 { "IPv4" } else { "IPv6" };
    slices
        .into_iter()
        .filter(|s| s.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_LABEL)).is_some_and(|n| n == SERVICE))
        .filter(|s| s.address_type == family)
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .flat_map(|e| e.addresses.iter())
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .filter(|a| a.is_ipv4() == ipv4)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(service: &str, family: &str, endpoints: &[(&str, Option<bool>)]) -> EndpointSlice {
        let endpoints: Vec<serde_json::Value> = endpoints
            .iter()
            .map(|(a, ready)| serde_json::json!({"addresses": [a], "conditions": {"ready": ready}}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("{service}-x"), "labels": {SERVICE_LABEL: service}},
            "addressType": family, "endpoints": endpoints
        }))
        .unwrap()
    }

    #[test]
    fn the_lowest_ready_address_of_the_vpn_servers_slices_of_the_family() {
        let slices = [
            slice(SERVICE, "IPv4", &[("100.64.0.9", Some(true)), ("100.64.0.7", Some(false)), ("x", Some(true))]),
            slice(SERVICE, "IPv4", &[("100.64.0.8", None)]),
            slice("kube-apiserver", "IPv4", &[("100.64.0.1", Some(true))]),
            slice(SERVICE, "IPv6", &[("fd00::7", Some(true))]),
        ];
        assert_eq!(of_slices(&slices, true), Some("100.64.0.8".parse().unwrap()), "unknown readiness counts as ready");
        assert_eq!(of_slices(&slices, false), Some("fd00::7".parse().unwrap()));
        assert_eq!(of_slices(&slices[..0], true), None);
        let not_ready = [slice(SERVICE, "IPv4", &[("100.64.0.9", Some(false))])];
        assert_eq!(of_slices(&not_ready, true), None, "no ready server: no translation");
    }
}
