//! Properties of the first-free allocator and of the extension's per-shoot allocation on the table, over
//! IPv4 and IPv6 ranges.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use kubelink_ipam::alloc::Pool;
use kubelink_ipam::contract::ShootKey;
use kubelink_ipam::extension::plan::{allocate, release};
use kubelink_ipam::table::Table;
use proptest::prelude::*;

/// Small ranges so that the pool often fills up: IPv4 /24 to /30, IPv6 /120 to /126.
fn small_cidr() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        (24u8..=30, any::<u32>()).prop_map(|(p, a)| IpNet::new(IpAddr::V4(a.into()), p).unwrap().trunc()),
        (120u8..=126, any::<u128>()).prop_map(|(p, a)| IpNet::new(IpAddr::V6(a.into()), p).unwrap().trunc()),
    ]
}

/// A CIDR and a set of addresses inside it (some of them reserved ones).
fn cidr_and_taken() -> impl Strategy<Value = (IpNet, BTreeSet<IpAddr>)> {
    small_cidr().prop_flat_map(|cidr| {
        let hosts = 1u128 << (cidr.max_prefix_len() - cidr.prefix_len());
        let offsets = proptest::collection::btree_set(0..hosts, 0..=(hosts as usize));
        offsets.prop_map(move |offs| (cidr, offs.into_iter().map(|o| at(cidr, o)).collect()))
    })
}

fn at(cidr: IpNet, offset: u128) -> IpAddr {
    match cidr {
        IpNet::V4(n) => IpAddr::V4((u32::from(n.network()) + offset as u32).into()),
        IpNet::V6(n) => IpAddr::V6((u128::from(n.network()) + offset).into()),
    }
}

fn reserved(cidr: IpNet, addr: IpAddr) -> bool {
    let broadcast = cidr.addr().is_ipv4() && addr == cidr.broadcast();
    let first_three = (0..3).any(|o| at(cidr, o) == addr);
    broadcast || first_three
}

proptest! {
    #[test]
    fn never_reserved_never_taken_never_skips_a_lower_free((cidr, taken) in cidr_and_taken()) {
        let pool = Pool::new(cidr);
        match pool.first_free(&taken) {
            Ok(addr) => {
                prop_assert!(cidr.contains(&addr));
                prop_assert!(!reserved(cidr, addr), "{addr} is reserved in {cidr}");
                prop_assert!(!taken.contains(&addr));
                let lower_free = cidr.hosts().chain([cidr.network(), cidr.broadcast()])
                    .find(|a| *a < addr && !reserved(cidr, *a) && !taken.contains(a));
                prop_assert_eq!(lower_free, None);
            }
            Err(e) => {
                let free = cidr.hosts().filter(|a| !reserved(cidr, *a) && !taken.contains(a)).count();
                prop_assert_eq!(free, 0, "exhausted but a free address exists");
                prop_assert_eq!(e.capacity, pool.capacity());
            }
        }
    }

    #[test]
    fn allocate_many_gives_the_lowest_free_in_order((cidr, taken) in cidr_and_taken(), count in 0usize..300) {
        let pool = Pool::new(cidr);
        let got = pool.allocate_many(&taken, count);
        let mut all: Vec<IpAddr> = cidr.hosts().chain([cidr.network(), cidr.broadcast()]).collect();
        all.sort();
        all.dedup();
        let expected: Vec<IpAddr> =
            all.into_iter().filter(|a| !reserved(cidr, *a) && !taken.contains(a)).take(count).collect();
        prop_assert_eq!(got, expected);
    }

    /// Shoots come (some with a recorded address, as a restored state carries) and go, in any order:
    /// no address is ever given twice or outside the pool, a shoot asked again keeps its address, and a
    /// shoot is refused only when the pool is full.
    #[test]
    fn allocations_never_give_one_address_twice(
        cidr in small_cidr(),
        steps in proptest::collection::vec((0u16..400, any::<bool>(), proptest::option::of(0u128..300)), 0..400),
    ) {
        let key = |i: u16| ShootKey { namespace: format!("shoot--p--s{i}"), name: "kubelink-wireguard".into() };
        let pool = Pool::new(cidr);
        let mut table = Table::default();
        for (i, leaves, recorded) in steps {
            let k = key(i);
            if leaves {
                table = release(&table, &k).unwrap_or(table);
                prop_assert!(table.get(&k).is_none());
                continue;
            }
            let before = table.get(&k);
            match allocate(&table, &pool, &k, recorded.map(|o| at(cidr, o))) {
                Ok((address, _, next)) => {
                    if let Some(b) = before {
                        prop_assert_eq!(address, b, "a shoot asked again keeps its address");
                    }
                    table = next.unwrap_or(table);
                    prop_assert_eq!(table.get(&k), Some(address));
                }
                Err(_) => prop_assert_eq!(table.len() as u128, pool.capacity(), "refused while free"),
            }
            prop_assert!(table.addresses_unique());
            prop_assert!(table.iter().all(|(_, a)| pool.is_assignable(*a)));
        }
    }
}
