//! A short run of the data-path benchmark (`scripts/bench`): both kubelink engines (fast path on and
//! off) and the veth ceiling carry real TCP and ping between two namespaces, and the report names
//! every engine with a ratio. Speed is the benchmark's business; this only checks that it measures.
//!
//! Needs root, `ip`, `ping`, `iperf3`, `wireguard-go`, `wg`: fails under CI=true without them.

use std::time::Duration;

use kubelink_tests::bench::{self, Engine, Metric, Plan};
use kubelink_tests::netns;

#[test]
fn benchmark_measures_every_engine() {
    if !netns::require("benchmark_measures_every_engine", bench::TOOLS) {
        return;
    }
    let dir = netns::workdir("bench_smoke");
    let plan = Plan {
        engines: vec![Engine::Veth, Engine::Kubelink, Engine::KubelinkPlain],
        rounds: 1,
        seconds: 1,
        pings: 5,
        kubelink: netns::kubelink_bin(),
        dir: dir.clone(),
    };
    let samples = bench::run(&plan).unwrap_or_else(|e| panic!("benchmark failed (logs in {}): {e}", dir.display()));
    for s in &samples {
        for m in [Metric::Tcp1, Metric::Tcp1Rev, Metric::Tcp4, Metric::Tcp4Rev] {
            let rate = s.median(m).unwrap_or(0.0);
            assert!(rate > 0.01, "{}: {m:?} measured {rate} Gbit/s", s.engine.label());
        }
        assert!(s.median(Metric::PingMs).is_some_and(|ms| ms > 0.0), "{}: no ping rtt", s.engine.label());
        let tunnel = s.engine != Engine::Veth;
        assert_eq!(s.median(Metric::RssMib).is_some(), tunnel, "{}: RSS only for daemons", s.engine.label());
    }
    let ratios = bench::ratios(&samples);
    assert!(ratios.contains("kubelink, fast path off") && ratios.contains("plain veth"), "{ratios}");
    println!("{}\n{ratios}", bench::table(&samples));
    assert!(bench::crypto_ceiling(Duration::from_millis(100)) > 0.1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A short run of `kubelink-bench --agents N`: on a one-slot seed landscape going from one shoot to
/// 30, the gateway gets every peer and every agent reports a peak RSS before and after.
#[test]
fn agent_memory_run_reports_every_agent() {
    const TOOLS: [&str; 5] = ["ip", "ping", "nft", "conntrack", "wg"];
    let Some(mut started) = kubelink_tests::landscape::start("bench_smoke_agents", &TOOLS, 1, 1) else { return };
    let rt = &started.rt;
    assert!(rt.block_on(started.l.wait_for_shoots(Duration::from_secs(60))), "logs in {}", started.dir.display());
    let report = rt.block_on(started.l.measure_agent_memory(30));
    started.l.stop();
    let report = report.unwrap_or_else(|e| panic!("{e}; logs in {}", started.dir.display()));
    println!("{report}");
    assert!(report.contains("the gateway had all 30 peers") && !report.contains("not within"), "{report}");
    let rows: Vec<&str> = report.lines().filter(|l| l.contains("| gateway |") || l.contains("| router |")).collect();
    assert_eq!(rows.len(), 3, "one row per node: {report}");
    assert!(rows.iter().all(|r| r.ends_with("x |")), "every agent has both peaks and a ratio: {report}");
}
