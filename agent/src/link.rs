//! Links and addresses over rtnetlink: find, create, delete, bring up, MTU, addresses. The address diff
//! is pure ([`plan_addresses`]); everything else is a thin call.

use std::collections::BTreeSet;
use std::net::IpAddr;

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::{Handle, LinkUnspec, LinkWireguard};

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("opening a netlink socket: {0} (kubelink needs CAP_NET_ADMIN in the node's network namespace)")]
    Socket(std::io::Error),
    #[error("link {name}: {op}: {source}")]
    Netlink { name: String, op: &'static str, source: Box<rtnetlink::Error> },
    #[error("link {0} does not exist")]
    Missing(String),
}

fn nl<'a>(name: &'a str, op: &'static str) -> impl FnOnce(rtnetlink::Error) -> LinkError + 'a {
    move |source| LinkError::Netlink { name: name.to_string(), op, source: source.into() }
}

/// What kubelink needs to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    pub index: u32,
    pub kind: Option<String>,
    pub mtu: Option<u32>,
    pub up: bool,
}

/// A handle to rtnetlink in the network namespace of the thread that opened it.
#[derive(Clone)]
pub struct Link {
    handle: Handle,
}

impl Link {
    /// Opens a netlink connection; must be called inside a tokio runtime.
    pub fn open() -> Result<Self, LinkError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(LinkError::Socket)?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    pub async fn get(&self, name: &str) -> Result<Option<LinkState>, LinkError> {
        let mut stream = self.handle.link().get().match_name(name.to_string()).execute();
        match stream.try_next().await {
            Ok(Some(msg)) => Ok(Some(link_state(&msg))),
            Ok(None) => Ok(None),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
            Err(e) => Err(nl(name, "get")(e)),
        }
    }

    pub async fn index(&self, name: &str) -> Result<u32, LinkError> {
        self.get(name).await?.map(|l| l.index).ok_or_else(|| LinkError::Missing(name.to_string()))
    }

    pub async fn create_wireguard(&self, name: &str) -> Result<(), LinkError> {
        self.handle
            .link()
            .add(LinkWireguard::new(name).build())
            .execute()
            .await
            .map_err(nl(name, "create wireguard link"))
    }

    /// Checks that the kernel can create a WireGuard link, with a throw-away one.
    pub async fn probe_wireguard(&self) -> Result<(), LinkError> {
        let name = format!("klprobe{}", std::process::id() % 100_000);
        self.create_wireguard(&name).await?;
        let index = self.index(&name).await?;
        self.delete(&name, index).await
    }

    pub async fn delete(&self, name: &str, index: u32) -> Result<(), LinkError> {
        self.handle.link().del(index).execute().await.map_err(nl(name, "delete"))
    }

    /// Deletes the link if it exists; true when something was deleted.
    pub async fn delete_by_name(&self, name: &str) -> Result<bool, LinkError> {
        match self.get(name).await? {
            Some(l) => self.delete(name, l.index).await.map(|_| true),
            None => Ok(false),
        }
    }

    /// Brings the link up and sets its MTU, touching only what differs.
    pub async fn ensure_up(&self, name: &str, mtu: Option<u32>) -> Result<(), LinkError> {
        let state = self.get(name).await?.ok_or_else(|| LinkError::Missing(name.to_string()))?;
        let mtu_change = mtu.filter(|m| state.mtu != Some(*m));
        if state.up && mtu_change.is_none() {
            return Ok(());
        }
        let mut msg = LinkUnspec::new_with_index(state.index).up();
        if let Some(m) = mtu_change {
            msg = msg.mtu(m);
        }
        self.handle.link().set(msg.build()).execute().await.map_err(nl(name, "set up/mtu"))
    }

    pub async fn addresses(&self, name: &str, index: u32) -> Result<Vec<IpNet>, LinkError> {
        let msgs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(nl(name, "list addresses"))?;
        Ok(msgs.iter().filter_map(address_net).collect())
    }

    /// Makes the link's addresses exactly `want` (IPv6 link-local ones are the kernel's and stay).
    pub async fn ensure_addresses(&self, name: &str, want: &BTreeSet<IpNet>) -> Result<(), LinkError> {
        let index = self.index(name).await?;
        let have = self.addresses(name, index).await?;
        let (add, remove) = plan_addresses(want, &have);
        for net in remove {
            self.del_address(name, index, net).await?;
        }
        for net in add {
            self.handle
                .address()
                .add(index, net.addr(), net.prefix_len())
                .replace()
                .execute()
                .await
                .map_err(nl(name, "add address"))?;
        }
        Ok(())
    }

    /// The names of the links that carry `ip` (the node's own link, for [`crate::pod_scope`]).
    pub async fn links_with_address(&self, ip: IpAddr) -> Result<BTreeSet<String>, LinkError> {
        let msgs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_address_filter(ip)
            .execute()
            .try_collect()
            .await
            .map_err(nl("*", "find address"))?;
        let mut names = BTreeSet::new();
        for index in msgs.iter().filter(|m| address_net(m).is_some_and(|n| n.addr() == ip)).map(|m| m.header.index) {
            let mut links = self.handle.link().get().match_index(index).execute();
            if let Ok(Some(msg)) = links.try_next().await {
                names.extend(msg.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfName(n) => Some(n.clone()),
                    _ => None,
                }));
            }
        }
        Ok(names)
    }

    async fn del_address(&self, name: &str, index: u32, net: IpNet) -> Result<(), LinkError> {
        let msgs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(net.addr())
            .execute()
            .try_collect()
            .await
            .map_err(nl(name, "find address"))?;
        for msg in msgs {
            self.handle.address().del(msg).execute().await.map_err(nl(name, "delete address"))?;
        }
        Ok(())
    }
}

/// Addresses to add and to remove so that a link ends up with exactly `want`.
pub fn plan_addresses(want: &BTreeSet<IpNet>, have: &[IpNet]) -> (Vec<IpNet>, Vec<IpNet>) {
    let have: BTreeSet<IpNet> = have.iter().copied().filter(|n| !is_link_local(n.addr())).collect();
    let add = want.difference(&have).copied().collect();
    let remove = have.difference(want).copied().collect();
    (add, remove)
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
        IpAddr::V4(v4) => v4.is_link_local(),
    }
}

fn link_state(msg: &LinkMessage) -> LinkState {
    let mut state =
        LinkState { index: msg.header.index, kind: None, mtu: None, up: msg.header.flags.contains(LinkFlags::Up) };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::Mtu(m) => state.mtu = Some(*m),
            LinkAttribute::LinkInfo(infos) => {
                state.kind = infos.iter().find_map(|i| match i {
                    LinkInfo::Kind(k) => Some(kind_name(k)),
                    _ => None,
                })
            }
            _ => {}
        }
    }
    state
}

fn kind_name(kind: &InfoKind) -> String {
    match kind {
        InfoKind::Tun => "tun".into(),
        InfoKind::Wireguard => "wireguard".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

fn address_net(msg: &AddressMessage) -> Option<IpNet> {
    // IFA_LOCAL is the interface's own address on point-to-point links; IFA_ADDRESS elsewhere.
    let pick = |want_local: bool| {
        msg.attributes.iter().find_map(|a| match (a, want_local) {
            (AddressAttribute::Local(ip), true) | (AddressAttribute::Address(ip), false) => Some(*ip),
            _ => None,
        })
    };
    let ip = pick(true).or_else(|| pick(false))?;
    IpNet::new(ip, msg.header.prefix_len).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn address_plan_adds_missing_removes_extra_keeps_link_local() {
        let want: BTreeSet<IpNet> = nets(&["192.168.128.1/22", "fd00::1/64"]).into_iter().collect();
        let have = nets(&["192.168.128.1/22", "10.0.0.5/24", "fe80::1/64"]);
        let (add, remove) = plan_addresses(&want, &have);
        assert_eq!(add, nets(&["fd00::1/64"]));
        assert_eq!(remove, nets(&["10.0.0.5/24"]));
    }

    #[test]
    fn address_plan_is_empty_when_equal() {
        let want: BTreeSet<IpNet> = nets(&["192.168.128.1/22"]).into_iter().collect();
        let (add, remove) = plan_addresses(&want, &nets(&["192.168.128.1/22"]));
        assert!(add.is_empty() && remove.is_empty());
    }
}
