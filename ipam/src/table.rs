//! The allocation table: which shoot holds which tunnel address.
//!
//! The table lives in one ConfigMap in kubelink's namespace (`extension::table_store`), so one
//! compare-and-swap (a replace guarded by its resourceVersion) is the single point that serializes every
//! allocator: see docs/ipam.md.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::contract::ShootKey;
use crate::error::{excerpt, shorten};

/// What the table's text is called in messages about it.
const WHAT: &str = "the allocation table";
/// How long a parser's message about the table may be: it can quote the input.
const MAX_MESSAGE: usize = 300;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    entries: BTreeMap<ShootKey, IpAddr>,
}

impl Table {
    /// Reads the table's text: a JSON object `{"<namespace>/<name>": "<address>"}`. Entries that do not parse are skipped and described in the second value.
    pub fn parse(text: &str) -> (Self, Vec<String>) {
        let mut problems = Vec::new();
        let raw: BTreeMap<String, serde_json::Value> = match serde_json::from_str(text) {
            Ok(raw) => raw,
            Err(e) => {
                let e = shorten(&e.to_string(), MAX_MESSAGE);
                return (Self::default(), vec![format!("{WHAT} is not a JSON object: {e}")]);
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
                Err(e) => problems.push(format!("{WHAT} entry {}: {e}; skipped", excerpt(&key))),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ShootKey {
        ShootKey::new("garden-p", name)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_text_round_trips_and_skips_garbage() {
        let table: Table = [(key("a"), ip("192.168.128.3"))].into_iter().collect();
        assert_eq!(Table::parse(&table.to_text()), (table.clone(), vec![]));
        let (parsed, problems) = Table::parse(r#"{"garden-p/a":"192.168.128.3","nokey":"1.2.3.4","garden-p/b":"x"}"#);
        assert_eq!(parsed, table);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(Table::parse("[").1.len(), 1);
    }

    #[test]
    fn duplicate_addresses_are_seen() {
        let table: Table = [(key("a"), ip("192.168.128.3")), (key("b"), ip("192.168.128.3"))].into_iter().collect();
        assert!(!table.addresses_unique());
    }
}
