//! The gateway's nftables: one table, `inet kubelink`, owned entirely by kubelink and replaced
//! atomically (one `nft -f` transaction). It source-NATs seed traffic entering the WireGuard device to
//! the slot's tunnel address (so each shoot answers to the gateway it came through) and clamps TCP MSS
//! to the route MTU in both directions. The ruleset is rendered purely; a hash in the table's comment
//! tells whether the kernel already has exactly this ruleset.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use ipnet::IpNet;

pub const TABLE: &str = "kubelink";

/// What the gateway's firewall must do.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FirewallSpec {
    /// The WireGuard device.
    pub device: String,
    /// The WireGuard CIDR (shoot addresses live here).
    pub cidr: IpNet,
    /// The slot's own tunnel address: the source of seed traffic into the tunnel.
    pub snat_to: IpAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("running nft: {0} (is the nftables package installed?)")]
    Spawn(std::io::Error),
    #[error("nft rejected the kubelink table: {0}")]
    Rejected(String),
}

/// The whole table as one atomic nft script (create-if-missing, delete, define).
pub fn render(spec: &FirewallSpec) -> String {
    let family = if spec.cidr.addr().is_ipv4() { "ip" } else { "ip6" };
    let (dev, cidr, to) = (&spec.device, spec.cidr, spec.snat_to);
    format!(
        "table inet {TABLE} {{}}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n  comment \"{hash}\"\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    oifname \"{dev}\" {family} daddr {cidr} {family} saddr != {to} snat {family} to {to}\n  }}\n  chain forward {{\n    type filter hook forward priority mangle; policy accept;\n    oifname \"{dev}\" tcp flags syn tcp option maxseg size set rt mtu\n    iifname \"{dev}\" tcp flags syn tcp option maxseg size set rt mtu\n  }}\n}}\n",
        hash = fingerprint(spec)
    )
}

/// A stable fingerprint of the spec, stored as the table's comment.
pub fn fingerprint(spec: &FirewallSpec) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    spec.hash(&mut h);
    format!("kubelink {:016x}", h.finish())
}

/// Whether `listing` (output of `nft list table inet kubelink`) is the table for `spec`.
pub fn is_current(listing: &str, spec: &FirewallSpec) -> bool {
    listing.contains(&format!("comment \"{}\"", fingerprint(spec)))
}

/// Makes the kernel's table match `spec`; returns whether it had to write.
pub fn ensure(spec: &FirewallSpec) -> Result<bool, FirewallError> {
    if is_current(&list().unwrap_or_default(), spec) {
        return Ok(false);
    }
    nft_script(&render(spec))?;
    Ok(true)
}

/// Deletes the table if it exists.
pub fn remove() -> Result<(), FirewallError> {
    nft_script(&format!("table inet {TABLE} {{}}\ndelete table inet {TABLE}\n"))
}

/// The current table, `None` when absent.
pub fn list() -> Option<String> {
    let out =
        Command::new(crate::tools::NFT).args(["list", "table", "inet", TABLE]).stderr(Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn nft_script(script: &str) -> Result<(), FirewallError> {
    let mut child = Command::new(crate::tools::NFT)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(FirewallError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).map_err(FirewallError::Spawn)?;
    }
    let out = child.wait_with_output().map_err(FirewallError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(FirewallError::Rejected(String::from_utf8_lossy(&out.stderr).into_owned()))
    }
}

/// Forgets the connection-tracking entries of flows towards `cidr`, so that their next packet is
/// NATed (or not) by the rules as they are now: NAT is decided once per flow, and a flow that began
/// while this node routed to another gateway keeps its un-NATed entry after the node becomes the
/// gateway (and the other way round), which breaks it for as long as it stays busy. Uses the
/// `conntrack` tool (conntrack-tools); without it, stale flows recover only when they go idle.
pub fn forget_flows(cidr: ipnet::IpNet) {
    let out = Command::new(crate::tools::CONNTRACK).args(["-D", "-d", &cidr.to_string()]).stdin(Stdio::null()).output();
    match out {
        // Exit status 1 with "0 flow entries" means there was nothing to delete.
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stderr);
            tracing::debug!(%cidr, "conntrack: {}", text.trim());
        }
        Err(e) => tracing::warn!(%cidr, "cannot run conntrack to reset flows towards the tunnel: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> FirewallSpec {
        FirewallSpec {
            device: "kubelink0".into(),
            cidr: "192.168.128.0/22".parse().unwrap(),
            snat_to: "192.168.128.1".parse().unwrap(),
        }
    }

    #[test]
    fn renders_snat_and_mss_clamping_for_the_device() {
        let text = render(&spec());
        assert!(
            text.contains(
                "oifname \"kubelink0\" ip daddr 192.168.128.0/22 ip saddr != 192.168.128.1 snat ip to 192.168.128.1"
            ),
            "{text}"
        );
        assert_eq!(text.matches("maxseg size set rt mtu").count(), 2, "both directions");
        assert!(text.starts_with("table inet kubelink {}\ndelete table inet kubelink\n"), "atomic replace");
    }

    #[test]
    fn ipv6_uses_ip6_matches() {
        let s =
            FirewallSpec { cidr: "fd00:128::/64".parse().unwrap(), snat_to: "fd00:128::1".parse().unwrap(), ..spec() };
        assert!(render(&s).contains("ip6 daddr fd00:128::/64 ip6 saddr != fd00:128::1 snat ip6 to fd00:128::1"));
    }

    #[test]
    fn fingerprint_tells_current_from_stale() {
        let listing = format!("table inet kubelink {{\n\tcomment \"{}\"\n}}", fingerprint(&spec()));
        assert!(is_current(&listing, &spec()));
        let other = FirewallSpec { snat_to: "192.168.128.2".parse().unwrap(), ..spec() };
        assert!(!is_current(&listing, &other));
        assert!(!is_current("", &spec()));
    }
}
