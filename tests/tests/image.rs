//! The container image (`Dockerfile`) against the binary: its runtime stage installs exactly the
//! Debian packages that provide the programs `kubelink` starts (`kubelink::tools::RUNTIME_TOOLS`, as
//! `dpkg -S` finds them on this machine) plus `ca-certificates`, and the chart's default image is the
//! one the Dockerfile documents building.
//!
//! The test needs those programs installed here (`scripts/deps`); without them it prints SKIPPED and
//! passes, and fails when `CI=true`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use kubelink_tests::skip::skip;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The packages of every `apt-get install` in the Dockerfile's last stage.
fn runtime_packages(dockerfile: &str) -> BTreeSet<String> {
    let joined = dockerfile.replace("\\\n", " ");
    let last_stage: Vec<&str> = joined.split("\nFROM ").last().unwrap().lines().collect();
    let mut out = BTreeSet::new();
    for line in last_stage.iter().filter(|l| l.trim_start().starts_with("RUN ")) {
        for cmd in line.split("&&") {
            let words: Vec<&str> = cmd.split_whitespace().collect();
            if let Some(i) = words.windows(2).position(|w| w == ["apt-get", "install"]) {
                out.extend(words[i + 2..].iter().filter(|w| !w.starts_with('-')).map(|w| w.to_string()));
            }
        }
    }
    out
}

/// Where `program` is on this machine: `$PATH`, then the sbin directories.
fn resolve(program: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"])
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

/// The Debian package that owns `path` (`dpkg -S`), trying the path as found and its real path.
fn owner(path: &Path) -> Option<String> {
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    for p in [path, &real] {
        let out = std::process::Command::new("dpkg").arg("-S").arg(p).output().ok()?;
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            // `nftables: /usr/sbin/nft` or `conntrack:amd64: /usr/sbin/conntrack`.
            let pkg = text.lines().next()?.split(": ").next()?;
            return Some(pkg.split(':').next()?.to_string());
        }
    }
    None
}

#[test]
fn the_runtime_stage_installs_exactly_the_packages_of_the_runtime_tools() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let mut want = BTreeSet::from(["ca-certificates".to_string()]);
    let mut missing = Vec::new();
    for tool in kubelink::tools::RUNTIME_TOOLS {
        match resolve(tool).and_then(|p| owner(&p).map(|pkg| (p, pkg))) {
            Some((path, pkg)) => {
                println!("{tool}: {} from {pkg}", path.display());
                want.insert(pkg);
            }
            None => missing.push(*tool),
        }
    }
    if !missing.is_empty() {
        let msg = format!("{missing:?} not installed here, or not from a Debian package (scripts/deps installs them)");
        skip("the_runtime_stage_installs_exactly_the_packages_of_the_runtime_tools", &msg);
        return;
    }
    let have = runtime_packages(&dockerfile);
    assert_eq!(have, want, "the Dockerfile's runtime stage installs {have:?}; the binary needs {want:?}");
}

#[test]
fn the_dockerfile_builds_the_workspace_rust_version_and_the_charts_default_image() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let rust_version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .map(|v| v.trim_matches('"'))
        .expect("rust-version in the workspace Cargo.toml");
    let from: Vec<&str> = dockerfile.lines().filter_map(|l| l.strip_prefix("FROM ")).collect();
    assert_eq!(from.len(), 2, "a builder and a runtime stage: {from:?}");
    assert!(from[0].starts_with(&format!("rust:{rust_version}-")), "builder {:?} is not Rust {rust_version}", from[0]);
    assert!(from[1].starts_with("debian:bookworm-slim"), "runtime {:?}", from[1]);
    assert!(dockerfile.contains("cargo build --profile dist --locked -p kubelink --bin kubelink"));
    let dist = manifest.split("[profile.dist]").nth(1).expect("a dist profile in the workspace Cargo.toml");
    assert!(dist.contains("strip = true"), "the shipped binary is stripped");

    // The chart's default image is what the documented build command tags.
    let values: serde_json::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(repo().join("charts/kubelink/values.yaml")).unwrap()).unwrap();
    let image =
        format!("{}:{}", values["image"]["repository"].as_str().unwrap(), values["image"]["tag"].as_str().unwrap());
    assert_eq!(image, format!("kubelink:{}", env!("CARGO_PKG_VERSION")));
    assert!(dockerfile.contains(&format!("docker build -t {image} .")), "the Dockerfile documents building {image}");
}

#[test]
fn the_package_list_is_read_from_the_last_stage_only() {
    let text = "FROM a AS b\nRUN apt-get install -y gcc\nFROM c\nRUN apt-get update \\\n && apt-get install -y --no-install-recommends \\\n  x \\\n  y \\\n && rm -rf /z\n";
    assert_eq!(runtime_packages(text), BTreeSet::from(["x".to_string(), "y".to_string()]));
}
