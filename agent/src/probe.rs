//! An ICMP echo probe (ICMPv4 or ICMPv6) over a raw socket: the data-path check behind readiness and
//! the local landscape, without depending on a `ping` binary being installed.

use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

static SEQ: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(1);

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("ICMP socket: {0} (raw sockets need CAP_NET_RAW)")]
    Socket(std::io::Error),
    #[error("binding source {0}: {1}")]
    Bind(IpAddr, std::io::Error),
    #[error("sending to {0}: {1}")]
    Send(IpAddr, std::io::Error),
    #[error("no reply from {0} within {1:?}")]
    Timeout(IpAddr, Duration),
    #[error("cannot probe {0} from {1}: the addresses are of different families")]
    Family(IpAddr, IpAddr),
}

/// The ICMP flavour of one address family: what a request and a reply look like on its raw socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Icmp {
    V4,
    V6,
}

impl Icmp {
    fn of(addr: IpAddr) -> Self {
        if addr.is_ipv4() { Icmp::V4 } else { Icmp::V6 }
    }

    fn socket(self) -> std::io::Result<Socket> {
        match self {
            Icmp::V4 => Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)),
            Icmp::V6 => Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6)),
        }
    }

    /// Echo request and reply types (RFC 792, RFC 4443).
    fn types(self) -> (u8, u8) {
        match self {
            Icmp::V4 => (8, 0),
            Icmp::V6 => (128, 129),
        }
    }

    /// The ICMP message in what a raw socket of this family receives: IPv4 sockets see the IP
    /// header, IPv6 sockets do not.
    fn message(self, packet: &[u8]) -> Option<&[u8]> {
        match self {
            Icmp::V4 => packet.get(usize::from(packet.first()? & 0x0f) * 4..),
            Icmp::V6 => Some(packet),
        }
    }
}

/// Sends one echo request to `dst` (from `source` if given) and waits for the matching reply.
pub fn ping(dst: IpAddr, source: Option<IpAddr>, timeout: Duration) -> Result<Duration, ProbeError> {
    ping_burst(dst, source, Burst { count: 1, spacing: Duration::ZERO }, timeout)
}

/// Echo requests of one probe: `count` of them, `spacing` apart. Any answer answers the probe, so
/// that a lossy path (each echo lost with chance p) fails a probe with chance p^count only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Burst {
    pub count: u16,
    pub spacing: Duration,
}

/// Three echoes 100 ms apart: the probes that decide about a session or a slot.
pub const BURST: Burst = Burst { count: 3, spacing: Duration::from_millis(100) };

/// Sends the echoes of `burst` to `dst` and waits, up to `timeout` from the first, for a reply to
/// any of them; returns the time from the first echo.
pub fn ping_burst(
    dst: IpAddr,
    source: Option<IpAddr>,
    burst: Burst,
    timeout: Duration,
) -> Result<Duration, ProbeError> {
    let icmp = Icmp::of(dst);
    if let Some(src) = source.filter(|s| Icmp::of(*s) != icmp) {
        return Err(ProbeError::Family(dst, src));
    }
    let socket = icmp.socket().map_err(ProbeError::Socket)?;
    if let Some(src) = source {
        socket.bind(&SockAddr::from(SocketAddr::new(src, 0))).map_err(|e| ProbeError::Bind(src, e))?;
    }
    let id = (std::process::id() & 0xffff) as u16;
    let count = burst.count.max(1);
    let first = SEQ.fetch_add(count, std::sync::atomic::Ordering::Relaxed);
    let ours = |seq: u16| seq.wrapping_sub(first) < count;
    let to = SockAddr::from(SocketAddr::new(dst, 0));
    let start = Instant::now();
    let mut sent = 0;
    while let Some(left) = timeout.checked_sub(start.elapsed()) {
        let next_send = burst.spacing * u32::from(sent);
        if sent < count && start.elapsed() >= next_send {
            let request = echo_request(icmp, id, first.wrapping_add(sent));
            socket.send_to(&request, &to).map_err(|e| ProbeError::Send(dst, e))?;
            sent += 1;
            continue;
        }
        let until_send = (sent < count).then(|| (burst.spacing * u32::from(sent)).saturating_sub(start.elapsed()));
        let wait = until_send.map_or(left, |u| u.min(left)).max(Duration::from_millis(1));
        socket.set_read_timeout(Some(wait)).map_err(ProbeError::Socket)?;
        let mut buf = [MaybeUninit::<u8>::uninit(); 1500];
        let Ok((n, from)) = socket.recv_from(&mut buf) else { continue };
        // SAFETY: recv_from initialised the first n bytes.
        let packet: Vec<u8> = buf[..n].iter().map(|b| unsafe { b.assume_init() }).collect();
        let from = from.as_socket().map(|a| a.ip());
        if from == Some(dst) && reply_seq(icmp, &packet, id).is_some_and(ours) {
            return Ok(start.elapsed());
        }
    }
    Err(ProbeError::Timeout(dst, timeout))
}

/// An echo request; the kernel fills in the ICMPv6 checksum (it covers a pseudo-header the socket
/// cannot see), ours is the ICMPv4 one.
fn echo_request(icmp: Icmp, id: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![icmp.types().0, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(b"kubelink-probe..");
    if icmp == Icmp::V4 {
        let sum = checksum(&p);
        p[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    p
}

/// An echo reply with our id and sequence (the sender is checked by the caller).
/// The sequence number of an echo reply with identifier `id`.
fn reply_seq(icmp: Icmp, packet: &[u8], id: u16) -> Option<u16> {
    let m = icmp.message(packet)?.get(..8)?;
    (m[0] == icmp.types().1 && m[4..6] == id.to_be_bytes()).then(|| u16::from_be_bytes([m[6], m[7]]))
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
        let p = echo_request(Icmp::V4, 0x1234, 7);
        assert_eq!(checksum(&p), 0, "a packet with its checksum sums to zero");
    }

    #[test]
    fn icmpv6_request_is_type_128_and_leaves_the_checksum_to_the_kernel() {
        let p = echo_request(Icmp::V6, 0x1234, 7);
        assert_eq!((p[0], &p[2..8]), (128, &[0, 0, 0x12, 0x34, 0, 7][..]));
    }

    #[test]
    fn reply_matching() {
        let mut packet = vec![0x45u8; 20];
        packet.extend_from_slice(&[0, 0, 0, 0, 0x12, 0x34, 0, 7]);
        assert_eq!(reply_seq(Icmp::V4, &packet, 0x1234), Some(7));
        assert_eq!(reply_seq(Icmp::V4, &packet, 0x1235), None, "another prober's");
        assert_eq!(reply_seq(Icmp::V4, &packet[..10], 0x1234), None);
        // An IPv6 raw socket gets the ICMPv6 message without the IP header.
        assert_eq!(reply_seq(Icmp::V6, &[129, 0, 0, 0, 0x12, 0x34, 0, 7], 0x1234), Some(7));
        assert_eq!(reply_seq(Icmp::V6, &[128, 0, 0, 0, 0x12, 0x34, 0, 7], 0x1234), None, "our own request");
        assert_eq!(reply_seq(Icmp::V6, &[135, 0, 0, 0], 0x1234), None, "neighbour discovery");
    }

    #[test]
    fn families_must_match() {
        let err = ping("fd00::1".parse().unwrap(), Some("10.0.0.1".parse().unwrap()), Duration::from_millis(1));
        assert!(matches!(err, Err(ProbeError::Family(..))), "{err:?}");
    }

    /// A burst over the loopback answers at its first echo; root only, like the next test.
    #[test]
    fn a_burst_is_answered_by_its_first_reply() {
        match ping_burst("127.0.0.1".parse().unwrap(), None, BURST, Duration::from_secs(1)) {
            Err(ProbeError::Socket(e)) if std::env::var("CI").as_deref() != Ok("true") => {
                eprintln!("SKIPPED raw ICMP socket (needs root): {e}")
            }
            other => assert!(other.as_ref().is_ok_and(|rtt| *rtt < BURST.spacing), "{other:?}"),
        }
    }

    /// The loopback answers both families: a root-only check of the socket path (skipped otherwise).
    #[test]
    fn loopback_answers_icmpv4_and_icmpv6_when_raw_sockets_are_allowed() {
        for dst in ["127.0.0.1", "::1"] {
            match ping(dst.parse().unwrap(), None, Duration::from_secs(1)) {
                Err(ProbeError::Socket(e)) if std::env::var("CI").as_deref() != Ok("true") => {
                    eprintln!("SKIPPED raw ICMP socket for {dst} (needs root): {e}")
                }
                // A host without IPv6 has no ::1 to answer.
                Err(e) if dst == "::1" && !std::path::Path::new("/proc/net/if_inet6").exists() => {
                    eprintln!("SKIPPED {dst}: no IPv6 here ({e})")
                }
                other => assert!(other.is_ok(), "{dst}: {other:?}"),
            }
        }
    }
}
