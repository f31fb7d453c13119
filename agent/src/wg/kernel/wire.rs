//! The WG_CMD_SET_DEVICE messages for one [`DeviceUpdate`], many peers to a message. Pure: no socket,
//! so the packing is tested without a kernel.
//!
//! Every message names the device; the first also carries the device attributes (key, port, fwmark)
//! and never `WGDEVICE_F_REPLACE_PEERS`, so a device change leaves the peers as they are. A peer whose
//! allowed IPs do not fit one message continues in the next ones: the continuation carries only the
//! key and more allowed IPs, without `WGPEER_F_REPLACE_ALLOWEDIPS`, which the kernel appends.

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::Emitable;
use netlink_packet_wireguard::{
    WireguardAddressFamily, WireguardAllowedIp, WireguardAllowedIpAttr, WireguardAttribute, WireguardCmd,
    WireguardMessage, WireguardPeer, WireguardPeerAttribute, WireguardPeerFlags,
};

use kubelink_contract::keys::PublicKey;

use super::super::{DeviceSpec, DeviceUpdate, PeerChange, PeerSpec};

/// A whole netlink message (headers included) stays within this: the page-sized buffer the kernel's
/// own `wg` tool packs into, which every kernel accepts.
pub const MESSAGE_BYTES: usize = 4096;
/// nlmsghdr (16) + genlmsghdr (4).
const HEADERS: usize = 20;
/// The header of a nested attribute (WGDEVICE_A_PEERS, WGPEER_A_ALLOWEDIPS, one peer).
const NEST: usize = 4;

/// How many peers may share a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packing {
    pub max_bytes: usize,
    /// Peer fragments per message; 1 sends one peer per message (the comparison baseline).
    pub max_peers: usize,
}

impl Default for Packing {
    fn default() -> Self {
        Self { max_bytes: MESSAGE_BYTES, max_peers: usize::MAX }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("peer {peer}: its key and one allowed IP do not fit a {max_bytes}-byte message")]
    PeerTooLarge { peer: String, max_bytes: usize },
}

/// One peer's part of a message: the attributes set once, then allowed IPs that may be split.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PeerOp {
    key: [u8; 32],
    /// Flags, endpoint, keepalive: only in the first fragment.
    head: Vec<WireguardPeerAttribute>,
    allowed: Vec<WireguardAllowedIp>,
    /// Whether the allowed IPs attribute is sent even when empty (to clear them).
    send_allowed: bool,
}

/// The messages that apply `update` to the device `spec.name`, in order.
pub fn set_device_messages(
    spec: &DeviceSpec,
    update: &DeviceUpdate,
    packing: Packing,
) -> Result<Vec<WireguardMessage>, WireError> {
    let ifname: &str = &spec.name;
    let device = device_attributes(spec, update);
    let fragments = fragments(peer_ops(update), room(ifname, &device, packing.max_bytes))?;
    Ok(pack(ifname, device, fragments, packing))
}

/// Key, port and fwmark as the update sets them; no flags, so the kernel keeps the peers.
pub fn device_attributes(spec: &DeviceSpec, update: &DeviceUpdate) -> Vec<WireguardAttribute> {
    let mut attrs = Vec::new();
    if update.set_private_key {
        attrs.push(WireguardAttribute::PrivateKey(*spec.private_key.to_bytes()));
    }
    if let Some(port) = update.listen_port {
        attrs.push(WireguardAttribute::ListenPort(port));
    }
    if let Some(mark) = update.fwmark {
        attrs.push(WireguardAttribute::Fwmark(mark));
    }
    attrs
}

/// Removals first, so that an allowed IP that moves to a new key is free before it is added there.
fn peer_ops(update: &DeviceUpdate) -> Vec<PeerOp> {
    let removes = update.remove_peers.iter().map(|k| PeerOp {
        key: *k.as_bytes(),
        head: vec![WireguardPeerAttribute::Flags(WireguardPeerFlags::RemoveMe)],
        allowed: vec![],
        send_allowed: false,
    });
    let changes = update.change_peers.iter().map(|(k, c)| change_op(k.as_bytes(), c));
    removes.chain(changes).chain(update.add_peers.iter().map(add_op)).collect()
}

fn add_op(peer: &PeerSpec) -> PeerOp {
    let mut head = vec![WireguardPeerAttribute::Flags(WireguardPeerFlags::ReplaceAllowedIps)];
    if let Some(endpoint) = peer.endpoint {
        head.push(WireguardPeerAttribute::Endpoint(endpoint));
    }
    // Always sent, so that 0 turns a keepalive off on a peer that existed already.
    head.push(WireguardPeerAttribute::PersistentKeepalive(peer.persistent_keepalive.unwrap_or(0)));
    PeerOp { key: *peer.public_key.as_bytes(), head, allowed: allowed_ips(&peer.allowed_ips), send_allowed: true }
}

/// Only what changed; `UPDATE_ONLY` so a peer removed meanwhile is not re-created half-configured.
fn change_op(key: &[u8; 32], change: &PeerChange) -> PeerOp {
    let mut flags = WireguardPeerFlags::UpdateOnly;
    if change.allowed_ips.is_some() {
        flags |= WireguardPeerFlags::ReplaceAllowedIps;
    }
    let mut head = vec![WireguardPeerAttribute::Flags(flags)];
    if let Some(endpoint) = change.endpoint {
        head.push(WireguardPeerAttribute::Endpoint(endpoint));
    }
    if let Some(keepalive) = change.persistent_keepalive {
        head.push(WireguardPeerAttribute::PersistentKeepalive(keepalive));
    }
    let allowed = change.allowed_ips.as_ref().map(allowed_ips).unwrap_or_default();
    PeerOp { key: *key, head, allowed, send_allowed: change.allowed_ips.is_some() }
}

fn allowed_ips<'a>(nets: impl IntoIterator<Item = &'a IpNet>) -> Vec<WireguardAllowedIp> {
    nets.into_iter()
        .map(|n| {
            let family = match n.addr() {
                IpAddr::V4(_) => WireguardAddressFamily::Ipv4,
                IpAddr::V6(_) => WireguardAddressFamily::Ipv6,
            };
            WireguardAllowedIp(vec![
                WireguardAllowedIpAttr::Family(family),
                WireguardAllowedIpAttr::IpAddr(n.addr()),
                WireguardAllowedIpAttr::Cidr(n.prefix_len()),
            ])
        })
        .collect()
}

/// Bytes left for peers in a message that carries the device attributes (the smallest room; every
/// message is packed against it so a fragment fits wherever it lands).
fn room(ifname: &str, device: &[WireguardAttribute], max_bytes: usize) -> usize {
    let fixed = HEADERS + WireguardAttribute::IfName(ifname.to_string()).buffer_len();
    let device_len: usize = device.iter().map(Emitable::buffer_len).sum();
    max_bytes.saturating_sub(fixed + device_len + NEST)
}

/// Each op as one or more peer nests that each fit `room` bytes.
fn fragments(ops: Vec<PeerOp>, room: usize) -> Result<Vec<WireguardPeer>, WireError> {
    let mut out = Vec::with_capacity(ops.len());
    for op in ops {
        split_op(op, room, &mut out)?;
    }
    Ok(out)
}

fn split_op(op: PeerOp, room: usize, out: &mut Vec<WireguardPeer>) -> Result<(), WireError> {
    let too_large = || WireError::PeerTooLarge { peer: PublicKey::from_bytes(op.key).to_string(), max_bytes: room };
    let key = WireguardPeerAttribute::PublicKey(op.key);
    let mut attrs: Vec<WireguardPeerAttribute> = std::iter::once(key.clone()).chain(op.head).collect();
    let mut allowed = op.allowed.into_iter().peekable();
    let mut send_allowed = op.send_allowed;
    loop {
        // Every part is 4-byte aligned, so the lengths add up exactly.
        let mut used = NEST + attrs.iter().map(Emitable::buffer_len).sum::<usize>() + NEST;
        let mut chunk = Vec::new();
        while let Some(ip) = allowed.next_if(|ip| used + ip.buffer_len() <= room) {
            used += ip.buffer_len();
            chunk.push(ip);
        }
        let done = allowed.peek().is_none();
        if used > room || (chunk.is_empty() && !done) {
            return Err(too_large());
        }
        if !chunk.is_empty() || send_allowed {
            attrs.push(WireguardPeerAttribute::AllowedIps(chunk));
        }
        out.push(WireguardPeer(attrs));
        if done {
            return Ok(());
        }
        // The continuation: the key and more allowed IPs, which the kernel appends to those just set.
        attrs = vec![key.clone()];
        send_allowed = false;
    }
}

/// Greedy: fragments in order, a new message when the next one would not fit.
fn pack(
    ifname: &str,
    device: Vec<WireguardAttribute>,
    fragments: Vec<WireguardPeer>,
    packing: Packing,
) -> Vec<WireguardMessage> {
    let room = room(ifname, &device, packing.max_bytes);
    let mut messages = Vec::new();
    let mut device = Some(device).filter(|d| !d.is_empty());
    let mut batch: Vec<WireguardPeer> = Vec::new();
    let mut used = 0;
    for fragment in fragments {
        let len = fragment.buffer_len();
        if !batch.is_empty() && (used + len > room || batch.len() >= packing.max_peers) {
            messages.push(message(ifname, device.take(), std::mem::take(&mut batch)));
            used = 0;
        }
        used += len;
        batch.push(fragment);
    }
    if !batch.is_empty() || device.is_some() {
        messages.push(message(ifname, device.take(), batch));
    }
    messages
}

fn message(ifname: &str, device: Option<Vec<WireguardAttribute>>, peers: Vec<WireguardPeer>) -> WireguardMessage {
    let mut attributes = vec![WireguardAttribute::IfName(ifname.to_string())];
    attributes.extend(device.unwrap_or_default());
    if !peers.is_empty() {
        attributes.push(WireguardAttribute::Peers(peers));
    }
    WireguardMessage { cmd: WireguardCmd::SetDevice, attributes }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use kubelink_contract::keys::PrivateKey;
    use netlink_packet_core::NetlinkMessage;
    use netlink_packet_generic::GenlMessage;

    use super::*;

    fn key(i: u32) -> PublicKey {
        let mut bytes = [0u8; 32];
        bytes[..4].copy_from_slice(&i.to_be_bytes());
        PublicKey::from_bytes(bytes)
    }

    /// Like the qemu scenario: every 10th peer has an IPv6 address too, every 3rd a keepalive.
    fn peer(i: u32) -> PeerSpec {
        let mut allowed: BTreeSet<IpNet> = [format!("10.200.{}.{}/32", i >> 8, i & 255).parse().unwrap()].into();
        if i.is_multiple_of(10) {
            allowed.insert(format!("fd00:200::{:x}/128", i + 1).parse().unwrap());
        }
        PeerSpec {
            public_key: key(i),
            endpoint: Some(format!("10.1.{}.{}:{}", i >> 8, i & 255, 20000 + i).parse().unwrap()),
            allowed_ips: allowed,
            persistent_keepalive: i.is_multiple_of(3).then_some(25),
        }
    }

    fn spec() -> DeviceSpec {
        DeviceSpec {
            name: "kl0".parse().unwrap(),
            private_key: PrivateKey::from_bytes([7; 32]),
            listen_port: Some(51820),
            fwmark: None,
            peers: Default::default(),
        }
    }

    fn cold(n: u32) -> DeviceUpdate {
        DeviceUpdate {
            set_private_key: true,
            listen_port: Some(51820),
            add_peers: (0..n).map(peer).collect(),
            ..DeviceUpdate::default()
        }
    }

    /// The bytes the socket sends, decoded back by the crate's parser.
    fn round_trip(message: &WireguardMessage) -> (usize, WireguardMessage) {
        let mut genl = GenlMessage::from_payload(message.clone());
        genl.set_resolved_family_id(0x20);
        let mut nl = NetlinkMessage::from(genl);
        nl.finalize();
        let mut bytes = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut bytes);
        let parsed = NetlinkMessage::<GenlMessage<WireguardMessage>>::deserialize(&bytes).unwrap();
        let netlink_packet_core::NetlinkPayload::InnerMessage(genl) = parsed.payload else { panic!("not a message") };
        (bytes.len(), genl.payload)
    }

    fn peers_of(message: &WireguardMessage) -> Vec<WireguardPeer> {
        message
            .attributes
            .iter()
            .find_map(|a| match a {
                WireguardAttribute::Peers(p) => Some(p.clone()),
                _ => None,
            })
            .unwrap_or_default()
    }

    fn peer_key(p: &WireguardPeer) -> [u8; 32] {
        p.0.iter()
            .find_map(|a| match a {
                WireguardPeerAttribute::PublicKey(k) => Some(*k),
                _ => None,
            })
            .expect("every peer nest names its key")
    }

    fn flags(p: &WireguardPeer) -> Option<WireguardPeerFlags> {
        p.0.iter().find_map(|a| match a {
            WireguardPeerAttribute::Flags(f) => Some(*f),
            _ => None,
        })
    }

    fn allowed_count(p: &WireguardPeer) -> usize {
        p.0.iter()
            .map(|a| match a {
                WireguardPeerAttribute::AllowedIps(ips) => ips.len(),
                _ => 0,
            })
            .sum()
    }

    #[test]
    fn thousand_peers_fit_few_messages_each_within_the_limit() {
        let messages = set_device_messages(&spec(), &cold(1000), Packing::default()).unwrap();
        assert!(messages.len() <= 40, "{} messages for 1000 peers", messages.len());
        let mut keys = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            let (len, parsed) = round_trip(m);
            assert!(len <= MESSAGE_BYTES, "message {i} is {len} bytes");
            assert_eq!(&parsed, m, "message {i} decodes to what was encoded");
            assert_eq!(m.attributes[0], WireguardAttribute::IfName("kl0".into()));
            keys.extend(peers_of(m).iter().map(peer_key));
        }
        let want: Vec<[u8; 32]> = (0..1000).map(|i| *key(i).as_bytes()).collect();
        assert_eq!(keys, want, "every peer once, in order");
    }

    #[test]
    fn one_peer_per_message_when_capped() {
        let packing = Packing { max_peers: 1, ..Packing::default() };
        let messages = set_device_messages(&spec(), &cold(1000), packing).unwrap();
        assert_eq!(messages.len(), 1000);
        assert!(messages.iter().all(|m| peers_of(m).len() == 1));
        let has_key =
            |m: &WireguardMessage| m.attributes.iter().any(|a| matches!(a, WireguardAttribute::PrivateKey(_)));
        assert!(has_key(&messages[0]) && !messages[1..].iter().any(has_key), "device attributes once, first");
    }

    #[test]
    fn port_fwmark_and_key_changes_set_only_device_attributes() {
        // rows: the update, the attributes after the name. No Peers and no Flags: the peers stay.
        let spec = spec();
        let key_bytes = *spec.private_key.to_bytes();
        let rows = [
            (
                DeviceUpdate { listen_port: Some(51821), ..Default::default() },
                vec![WireguardAttribute::ListenPort(51821)],
            ),
            (DeviceUpdate { fwmark: Some(0), ..Default::default() }, vec![WireguardAttribute::Fwmark(0)]),
            (
                DeviceUpdate { set_private_key: true, ..Default::default() },
                vec![WireguardAttribute::PrivateKey(key_bytes)],
            ),
        ];
        for (update, want) in rows {
            let messages = set_device_messages(&spec, &update, Packing::default()).unwrap();
            assert_eq!(messages.len(), 1, "{}", update.summary());
            assert_eq!(messages[0].attributes[1..], want[..], "{}", update.summary());
        }
    }

    #[test]
    fn nothing_to_do_sends_nothing() {
        assert!(set_device_messages(&spec(), &DeviceUpdate::default(), Packing::default()).unwrap().is_empty());
    }

    #[test]
    fn one_more_peer_is_one_message_naming_only_that_peer() {
        let update = DeviceUpdate { add_peers: vec![peer(1000)], ..DeviceUpdate::default() };
        let messages = set_device_messages(&spec(), &update, Packing::default()).unwrap();
        assert_eq!(messages.len(), 1);
        let peers = peers_of(&messages[0]);
        assert_eq!(peers.iter().map(peer_key).collect::<Vec<_>>(), vec![*key(1000).as_bytes()]);
        assert_eq!(flags(&peers[0]), Some(WireguardPeerFlags::ReplaceAllowedIps));
    }

    #[test]
    fn a_peer_with_many_allowed_ips_continues_without_replace() {
        let mut big = peer(1);
        big.allowed_ips = (0..2000u32).map(|i| format!("10.{}.{}.0/24", i >> 8, i & 255).parse().unwrap()).collect();
        let update = DeviceUpdate { add_peers: vec![big.clone(), peer(2)], ..DeviceUpdate::default() };
        let messages = set_device_messages(&spec(), &update, Packing::default()).unwrap();
        let nests: Vec<WireguardPeer> = messages.iter().flat_map(peers_of).collect();
        let (first, rest) = nests.split_first().unwrap();
        assert!(rest.len() >= 2, "2000 allowed IPs need several messages");
        assert_eq!(flags(first), Some(WireguardPeerFlags::ReplaceAllowedIps));
        let of_big: Vec<&WireguardPeer> = rest.iter().filter(|p| peer_key(p) == *big.public_key.as_bytes()).collect();
        for p in &of_big {
            assert_eq!(flags(p), None, "a continuation appends: no REPLACE_ALLOWEDIPS");
            assert_eq!(p.0.len(), 2, "a continuation is the key and allowed IPs only");
        }
        let total = allowed_count(first) + of_big.iter().map(|p| allowed_count(p)).sum::<usize>();
        assert_eq!(total, 2000);
        assert_eq!(peer_key(nests.last().unwrap()), *key(2).as_bytes(), "the next peer follows");
        assert!(messages.iter().all(|m| round_trip(m).0 <= MESSAGE_BYTES));
    }

    #[test]
    fn removals_go_first_and_changes_send_only_what_changed() {
        let change = PeerChange { endpoint: Some("192.0.2.1:51820".parse().unwrap()), ..Default::default() };
        let update = DeviceUpdate {
            add_peers: vec![peer(3)],
            change_peers: vec![(key(2), change)],
            remove_peers: vec![key(1)],
            ..DeviceUpdate::default()
        };
        let messages = set_device_messages(&spec(), &update, Packing::default()).unwrap();
        let peers = peers_of(&messages[0]);
        assert_eq!(peers.iter().map(peer_key).collect::<Vec<_>>(), [1, 2, 3].map(|i| *key(i).as_bytes()));
        assert_eq!(
            peers[0].0,
            vec![
                WireguardPeerAttribute::PublicKey(*key(1).as_bytes()),
                WireguardPeerAttribute::Flags(WireguardPeerFlags::RemoveMe),
            ]
        );
        assert_eq!(
            peers[1].0,
            vec![
                WireguardPeerAttribute::PublicKey(*key(2).as_bytes()),
                WireguardPeerAttribute::Flags(WireguardPeerFlags::UpdateOnly),
                WireguardPeerAttribute::Endpoint("192.0.2.1:51820".parse().unwrap()),
            ]
        );
    }

    #[test]
    fn clearing_allowed_ips_sends_an_empty_replace() {
        let change = PeerChange { allowed_ips: Some(BTreeSet::new()), ..Default::default() };
        let update = DeviceUpdate { change_peers: vec![(key(2), change)], ..DeviceUpdate::default() };
        let peers = peers_of(&set_device_messages(&spec(), &update, Packing::default()).unwrap()[0]);
        assert_eq!(flags(&peers[0]), Some(WireguardPeerFlags::UpdateOnly | WireguardPeerFlags::ReplaceAllowedIps));
        assert!(peers[0].0.contains(&WireguardPeerAttribute::AllowedIps(vec![])));
    }

    #[test]
    fn a_limit_too_small_for_one_peer_is_an_error() {
        let packing = Packing { max_bytes: 120, ..Packing::default() };
        let err = set_device_messages(&spec(), &cold(1), packing).unwrap_err();
        assert!(matches!(err, WireError::PeerTooLarge { .. }), "{err}");
    }
}
