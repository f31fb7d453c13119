//! The production binary carries no test code: this test crate is not a normal dependency of
//! `kubelink`, and the built binary holds none of its symbols.

use std::process::Command;

use kubelink_tests::netns::find_kubelink;
use kubelink_tests::skip::skip;

const TEST_CRATES: [&str; 1] = ["kubelink-tests"];

#[test]
fn the_product_depends_on_no_test_crate() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["tree", "-p", "kubelink", "-e", "normal", "--prefix", "none", "--locked", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && tree.contains("kubelink-ipam"), "{}", String::from_utf8_lossy(&out.stderr));
    for name in TEST_CRATES {
        assert!(!tree.lines().any(|l| l.starts_with(&format!("{name} "))), "kubelink depends on {name}:\n{tree}");
    }
}

/// Mangled Rust symbols name their crate (`kubelink_tests`); a release build keeps its symbol table.
#[test]
fn the_built_binary_holds_no_test_crate_symbols() {
    let Ok(bin) = find_kubelink() else {
        skip("the_built_binary_holds_no_test_crate_symbols", "no kubelink binary (cargo build --release -p kubelink)");
        return;
    };
    let bytes = std::fs::read(&bin).unwrap();
    for name in TEST_CRATES.map(|n| n.replace('-', "_")) {
        let found = bytes.windows(name.len()).any(|w| w == name.as_bytes());
        assert!(!found, "{} contains {name}", bin.display());
    }
}
