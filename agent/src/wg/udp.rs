//! The UDP transport under gotatun's `Device`: gotatun's own socket, with send offload.
//!
//! With offload on (the fast path), a batch of encrypted packets is sent as runs: consecutive
//! packets to one peer, of one size but a shorter last one, go out in one `sendmsg` with
//! `UDP_SEGMENT` (UDP GSO). The kernel builds one large datagram and cuts it into the packets
//! late (or the receiver's UDP GRO keeps it whole over veth), so a 64 KB TCP segment from the tun
//! crosses the UDP stack once instead of some forty times. Everything else (single packets, the
//! receive side with UDP GRO, binding, fwmark) is gotatun's socket as it is. Where the kernel
//! lacks `UDP_SEGMENT`, or a send with it fails with EIO or EINVAL (a device that cannot
//! segment), the transport falls back to gotatun's `sendmmsg` for good.
//!
//! quinn-udp does GSO too, but it sets options on the socket it sends on (`IP_PMTUDISC_PROBE`,
//! packet info and timestamps on receive) that would change gotatun's receive path and the
//! tunnel's fragmentation behaviour; nix's `UdpGsoSegments` control message is all this needs.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use gotatun::packet::Packet;
use gotatun::udp::socket::{UdpSocket, UdpSocketFactory};
use gotatun::udp::{UdpSend, UdpTransportFactory, UdpTransportFactoryParams};
use nix::sys::socket::{ControlMessage, MsgFlags, SockaddrStorage, sendmsg};
use tokio::io::Interest;

/// Segments in one GSO send at most (the kernel's `UDP_MAX_SEGMENTS` is 64 on older kernels).
const MAX_SEGMENTS: usize = 64;
/// The payload of one UDP datagram at most: a GSO send is one datagram until it is cut.
const MAX_BYTES: usize = 65_507;

/// Binds gotatun's socket; `gso` asks for send offload.
#[derive(Debug, Default)]
pub struct UdpFactory {
    inner: UdpSocketFactory,
    gso: bool,
}

impl UdpFactory {
    pub fn new(gso: bool) -> Self {
        Self { inner: UdpSocketFactory::default(), gso }
    }
}

impl UdpTransportFactory for UdpFactory {
    type Send = UdpTx;
    type Recv = UdpSocket;

    async fn bind(&mut self, params: &UdpTransportFactoryParams) -> io::Result<(UdpTx, UdpSocket)> {
        let (tx, rx) = self.inner.bind(params).await?;
        let gso = self.gso && kernel_segments(&tx);
        if self.gso && !gso {
            tracing::warn!("UDP GSO unavailable (no UDP_SEGMENT); sending one packet per datagram");
        }
        tracing::info!(port = params.port, gso, "UDP socket bound");
        Ok((UdpTx { socket: tx, gso: Arc::new(AtomicBool::new(gso)) }, rx))
    }
}

/// Whether the kernel knows `UDP_SEGMENT` (Linux 4.18 and later).
fn kernel_segments(socket: &UdpSocket) -> bool {
    nix::sys::socket::getsockopt(socket, nix::sys::socket::sockopt::UdpGsoSegment).is_ok()
}

/// The sending half: gotatun's socket, with GSO runs while `gso` holds.
#[derive(Clone)]
pub struct UdpTx {
    socket: UdpSocket,
    /// Cleared for good by the first send the kernel refuses to segment.
    gso: Arc<AtomicBool>,
}

/// Reused between batches (create with `Default`): the plain path's buffer, the packets sent on
/// their own (in order) and the run being sent.
#[derive(Default)]
pub struct SendBuf {
    plain: <UdpSocket as UdpSend>::SendManyBuf,
    singles: Vec<(Packet, SocketAddr)>,
    run: Vec<(Packet, SocketAddr)>,
}

impl UdpSend for UdpTx {
    type SendManyBuf = SendBuf;

    async fn send_to(&self, packet: Packet, destination: SocketAddr) -> io::Result<()> {
        self.socket.send_to(packet, destination).await
    }

    fn max_number_of_packets_to_send(&self) -> usize {
        self.socket.max_number_of_packets_to_send()
    }

    async fn send_many_to(&self, buf: &mut SendBuf, packets: &mut Vec<(Packet, SocketAddr)>) -> io::Result<()> {
        if !self.gso.load(Ordering::Relaxed) {
            return self.socket.send_many_to(&mut buf.plain, packets).await;
        }
        let runs = runs(packets.iter().map(|(p, d)| (p.len(), *d)));
        let mut batch = packets.drain(..);
        buf.singles.clear();
        for run in runs {
            if run.len() == 1 {
                buf.singles.extend(batch.next());
                continue;
            }
            // In order: the packets before a run leave before it, so no peer's packets are reordered.
            self.flush(buf).await?;
            buf.run.clear();
            buf.run.extend(batch.by_ref().take(run.len()));
            self.send_run(buf).await?;
        }
        self.flush(buf).await
    }

    fn local_addr(&self) -> io::Result<Option<SocketAddr>> {
        self.socket.local_addr().map(Some)
    }

    fn set_fwmark(&self, mark: u32) -> io::Result<()> {
        self.socket.set_fwmark(mark)
    }
}

impl UdpTx {
    /// Sends the packets collected to go on their own: one `sendmmsg` for all.
    async fn flush(&self, buf: &mut SendBuf) -> io::Result<()> {
        if buf.singles.len() > 1 {
            return self.socket.send_many_to(&mut buf.plain, &mut buf.singles).await;
        }
        match buf.singles.pop() {
            Some((packet, destination)) => self.socket.send_to(packet, destination).await,
            None => Ok(()),
        }
    }

    /// Sends `buf.run` (one destination, one size but the last) as one datagram the kernel cuts
    /// at the first packet's size. A refusal to segment turns GSO off and sends the run plainly.
    async fn send_run(&self, buf: &mut SendBuf) -> io::Result<()> {
        let Some((first, destination)) = buf.run.first() else { return Ok(()) };
        let segment = u16::try_from(first.len()).unwrap_or(u16::MAX);
        let destination = SockaddrStorage::from(*destination);
        let mut iov = [IoSlice::new(&[]); MAX_SEGMENTS];
        for (slot, (packet, _)) in iov.iter_mut().zip(&buf.run) {
            *slot = IoSlice::new(&packet[..]);
        }
        let iov = &iov[..buf.run.len().min(MAX_SEGMENTS)];
        let socket = self.socket.socket();
        let fd = socket.as_raw_fd();
        let sent = socket
            .async_io(Interest::WRITABLE, || {
                let cmsg = [ControlMessage::UdpGsoSegments(&segment)];
                sendmsg(fd, iov, &cmsg, MsgFlags::MSG_DONTWAIT, Some(&destination)).map_err(io::Error::from)
            })
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EIO | libc::EINVAL)) => {
                if self.gso.swap(false, Ordering::Relaxed) {
                    tracing::warn!("UDP GSO refused ({e}); sending one packet per datagram from now on");
                }
                self.socket.send_many_to(&mut buf.plain, &mut buf.run).await
            }
            Err(e) => Err(e),
        }
    }
}

/// Splits a batch, given as (size, destination) per packet, into runs one GSO send can carry:
/// consecutive packets to one destination, all of the first one's size but a shorter last one, at
/// most [`MAX_SEGMENTS`] and [`MAX_BYTES`]. A run of one is a packet sent on its own.
fn runs(packets: impl IntoIterator<Item = (usize, SocketAddr)>) -> Vec<Range<usize>> {
    /// The run being built.
    struct Open {
        range: Range<usize>,
        destination: SocketAddr,
        size: usize,
        bytes: usize,
        /// A shorter packet came: the kernel cuts every segment but the last at `size`.
        closed: bool,
    }
    let mut runs = vec![];
    let mut open: Option<Open> = None;
    for (i, (size, destination)) in packets.into_iter().enumerate() {
        let fits = |o: &Open| {
            !o.closed
                && o.destination == destination
                && size <= o.size
                && o.range.len() < MAX_SEGMENTS
                && o.bytes + size <= MAX_BYTES
        };
        match open.as_mut() {
            Some(o) if fits(o) => {
                o.range.end = i + 1;
                o.bytes += size;
                o.closed = size < o.size;
            }
            _ => {
                runs.extend(open.take().map(|o| o.range));
                open = Some(Open { range: i..i + 1, destination, size, bytes: size, closed: false });
            }
        }
    }
    runs.extend(open.map(|o| o.range));
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::time::Duration;

    fn packet(fill: u8, len: usize) -> Packet {
        Packet::copy_from(&vec![fill; len][..])
    }

    /// A receiver on the loopback; `gro` keeps GSO datagrams whole, as gotatun's socket does.
    fn receiver(gro: bool) -> (std::net::UdpSocket, SocketAddr) {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        if gro {
            nix::sys::socket::setsockopt(&socket.as_fd(), nix::sys::socket::sockopt::UdpGroSegment, &true)
                .expect("UDP_GRO");
        }
        socket.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
        let addr = socket.local_addr().expect("addr");
        (socket, addr)
    }

    fn received(socket: &std::net::UdpSocket) -> Vec<Vec<u8>> {
        let mut got = vec![];
        let mut buf = vec![0; 70_000];
        while let Ok(n) = socket.recv(&mut buf) {
            got.push(buf[..n].to_vec());
        }
        got
    }

    async fn sender(gso: bool) -> UdpTx {
        let params = UdpTransportFactoryParams { addr: Some([127, 0, 0, 1].into()), port: 0, fwmark: None };
        UdpFactory::new(gso).bind(&params).await.expect("bind the sender").0
    }

    /// Ten packets to one peer (nine of one size, a shorter last), one to another peer in
    /// between, and two more to the first: everything arrives, in order, each packet whole.
    #[tokio::test]
    async fn a_batch_arrives_whole_and_in_order_with_gso() {
        let (a, to_a) = receiver(false);
        let (b, to_b) = receiver(false);
        let tx = sender(true).await;
        assert!(tx.gso.load(Ordering::Relaxed), "the loopback kernel has UDP_SEGMENT");
        let mut batch: Vec<_> = (0..9).map(|i| (packet(i, 1200), to_a)).collect();
        batch.push((packet(9, 300), to_a));
        batch.push((packet(100, 1200), to_b));
        batch.extend((10..12).map(|i| (packet(i, 1200), to_a)));
        tx.send_many_to(&mut SendBuf::default(), &mut batch).await.expect("send");
        assert!(batch.is_empty(), "every packet was taken");
        let got_a = received(&a);
        let want_a: Vec<Vec<u8>> =
            (0..9).map(|i| vec![i; 1200]).chain([vec![9; 300]]).chain((10..12).map(|i| vec![i; 1200])).collect();
        assert_eq!(got_a.len(), want_a.len());
        assert!(got_a == want_a, "cut at the first packet's size, in order");
        assert_eq!(received(&b), vec![vec![100; 1200]]);
    }

    /// The proof that one datagram left for the run: a receiver with UDP GRO gets it whole.
    #[tokio::test]
    async fn a_run_leaves_as_one_datagram() {
        let (gro, to) = receiver(true);
        for (gso, want) in [(true, vec![5 * 1200]), (false, vec![1200; 5])] {
            let tx = sender(gso).await;
            let mut batch: Vec<_> = (0..5).map(|i| (packet(i, 1200), to)).collect();
            tx.send_many_to(&mut SendBuf::default(), &mut batch).await.expect("send");
            let sizes: Vec<usize> = received(&gro).iter().map(Vec::len).collect();
            assert_eq!(sizes, want, "gso {gso}");
        }
    }

    /// A send the kernel refuses to segment (here: a socket without UDP checksums, which GSO
    /// needs; devices that cannot segment answer EIO the same way) turns GSO off for good, and
    /// the runs still arrive, whole and in order. A link without transmit checksum offload is
    /// not such a case: the kernel segments and checksums in software.
    #[tokio::test]
    async fn a_refused_run_turns_gso_off_and_still_arrives() {
        let (rx, to) = receiver(false);
        let tx = sender(true).await;
        let on: libc::c_int = 1;
        // SAFETY: setsockopt on the sender's live socket with an int option.
        let set = unsafe {
            libc::setsockopt(
                tx.socket.socket().as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_NO_CHECK,
                std::ptr::from_ref(&on).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(set, 0, "SO_NO_CHECK: {}", io::Error::last_os_error());
        let mut buf = SendBuf::default();
        for round in 0..2u8 {
            let mut batch: Vec<_> = (0..5).map(|i| (packet(round * 10 + i, 1200), to)).collect();
            tx.send_many_to(&mut buf, &mut batch).await.expect("send");
            assert!(!tx.gso.load(Ordering::Relaxed), "round {round}: the refusal turned GSO off");
        }
        let got: Vec<u8> = received(&rx).iter().map(|p| p[0]).collect();
        assert_eq!(got, vec![0, 1, 2, 3, 4, 10, 11, 12, 13, 14]);
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    #[test]
    fn runs_follow_destination_and_size() {
        let a = addr(1);
        let b = addr(2);
        let batch = [(1472, a), (1472, a), (1472, a), (600, a), (1472, a), (1472, b), (80, b), (80, a)];
        assert_eq!(runs(batch), vec![0..4, 4..5, 5..7, 7..8], "a shorter packet ends a run");
    }

    #[test]
    fn a_longer_packet_starts_a_new_run() {
        let a = addr(1);
        assert_eq!(runs([(100, a), (1472, a), (1472, a)]), vec![0..1, 1..3]);
    }

    #[test]
    fn runs_stay_within_one_datagram_and_the_segment_limit() {
        let a = addr(1);
        let big = vec![(1472, a); 100];
        let got = runs(big);
        assert_eq!(got.iter().map(|r| r.len()).collect::<Vec<_>>(), vec![44, 44, 12], "65507 / 1472 = 44");
        let small = vec![(100, a); 150];
        assert_eq!(runs(small).iter().map(|r| r.len()).collect::<Vec<_>>(), vec![64, 64, 22]);
        assert!(runs(std::iter::empty()).is_empty());
    }
}
