//! The tun transport under gotatun's `Device`, on tun-rs.
//!
//! With offload on (the fast path), the tun carries a virtio-net header: one read returns a whole
//! TCP segment of up to 64 KB, which tun-rs splits into tunnel-sized packets, and the packets
//! gotatun decrypts are merged back into large segments (GRO) before one write each. That cuts the
//! syscalls per byte, which is what bounds a userspace tunnel (one core seals many Gbit/s of
//! ChaCha20-Poly1305). With offload off, or where the kernel refuses it, every packet is one read or
//! one write, as in gotatun's own tun transport.

use std::io;
use std::sync::{Arc, Weak};
use std::time::Duration;

use gotatun::packet::{Ip, Packet, PacketBufPool};
use gotatun::tun::{IpRecv, IpSend, MtuWatcher};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tun_rs::{AsyncDevice, DeviceBuilder, GROTable, IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN};

/// Packets handed to one merged write at most (tun-rs's batch size).
const BATCH: usize = IDEAL_BATCH_SIZE;
/// Decrypted packets waiting for the writer; beyond this gotatun's sender waits.
const QUEUE: usize = 1024;
/// A raw read: the virtio-net header and a segment of up to 64 KB.
const RAW_READ: usize = VIRTIO_NET_HDR_LEN + 65535;

/// Opens (or re-attaches to) the persistent tun `name` and makes the transport pair. `offload`
/// asks for the fast path; a kernel that refuses it gets the plain path, with a warning.
pub fn open(name: &str, offload: bool) -> io::Result<(TunTx, TunRx, MtuHandle)> {
    let dev = match build(name, offload) {
        Ok(dev) => dev,
        Err(e) if offload => {
            tracing::warn!(device = name, "tun offload refused ({e}); using one packet per read and write");
            build(name, false)?
        }
        Err(e) => return Err(e),
    };
    dev.persist()?;
    let dev = Arc::new(dev);
    let batched = dev.tcp_gso();
    tracing::info!(device = name, offload = batched, tun_udp_offload = dev.udp_gso(), "tun transport ready");
    let mtu = MtuPoll::start(&dev)?;
    let handle = MtuHandle { dev: Arc::downgrade(&dev), tx: mtu.tx.clone() };
    let tx = if batched { TunTx::batched(dev.clone()) } else { TunTx::Direct(dev.clone()) };
    Ok((tx, TunRx::new(dev, batched, mtu), handle))
}

/// Addresses, MTU and link state belong to kubelink's link layer: the builder only names the tun
/// and sets the offload mask (tun-rs also clears a mask left on a persistent tun when `offload` is off).
fn build(name: &str, offload: bool) -> io::Result<AsyncDevice> {
    DeviceBuilder::new().name(name).offload(offload).inherit_enable_state().build_async()
}

/// The sending half (decrypted packets into the tun).
pub enum TunTx {
    /// One write per packet.
    Direct(Arc<AsyncDevice>),
    /// Packets queue for a writer task that merges each batch into as few writes as it can.
    Batched { queue: mpsc::Sender<Packet<Ip>>, _writer: AbortOnDrop },
}

impl TunTx {
    fn batched(dev: Arc<AsyncDevice>) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        TunTx::Batched { queue, _writer: AbortOnDrop(tokio::spawn(write_merged(dev, rx))) }
    }
}

impl IpSend for TunTx {
    async fn send(&mut self, packet: Packet<Ip>) -> io::Result<()> {
        match self {
            TunTx::Direct(dev) => dev.send(&packet.into_bytes()).await.map(|_| ()),
            TunTx::Batched { queue, .. } => {
                queue.send(packet).await.map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "tun writer stopped"))
            }
        }
    }
}

/// Takes whatever is queued (up to a batch), merges what belongs to one flow and writes. Under load
/// batches fill by themselves; a lone packet is written at once, so latency does not grow.
async fn write_merged(dev: Arc<AsyncDevice>, mut rx: mpsc::Receiver<Packet<Ip>>) {
    let mut gro = GROTable::default();
    let mut packets = Vec::with_capacity(BATCH);
    let mut bufs: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut packets, BATCH).await > 0 {
        let n = packets.len();
        bufs.resize_with(bufs.len().max(n), Vec::new);
        // The virtio-net header goes in front of each packet, so each is copied behind headroom.
        for (buf, packet) in bufs.iter_mut().zip(packets.drain(..).map(Packet::into_bytes)) {
            buf.clear();
            buf.resize(VIRTIO_NET_HDR_LEN, 0);
            buf.extend_from_slice(&packet);
        }
        if let Err(e) = dev.send_multiple(&mut gro, &mut bufs[..n], VIRTIO_NET_HDR_LEN).await {
            if e.raw_os_error() == Some(libc::EBADFD) {
                tracing::error!("tun device is gone, stopping its writer: {e}");
                return;
            }
            tracing::debug!("tun write: {e}");
        }
    }
}

/// The receiving half (packets from the tun, to be encrypted).
pub struct TunRx {
    dev: Arc<AsyncDevice>,
    raw: Vec<u8>,
    bufs: Vec<PoolBuf>,
    sizes: Vec<usize>,
    out: Vec<Packet<Ip>>,
    mtu: MtuPoll,
}

impl TunRx {
    fn new(dev: Arc<AsyncDevice>, batched: bool, mtu: MtuPoll) -> Self {
        let (raw, slots) = if batched { (vec![0; RAW_READ], BATCH) } else { (Vec::new(), 1) };
        Self { dev, raw, bufs: Vec::with_capacity(slots), sizes: vec![0; slots], out: Vec::with_capacity(slots), mtu }
    }
}

/// A pool packet as a plain byte buffer for tun-rs to fill.
struct PoolBuf(Packet<[u8]>);

impl AsRef<[u8]> for PoolBuf {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl AsMut<[u8]> for PoolBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl IpRecv for TunRx {
    async fn recv<'a>(
        &'a mut self,
        pool: &mut PacketBufPool,
    ) -> io::Result<impl Iterator<Item = Packet<Ip>> + Send + 'a> {
        let slots = self.sizes.len();
        while self.bufs.len() < slots {
            self.bufs.push(PoolBuf(pool.get()));
        }
        let n = match self.dev.recv_multiple(&mut self.raw, &mut self.bufs, &mut self.sizes, 0).await {
            Ok(n) => n,
            // A segment tun-rs cannot split is dropped, as the kernel drops what it cannot deliver.
            Err(e) if e.kind() == io::ErrorKind::Other || e.kind() == io::ErrorKind::InvalidInput => {
                tracing::debug!("tun read: dropping a segment: {e}");
                0
            }
            Err(e) => return Err(e),
        };
        // Filled buffers leave with their packets; the next read takes fresh ones from the pool.
        for (buf, size) in self.bufs.drain(..n.min(slots)).zip(&self.sizes) {
            let mut packet = buf.0;
            packet.truncate(*size);
            if let Ok(ip) = packet.try_into_ip() {
                self.out.push(ip);
            }
        }
        Ok(self.out.drain(..))
    }

    fn mtu(&self) -> MtuWatcher {
        self.mtu.watcher.clone()
    }
}

/// The tun's MTU for gotatun, which pads packets up to it: a stale, larger value makes tunnel
/// packets too big for the underlay. The link layer tells it after each change ([`MtuHandle`]);
/// a poll catches a change made by hand.
struct MtuPoll {
    watcher: MtuWatcher,
    tx: Arc<watch::Sender<u16>>,
    _task: AbortOnDrop,
}

impl MtuPoll {
    fn start(dev: &Arc<AsyncDevice>) -> io::Result<Self> {
        let (tx, rx) = watch::channel(dev.mtu()?);
        let tx = Arc::new(tx);
        let task = tokio::spawn(poll_mtu(Arc::downgrade(dev), tx.clone()));
        Ok(Self { watcher: rx.into(), tx, _task: AbortOnDrop(task) })
    }
}

/// Rereads the tun's MTU for gotatun now (after kubelink's link layer set it).
pub struct MtuHandle {
    dev: Weak<AsyncDevice>,
    tx: Arc<watch::Sender<u16>>,
}

impl MtuHandle {
    pub fn refresh(&self) {
        refresh(&self.dev, &self.tx);
    }
}

/// False once the device is gone.
fn refresh(dev: &Weak<AsyncDevice>, tx: &watch::Sender<u16>) -> bool {
    let Some(mtu) = dev.upgrade().and_then(|d| d.mtu().ok()) else { return false };
    tx.send_if_modified(|old| std::mem::replace(old, mtu) != mtu);
    true
}

async fn poll_mtu(dev: Weak<AsyncDevice>, tx: Arc<watch::Sender<u16>>) {
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        if !refresh(&dev, &tx) {
            return;
        }
    }
}

/// A task that ends with its owner.
pub struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
