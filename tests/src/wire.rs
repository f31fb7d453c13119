//! A wire with delay and loss, in user space, for the underlay cases of the fault matrix.
//!
//! The kernel of this machine (and of CI's) is built without netem (`CONFIG_NET_SCH_NETEM` is not
//! set), so `tc qdisc ... netem` is refused. A [`Wire`] stands in: a namespace between a host and its
//! switch port with two links, and one thread per direction that reads every frame from one link
//! (a packet socket) and writes it to the other after the delay, dropping the share lost. Frames
//! stay real frames between real kernels; only the cable is simulated. With no impairment set it
//! forwards at once.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::netns::Netns;

/// Delay and loss of one direction of the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Impairment {
    pub delay: Duration,
    /// Lost frames per 1000.
    pub loss_per_mille: u32,
}

/// Both directions of a wire, running until dropped.
pub struct Wire {
    pub ns: Netns,
    impairment: Arc<Mutex<Impairment>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Frames dropped as lost, both directions.
    pub lost: Arc<AtomicU64>,
}

impl Wire {
    /// Relays between links `a` and `b` of `ns` (both up, no addresses).
    pub fn start(ns: Netns, a: &str, b: &str) -> Result<Self, String> {
        let (a_fd, b_fd) = {
            let (a, b) = (a.to_string(), b.to_string());
            ns.run_in(move || Ok::<_, String>((packet_socket(&a)?, packet_socket(&b)?)))??
        };
        let (a_fd, b_fd) = (Arc::new(a_fd), Arc::new(b_fd));
        let mut wire = Wire {
            ns,
            impairment: Default::default(),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            lost: Arc::new(AtomicU64::new(0)),
        };
        for (from, to, seed) in [(a_fd.clone(), b_fd.clone(), 0x9e37_79b9), (b_fd, a_fd, 0x85eb_ca6b)] {
            let queue = Arc::new((Mutex::new(VecDeque::new()), Condvar::new()));
            let (q, stop) = (queue.clone(), wire.stop.clone());
            let (imp, lost) = (wire.impairment.clone(), wire.lost.clone());
            wire.threads.push(std::thread::spawn(move || read_loop(&from, &q, &imp, &lost, &stop, seed)));
            let stop = wire.stop.clone();
            wire.threads.push(std::thread::spawn(move || write_loop(&to, &queue, &stop)));
        }
        Ok(wire)
    }

    /// Sets the delay and loss of both directions; frames already on the wire keep theirs.
    pub fn impair(&self, impairment: Impairment) {
        *self.impairment.lock().unwrap_or_else(|e| e.into_inner()) = impairment;
    }
}

impl std::fmt::Debug for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let impairment = *self.impairment.lock().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("Wire").field("ns", &self.ns.name).field("impairment", &impairment).finish()
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

type Queue = (Mutex<VecDeque<(Instant, Vec<u8>)>>, Condvar);

/// Turns transmit checksum offload off on `ifname` (in the calling thread's namespace). A frame
/// sent with offload carries a checksum the receiving end's driver would complete; read from a
/// packet socket and written again, it would arrive with a wrong one. Without it TCP segmentation
/// offload goes too, so frames are never larger than the MTU.
pub fn tx_checksum_off(ifname: &str) -> Result<(), String> {
    const ETHTOOL_STXCSUM: u32 = 0x17;
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    let err = |what: &str| format!("{ifname}: {what}: {}", io::Error::last_os_error());
    // SAFETY: plain socket(2), owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    if fd < 0 {
        return Err(err("socket"));
    }
    // SAFETY: fd is new and ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut value = EthtoolValue { cmd: ETHTOOL_STXCSUM, data: 0 };
    // SAFETY: a zeroed ifreq is valid; the name fits (checked) and is NUL-terminated by the zeroing.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if ifname.len() >= req.ifr_name.len() {
        return Err(format!("{ifname}: name too long"));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(ifname.bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_data = std::ptr::from_mut(&mut value).cast();
    // SAFETY: SIOCETHTOOL with an ifreq whose data points to a live ethtool_value.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCETHTOOL, &mut req) } != 0 {
        return Err(err("SIOCETHTOOL"));
    }
    Ok(())
}

/// A packet socket on `ifname` for every protocol, not seeing its own sends, with a receive
/// timeout so that its reader notices a stop.
fn packet_socket(ifname: &str) -> Result<OwnedFd, String> {
    let err = |what: &str| format!("{ifname}: {what}: {}", io::Error::last_os_error());
    let all = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(all)) };
    if fd < 0 {
        return Err(err("socket"));
    }
    // SAFETY: fd is a new, valid descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = std::ffi::CString::new(ifname).map_err(|e| e.to_string())?;
    // SAFETY: a NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(err("if_nametoindex"));
    }
    // SAFETY: zeroed sockaddr_ll is valid; the fields set are the ones bind(2) reads.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = all;
    addr.sll_ifindex = index as i32;
    let len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
    // SAFETY: addr is a valid sockaddr_ll of `len` bytes.
    if unsafe { libc::bind(fd.as_raw_fd(), std::ptr::from_ref(&addr).cast(), len) } != 0 {
        return Err(err("bind"));
    }
    set_opt(&fd, libc::SOL_PACKET, 23 /* PACKET_IGNORE_OUTGOING */, &1i32).map_err(|_| err("ignore outgoing"))?;
    let timeout = libc::timeval { tv_sec: 0, tv_usec: 100_000 };
    set_opt(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &timeout).map_err(|_| err("receive timeout"))?;
    Ok(fd)
}

fn set_opt<T>(fd: &OwnedFd, level: i32, name: i32, value: &T) -> Result<(), ()> {
    let len = std::mem::size_of::<T>() as u32;
    // SAFETY: value points to a T of `len` bytes for the duration of the call.
    let rc = unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, std::ptr::from_ref(value).cast(), len) };
    if rc == 0 { Ok(()) } else { Err(()) }
}

fn read_loop(fd: &OwnedFd, queue: &Queue, imp: &Mutex<Impairment>, lost: &AtomicU64, stop: &AtomicBool, seed: u64) {
    let mut rng = seed;
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: buf is writable for its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let Ok(n) = usize::try_from(n) else { continue };
        let impairment = *imp.lock().unwrap_or_else(|e| e.into_inner());
        if roll(&mut rng) % 1000 < u64::from(impairment.loss_per_mille) {
            lost.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let (frames, wake) = queue;
        frames
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back((Instant::now() + impairment.delay, buf[..n].to_vec()));
        wake.notify_one();
    }
    queue.1.notify_one();
}

/// xorshift64: loss needs no more than an even spread.
fn roll(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn write_loop(fd: &OwnedFd, queue: &Queue, stop: &AtomicBool) {
    let (frames, wake) = queue;
    let mut pending = frames.lock().unwrap_or_else(|e| e.into_inner());
    while !stop.load(Ordering::Relaxed) {
        let due = pending.front().map(|(at, _)| *at);
        match due {
            None => {
                pending = wake.wait_timeout(pending, Duration::from_millis(100)).unwrap_or_else(|e| e.into_inner()).0
            }
            Some(at) if at > Instant::now() => {
                let wait = at - Instant::now();
                pending = wake.wait_timeout(pending, wait).unwrap_or_else(|e| e.into_inner()).0;
            }
            Some(_) => {
                let (_, frame) = pending.pop_front().expect("a frame is due");
                drop(pending);
                // SAFETY: frame is readable for its length. A frame the link refuses is lost, as on a cable.
                unsafe { libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
                pending = frames.lock().unwrap_or_else(|e| e.into_inner());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loss_roll_is_spread_evenly() {
        let mut rng = 0x9e37_79b9;
        let lost = (0..100_000).filter(|_| roll(&mut rng) % 1000 < 200).count();
        assert!((19_000..21_000).contains(&lost), "{lost} of 100000 at 20 %");
    }
}
