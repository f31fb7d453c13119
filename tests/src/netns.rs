//! Support for tests that need root and real kernel state: the gate that fails under CI and skips
//! loudly elsewhere, the kubelink binary, and kubelink processes in namespaces.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use kubelink::landscape::netns::{Netns, Proc, Segment, sweep_stale, unique};

/// Whether this run must not skip anything (`CI=true`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Checks that the test can run: root, and the given tools on PATH. When it cannot: under CI the
/// test fails (panics) with the reason; elsewhere it prints a loud SKIP and returns false.
#[must_use]
pub fn require(test: &str, tools: &[&str]) -> bool {
    let mut missing = Vec::new();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root (network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN)".to_string());
    }
    for tool in tools {
        if which(tool).is_none() {
            missing.push(format!("`{tool}` on PATH (install it; .ci/run lists the packages)"));
        }
    }
    if missing.is_empty() {
        sweep_stale();
        return true;
    }
    let reason = format!("{test} cannot run: needs {}", missing.join(", "));
    assert!(!in_ci(), "{reason}");
    eprintln!("\n!!!!!!!! SKIPPED {reason} !!!!!!!!\n");
    false
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(tool)).find(|p| p.is_file())
}

/// The kubelink binary: `$KUBELINK_BIN`, else `kubelink` beside this test's `deps/` directory.
pub fn kubelink_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KUBELINK_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let bin = exe.parent().and_then(Path::parent).map(|d| d.join("kubelink")).expect("target dir");
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build --release -p kubelink` (scripts/test does)",
        bin.display()
    );
    bin
}

/// A scratch directory for logs and configs, kept when the test fails (its path is printed).
pub fn workdir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kubelink-test-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create workdir");
    dir
}

/// Starts `kubelink <args>` inside `ns`, logging to `<dir>/<log>.log`.
pub fn start_kubelink(ns: &Netns, dir: &Path, log: &str, args: &[&str]) -> Proc {
    let path = dir.join(format!("{log}.log"));
    ns.spawn(kubelink_bin(), args, &path).unwrap_or_else(|e| panic!("{e}"))
}

/// A fresh key pair as (private base64, public base64).
pub fn keypair() -> (String, String) {
    let k = kubelink_ipam::keys::PrivateKey::generate();
    (k.expose_base64().to_string(), k.public_key().to_base64())
}

/// Polls `f` every 10 ms until it returns true or `timeout` passes; returns the time it took.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// `kubelink status --json` for a device inside `ns`.
pub fn status(ns: &Netns, device: &str) -> Result<serde_json::Value, String> {
    let bin = kubelink_bin();
    let out = ns.sh(&[bin.to_str().unwrap_or("kubelink"), "status", "--device", device, "--json"])?;
    serde_json::from_str(&out).map_err(|e| format!("status output is not JSON ({e}): {out}"))
}

/// The ifindex of `dev` in `ns`.
pub fn ifindex(ns: &Netns, dev: &str) -> Option<u64> {
    let out = ns.ip(&["-j", "link", "show", dev]).ok()?;
    let v: serde_json::Value = serde_json::from_str(&out).ok()?;
    v.get(0)?.get("ifindex")?.as_u64()
}
