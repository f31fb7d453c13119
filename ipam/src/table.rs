//! The allocation table: which shoot holds which tunnel address, and the pure plan that updates it.
//!
//! The table lives in one annotation on the Seed, so one compare-and-swap (a replace guarded by the Seed's
//! resourceVersion) is the single point that serializes every allocator: see docs/ipam.md.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::alloc::Pool;
use crate::error::{excerpt, shorten};
use crate::gardener::ShootKey;

/// The Seed annotation holding the table: a JSON object `{"<namespace>/<shoot>": "<address>"}`.
pub const TABLE_ANNOTATION: &str = "kubelink.gardener.cloud/wireguard-allocations";
/// How long a parser's message about the annotation may be: it can quote the input.
const MAX_MESSAGE: usize = 300;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    entries: BTreeMap<ShootKey, IpAddr>,
}

impl Table {
    /// Reads the annotation's text. Entries that do not parse are skipped and described in the second value.
    pub fn parse(text: &str) -> (Self, Vec<String>) {
        let mut problems = Vec::new();
        let raw: BTreeMap<String, serde_json::Value> = match serde_json::from_str(text) {
            Ok(raw) => raw,
            Err(e) => {
                let e = shorten(&e.to_string(), MAX_MESSAGE);
                return (Self::default(), vec![format!("annotation {TABLE_ANNOTATION} is not a JSON object: {e}")]);
            }
        };
        let mut table = Self::default();
        for (key, value) in raw {
            let parsed = key.parse::<ShootKey>().and_then(|k| {
                let addr = value.as_str().and_then(|v| v.parse::<IpAddr>().ok());
                addr.map(|a| (k, a)).ok_or_else(|| format!("{} is not an IP address", excerpt(&value.to_string())))
            });
            match parsed {
                Ok((k, a)) => _ = table.entries.insert(k, a),
                Err(e) => problems.push(format!("annotation {TABLE_ANNOTATION} entry {}: {e}; skipped", excerpt(&key))),
            }
        }
        (table, problems)
    }

    pub fn to_text(&self) -> String {
        let map: BTreeMap<String, String> = self.entries.iter().map(|(k, a)| (k.to_string(), a.to_string())).collect();
        serde_json::to_string(&map).expect("a map of strings serializes")
    }

    pub fn get(&self, key: &ShootKey) -> Option<IpAddr> {
        self.entries.get(key).copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&ShootKey, &IpAddr)> {
        self.entries.iter()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every address at most once: the invariant the whole design protects.
    pub fn addresses_unique(&self) -> bool {
        let set: BTreeSet<_> = self.entries.values().collect();
        set.len() == self.entries.len()
    }
}

impl FromIterator<(ShootKey, IpAddr)> for Table {
    fn from_iter<T: IntoIterator<Item = (ShootKey, IpAddr)>>(iter: T) -> Self {
        Self { entries: iter.into_iter().collect() }
    }
}

/// What one pass changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub table: Table,
    /// Newly given addresses (first-free or adopted from a ShootState).
    pub assigned: Vec<(ShootKey, IpAddr)>,
    /// Addresses taken back: the shoot is gone, left the tunnel, or its address left the range.
    pub released: Vec<(ShootKey, IpAddr)>,
    /// Wanted shoots that got no address because the pool is full.
    pub exhausted: Vec<ShootKey>,
    /// One address found for two shoots (a hand-edited table, a restored ShootState): one keeps it,
    /// the other is given a new address, and both are reported.
    pub conflicts: Vec<Conflict>,
}

/// Two records named one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub address: IpAddr,
    /// The shoot that keeps the address.
    pub kept: ShootKey,
    /// The shoot that had to leave it.
    pub moved: ShootKey,
    /// Where `moved`'s claim came from.
    pub source: ConflictSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictSource {
    /// The Seed's allocation table annotation.
    Table,
    /// The shoot's ShootState record (adopted after the table lost the shoot).
    Record,
}

impl std::fmt::Display for ConflictSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Table => "the seed's allocation table",
            Self::Record => "its ShootState record",
        })
    }
}

impl Plan {
    pub fn changed(&self, before: &Table) -> bool {
        self.table != *before
    }
}

/// Computes the next table: keep what is still valid, adopt recorded addresses, then first-free for the rest.
///
/// `wanted` are the shoots that should hold an address; `recorded` are addresses found in their
/// ShootStates (used only when the table has none for the shoot, e.g. after the table was lost).
pub fn plan(current: &Table, pool: &Pool, wanted: &BTreeSet<ShootKey>, recorded: &BTreeMap<ShootKey, IpAddr>) -> Plan {
    let mut out = Plan::default();
    let mut holder: BTreeMap<IpAddr, ShootKey> = BTreeMap::new();
    for (key, addr) in keep_order(current, wanted, recorded) {
        if !pool.is_assignable(addr) {
            out.released.push((key.clone(), addr));
        } else if let Some(kept) = holder.get(&addr) {
            let conflict =
                Conflict { address: addr, kept: kept.clone(), moved: key.clone(), source: ConflictSource::Table };
            out.conflicts.push(conflict);
        } else {
            holder.insert(addr, key.clone());
            out.table.entries.insert(key.clone(), addr);
        }
    }
    for (key, &addr) in &current.entries {
        if !wanted.contains(key) {
            out.released.push((key.clone(), addr));
        }
    }
    let missing: Vec<&ShootKey> = wanted.iter().filter(|k| !out.table.entries.contains_key(*k)).collect();
    let mut fresh = Vec::new();
    for key in missing {
        let moved_by_table = out.conflicts.iter().any(|c| &c.moved == key);
        match recorded.get(key) {
            Some(&addr) if !moved_by_table && pool.is_assignable(addr) => match holder.get(&addr) {
                None => {
                    holder.insert(addr, key.clone());
                    out.table.entries.insert(key.clone(), addr);
                    out.assigned.push((key.clone(), addr));
                }
                Some(kept) => {
                    let source = ConflictSource::Record;
                    out.conflicts.push(Conflict { address: addr, kept: kept.clone(), moved: key.clone(), source });
                    fresh.push(key);
                }
            },
            _ => fresh.push(key),
        }
    }
    let taken: BTreeSet<IpAddr> = holder.keys().copied().collect();
    let addresses = pool.allocate_many(&taken, fresh.len());
    for (i, key) in fresh.into_iter().enumerate() {
        match addresses.get(i) {
            Some(&addr) => {
                out.table.entries.insert(key.clone(), addr);
                out.assigned.push((key.clone(), addr));
            }
            None => out.exhausted.push(key.clone()),
        }
    }
    out
}

/// The wanted shoots' table entries, in the order they claim their address: a shoot whose ShootState
/// records the same address first (the record is what its Secret and its peers were built from),
/// then by name.
fn keep_order<'a>(
    current: &'a Table,
    wanted: &BTreeSet<ShootKey>,
    recorded: &BTreeMap<ShootKey, IpAddr>,
) -> Vec<(&'a ShootKey, IpAddr)> {
    let mut entries: Vec<(&ShootKey, IpAddr)> =
        current.entries.iter().filter(|(k, _)| wanted.contains(*k)).map(|(k, &a)| (k, a)).collect();
    // Stable: within each group the entries stay in the table's (name) order.
    entries.sort_by_key(|(k, a)| recorded.get(*k) != Some(a));
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ShootKey {
        ShootKey::new("garden-p", name)
    }

    fn pool() -> Pool {
        Pool::new("192.168.128.0/29".parse().unwrap()) // .3 .4 .5 .6
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn new_shoots_get_the_lowest_free_and_released_addresses_come_back() {
        let wanted: BTreeSet<_> = ["a", "b", "c"].map(key).into();
        let first = plan(&Table::default(), &pool(), &wanted, &BTreeMap::new());
        assert_eq!(first.table.get(&key("a")), Some(ip("192.168.128.3")));
        assert_eq!(first.table.get(&key("c")), Some(ip("192.168.128.5")));
        let wanted: BTreeSet<_> = ["a", "c", "d"].map(key).into();
        let second = plan(&first.table, &pool(), &wanted, &BTreeMap::new());
        assert_eq!(second.released, [(key("b"), ip("192.168.128.4"))]);
        assert_eq!(second.assigned, [(key("d"), ip("192.168.128.4"))], "b's address is the lowest free");
        assert_eq!(second.table.get(&key("c")), Some(ip("192.168.128.5")), "kept addresses do not move");
    }

    #[test]
    fn a_full_pool_reports_the_shoots_left_over() {
        let wanted: BTreeSet<_> = ["a", "b", "c", "d", "e", "f"].map(key).into();
        let p = plan(&Table::default(), &pool(), &wanted, &BTreeMap::new());
        assert_eq!(p.table.len(), 4);
        assert_eq!(p.exhausted, [key("e"), key("f")]);
        assert!(p.table.addresses_unique());
    }

    #[test]
    fn recorded_addresses_are_adopted_when_valid_and_free() {
        let wanted: BTreeSet<_> = ["a", "b", "c"].map(key).into();
        let recorded: BTreeMap<_, _> = [
            (key("a"), ip("192.168.128.6")),
            (key("b"), ip("192.168.128.6")), // duplicate: only one may have it
            (key("c"), ip("192.168.128.1")), // a gateway slot: never
        ]
        .into();
        let p = plan(&Table::default(), &pool(), &wanted, &recorded);
        assert_eq!(p.table.get(&key("a")), Some(ip("192.168.128.6")));
        assert_eq!(p.table.get(&key("b")), Some(ip("192.168.128.3")));
        assert_eq!(p.table.get(&key("c")), Some(ip("192.168.128.4")));
    }

    #[test]
    fn the_annotation_round_trips_and_skips_garbage() {
        let table: Table = [(key("a"), ip("192.168.128.3"))].into_iter().collect();
        assert_eq!(Table::parse(&table.to_text()), (table.clone(), vec![]));
        let (parsed, problems) = Table::parse(r#"{"garden-p/a":"192.168.128.3","nokey":"1.2.3.4","garden-p/b":"x"}"#);
        assert_eq!(parsed, table);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(Table::parse("[").1.len(), 1);
    }

    #[test]
    fn one_address_in_two_table_entries_is_kept_by_its_recorded_owner_and_the_other_moves_loudly() {
        let current: Table = [(key("a"), ip("192.168.128.3")), (key("b"), ip("192.168.128.3"))].into_iter().collect();
        let wanted: BTreeSet<_> = ["a", "b"].map(key).into();
        // b's ShootState records .3: b keeps it although a sorts first.
        let recorded = [(key("b"), ip("192.168.128.3"))].into();
        let p = plan(&current, &pool(), &wanted, &recorded);
        assert_eq!(p.table.get(&key("b")), Some(ip("192.168.128.3")));
        assert_eq!(p.table.get(&key("a")), Some(ip("192.168.128.4")));
        let c =
            Conflict { address: ip("192.168.128.3"), kept: key("b"), moved: key("a"), source: ConflictSource::Table };
        assert_eq!(p.conflicts, [c]);
        assert_eq!(p.assigned, [(key("a"), ip("192.168.128.4"))]);
        assert!(p.released.is_empty(), "nothing is released: {:?}", p.released);
        assert!(p.table.addresses_unique());
        // Without records the lower name keeps it.
        let p = plan(&current, &pool(), &wanted, &BTreeMap::new());
        assert_eq!((p.conflicts[0].kept.clone(), p.conflicts[0].moved.clone()), (key("a"), key("b")));
    }

    #[test]
    fn one_address_in_two_shootstate_records_is_adopted_once_and_reported() {
        let wanted: BTreeSet<_> = ["a", "b", "c"].map(key).into();
        let recorded = [(key("a"), ip("192.168.128.5")), (key("b"), ip("192.168.128.5"))].into();
        let p = plan(&Table::default(), &pool(), &wanted, &recorded);
        assert_eq!(p.table.get(&key("a")), Some(ip("192.168.128.5")));
        let c =
            Conflict { address: ip("192.168.128.5"), kept: key("a"), moved: key("b"), source: ConflictSource::Record };
        assert_eq!(p.conflicts, [c]);
        assert_eq!(p.table.get(&key("b")), Some(ip("192.168.128.3")), "b gets the first free address");
        assert_eq!(p.table.get(&key("c")), Some(ip("192.168.128.4")));
        assert!(p.table.addresses_unique());
    }

    #[test]
    fn a_table_entry_and_another_shoots_record_on_one_address_conflict() {
        let current: Table = [(key("a"), ip("192.168.128.3"))].into_iter().collect();
        let wanted: BTreeSet<_> = ["a", "b"].map(key).into();
        let recorded = [(key("b"), ip("192.168.128.3"))].into();
        let p = plan(&current, &pool(), &wanted, &recorded);
        assert_eq!(p.table.get(&key("a")), Some(ip("192.168.128.3")), "the table's holder keeps it");
        assert_eq!(p.conflicts.len(), 1);
        assert_eq!((p.conflicts[0].moved.clone(), p.conflicts[0].source), (key("b"), ConflictSource::Record));
        assert_eq!(p.table.get(&key("b")), Some(ip("192.168.128.4")));
    }
}
