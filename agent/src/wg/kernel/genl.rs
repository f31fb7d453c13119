//! One blocking generic-netlink socket for the WireGuard family: the family id is resolved once per
//! socket, each message is sent with an ACK request and its ACK awaited before the next goes out (so
//! a failure names the message that failed and nothing after it is applied).

use std::io;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_REQUEST, NetlinkDeserializable, NetlinkMessage, NetlinkPayload, NetlinkSerializable,
};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::{GenlFamily, GenlMessage};
use netlink_packet_wireguard::WireguardMessage;
use netlink_sys::constants::NETLINK_GENERIC;
use netlink_sys::{Socket, SocketAddr};

/// Large enough for any reply we ask for: ACKs are capped (no echoed request) and replies to the
/// family lookup are a few hundred bytes.
const RECV_BYTES: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum GenlError {
    #[error("netlink socket: {0}")]
    Socket(#[source] io::Error),
    #[error("kernel refused the request: {0}")]
    Kernel(#[source] io::Error),
    #[error("generic netlink family {0} not found (is the wireguard module loaded?)")]
    NoFamily(&'static str),
    #[error("undecodable netlink reply: {0}")]
    Decode(String),
}

pub struct Genl {
    socket: Socket,
    family: u16,
    seq: u32,
    buf: Vec<u8>,
}

impl Genl {
    /// Opens the socket in the calling thread's network namespace and resolves the WireGuard family.
    pub fn open() -> Result<Self, GenlError> {
        let socket = Socket::new(NETLINK_GENERIC).map_err(GenlError::Socket)?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(GenlError::Socket)?;
        // A refused request is not echoed back whole: the ACK stays small whatever we sent.
        socket.set_cap_ack(true).map_err(GenlError::Socket)?;
        let mut genl = Self { socket, family: 0, seq: 0, buf: Vec::with_capacity(RECV_BYTES) };
        genl.family = genl.resolve(WireguardMessage::family_name())?;
        Ok(genl)
    }

    /// Sends one WG_CMD_SET_DEVICE message and waits for its ACK.
    pub fn set_device(&mut self, message: WireguardMessage) -> Result<(), GenlError> {
        let mut genl = GenlMessage::from_payload(message);
        genl.set_resolved_family_id(self.family);
        self.request(genl).map(drop)
    }

    fn resolve(&mut self, name: &'static str) -> Result<u16, GenlError> {
        let lookup = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName(name.to_string())],
        });
        let replies = self.request(lookup).map_err(|e| match e {
            GenlError::Kernel(e) if e.raw_os_error() == Some(libc::ENOENT) => GenlError::NoFamily(name),
            e => e,
        })?;
        replies
            .iter()
            .flat_map(|r| r.payload.nlas.iter())
            .find_map(|a| match a {
                GenlCtrlAttrs::FamilyId(id) => Some(*id),
                _ => None,
            })
            .ok_or(GenlError::NoFamily(name))
    }

    /// Sends `message` and collects the replies to it up to its ACK.
    fn request<F>(&mut self, message: GenlMessage<F>) -> Result<Vec<GenlMessage<F>>, GenlError>
    where
        F: GenlFamily + std::fmt::Debug,
        GenlMessage<F>: NetlinkSerializable + NetlinkDeserializable,
    {
        self.seq = self.seq.wrapping_add(1);
        let mut request = NetlinkMessage::from(message);
        request.header.flags = NLM_F_REQUEST | NLM_F_ACK;
        request.header.sequence_number = self.seq;
        request.finalize();
        let mut bytes = vec![0u8; request.buffer_len()];
        request.serialize(&mut bytes);
        self.socket.send(&bytes, 0).map_err(GenlError::Socket)?;
        let mut replies = Vec::new();
        loop {
            self.buf.clear();
            let n = self.socket.recv(&mut self.buf, 0).map_err(GenlError::Socket)?;
            if n > self.buf.len() {
                return Err(GenlError::Decode(format!("reply of {n} bytes truncated to {}", self.buf.len())));
            }
            if self.take_replies(&mut replies)? {
                return Ok(replies);
            }
        }
    }

    /// Decodes one datagram; true when it held the ACK (or error) of the current request.
    fn take_replies<F>(&self, replies: &mut Vec<GenlMessage<F>>) -> Result<bool, GenlError>
    where
        GenlMessage<F>: NetlinkDeserializable,
    {
        let mut at = 0;
        while at < self.buf.len() {
            let reply = NetlinkMessage::<GenlMessage<F>>::deserialize(&self.buf[at..])
                .map_err(|e| GenlError::Decode(e.to_string()))?;
            let len = reply.header.length as usize;
            // Replies to an earlier request that failed half-way are skipped.
            let ours = reply.header.sequence_number == self.seq;
            match reply.payload {
                NetlinkPayload::Error(e) if ours => {
                    return match e.code {
                        None => Ok(true),
                        Some(_) => Err(GenlError::Kernel(e.to_io())),
                    };
                }
                NetlinkPayload::InnerMessage(m) if ours => replies.push(m),
                _ => {}
            }
            if len == 0 {
                break;
            }
            at += (len + 3) & !3;
        }
        Ok(false)
    }
}
