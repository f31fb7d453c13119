//! A shoot's control plane moving from one seed to another, as gardenlet drives it
//! (`reconciler_migrate.go` on the source seed, the restore flow on the destination): the source
//! seed's Extension migrated and deleted, the shoot keeping its Secret (the ManagedResource is
//! deleted with `keepObjects`) and its sidecar running on it; the destination given the namespace,
//! the Cluster and the Extension with the migrated state. The shoot's host keeps its address and
//! reaches the destination's load balancers instead of the source's, as a shoot on the internet
//! reaches both seeds.

use super::{SeedLandscape, ShootHost, control_plane_namespace, shoot_name};
use crate::gardenlet::MigratedState;
use kubelink_ipam::extension::objects::TYPE;

/// A shoot on its way between seeds: its host (sidecar still running on the Secret it has) and the
/// state gardenlet carries in the ShootState.
pub struct Migrating {
    pub host: ShootHost,
    pub state: MigratedState,
    index: usize,
}

impl SeedLandscape {
    /// gardenlet's migrate of shoot `i`, the last shoot of this seed (indices name the shoots), away
    /// from this seed: the Extension's `migrate` operation, then its deletion. The source seed
    /// forgets the shoot; the shoot keeps what it was given.
    pub async fn migrate_shoot_out(&mut self, i: usize) -> Result<Migrating, String> {
        if i + 1 != self.shoots.len() {
            return Err(format!("shoot {i} is not the last of {}: only the last one can leave", self.shoots.len()));
        }
        let ns = control_plane_namespace(&shoot_name(i));
        let state = self.gardenlet.migrate(&ns, TYPE).await.map_err(|e| e.to_string())?;
        let host = self.shoots.pop().ok_or("no shoot to migrate")?;
        Ok(Migrating { host, state, index: i })
    }

    /// gardenlet's restore of a migrated shoot on this seed: the shoot's host moves onto this seed's
    /// segment (same address, its sidecar untouched), then the namespace, Cluster and the Extension
    /// with the migrated state. `sync_shoots` delivers the new Secret, which the running sidecar
    /// reads. Returns the shoot's index here (its index on the source seed: names stay).
    pub async fn restore_shoot(&mut self, shoot: Migrating) -> Result<usize, String> {
        let Migrating { host, state, index } = shoot;
        if index != self.shoots.len() || self.wired_shoots {
            return Err(format!("shoot {index} cannot land here: this seed has {} shoots", self.shoots.len()));
        }
        // The veth into the source seed's segment goes with its peer; the same address on ours.
        host.ns.ip(&["link", "del", "eth0"])?;
        self.lan.attach(&host.ns, "eth0", &super::shoot_cidr(index))?;
        self.shoots.push(host);
        let ns = self.prepare_shoot(index).await?;
        self.gardenlet.restore(&ns, TYPE, None, None, &state).await.map_err(|e| e.to_string())?;
        Ok(index)
    }
}
