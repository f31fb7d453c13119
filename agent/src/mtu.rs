//! The tunnel MTU: one rule for the standalone file, the agent's `--mtu` and the sidecar's `mtu`.
//!
//! A setting is `auto` or a number. `auto` takes the underlay path's MTU (the route towards the
//! peers' endpoints, else the default routes, else the node's other links; see
//! [`crate::link::Link::underlay_paths`]) minus the transport overhead: 80 bytes over IPv6 (40 IP +
//! 8 UDP + 32 WireGuard), 60 over IPv4. A path above 1500 bytes counts as 1500: jumbo frames
//! inside a data centre say nothing about the way to a shoot or a seed, and a tunnel packet that
//! must be fragmented out there costs more than a smaller MTU. A tunnel that carries IPv6 never goes
//! below 1280 (IPv6's minimum link MTU), one that carries only IPv4 never below 576.
//! Resolving is pure; reading the underlay is the link layer's.

use std::fmt;
use std::str::FromStr;

use kubelink_contract::excerpt;

/// What an MTU may be set to at most: an IP length field's limit.
pub const MAX: u32 = 65535;
/// IPv6's minimum link MTU: the floor of a tunnel that carries IPv6.
pub const IPV6_MIN: u32 = 1280;
/// What every IPv4 host must accept: the floor of a tunnel that carries only IPv4.
pub const IPV4_MIN: u32 = 576;
/// Transport overhead of a WireGuard data packet over IPv4: IP 20, UDP 8, WireGuard 32.
pub const IPV4_OVERHEAD: u32 = 60;
/// Over IPv6: IP 40, UDP 8, WireGuard 32.
pub const IPV6_OVERHEAD: u32 = 80;
/// The largest underlay path `auto` believes in (see the module docs).
pub const PATH_CAP: u32 = 1500;
/// When `auto` finds no underlay at all: a 1500-byte path over IPv6.
pub const FALLBACK: u32 = PATH_CAP - IPV6_OVERHEAD;

/// An MTU as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MtuSetting {
    /// From the underlay.
    #[default]
    Auto,
    /// As given; already within [`IPV4_MIN`]..=[`MAX`].
    Fixed(u32),
}

impl fmt::Display for MtuSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MtuSetting::Auto => f.write_str("auto"),
            MtuSetting::Fixed(n) => write!(f, "{n}"),
        }
    }
}

impl FromStr for MtuSetting {
    type Err = String;

    /// `auto` or a number in 576..=65535; the message says what to write instead.
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "auto" {
            return Ok(MtuSetting::Auto);
        }
        let n = text.parse::<u32>().map_err(|_| {
            format!("{} is neither `auto` nor a number; use `auto` or {IPV4_MIN}..={MAX}, e.g. 1420", excerpt(text))
        })?;
        Self::fixed(n)
    }
}

impl MtuSetting {
    /// A number as a setting, when within 576..=65535.
    pub fn fixed(n: u32) -> Result<Self, String> {
        if (IPV4_MIN..=MAX).contains(&n) {
            return Ok(MtuSetting::Fixed(n));
        }
        Err(format!(
            "{n} is out of range; use `auto` or {IPV4_MIN}..={MAX} ({IPV6_MIN} or more when the tunnel carries IPv6; \
             1420 fits a 1500-byte underlay)"
        ))
    }

    /// The setting checked against what the tunnel carries, where that is known when it is read
    /// (the standalone file, the sidecar's Secret): a number below 1280 on an IPv6 tunnel is an error.
    pub fn check(self, carries_ipv6: bool) -> Result<Self, String> {
        match self {
            MtuSetting::Fixed(n) if carries_ipv6 && n < IPV6_MIN => Err(format!(
                "{n} is below {IPV6_MIN}, which a tunnel that carries IPv6 needs; use `auto` or {IPV6_MIN}..={MAX}"
            )),
            other => Ok(other),
        }
    }
}

/// One way out of the node: the transport family and the path's MTU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct UnderlayPath {
    pub ipv6: bool,
    pub mtu: u32,
}

impl UnderlayPath {
    /// The largest tunnel packet that crosses this path unfragmented.
    fn room(self) -> u32 {
        let overhead = if self.ipv6 { IPV6_OVERHEAD } else { IPV4_OVERHEAD };
        self.mtu.min(PATH_CAP).saturating_sub(overhead)
    }
}

/// The MTU to set, and why, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    pub mtu: u32,
    pub why: Why,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    Fixed,
    /// `auto`: the narrowest path.
    Underlay(UnderlayPath),
    /// `auto` without any underlay found.
    NoUnderlay,
    /// What was wanted is below the floor of what the tunnel carries; the underlay will fragment.
    Floor {
        wanted: u32,
    },
}

impl fmt::Display for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mtu = self.mtu;
        match self.why {
            Why::Fixed => write!(f, "MTU {mtu} as configured"),
            Why::Underlay(p) => {
                let family = if p.ipv6 { "IPv6" } else { "IPv4" };
                write!(f, "MTU {mtu}: auto, from an {family} underlay path of {}", p.mtu)
            }
            Why::NoUnderlay => write!(f, "MTU {mtu}: auto, but no underlay route found (fallback)"),
            Why::Floor { wanted } => write!(
                f,
                "MTU {mtu} instead of {wanted}: the tunnel's floor (it carries IPv6: {IPV6_MIN}, else {IPV4_MIN}); \
                 tunnel packets will be fragmented on the underlay"
            ),
        }
    }
}

/// The MTU for `setting` over `paths`, for a tunnel that carries IPv6 or not.
pub fn resolve(setting: MtuSetting, paths: &[UnderlayPath], carries_ipv6: bool) -> Resolved {
    let (wanted, why) = match setting {
        MtuSetting::Fixed(n) => (n, Why::Fixed),
        MtuSetting::Auto => match paths.iter().min_by_key(|p| p.room()) {
            Some(p) => (p.room(), Why::Underlay(*p)),
            None => (FALLBACK, Why::NoUnderlay),
        },
    };
    let floor = if carries_ipv6 { IPV6_MIN } else { IPV4_MIN };
    if wanted < floor {
        return Resolved { mtu: floor, why: Why::Floor { wanted } };
    }
    Resolved { mtu: wanted, why }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4: fn(u32) -> UnderlayPath = |mtu| UnderlayPath { ipv6: false, mtu };
    const V6: fn(u32) -> UnderlayPath = |mtu| UnderlayPath { ipv6: true, mtu };

    #[test]
    fn settings_parse_auto_or_a_number_in_range_and_say_what_to_use() {
        assert_eq!("auto".parse(), Ok(MtuSetting::Auto));
        assert_eq!(" 1380 ".parse(), Ok(MtuSetting::Fixed(1380)));
        assert_eq!("576".parse(), Ok(MtuSetting::Fixed(576)));
        for bad in ["575", "65536", "0"] {
            let err = bad.parse::<MtuSetting>().unwrap_err();
            assert!(err.contains("out of range") && err.contains("`auto`"), "{bad}: {err}");
        }
        let err = "9k".repeat(200).parse::<MtuSetting>().unwrap_err();
        assert!(err.contains("neither `auto` nor a number") && err.len() < 300, "{err}");
        assert_eq!(MtuSetting::Auto.to_string(), "auto");
        assert_eq!(MtuSetting::Fixed(1400).to_string(), "1400");
    }

    #[test]
    fn a_number_below_1280_is_refused_only_where_the_tunnel_carries_ipv6() {
        assert_eq!(MtuSetting::Fixed(1220).check(false), Ok(MtuSetting::Fixed(1220)));
        let err = MtuSetting::Fixed(1220).check(true).unwrap_err();
        assert!(err.contains("1280") && err.contains("IPv6"), "{err}");
        assert_eq!(MtuSetting::Auto.check(true), Ok(MtuSetting::Auto));
    }

    #[test]
    fn auto_subtracts_the_transport_overhead_of_the_narrowest_path() {
        let rows = [
            ("1500 over IPv4", vec![V4(1500)], false, 1440),
            ("1500 over IPv6", vec![V6(1500)], false, 1420),
            ("VXLAN overlay 1450 over IPv4", vec![V4(1450)], false, 1390),
            ("1280 over IPv4, IPv4-only tunnel", vec![V4(1280)], false, 1220),
            ("the narrowest of two paths wins", vec![V4(1500), V6(1400)], false, 1320),
            ("jumbo frames count as 1500", vec![V4(9001)], false, 1440),
        ];
        for (why, paths, v6, want) in rows {
            let r = resolve(MtuSetting::Auto, &paths, v6);
            assert_eq!(r.mtu, want, "{why}");
            assert!(matches!(r.why, Why::Underlay(_)), "{why}: {r:?}");
        }
    }

    #[test]
    fn never_below_the_floor_of_what_the_tunnel_carries() {
        let r = resolve(MtuSetting::Auto, &[V4(1280)], true);
        assert_eq!(r, Resolved { mtu: 1280, why: Why::Floor { wanted: 1220 } });
        assert!(r.to_string().contains("fragmented"), "{r}");
        let r = resolve(MtuSetting::Auto, &[V6(600)], false);
        assert_eq!(r, Resolved { mtu: 576, why: Why::Floor { wanted: 520 } });
        // A number below 1280 on a tunnel found to carry IPv6 only later (the agent's CIDR).
        assert_eq!(resolve(MtuSetting::Fixed(1200), &[], true).mtu, 1280);
    }

    #[test]
    fn a_number_overrides_the_underlay_and_no_underlay_falls_back_to_1420() {
        assert_eq!(resolve(MtuSetting::Fixed(1300), &[V4(1280)], false), Resolved { mtu: 1300, why: Why::Fixed });
        assert_eq!(resolve(MtuSetting::Auto, &[], true), Resolved { mtu: 1420, why: Why::NoUnderlay });
    }
}
