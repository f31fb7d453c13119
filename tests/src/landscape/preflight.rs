//! What a landscape needs before it starts, checked all at once so that a fresh machine gets one
//! line naming everything missing instead of a landscape that comes up half-way.

use std::path::Path;

/// Tools every landscape runs: namespaces and routes, probes, the load balancers' NAT and their
/// connection tracking, forwarding switches.
const TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("ping", "iputils-ping"),
    ("nft", "nftables"),
    ("conntrack", "conntrack"),
    ("sysctl", "procps"),
];

/// `Ok` when the landscape can start; else one line naming what is missing and how to get it.
pub async fn check(helm: bool) -> Result<(), String> {
    let mut missing = Vec::new();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("the landscape creates network namespaces and tun devices: run it as root (sudo)".into());
    }
    missing.extend(TOOLS.iter().filter(|(tool, _)| !on_path(tool)).map(|(tool, pkg)| format!("{tool} ({pkg})")));
    if let Err(e) = tun() {
        missing.push(format!("/dev/net/tun ({e}; load the tun module)"));
    }
    if missing.is_empty()
        && let Err(e) = namespaces()
    {
        missing.push(format!("network namespaces ({e})"));
    }
    if helm && let Err(e) = crate::k8s::tools::tools() {
        missing.push(format!("kube-apiserver, etcd and helm ({e})"));
    }
    match missing.is_empty() {
        true => Ok(()),
        false => Err(format!(
            "cannot start, missing: {}; scripts/landscape installs the tools, builds the control plane and Helm (scripts/deps --landscape)",
            missing.join(", ")
        )),
    }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(tool).is_file()))
}

/// The userspace WireGuard engine and the shoot sidecars open tun devices.
fn tun() -> std::io::Result<()> {
    std::fs::OpenOptions::new().read(true).write(true).open(Path::new("/dev/net/tun")).map(drop)
}

/// Creates and deletes one namespace (a container may forbid it).
fn namespaces() -> Result<(), String> {
    let name = format!("kl-preflight-{}", std::process::id());
    let out = std::process::Command::new("ip").args(["netns", "add", &name]).output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let _ = std::process::Command::new("ip").args(["netns", "delete", &name]).output();
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_tool_is_found_only_on_path() {
        assert!(super::on_path("sh"));
        assert!(!super::on_path("kubelink-no-such-tool"));
    }
}
