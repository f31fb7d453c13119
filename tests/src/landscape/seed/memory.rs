//! Agent memory with many shoots (`kubelink-bench --agents N`): a one-slot seed landscape with one
//! live shoot, then `N - 1` more shoots' Extensions (gardenlet's stand-in, 16 at a time). The
//! controller allocates them; the gateway's device gets a peer for each; every agent watches them all. Prints each agent's peak RSS before
//! (one shoot: the baseline, measured in the same run) and after, and how long the gateway took
//! from the objects' creation to all peers.

use std::fmt::Write;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};

use super::{NODES, SeedLandscape};
use crate::bench::vm_hwm_kib;

impl SeedLandscape {
    /// The kubelink binary the agents run, by its profile directory and size (`release`, or `dist` as
    /// shipped; its resident code is a large part of an agent's RSS).
    fn binary(&self) -> String {
        let profile = self.bin.parent().and_then(|d| d.file_name()).map(|n| n.to_string_lossy().into_owned());
        let size = std::fs::metadata(&self.bin).map(|m| m.len() as f64 / 1e6).unwrap_or(0.0);
        format!("{}/kubelink ({size:.1} MB)", profile.unwrap_or_default())
    }

    /// Each node's agent: (node, its role, its peak RSS in MiB).
    async fn agent_memory(&self) -> Vec<(usize, &'static str, Option<f64>)> {
        let holders = self.holders().await;
        (0..NODES)
            .map(|i| {
                let role = if holders.values().any(|h| *h == super::node_name(i)) { "gateway" } else { "router" };
                (i, role, self.agents[i].as_ref().and_then(|p| vm_hwm_kib(p.pid())).map(|kib| kib as f64 / 1024.0))
            })
            .collect()
    }

    /// Adds shoots `from..to` (no sidecars), waits until the gateway has a peer and every router a
    /// route for each of the `to` shoots, and reports (see the module's comment).
    pub async fn measure_agent_memory(&mut self, to: usize) -> Result<String, String> {
        let from = self.shoots.len();
        let before = self.agent_memory().await;
        // gardenlet's part: the shoots' control-plane namespaces and Clusters (not timed)...
        for i in from..to {
            self.prepare_shoot(i).await?;
        }
        // ...then their Extensions, each reconciled until ready.
        let start = Instant::now();
        let this = &*self;
        let reconciles =
            futures::stream::iter(from..to).map(|i| async move { this.reconcile_shoot_extension(i).await });
        reconciles.buffer_unordered(16).try_collect::<Vec<()>>().await?;
        // The gateway's device gets a peer per shoot; a router's routes do not grow with the shoots
        // (one route for the CIDR per gateway), so the gateway's count is the one to wait for.
        let gateway = before.iter().find(|(_, role, _)| *role == "gateway").map(|(i, _, _)| *i);
        let gateway = gateway.ok_or("no node holds the slot")?;
        let mut took = None;
        while took.is_none() && start.elapsed() < Duration::from_secs(600) {
            if self.gateway_peers(gateway).len() >= to {
                took = Some(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // A few more passes with everything in place, so the peaks include steady state.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let after = self.agent_memory().await;
        let took = took.map_or("not within 600 s".into(), |d| format!("{d:.1?}"));
        let mut out = format!(
            "agent peak RSS (VmHWM, MiB) of {}, {from} shoot(s) then {to}; the gateway had all {to} peers \
             {took} after the first Extension was created\n\n| node | role | with {from} | with {to} | ratio |\n\
             |---|---|---|---|---|\n",
            self.binary()
        );
        for ((i, role, b), (_, _, a)) in before.iter().zip(&after) {
            let ratio = a.zip(*b).map_or("–".into(), |(a, b)| format!("{:.2}x", a / b));
            let mib = |v: &Option<f64>| v.map_or("–".into(), |v| format!("{v:.1}"));
            writeln!(out, "| {i} | {role} | {} | {} | {ratio} |", mib(b), mib(a)).map_err(|e| e.to_string())?;
        }
        Ok(out)
    }
}
