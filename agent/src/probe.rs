//! An ICMP echo probe (IPv4) over a raw socket: the data-path check behind readiness and the local
//! landscape, without depending on a `ping` binary being installed.

use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

static SEQ: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(1);

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("ICMP socket: {0} (raw sockets need CAP_NET_RAW)")]
    Socket(std::io::Error),
    #[error("binding source {0}: {1}")]
    Bind(Ipv4Addr, std::io::Error),
    #[error("sending to {0}: {1}")]
    Send(Ipv4Addr, std::io::Error),
    #[error("no reply from {0} within {1:?}")]
    Timeout(Ipv4Addr, Duration),
}

/// Sends one echo request to `dst` (from `source` if given) and waits for the matching reply.
pub fn ping(dst: Ipv4Addr, source: Option<Ipv4Addr>, timeout: Duration) -> Result<Duration, ProbeError> {
    let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).map_err(ProbeError::Socket)?;
    if let Some(src) = source {
        let addr = SockAddr::from(SocketAddr::V4(SocketAddrV4::new(src, 0)));
        socket.bind(&addr).map_err(|e| ProbeError::Bind(src, e))?;
    }
    let id = (std::process::id() & 0xffff) as u16;
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let request = echo_request(id, seq);
    let start = Instant::now();
    let to = SockAddr::from(SocketAddr::new(IpAddr::V4(dst), 0));
    socket.send_to(&request, &to).map_err(|e| ProbeError::Send(dst, e))?;
    while let Some(left) = timeout.checked_sub(start.elapsed()) {
        socket.set_read_timeout(Some(left.max(Duration::from_millis(1)))).map_err(ProbeError::Socket)?;
        let mut buf = [MaybeUninit::<u8>::uninit(); 1500];
        let Ok((n, _)) = socket.recv_from(&mut buf) else { break };
        // SAFETY: recv_from initialised the first n bytes.
        let packet: Vec<u8> = buf[..n].iter().map(|b| unsafe { b.assume_init() }).collect();
        if is_reply(&packet, dst, id, seq) {
            return Ok(start.elapsed());
        }
    }
    Err(ProbeError::Timeout(dst, timeout))
}

fn echo_request(id: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![8u8, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(b"kubelink-probe..");
    let sum = checksum(&p);
    p[2..4].copy_from_slice(&sum.to_be_bytes());
    p
}

/// An echo reply from `from` with our id and sequence; `packet` starts with the IPv4 header.
fn is_reply(packet: &[u8], from: Ipv4Addr, id: u16, seq: u16) -> bool {
    let Some(ihl) = packet.first().map(|b| usize::from(b & 0x0f) * 4) else { return false };
    let (Some(src), Some(icmp)) = (packet.get(12..16), packet.get(ihl..ihl + 8)) else { return false };
    src == from.octets() && icmp[0] == 0 && icmp[4..6] == id.to_be_bytes() && icmp[6..8] == seq.to_be_bytes()
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_checksum_verifies() {
        let p = echo_request(0x1234, 7);
        assert_eq!(checksum(&p), 0, "a packet with its checksum sums to zero");
    }

    #[test]
    fn reply_matching() {
        let mut packet = vec![0x45u8; 20];
        packet[12..16].copy_from_slice(&[10, 0, 0, 1]);
        packet.extend_from_slice(&[0, 0, 0, 0, 0x12, 0x34, 0, 7]);
        assert!(is_reply(&packet, Ipv4Addr::new(10, 0, 0, 1), 0x1234, 7));
        assert!(!is_reply(&packet, Ipv4Addr::new(10, 0, 0, 2), 0x1234, 7));
        assert!(!is_reply(&packet, Ipv4Addr::new(10, 0, 0, 1), 0x1234, 8));
        assert!(!is_reply(&packet[..10], Ipv4Addr::new(10, 0, 0, 1), 0x1234, 7));
    }
}
