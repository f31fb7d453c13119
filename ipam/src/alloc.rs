//! The pure first-free allocator over one CIDR, IPv4 or IPv6.
//!
//! Reserved, never handed to a shoot: the network address, the IPv4 broadcast address, and the gateway
//! slot addresses (the first two hosts: `.1` for slot 0, `.2` for slot 1).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::contract::Slot;

/// How many gateway slots have a reserved address.
pub const GATEWAY_SLOTS: u8 = Slot::MAX;

/// One address range to allocate from, as offsets from its network address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    cidr: IpNet,
}

/// No assignable address is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolExhausted {
    pub capacity: u128,
}

fn to_u128(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

impl Pool {
    pub fn new(cidr: IpNet) -> Self {
        Self { cidr: cidr.trunc() }
    }

    pub fn cidr(&self) -> IpNet {
        self.cidr
    }

    fn host_bits(&self) -> u32 {
        u32::from(self.cidr.max_prefix_len() - self.cidr.prefix_len())
    }

    /// The largest offset inside the range.
    fn last_offset(&self) -> u128 {
        match self.host_bits() {
            128 => u128::MAX,
            bits => (1u128 << bits) - 1,
        }
    }

    fn at(&self, offset: u128) -> IpAddr {
        let base = to_u128(self.cidr.network());
        match self.cidr {
            IpNet::V4(_) => IpAddr::V4(Ipv4Addr::from((base + offset) as u32)),
            IpNet::V6(_) => IpAddr::V6(Ipv6Addr::from(base + offset)),
        }
    }

    fn offset_of(&self, addr: IpAddr) -> Option<u128> {
        self.cidr.contains(&addr).then(|| to_u128(addr) - to_u128(self.cidr.network()))
    }

    fn offset_reserved(&self, offset: u128) -> bool {
        offset <= u128::from(GATEWAY_SLOTS) || (self.cidr.addr().is_ipv4() && offset == self.last_offset())
    }

    /// The address of gateway slot `slot` ([`Slot::address`]). `None` when the range is too small.
    pub fn slot_address(&self, slot: Slot) -> Option<IpAddr> {
        slot.address(self.cidr)
    }

    /// Inside the range and not reserved.
    pub fn is_assignable(&self, addr: IpAddr) -> bool {
        self.offset_of(addr).is_some_and(|o| !self.offset_reserved(o))
    }

    /// How many addresses can be handed out in total.
    pub fn capacity(&self) -> u128 {
        let last = self.last_offset();
        let reserved = (u128::from(GATEWAY_SLOTS) + 1).min(last.saturating_add(1))
            + u128::from(self.cidr.addr().is_ipv4() && last > u128::from(GATEWAY_SLOTS));
        if reserved > last { 0 } else { last - reserved + 1 }
    }

    /// The lowest assignable address not in `taken`.
    pub fn first_free(&self, taken: &BTreeSet<IpAddr>) -> Result<IpAddr, PoolExhausted> {
        self.first_free_from(u128::from(GATEWAY_SLOTS) + 1, taken).map(|(addr, _)| addr)
    }

    /// The lowest `count` free addresses, in order; fewer when the pool runs out.
    pub fn allocate_many(&self, taken: &BTreeSet<IpAddr>, count: usize) -> Vec<IpAddr> {
        let mut out = Vec::with_capacity(count);
        let mut next = u128::from(GATEWAY_SLOTS) + 1;
        while out.len() < count {
            let Ok((addr, offset)) = self.first_free_from(next, taken) else { break };
            out.push(addr);
            let Some(after) = offset.checked_add(1) else { break };
            next = after;
        }
        out
    }

    /// Walks up from `start`; at most `taken.len() + 1` steps land on a non-taken offset.
    fn first_free_from(&self, start: u128, taken: &BTreeSet<IpAddr>) -> Result<(IpAddr, u128), PoolExhausted> {
        let mut offset = start;
        while offset <= self.last_offset() && !self.offset_reserved(offset) {
            let addr = self.at(offset);
            if !taken.contains(&addr) {
                return Ok((addr, offset));
            }
            match offset.checked_add(1) {
                Some(next) => offset = next,
                None => break,
            }
        }
        Err(PoolExhausted { capacity: self.capacity() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(s: &str) -> Pool {
        Pool::new(s.parse().unwrap())
    }

    fn set(addrs: &[&str]) -> BTreeSet<IpAddr> {
        addrs.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn first_free_skips_network_slots_and_taken() {
        let p = pool("192.168.128.0/22");
        assert_eq!(p.first_free(&set(&[])).unwrap().to_string(), "192.168.128.3");
        assert_eq!(p.first_free(&set(&["192.168.128.3", "192.168.128.4"])).unwrap().to_string(), "192.168.128.5");
        assert_eq!(p.first_free(&set(&["192.168.128.4"])).unwrap().to_string(), "192.168.128.3", "lowest first");
        let [s0, s1] = Slot::ALL;
        assert_eq!(p.slot_address(s0).unwrap().to_string(), "192.168.128.1");
        assert_eq!(p.slot_address(s1).unwrap().to_string(), "192.168.128.2");
        assert_eq!(p.capacity(), 1024 - 4);
    }

    #[test]
    fn ipv4_broadcast_is_reserved_ipv6_has_none() {
        let p = pool("10.0.0.0/29"); // .0 net, .1 .2 slots, .7 broadcast: .3 to .6 free
        let all = p.allocate_many(&set(&[]), 10);
        assert_eq!(
            all.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
        );
        assert_eq!(p.capacity(), 4);
        assert_eq!(p.first_free(&all.iter().copied().collect()), Err(PoolExhausted { capacity: 4 }));

        let p6 = pool("fd00::/126"); // ::0 net, ::1 ::2 slots, ::3 free
        assert_eq!(p6.first_free(&set(&[])).unwrap().to_string(), "fd00::3");
        assert_eq!(p6.capacity(), 1);
        assert!(p6.first_free(&set(&["fd00::3"])).is_err());
    }

    #[test]
    fn tiny_and_huge_ranges_do_not_panic() {
        for cidr in ["10.0.0.0/32", "10.0.0.0/31", "10.0.0.0/30", "fd00::/128", "fd00::/127"] {
            assert!(pool(cidr).first_free(&set(&[])).is_err(), "{cidr}");
            assert_eq!(pool(cidr).capacity(), 0, "{cidr}");
        }
        assert_eq!(pool("::/0").first_free(&set(&[])).unwrap().to_string(), "::3");
        assert_eq!(pool("::/0").capacity(), u128::MAX - 2);
        assert_eq!(pool("0.0.0.0/0").capacity(), (1u128 << 32) - 4);
    }

    #[test]
    fn assignable_means_inside_and_not_reserved() {
        let p = pool("192.168.128.0/24");
        for (addr, want) in [
            ("192.168.128.0", false),
            ("192.168.128.1", false),
            ("192.168.128.2", false),
            ("192.168.128.3", true),
            ("192.168.128.254", true),
            ("192.168.128.255", false),
            ("192.168.129.3", false),
            ("fd00::3", false),
        ] {
            assert_eq!(p.is_assignable(addr.parse().unwrap()), want, "{addr}");
        }
    }
}
