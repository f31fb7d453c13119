//! The seed landscape (`kubelink::landscape::seed`) as the agent tests start it.

use std::path::PathBuf;

use kubelink::landscape::seed::SeedLandscape;

use crate::netns;

/// A started landscape with its runtime and work directory (kept with the logs when a test fails).
pub struct Started {
    pub rt: tokio::runtime::Runtime,
    pub l: SeedLandscape,
    pub dir: PathBuf,
}

/// Checks the gate for `test` (root and `tools`; see [`netns::require`]), then builds and starts a
/// landscape with `shoots` shoots and `slots` gateway slots. `None`: skipped outside CI.
pub fn start(test: &str, tools: &[&str], shoots: usize, slots: usize) -> Option<Started> {
    if !netns::require(test, tools) {
        return None;
    }
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let dir = netns::workdir(test);
    let mut l = rt
        .block_on(SeedLandscape::build_with_slots(shoots, slots, &dir, &netns::kubelink_bin()))
        .unwrap_or_else(|e| panic!("building the landscape: {e}"));
    rt.block_on(l.start()).unwrap_or_else(|e| panic!("starting the landscape: {e}; logs in {}", dir.display()));
    Some(Started { rt, l, dir })
}

/// The node index of a Lease holder (`nN`).
pub fn node_of(holder: &str) -> usize {
    holder.strip_prefix('n').and_then(|n| n.parse().ok()).expect("holder names are nN")
}
