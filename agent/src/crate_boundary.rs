//! The agent's library does not use the extension controller's crate. The node-side modules (the
//! agent, the sidecar, the device, routes, the firewall) share with the controller only what both
//! agree on, `kubelink-contract`. The controller's crate `kubelink-ipam` is a dependency of this
//! package only because the one binary also hosts the controller side: the `kubelink ipam` commands
//! (the extension controller, `list`), the controller's metrics and the garden's admission webhook.
//! This test fails when any other file under `src/` names the controller's crate.

use std::path::{Path, PathBuf};

/// Files and directories (ending in `/`) under `src/` that may use the controller's crate.
const CONTROLLER_SIDE: &[&str] = &["cmd/ipam.rs", "cmd/ipam/", "extension_metrics.rs", "garden_admission/"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn only_the_controller_side_modules_use_the_controller_crate() {
    // Spelled in two parts so that this file does not name it.
    let name = ["kubelink", "ipam"].join("_");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 50, "{} files under {}", files.len(), src.display());
    let mut offenders = Vec::new();
    for path in files {
        let relative = path.strip_prefix(&src).unwrap().to_string_lossy().replace('\\', "/");
        if CONTROLLER_SIDE
            .iter()
            .any(|allowed| relative == *allowed || (allowed.ends_with('/') && relative.starts_with(allowed)))
        {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            if line.contains(&name) {
                offenders.push(format!("src/{relative}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "the agent's library uses the extension controller's crate; import what both sides agree on from \
         kubelink_contract, or move controller code under one of {CONTROLLER_SIDE:?}:\n{}",
        offenders.join("\n")
    );
}
