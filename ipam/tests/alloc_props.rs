//! Properties of the first-free allocator and the table plan, over IPv4 and IPv6 ranges.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use kubelink_ipam::alloc::Pool;
use kubelink_ipam::gardener::ShootKey;
use kubelink_ipam::table::{Table, plan};
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

    #[test]
    fn plans_never_give_one_address_twice(
        cidr in small_cidr(),
        first in proptest::collection::btree_set(0u16..400, 0..300),
        second in proptest::collection::btree_set(0u16..400, 0..300),
        recorded in proptest::collection::btree_map(0u16..400, 0u128..300, 0..50),
    ) {
        let key = |i: &u16| ShootKey { namespace: "garden-p".into(), name: format!("s{i}") };
        let pool = Pool::new(cidr);
        let recorded: BTreeMap<ShootKey, IpAddr> = recorded.iter().map(|(i, o)| (key(i), at(cidr, *o % 300))).collect();
        let one = plan(&Table::default(), &pool, &first.iter().map(key).collect(), &recorded);
        let two = plan(&one.table, &pool, &second.iter().map(key).collect(), &recorded);
        for p in [&one, &two] {
            prop_assert!(p.table.addresses_unique());
            prop_assert!(p.table.iter().all(|(_, a)| pool.is_assignable(*a)));
            prop_assert_eq!(p.table.len() + p.exhausted.len(), if std::ptr::eq(p, &one) { first.len() } else { second.len() });
        }
        // A shoot that stays keeps its address.
        for (k, a) in one.table.iter() {
            if second.iter().map(key).any(|s| &s == k) {
                prop_assert_eq!(two.table.get(k), Some(*a));
            }
        }
        // Nobody is left out while a free address remains.
        if !two.exhausted.is_empty() {
            prop_assert_eq!(two.table.len() as u128, pool.capacity());
        }
    }
}
