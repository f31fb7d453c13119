//! The allocation table annotation: any text. Never a panic, problems stay short, and what it
//! keeps survives a write and a read unchanged.
#![no_main]

use kubelink_ipam::table::Table;
use libfuzzer_sys::fuzz_target;

const MAX_PROBLEM: usize = 2048;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (table, problems) = Table::parse(text);
    for p in &problems {
        assert!(p.len() <= MAX_PROBLEM, "{} byte problem", p.len());
    }
    let (again, none) = Table::parse(&table.to_text());
    assert!(none.is_empty(), "a written table does not read back: {none:?}");
    assert_eq!(again, table);
});
