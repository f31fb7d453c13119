//! The controller's side of the seed-local projection: what to write so that the ShootPeers are the
//! wanted ones. The types themselves ([`SeedTunnel`], [`ShootPeer`]) are the agents' contract and live
//! in `kubelink-contract`; the chart's CRDs are generated from them here.

use std::collections::BTreeMap;

pub use kubelink_contract::projection::{GROUP, Peer, SeedTunnel, SeedTunnelSpec, ShootPeer, ShootPeerSpec};

/// What to change so that the ShootPeers in the namespace are `want` (by name).
#[derive(Debug, Default)]
pub struct PeerChanges {
    pub create: Vec<ShootPeer>,
    /// Each with the resourceVersion of the object it replaces.
    pub replace: Vec<ShootPeer>,
    pub delete: Vec<String>,
}

/// Pure diff of the listed ShootPeers against the wanted ones: an unchanged peer is not written.
pub fn plan_peers(current: &BTreeMap<String, ShootPeer>, want: &BTreeMap<String, ShootPeer>) -> PeerChanges {
    let mut changes = PeerChanges::default();
    for (name, peer) in want {
        match current.get(name) {
            None => changes.create.push(peer.clone()),
            Some(have) if have.spec == peer.spec => {}
            Some(have) => {
                let mut next = peer.clone();
                next.metadata.resource_version = have.metadata.resource_version.clone();
                changes.replace.push(next);
            }
        }
    }
    changes.delete = current.keys().filter(|n| !want.contains_key(*n)).cloned().collect();
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::ShootKey;
    use crate::keys::PublicKey;
    use crate::record::Recorded;
    use kube::CustomResourceExt;

    #[test]
    fn only_what_differs_is_written() {
        let rec = |a: &str, k: u8| Recorded { address: a.parse().unwrap(), public_key: PublicKey::from_bytes([k; 32]) };
        let peer = |n: &str, r: Recorded| {
            let shoot = ShootKey::new("garden-dev", n);
            let mut p = ShootPeer::of("kubelink", &format!("shoot--dev--{n}"), &shoot, r.address, &r.public_key);
            p.metadata.resource_version = Some("7".into());
            (format!("shoot--dev--{n}"), p)
        };
        let current: BTreeMap<_, _> = [
            peer("same", rec("192.168.128.10", 1)),
            peer("moved", rec("192.168.128.11", 2)),
            peer("gone", rec("192.168.128.12", 3)),
        ]
        .into();
        let want: BTreeMap<_, _> = [
            peer("same", rec("192.168.128.10", 1)),
            peer("moved", rec("192.168.128.13", 2)),
            peer("new", rec("192.168.128.14", 4)),
        ]
        .into();
        let changes = plan_peers(&current, &want);
        assert_eq!(changes.create.iter().map(|p| p.spec.shoot.as_str()).collect::<Vec<_>>(), ["garden-dev/new"]);
        assert_eq!(changes.replace.len(), 1);
        assert_eq!(changes.replace[0].spec.address, "192.168.128.13");
        assert_eq!(changes.replace[0].metadata.resource_version.as_deref(), Some("7"), "a replace is guarded");
        assert_eq!(changes.delete, ["shoot--dev--gone"]);
    }

    /// The chart ships the CRDs generated from these types, as templates (gardenlet renders
    /// `templates/` only) behind `crds.enabled`. `KUBELINK_UPDATE_CRDS=1` rewrites them.
    #[test]
    fn the_charts_crds_are_the_generated_ones() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/kubelink/templates");
        for (file, crd) in [("seedtunnels", SeedTunnel::crd()), ("shootpeers", ShootPeer::crd())] {
            let text = format!(
                "{{{{- /* Generated from ipam/src/projection.rs; KUBELINK_UPDATE_CRDS=1 cargo test -p kubelink-ipam rewrites it. */}}}}\n\
                 {{{{- if .Values.crds.enabled }}}}\n{}{{{{- end }}}}\n",
                serde_yaml_ng::to_string(&crd).unwrap()
            );
            let path = dir.join(format!("crd-{file}.yaml"));
            if std::env::var_os("KUBELINK_UPDATE_CRDS").is_some() {
                std::fs::write(&path, &text).unwrap();
            }
            let shipped = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(shipped == text, "{} differs from the type; run with KUBELINK_UPDATE_CRDS=1", path.display());
        }
    }
}
