//! Where the real binaries and Gardener's CRDs are. `scripts/k8s-tools` builds the binaries from
//! their Go modules into a cache keyed by their versions and downloads the gardener module; it is the
//! one place that knows the versions and the cache's layout, so this asks it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The binaries the harness starts, built by `scripts/k8s-tools`.
#[derive(Debug, Clone)]
pub struct Tools {
    pub dir: PathBuf,
    pub kube_apiserver: PathBuf,
    pub etcd: PathBuf,
    pub kubectl: PathBuf,
    pub helm: PathBuf,
    /// What each was built at (`kubernetes`, `etcd`, `helm`, `gardener`), from the cache's `versions`.
    pub versions: std::collections::BTreeMap<String, String>,
}

impl Tools {
    /// The version of `name` (`kubernetes`, `etcd`, `helm`, `gardener`).
    pub fn version(&self, name: &str) -> &str {
        self.versions.get(name).map(String::as_str).unwrap_or("unknown")
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

fn script(arg: &str) -> Result<PathBuf, String> {
    let script = repo_root().join("scripts/k8s-tools");
    let out = Command::new(&script).arg(arg).output().map_err(|e| format!("{}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!("{} {arg}: {}", script.display(), String::from_utf8_lossy(&out.stderr).trim()));
    }
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if path.is_empty() {
        return Err(format!("{} {arg} printed no directory", script.display()));
    }
    Ok(PathBuf::from(path))
}

/// The cached binaries, or why they are missing (with the command that builds them).
pub fn tools() -> Result<&'static Tools, String> {
    static TOOLS: OnceLock<Result<Tools, String>> = OnceLock::new();
    TOOLS
        .get_or_init(|| {
            let dir = script("--print-dir")?;
            let versions_file = dir.join("versions");
            let versions = std::fs::read_to_string(&versions_file)
                .map_err(|e| format!("{}: {e}: run scripts/k8s-tools (scripts/deps does)", versions_file.display()))?
                .lines()
                .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
                .collect();
            let tools = Tools {
                kube_apiserver: dir.join("kube-apiserver"),
                etcd: dir.join("etcd"),
                kubectl: dir.join("kubectl"),
                helm: dir.join("helm"),
                versions,
                dir,
            };
            for bin in [&tools.kube_apiserver, &tools.etcd, &tools.kubectl, &tools.helm] {
                if !bin.is_file() {
                    return Err(format!("{} is missing: run scripts/k8s-tools (scripts/deps does)", bin.display()));
                }
            }
            Ok(tools)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// The gardener module's directory in the Go module cache (downloaded when missing).
pub fn gardener_dir() -> Result<&'static Path, String> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| script("--gardener-dir")).as_ref().map(PathBuf::as_path).map_err(Clone::clone)
}

/// A binary built from the gardener module by `scripts/k8s-tools --gardener-contract` into the
/// directory of `gardener-contract` (`scripts/deps` runs it), or why it is missing.
fn gardener_tool(name: &str) -> Result<PathBuf, String> {
    let bin = script("--contract-dir")?.join(name);
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!("{} is missing: run scripts/k8s-tools --gardener-contract (scripts/deps does)", bin.display()))
    }
}

/// `gardener-contract` (`tests/gardener/`): gardenlet's chart rendering and Gardener's validation of
/// registration objects, from the gardener module.
pub fn gardener_contract() -> Result<&'static Path, String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| gardener_tool("gardener-contract")).as_ref().map(PathBuf::as_path).map_err(Clone::clone)
}

/// gardener-apiserver of the pinned gardener release.
pub fn gardener_apiserver() -> Result<&'static Path, String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| gardener_tool("gardener-apiserver")).as_ref().map(PathBuf::as_path).map_err(Clone::clone)
}

/// gardener-resource-manager of the pinned gardener release.
pub fn gardener_resource_manager() -> Result<&'static Path, String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| gardener_tool("gardener-resource-manager")).as_ref().map(PathBuf::as_path).map_err(Clone::clone)
}

/// Gardener's seed-side CRDs that kubelink uses: Extension, Cluster, ManagedResource, and the
/// PodMonitor every seed has (the chart's optional scrape config).
pub fn gardener_crds() -> Result<Vec<PathBuf>, String> {
    let dir = gardener_dir()?.join("example/seed-crds");
    let files = [
        "10-crd-extensions.gardener.cloud_extensions.yaml",
        "10-crd-extensions.gardener.cloud_clusters.yaml",
        "10-crd-resources.gardener.cloud_managedresources.yaml",
        "10-crd-monitoring.coreos.com_podmonitors.yaml",
    ];
    files
        .iter()
        .map(|f| {
            let path = dir.join(f);
            if path.is_file() {
                Ok(path)
            } else {
                Err(format!("{} is missing from the gardener module", path.display()))
            }
        })
        .collect()
}

/// kubelink's own CRDs, from the seed chart.
pub fn kubelink_crds() -> Vec<PathBuf> {
    let dir = repo_root().join("charts/kubelink/templates");
    ["crd-seedtunnels.yaml", "crd-shootpeers.yaml"].map(|f| dir.join(f)).to_vec()
}
