//! Applies 1000 peers to a fresh userspace (gotatun) device, then one more, and prints the times.
//! Baseline in the same run: the same 1000 peers applied one update at a time.
//!
//! Needs root (it creates tun devices) and runs in a network namespace of its own.
//! `cargo bench -p kubelink --bench userspace_peers`

use std::time::{Duration, Instant};

use kubelink::keys::{PrivateKey, PublicKey};
use kubelink::link::Link;
use kubelink::wg::{self, DeviceSpec, ObservedDevice, PeerSpec, UserspaceBackend, WgBackend};

const PEERS: u32 = 1000;

fn peer(i: u32) -> PeerSpec {
    let mut bytes = [0u8; 32];
    bytes[..4].copy_from_slice(&i.to_be_bytes());
    let mut p = PeerSpec::new(PublicKey::from_bytes(bytes));
    let ip = format!("192.168.{}.{}/32", 128 + (i >> 8), i & 255);
    p.allowed_ips.insert(ip.parse().expect("valid"));
    p
}

fn spec(name: &str, n: u32) -> DeviceSpec {
    DeviceSpec {
        name: name.parse().expect("a valid interface name"),
        private_key: PrivateKey::generate(),
        listen_port: None,
        fwmark: None,
        peers: (0..n).map(|i| (peer(i).public_key, peer(i))).collect(),
    }
}

/// Creates the device empty, then applies `want` in one update; returns the time of that update.
async fn batched(backend: &UserspaceBackend, want: &DeviceSpec) -> Duration {
    let empty = DeviceSpec { peers: Default::default(), ..want.clone() };
    backend.ensure(&empty).await.expect("device");
    let seen = backend.read(&want.name).await.expect("read").expect("exists");
    let start = Instant::now();
    let update = wg::plan(want, &seen);
    backend.apply(want, &update).await.expect("apply");
    start.elapsed()
}

/// The baseline: one update per peer.
async fn one_by_one(backend: &UserspaceBackend, want: &DeviceSpec) -> Duration {
    let empty = DeviceSpec { peers: Default::default(), ..want.clone() };
    backend.ensure(&empty).await.expect("device");
    let start = Instant::now();
    let mut partial = empty.clone();
    for (k, p) in &want.peers {
        let seen = backend.read(&want.name).await.expect("read").expect("exists");
        partial.peers.insert(*k, p.clone());
        backend.apply(&partial, &wg::plan(&partial, &seen)).await.expect("apply");
    }
    start.elapsed()
}

fn unchanged(before: &ObservedDevice, after: &ObservedDevice) -> bool {
    before
        .peers
        .iter()
        .all(|(k, p)| after.peers.get(k).is_some_and(|q| q.spec == p.spec && q.last_handshake == p.last_handshake))
}

async fn bench() {
    let link = Link::open().expect("netlink");
    let backend = UserspaceBackend::new(link);

    let base = spec("klbench1", PEERS);
    let t_base = one_by_one(&backend, &base).await;

    let mut want = spec("klbench0", PEERS);
    let t_batch = batched(&backend, &want).await;
    let before = backend.read(&want.name).await.expect("read").expect("exists");
    assert_eq!(before.peers.len(), PEERS as usize);

    want.peers.insert(peer(PEERS).public_key, peer(PEERS));
    // A whole reconcile pass: read the device, plan, apply.
    let start = Instant::now();
    let seen = backend.read(&want.name).await.expect("read").expect("exists");
    let update = wg::plan(&want, &seen);
    backend.apply(&want, &update).await.expect("apply one");
    let t_one = start.elapsed();
    assert_eq!((update.add_peers.len(), update.change_peers.len(), update.remove_peers.len()), (1, 0, 0));
    let after = backend.read(&want.name).await.expect("read").expect("exists");
    assert_eq!(after.peers.len(), PEERS as usize + 1);
    assert!(unchanged(&before, &after), "an existing peer changed when one was added");

    println!("userspace device, {PEERS} peers in one update:   {:>9.2} ms  (goal < 1000 ms)", ms(t_batch));
    println!("userspace device, {PEERS} peers one at a time:   {:>9.2} ms  (baseline)", ms(t_base));
    println!("batched vs one-at-a-time:                  {:>9.2}x faster", ms(t_base) / ms(t_batch));
    println!("one more peer (read+plan+apply) on {PEERS}:    {:>9.3} ms  (goal < 20 ms)", ms(t_one));
    println!("existing peers untouched by the addition:  yes ({} compared)", before.peers.len());
    for name in ["klbench0", "klbench1"] {
        backend.remove(name).await.expect("cleanup");
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    // SAFETY: plain syscalls before any thread exists.
    if unsafe { libc::geteuid() } != 0 || unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        eprintln!("userspace_peers: needs root to create tun devices in a private network namespace");
        std::process::exit(1);
    }
    // SAFETY: no other thread exists yet.
    unsafe { std::env::set_var("KUBELINK_STATE_DIR", std::env::temp_dir().join("kubelink-bench-state")) };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(bench());
}
