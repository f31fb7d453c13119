//! The device part of a pass over the in-memory backend ([`crate::wg::fake::FakeWg`]): what is read,
//! planned and applied, in which order, and what is left alone. Links, addresses and routes need a
//! kernel and are covered by the namespace tests.

use std::collections::BTreeMap;

use kubelink_contract::keys::PrivateKey;

use super::*;
use crate::wg::fake::{Call, FakeWg, handshake};
use crate::wg::{DeviceSpec, PeerSpec};

const DEV: &str = "kl0";

fn key(n: u8) -> PublicKey {
    PrivateKey::from_bytes([n; 32]).public_key()
}

fn peer(n: u8, dialled: bool) -> PeerSpec {
    PeerSpec {
        public_key: key(n),
        endpoint: dialled.then(|| format!("192.0.2.{n}:51820").parse().unwrap()),
        allowed_ips: [format!("192.168.128.{n}/32").parse().unwrap()].into(),
        persistent_keepalive: dialled.then_some(21),
    }
}

fn spec(peers: &[PeerSpec]) -> DeviceSpec {
    DeviceSpec {
        name: DEV.parse().unwrap(),
        private_key: PrivateKey::from_bytes([99; 32]),
        listen_port: Some(51820),
        fwmark: None,
        peers: peers.iter().map(|p| (p.public_key, p.clone())).collect::<BTreeMap<_, _>>(),
    }
}

fn setup() -> (Arc<FakeWg>, DeviceSync) {
    let fake = Arc::new(FakeWg::default());
    (fake.clone(), DeviceSync::new(fake))
}

#[tokio::test]
async fn a_new_device_gets_key_port_and_every_peer_in_one_update_and_the_next_pass_changes_nothing() {
    let (fake, sync) = setup();
    let want = spec(&[peer(1, false), peer(2, false)]);
    fake.ensure(&want).await.unwrap();
    let summary = sync.sync(&want).await.unwrap();
    assert_eq!(summary.as_deref(), Some("key:true port:Some(51820) fwmark:None +2 ~0 -0 peers"));
    let calls = fake.take_calls();
    assert_eq!(calls[1..], [Call::Read(DEV.into()), Call::Apply(DEV.into(), summary.unwrap())]);
    let device = fake.device(DEV).unwrap();
    assert_eq!(device.public_key, Some(want.private_key.public_key()));
    assert_eq!(device.peers.keys().copied().collect::<Vec<_>>(), vec![key(1), key(2)]);

    assert_eq!(sync.sync(&want).await.unwrap(), None, "no churn: an unchanged device is not re-applied");
    assert_eq!(fake.take_calls(), [Call::Read(DEV.into())]);
}

#[tokio::test]
async fn drift_by_hand_is_repaired_and_only_the_difference_applied() {
    let (fake, sync) = setup();
    let want = spec(&[peer(1, false), peer(2, false)]);
    fake.ensure(&want).await.unwrap();
    sync.sync(&want).await.unwrap();
    // `wg set` by hand: peer 2 removed, a stranger added, peer 1's allowed IPs changed.
    fake.edit(DEV, |d| {
        d.peers.remove(&key(2));
        let stranger = peer(3, false);
        d.peers
            .insert(key(3), crate::wg::ObservedPeer { spec: stranger, last_handshake: None, rx_bytes: 0, tx_bytes: 0 });
        d.peers.get_mut(&key(1)).unwrap().spec.allowed_ips = ["10.0.0.0/8".parse().unwrap()].into();
    });
    fake.take_calls();
    let summary = sync.sync(&want).await.unwrap();
    assert_eq!(summary.as_deref(), Some("key:false port:None fwmark:None +1 ~1 -1 peers"));
    let device = fake.device(DEV).unwrap();
    let peers: Vec<PeerSpec> = device.peers.values().map(|p| p.spec.clone()).collect();
    assert_eq!(peers, [peer(1, false), peer(2, false)]);
}

#[tokio::test]
async fn a_dialled_peer_without_a_session_is_kicked_once_per_rekey_timeout_a_live_one_never() {
    let (fake, sync) = setup();
    let want = spec(&[peer(1, true), peer(2, true), peer(3, false)]);
    fake.ensure(&want).await.unwrap();
    sync.sync(&want).await.unwrap();
    fake.edit(DEV, |d| handshake(d, &key(2), Duration::from_secs(10)));
    fake.take_calls();
    sync.sync(&want).await.unwrap();
    assert_eq!(fake.take_calls(), [Call::Read(DEV.into()), Call::Handshake(DEV.into(), key(1))]);
    sync.sync(&want).await.unwrap();
    assert_eq!(fake.take_calls(), [Call::Read(DEV.into())], "not again within {KICK_EVERY:?}");
}

#[tokio::test]
async fn a_missing_device_is_an_error_naming_it() {
    let (_fake, sync) = setup();
    let err = sync.sync(&spec(&[])).await.unwrap_err();
    assert!(matches!(&err, WgError::NoDevice(name) if name == DEV), "{err}");
}

#[tokio::test]
async fn restarting_a_session_removes_and_re_adds_that_peer_only_then_kicks_it() {
    let fake = FakeWg::default();
    let want = spec(&[peer(1, true), peer(2, true)]);
    fake.ensure(&want).await.unwrap();
    fake.apply(&want, &wg::plan(&want, &fake.device(DEV).unwrap())).await.unwrap();
    fake.take_calls();
    fake.restart_session(&want, &key(2)).await.unwrap();
    let calls = fake.take_calls();
    let summaries: Vec<&str> = calls
        .iter()
        .filter_map(|c| match c {
            Call::Apply(_, s) => Some(s.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        summaries,
        ["key:false port:None fwmark:None +0 ~0 -1 peers", "key:false port:None fwmark:None +1 ~0 -0 peers"]
    );
    assert_eq!(calls.last(), Some(&Call::Handshake(DEV.into(), key(2))));
    assert_eq!(fake.device(DEV).unwrap().peers.len(), 2);
}
