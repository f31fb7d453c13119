//! The underlay paths that MTU `auto` reads ([`crate::mtu`]): the routes towards the peers' pinned
//! endpoints; without any, the default routes of the main table; without those (a node that reaches
//! its peers only on directly connected networks), the node's other links that carry a global
//! address. The tunnel device and loopback never count. Reading is thin; choosing is pure ([`paths`]).

use std::collections::BTreeMap;
use std::net::IpAddr;

use futures::TryStreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressMessage, AddressScope};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{RouteAttribute, RouteHeader, RouteMessage, RouteMetric, RouteType};
use rtnetlink::{Handle, RouteMessageBuilder};

use crate::link::LinkError;
use crate::mtu::UnderlayPath;

/// Endpoints looked up per pass at most: a standalone file may pin many; the narrowest of the first
/// few is a good enough guess and keeps a pass cheap.
const MAX_ENDPOINTS: usize = 16;

/// A link as the underlay sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub name: String,
    pub mtu: u32,
    pub usable: bool,
}

/// A route's way out: family, output link, and its own MTU metric (a path MTU learned or set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteOut {
    pub ipv6: bool,
    pub oif: u32,
    pub mtu: Option<u32>,
}

/// The paths of `routes` over usable links other than `tunnel`; a route's own MTU wins over its link's.
pub fn paths(routes: &[RouteOut], links: &BTreeMap<u32, LinkInfo>, tunnel: &str) -> Vec<UnderlayPath> {
    let mut out: Vec<UnderlayPath> = routes
        .iter()
        .filter_map(|r| {
            let link = links.get(&r.oif).filter(|l| l.usable && l.name != tunnel)?;
            Some(UnderlayPath { ipv6: r.ipv6, mtu: r.mtu.map_or(link.mtu, |m| m.min(link.mtu)) })
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The underlay paths for a tunnel device `tunnel` whose peers pin `endpoints`.
pub async fn read(handle: &Handle, endpoints: &[IpAddr], tunnel: &str) -> Result<Vec<UnderlayPath>, LinkError> {
    let links = links(handle).await?;
    let mut routes = Vec::new();
    for ip in endpoints.iter().take(MAX_ENDPOINTS) {
        // An endpoint without a route (yet) is simply not a path.
        if let Some(r) = route_to(handle, *ip).await {
            routes.push(r);
        }
    }
    let mut found = paths(&routes, &links, tunnel);
    if found.is_empty() {
        found = paths(&default_routes(handle).await?, &links, tunnel);
    }
    if found.is_empty() {
        found = paths(&addressed_links(handle).await?, &links, tunnel);
    }
    Ok(found)
}

fn netlink(op: &'static str) -> impl FnOnce(rtnetlink::Error) -> LinkError {
    move |source| LinkError::Netlink { name: "*".into(), op, source: source.into() }
}

async fn links(handle: &Handle) -> Result<BTreeMap<u32, LinkInfo>, LinkError> {
    let msgs: Vec<LinkMessage> = handle.link().get().execute().try_collect().await.map_err(netlink("list links"))?;
    Ok(msgs.iter().map(|m| (m.header.index, link_info(m))).collect())
}

fn link_info(msg: &LinkMessage) -> LinkInfo {
    let flags = msg.header.flags;
    let usable = flags.contains(LinkFlags::Up) && !flags.contains(LinkFlags::Loopback);
    let mut info = LinkInfo { name: String::new(), mtu: 0, usable };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => info.name = n.clone(),
            LinkAttribute::Mtu(m) => info.mtu = *m,
            _ => {}
        }
    }
    info
}

async fn route_to(handle: &Handle, ip: IpAddr) -> Option<RouteOut> {
    let prefix = if ip.is_ipv4() { 32 } else { 128 };
    let query = RouteMessageBuilder::<IpAddr>::new().destination_prefix(ip, prefix).ok()?.build();
    let msg = handle.route().get(query).execute().try_next().await.ok()??;
    route_out(&msg)
}

async fn default_routes(handle: &Handle) -> Result<Vec<RouteOut>, LinkError> {
    let mut found = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut query = RouteMessage::default();
        query.header.address_family = family;
        let msgs: Vec<RouteMessage> =
            handle.route().get(query).execute().try_collect().await.map_err(netlink("list routes"))?;
        found.extend(msgs.iter().filter(|m| is_main_default(m)).filter_map(route_out));
    }
    Ok(found)
}

fn is_main_default(msg: &RouteMessage) -> bool {
    let h = &msg.header;
    let table = msg.attributes.iter().find_map(|a| match a {
        RouteAttribute::Table(t) => Some(*t),
        _ => None,
    });
    h.destination_prefix_length == 0
        && h.kind == RouteType::Unicast
        && table.unwrap_or(u32::from(h.table)) == u32::from(RouteHeader::RT_TABLE_MAIN)
}

fn route_out(msg: &RouteMessage) -> Option<RouteOut> {
    let ipv6 = msg.header.address_family == AddressFamily::Inet6;
    let mut out = RouteOut { ipv6, oif: 0, mtu: None };
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Oif(i) => out.oif = *i,
            RouteAttribute::Metrics(ms) => {
                out.mtu = ms.iter().find_map(|m| if let RouteMetric::Mtu(v) = m { Some(*v) } else { None })
            }
            _ => {}
        }
    }
    (out.oif != 0).then_some(out)
}

/// Links with a global address, as routes out of them (one per family).
async fn addressed_links(handle: &Handle) -> Result<Vec<RouteOut>, LinkError> {
    let msgs: Vec<AddressMessage> =
        handle.address().get().execute().try_collect().await.map_err(netlink("list addresses"))?;
    Ok(msgs
        .iter()
        .filter(|m| m.header.scope == AddressScope::Universe)
        .map(|m| RouteOut { ipv6: m.header.family == AddressFamily::Inet6, oif: m.header.index, mtu: None })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links() -> BTreeMap<u32, LinkInfo> {
        let link = |name: &str, mtu, usable| LinkInfo { name: name.into(), mtu, usable };
        [(1, link("lo", 65536, false)), (2, link("eth0", 1500, true)), (3, link("kubelink0", 1420, true))]
            .into_iter()
            .chain([(4, link("eth1", 1280, false))])
            .collect()
    }

    #[test]
    fn paths_skip_the_tunnel_loopback_and_links_that_are_down() {
        let r = |oif, mtu| RouteOut { ipv6: false, oif, mtu };
        let got = paths(&[r(1, None), r(2, None), r(3, None), r(4, None), r(9, None)], &links(), "kubelink0");
        assert_eq!(got, vec![UnderlayPath { ipv6: false, mtu: 1500 }]);
    }

    #[test]
    fn a_route_mtu_below_its_link_wins_and_duplicates_fold() {
        let r = |ipv6, mtu| RouteOut { ipv6, oif: 2, mtu };
        let got = paths(&[r(false, Some(1400)), r(false, Some(1400)), r(true, Some(9000))], &links(), "kubelink0");
        assert_eq!(got, vec![UnderlayPath { ipv6: false, mtu: 1400 }, UnderlayPath { ipv6: true, mtu: 1500 }]);
    }

    #[test]
    fn only_unicast_defaults_of_the_main_table_count() {
        let mut m = RouteMessage::default();
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.kind = RouteType::Unicast;
        assert!(is_main_default(&m));
        m.attributes.push(RouteAttribute::Table(100));
        assert!(!is_main_default(&m), "another table");
        m.attributes.clear();
        m.header.destination_prefix_length = 8;
        assert!(!is_main_default(&m), "not a default");
        m.header.destination_prefix_length = 0;
        m.header.kind = RouteType::Unreachable;
        assert!(!is_main_default(&m), "unreachable default");
    }
}
