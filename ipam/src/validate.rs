//! The CIDR rules for the WireGuard range (GEP-14): pure functions over the Gardener objects.

use ipnet::IpNet;

use crate::error::IpamError;
use crate::gardener::{RESERVED_RANGES, Seed, Shoot};

/// Parses a CIDR, naming the field on failure. Host bits must be zero, as Gardener requires.
pub fn parse_cidr(field: &str, value: &str) -> Result<IpNet, IpamError> {
    let invalid = |reason: String| IpamError::InvalidCidr { field: field.into(), value: value.into(), reason };
    let net: IpNet = value.trim().parse().map_err(|e: ipnet::AddrParseError| invalid(e.to_string()))?;
    if net.trunc() != net {
        return Err(invalid(format!("host bits are set, the network is {}", net.trunc())));
    }
    Ok(net)
}

/// The smallest range that still leaves one shoot address after the network, slots and broadcast.
fn check_size(field: &str, net: IpNet) -> Result<(), IpamError> {
    let max = if net.addr().is_ipv4() { 29 } else { 126 };
    if net.prefix_len() > max {
        return Err(IpamError::InvalidCidr {
            field: field.into(),
            value: net.to_string(),
            reason: format!("too small for the network address, two gateway slots and a shoot: use /{max} or shorter"),
        });
    }
    Ok(())
}

fn no_overlap(field: &str, cidr: IpNet, with: &str, other: IpNet) -> Result<(), IpamError> {
    let overlaps = cidr.contains(&other.network()) || other.contains(&cidr.network());
    if overlaps {
        return Err(IpamError::Overlap { field: field.into(), cidr, with: with.into(), with_cidr: other });
    }
    Ok(())
}

/// The seed's WireGuard CIDR after every seed-level rule, with the field it was read from.
///
/// `parent` is the WireGuard CIDR of the seed that hosts this seed's own shoot (a managed seed), if any.
pub fn seed_wireguard_cidr(seed: &Seed, parent: Option<(&str, &str)>) -> Result<(String, IpNet), IpamError> {
    let (base, settings) = seed.wireguard()?.ok_or_else(|| IpamError::Missing {
        field: "spec.wireguard".into(),
        fix: format!(
            "set spec.wireguard {{enabled: true, cidr: 192.168.128.0/22}} on the Seed, or a spec.extensions[] entry of type {} with that providerConfig",
            crate::gardener::EXTENSION_TYPE
        ),
    })?;
    let field = format!("{base}.cidr");
    let value = settings.cidr.as_deref().ok_or_else(|| IpamError::Missing {
        field: field.clone(),
        fix: "set it to a range of its own, e.g. 192.168.128.0/22 (about 1000 shoots)".into(),
    })?;
    Ok((field.clone(), wireguard_cidr(&field, value, seed, parent)?))
}

/// The WireGuard CIDR `value` (read from `field`) after every seed-level rule: its size, the seed's
/// networks and blocked ranges, Gardener's reserved ranges, the parent seed's WireGuard CIDR.
pub fn wireguard_cidr(field: &str, value: &str, seed: &Seed, parent: Option<(&str, &str)>) -> Result<IpNet, IpamError> {
    let field = field.to_string();
    let cidr = parse_cidr(&field, value)?;
    check_size(&field, cidr)?;
    for (with, other) in seed_ranges(seed)? {
        no_overlap(&field, cidr, &with, other)?;
    }
    for (range, what) in RESERVED_RANGES {
        let reserved: IpNet = range.parse().expect("constant CIDR");
        if reserved.addr().is_ipv4() == cidr.addr().is_ipv4() {
            no_overlap(&field, cidr, &format!("{what} {range}"), reserved)?;
        }
    }
    if let Some((parent_seed, parent_cidr)) = parent {
        let with = format!("the WireGuard CIDR of parent seed {parent_seed}");
        no_overlap(&field, cidr, &with, parse_cidr(&with, parent_cidr)?)?;
    }
    Ok(cidr)
}

/// The seed's own networks and blocked ranges, each with its field path.
fn seed_ranges(seed: &Seed) -> Result<Vec<(String, IpNet)>, IpamError> {
    let n = &seed.spec.networks;
    let named =
        [("spec.networks.nodes", &n.nodes), ("spec.networks.pods", &n.pods), ("spec.networks.services", &n.services)];
    let mut out = Vec::new();
    for (field, value) in named {
        if let Some(value) = value {
            out.push((field.to_string(), parse_cidr(field, value)?));
        }
    }
    for (i, value) in n.block_cidrs.iter().enumerate() {
        let field = format!("spec.networks.blockCIDRs[{i}]");
        out.push((field.clone(), parse_cidr(&field, value)?));
    }
    Ok(out)
}

/// A shoot that uses the tunnel must not have networks inside the WireGuard CIDR.
pub fn shoot_networks(shoot: &Shoot, wg_field: &str, wg: IpNet) -> Result<(), IpamError> {
    let Some(net) = &shoot.spec.networking else { return Ok(()) };
    let key = shoot.key();
    for (part, value) in [("nodes", &net.nodes), ("pods", &net.pods), ("services", &net.services)] {
        let Some(value) = value else { continue };
        let field = format!("shoot {key} spec.networking.{part}");
        let range = parse_cidr(&field, value)?;
        no_overlap(&format!("seed {wg_field}"), wg, &field, range)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn seed(spec: serde_json::Value) -> Seed {
        serde_json::from_value(json!({"metadata": {"name": "s"}, "spec": spec})).unwrap()
    }

    #[test]
    fn parse_cidr_names_the_field_and_the_fix() {
        let err = parse_cidr("spec.wireguard.cidr", "192.168.128.0/33").unwrap_err().to_string();
        assert!(err.starts_with("spec.wireguard.cidr: \"192.168.128.0/33\" is not a valid CIDR"), "{err}");
        let err = parse_cidr("spec.wireguard.cidr", "192.168.128.5/22").unwrap_err().to_string();
        assert!(err.contains("the network is 192.168.128.0/22"), "{err}");
        assert!(parse_cidr("x", "fd00:10::/112").is_ok());
    }

    #[test]
    fn seed_rules_in_order() {
        let base = json!({"networks": {"nodes": "10.250.0.0/16", "pods": "100.96.0.0/11", "services": "100.64.0.0/13",
                                        "blockCIDRs": ["169.254.169.254/32"]}});
        let with_wg = |cidr: &str| {
            let mut spec = base.clone();
            spec["wireguard"] = json!({"enabled": true, "cidr": cidr});
            seed(spec)
        };
        let ok = seed_wireguard_cidr(&with_wg("192.168.128.0/22"), None).unwrap();
        assert_eq!((ok.0.as_str(), ok.1.to_string().as_str()), ("spec.wireguard.cidr", "192.168.128.0/22"));
        // 192.168.123.0/24 stopped being reserved in Gardener v1.116; 245/8 never was.
        for cidr in ["192.168.120.0/21", "245.0.0.0/22", "fd8f:6d53:b97a:2::/112"] {
            assert!(seed_wireguard_cidr(&with_wg(cidr), None).is_ok(), "{cidr}");
        }
        for (cidr, with) in [
            ("10.250.128.0/22", "spec.networks.nodes 10.250.0.0/16"),
            ("100.100.0.0/22", "spec.networks.pods 100.96.0.0/11"),
            ("100.64.0.0/22", "spec.networks.services 100.64.0.0/13"),
            ("169.254.169.0/24", "spec.networks.blockCIDRs[0] 169.254.169.254/32"),
            ("240.0.0.0/22", "Gardener's reserved range 240.0.0.0/8"),
            ("240.0.0.0/4", "Gardener's reserved range 240.0.0.0/8"),
            ("244.10.0.0/22", "Gardener's reserved range 244.0.0.0/8"),
            ("fd8f:6d53:b97a:1::/112", "Gardener's reserved VPN transfer range fd8f:6d53:b97a:1::/96"),
        ] {
            let err = seed_wireguard_cidr(&with_wg(cidr), None).unwrap_err();
            assert_eq!(err.reason(), "Overlap");
            let msg = err.to_string();
            assert!(msg.contains(&format!("spec.wireguard.cidr {cidr}")) && msg.contains(with), "{msg}");
        }
        let err = seed_wireguard_cidr(&with_wg("192.168.128.0/22"), Some(("parent", "192.168.130.0/24"))).unwrap_err();
        assert!(err.to_string().contains("parent seed parent 192.168.130.0/24"), "{err}");
        assert_eq!(seed_wireguard_cidr(&with_wg("192.168.128.0/30"), None).unwrap_err().reason(), "InvalidCidr");
        assert_eq!(seed_wireguard_cidr(&seed(base.clone()), None).unwrap_err().reason(), "MissingConfiguration");
    }

    #[test]
    fn shoot_networks_must_stay_outside() {
        let wg: IpNet = "192.168.128.0/22".parse().unwrap();
        let shoot: Shoot = serde_json::from_value(json!({
            "metadata": {"name": "a", "namespace": "garden-p"},
            "spec": {"networking": {"nodes": "10.250.0.0/16", "pods": "192.168.0.0/16"}},
        }))
        .unwrap();
        let msg = shoot_networks(&shoot, "spec.wireguard.cidr", wg).unwrap_err().to_string();
        assert!(
            msg.contains("192.168.128.0/22") && msg.contains("shoot garden-p/a spec.networking.pods 192.168.0.0/16"),
            "{msg}"
        );
    }
}
