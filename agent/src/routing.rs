//! Where seed nodes send shoot traffic: the router role's desired routes, computed purely from the
//! live gateways and the shoots' tunnel addresses.
//!
//! One gateway: one route for the whole WireGuard CIDR to the gateway node. Two gateways (GEP-14 HA):
//! one /32 per shoot to the gateway of the slot the shoot prefers (even last address byte -> slot 0,
//! odd -> slot 1), or to the other gateway when that slot has none. Both gateways peer with every
//! shoot, so either can carry any shoot; the preference only spreads the load. A gateway node routes
//! through its own device (the device address's connected route) and gets none of these routes.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::RouteSpec;
use crate::route::MAIN_TABLE;

/// The slot a shoot prefers: its address's last byte's parity.
pub fn preferred_slot(shoot: IpAddr) -> usize {
    let last = match shoot {
        IpAddr::V4(v4) => v4.octets()[3],
        IpAddr::V6(v6) => v6.octets()[15],
    };
    usize::from(last % 2)
}

/// Routes for a non-gateway node. `gateways` lists (slot, node IP) of live gateways.
pub fn router_routes(cidr: IpNet, gateways: &[(usize, IpAddr)], shoots: &[IpAddr]) -> Vec<RouteSpec> {
    let route =
        |destination, gateway| RouteSpec { destination, gateway: Some(gateway), device: None, table: MAIN_TABLE };
    match gateways {
        [] => vec![],
        [(_, only)] => vec![route(cidr, *only)],
        _ => shoots
            .iter()
            .filter(|s| cidr.contains(*s))
            .map(|s| {
                let via = gateways.iter().find(|(slot, _)| *slot == preferred_slot(*s)).unwrap_or(&gateways[0]).1;
                route(IpNet::from(*s), via)
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cidr() -> IpNet {
        "192.168.128.0/22".parse().unwrap()
    }

    fn shoots() -> Vec<IpAddr> {
        ["192.168.128.10", "192.168.128.11", "192.168.129.4", "192.168.129.7"].iter().map(|s| ip(s)).collect()
    }

    #[test]
    fn single_gateway_gets_one_route_for_the_cidr() {
        let r = router_routes(cidr(), &[(0, ip("10.250.0.11"))], &shoots());
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].destination, r[0].gateway), (cidr(), Some(ip("10.250.0.11"))));
    }

    #[test]
    fn two_gateways_split_by_parity() {
        let r = router_routes(cidr(), &[(0, ip("10.250.0.11")), (1, ip("10.250.0.12"))], &shoots());
        let via: Vec<(String, String)> =
            r.iter().map(|r| (r.destination.to_string(), r.gateway.unwrap().to_string())).collect();
        assert_eq!(
            via,
            [
                ("192.168.128.10/32", "10.250.0.11"),
                ("192.168.128.11/32", "10.250.0.12"),
                ("192.168.129.4/32", "10.250.0.11"),
                ("192.168.129.7/32", "10.250.0.12")
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
    }

    #[test]
    fn a_lost_slot_moves_its_shoots_to_the_survivor_and_back() {
        let both = [(0, ip("10.250.0.11")), (1, ip("10.250.0.12"))];
        // Slot 0 lost: with one live gateway the whole CIDR goes to it.
        let r = router_routes(cidr(), &both[1..], &shoots());
        assert_eq!((r.len(), r[0].gateway), (1, Some(ip("10.250.0.12"))));
        // Slot 0 back: the split returns.
        assert_eq!(router_routes(cidr(), &both, &shoots()).len(), 4);
    }

    #[test]
    fn no_gateway_no_routes_and_foreign_addresses_ignored() {
        assert!(router_routes(cidr(), &[], &shoots()).is_empty());
        let r = router_routes(cidr(), &[(0, ip("10.0.0.1")), (1, ip("10.0.0.2"))], &[ip("10.9.9.9")]);
        assert!(r.is_empty());
    }
}
