//! CIDR, endpoint, interface name and MTU strings from flags, files and Secrets. Never a panic,
//! errors stay short, and what parses prints back to itself.
#![no_main]

use std::fmt::Display;

use kubelink::config::{parse_ifname, parse_mtu};
use kubelink::endpoint::Endpoint;
use kubelink::mtu::MtuSetting;
use kubelink_ipam::validate::parse_cidr;
use libfuzzer_sys::fuzz_target;

const MAX_ERROR: usize = 2048;

fn short<T, E: Display>(r: Result<T, E>) -> Option<T> {
    r.map_err(|e| e.to_string()).map_err(|e| assert!(e.len() <= MAX_ERROR, "{} byte error", e.len())).ok()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some(endpoint) = short(text.parse::<Endpoint>()) {
        let printed = match endpoint.host().contains(':') {
            true => format!("[{}]:{}", endpoint.host(), endpoint.port()),
            false => format!("{}:{}", endpoint.host(), endpoint.port()),
        };
        assert_eq!(endpoint.to_string(), printed);
        assert_eq!(printed.parse::<Endpoint>().ok(), Some(endpoint));
    }
    if let Some(mtu) = short(parse_mtu(text)) {
        match mtu {
            MtuSetting::Fixed(n) => assert!((576..=65535).contains(&n), "MTU {n} accepted"),
            MtuSetting::Auto => assert_eq!(text.trim(), "auto"),
        }
        assert_eq!(parse_mtu(&mtu.to_string()), Ok(mtu));
    }
    if let Some(name) = short(parse_ifname(text)) {
        assert!(!name.is_empty() && name.len() <= 15, "interface name {name:?} accepted");
        assert_eq!(parse_ifname(&name.to_string()).ok(), Some(name));
    }
    if let Ok(net) = parse_cidr("spec.wireguard.cidr", text).map_err(|e| short::<(), _>(Err(e))) {
        assert_eq!(parse_cidr("spec.wireguard.cidr", &net.to_string()).ok(), Some(net));
    }
});
