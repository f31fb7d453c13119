//! Reading and writing kernel routes of kubelink's protocol with rtnetlink.

use std::net::IpAddr;

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol};
use rtnetlink::{Handle, RouteMessageBuilder};

use super::{Route, RoutePlan};

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("route {route}: {op}: {source}{hint}")]
    Netlink { route: String, op: &'static str, source: Box<rtnetlink::Error>, hint: &'static str },
    #[error("route {0}: {1}")]
    Invalid(String, String),
}

/// Routes of one protocol number, in the network namespace of the netlink handle.
#[derive(Clone)]
pub struct Routes {
    handle: Handle,
    protocol: u8,
}

impl Routes {
    pub fn new(handle: Handle, protocol: u8) -> Self {
        Self { handle, protocol }
    }

    /// All routes of our protocol, IPv4 and IPv6, in every table.
    pub async fn ours(&self) -> Result<Vec<Route>, RouteError> {
        let mut found = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut query = RouteMessage::default();
            query.header.address_family = family;
            let msgs: Vec<RouteMessage> =
                self.handle.route().get(query).execute().try_collect().await.map_err(|source| RouteError::Netlink {
                    route: "*".into(),
                    op: "list",
                    source: source.into(),
                    hint: "",
                })?;
            found.extend(
                msgs.iter().filter(|m| m.header.protocol == RouteProtocol::Other(self.protocol)).filter_map(parse),
            );
        }
        Ok(found)
    }

    /// Applies a plan: removals first (they may free a destination), then replaces.
    /// Keeps going after a failure and reports all failures together.
    pub async fn apply(&self, plan: &RoutePlan) -> Result<(), Vec<RouteError>> {
        let mut errors = Vec::new();
        for r in &plan.remove {
            if let Err(e) = self.remove(r).await {
                errors.push(e);
            }
        }
        for r in &plan.replace {
            if let Err(e) = self.replace(r).await {
                errors.push(e);
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    pub async fn replace(&self, r: &Route) -> Result<(), RouteError> {
        let msg = self.message(r)?;
        self.handle.route().add(msg).replace().execute().await.map_err(|source| {
            let hint = if matches!(&source, rtnetlink::Error::NetlinkError(e) if e.raw_code() == -libc::ENETUNREACH) {
                " (the gateway is not on a directly connected network of this node)"
            } else {
                ""
            };
            RouteError::Netlink { route: describe(r), op: "replace", source: source.into(), hint }
        })
    }

    pub async fn remove(&self, r: &Route) -> Result<(), RouteError> {
        let msg = self.message(r)?;
        match self.handle.route().del(msg).execute().await {
            // Already gone is what we wanted.
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ESRCH => Ok(()),
            other => other.map_err(|source| RouteError::Netlink {
                route: describe(r),
                op: "delete",
                source: source.into(),
                hint: "",
            }),
        }
    }

    fn message(&self, r: &Route) -> Result<RouteMessage, RouteError> {
        let mut b = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(r.destination.addr(), r.destination.prefix_len())
            .map_err(|e| RouteError::Invalid(describe(r), e.to_string()))?
            .table_id(r.table)
            .protocol(RouteProtocol::Other(self.protocol));
        if let Some(gw) = r.gateway {
            b = b.gateway(gw).map_err(|e| RouteError::Invalid(describe(r), e.to_string()))?;
        }
        if let Some(oif) = r.oif {
            b = b.output_interface(oif);
        }
        Ok(b.build())
    }
}

fn describe(r: &Route) -> String {
    let via = r.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
    let dev = r.oif.map(|i| format!(" oif {i}")).unwrap_or_default();
    format!("{}{via}{dev} table {}", r.destination, r.table)
}

fn parse(msg: &RouteMessage) -> Option<Route> {
    let mut dst = None;
    let mut route =
        Route { destination: "0.0.0.0/0".parse().ok()?, table: u32::from(msg.header.table), gateway: None, oif: None };
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(a) => dst = ip(a),
            RouteAttribute::Gateway(a) => route.gateway = ip(a),
            RouteAttribute::Oif(i) => route.oif = Some(*i),
            RouteAttribute::Table(t) => route.table = *t,
            _ => {}
        }
    }
    let dst = dst.unwrap_or(match msg.header.address_family {
        AddressFamily::Inet6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
    });
    route.destination = IpNet::new(dst, msg.header.destination_prefix_length).ok()?;
    Some(route)
}

fn ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}
