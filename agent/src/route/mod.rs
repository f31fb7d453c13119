//! Routes kubelink owns: every route it installs carries its own route protocol number, so it can find
//! and remove exactly its own routes (also after a crash) and never touches anyone else's.

mod apply;

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

pub use apply::{RouteError, Routes};

/// kubelink's route protocol number (`ip route show proto 107`); "k" in ASCII.
pub const DEFAULT_PROTOCOL: u8 = 107;
/// The main routing table.
pub const MAIN_TABLE: u32 = 254;

/// A route as kubelink wants it, with the device already resolved to its index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    pub destination: IpNet,
    pub table: u32,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
}

impl Route {
    fn key(&self) -> (IpNet, u32) {
        (self.destination, self.table)
    }

    /// Whether a route read back from the kernel is this one. The kernel fills in the device of a
    /// gateway route, so an unset device matches any.
    fn satisfied_by(&self, have: &Route) -> bool {
        self.gateway == have.gateway && (self.oif.is_none() || self.oif == have.oif)
    }
}

/// What to do to the kernel's routes of our protocol.
#[derive(Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct RoutePlan {
    /// Installed with replace: covers both new routes and changed next hops.
    pub replace: Vec<Route>,
    pub remove: Vec<Route>,
}

impl RoutePlan {
    pub fn is_empty(&self) -> bool {
        self.replace.is_empty() && self.remove.is_empty()
    }
}

/// Diffs desired routes against the kernel's routes that carry our protocol number.
pub fn plan(desired: &[Route], ours: &[Route]) -> RoutePlan {
    let want: BTreeMap<_, _> = desired.iter().map(|r| (r.key(), *r)).collect();
    let have: BTreeMap<_, _> = ours.iter().map(|r| (r.key(), *r)).collect();
    RoutePlan {
        replace: want
            .iter()
            .filter(|(k, r)| !have.get(*k).is_some_and(|h| r.satisfied_by(h)))
            .map(|(_, r)| *r)
            .collect(),
        remove: have.iter().filter(|(k, _)| !want.contains_key(*k)).map(|(_, r)| *r).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(dst: &str, gw: Option<&str>, oif: Option<u32>) -> Route {
        Route { destination: dst.parse().unwrap(), table: MAIN_TABLE, gateway: gw.map(|g| g.parse().unwrap()), oif }
    }

    #[test]
    fn nothing_to_do_when_equal() {
        let routes = vec![route("192.168.128.0/22", Some("10.0.0.1"), None)];
        assert!(plan(&routes, &routes).is_empty());
    }

    #[test]
    fn missing_is_added_changed_is_replaced_stale_is_removed() {
        let desired = vec![route("192.168.128.0/22", Some("10.0.0.2"), None), route("192.168.132.0/24", None, Some(7))];
        let ours =
            vec![route("192.168.128.0/22", Some("10.0.0.1"), None), route("10.1.0.0/16", Some("10.0.0.1"), None)];
        let p = plan(&desired, &ours);
        assert_eq!(p.replace, desired);
        assert_eq!(p.remove, vec![route("10.1.0.0/16", Some("10.0.0.1"), None)]);
    }

    #[test]
    fn kernel_filled_device_is_not_a_difference() {
        let want = route("192.168.128.0/22", Some("10.0.0.1"), None);
        let have = route("192.168.128.0/22", Some("10.0.0.1"), Some(3));
        assert!(plan(&[want], &[have]).is_empty());
        let moved = route("192.168.128.0/22", Some("10.0.0.1"), Some(4));
        assert_eq!(plan(&[moved], &[have]).replace, vec![moved]);
    }

    #[test]
    fn same_destination_in_another_table_is_another_route() {
        let mut other = route("192.168.128.0/22", Some("10.0.0.1"), None);
        other.table = 100;
        let p = plan(&[route("192.168.128.0/22", Some("10.0.0.1"), None)], &[other]);
        assert_eq!(p.replace.len(), 1);
        assert_eq!(p.remove, vec![other]);
    }

    #[test]
    fn ipv6_routes_plan_the_same_way() {
        let desired = vec![route("fd00:128::/64", Some("fd00::1"), None)];
        assert_eq!(plan(&desired, &[]).replace, desired);
        assert_eq!(plan(&[], &desired).remove, desired);
    }
}
