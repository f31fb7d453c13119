//! The local landscapes, in network namespaces on this machine:
//!
//! - [`seed`]: the seed's real API server, gardenlet's stand-in, seed nodes running `kubelink agent`,
//!   a load balancer per gateway slot ([`lb`]), the extension controller and shoots running the
//!   `kubelink shoot` sidecar. `kubelink-landscape` runs it; so do the agent tests ([`start`]).
//! - [`control`]: the seed's control plane alone on this host, for the kernel scenario under qemu
//!   (the agent and the sidecar run in the guest).
//! - [`standalone`]: one gateway, one worker and shoots running `kubelink run` from static configs.

pub mod chart;
pub mod control;
pub mod lb;
pub mod preflight;
pub mod seed;
pub mod standalone;

use std::path::PathBuf;

use seed::SeedLandscape;

use crate::netns;

/// A started landscape with its runtime and work directory (kept with the logs when a test fails).
pub struct Started {
    pub rt: tokio::runtime::Runtime,
    pub l: SeedLandscape,
    pub dir: PathBuf,
}

/// Checks the gate for `test` (root, `tools` and Helm; see [`netns::require`] and
/// [`crate::helm::helm_ready`]), then builds and starts a landscape with `shoots` shoots and `slots`
/// gateway slots. `None`: skipped outside CI.
pub fn start(test: &str, tools: &[&str], shoots: usize, slots: usize) -> Option<Started> {
    start_with(test, tools, shoots, slots, false)
}

/// [`start`]; `wired_shoots`: each shoot behind a wire with settable delay and loss
/// ([`crate::netns::Segment::impair`]).
pub fn start_with(test: &str, tools: &[&str], shoots: usize, slots: usize, wired_shoots: bool) -> Option<Started> {
    if !netns::require(test, tools) {
        return None;
    }
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    if !rt.block_on(crate::helm::helm_ready(test)) {
        return None;
    }
    let dir = netns::workdir(test);
    let mut l = rt
        .block_on(SeedLandscape::build_with(shoots, slots, wired_shoots, &dir, &netns::kubelink_bin()))
        .unwrap_or_else(|e| panic!("building the landscape: {e}"));
    rt.block_on(l.start()).unwrap_or_else(|e| panic!("starting the landscape: {e}; logs in {}", dir.display()));
    Some(Started { rt, l, dir })
}

/// The node index of a Lease holder (`nN`).
pub fn node_of(holder: &str) -> usize {
    holder.strip_prefix('n').and_then(|n| n.parse().ok()).expect("holder names are nN")
}
