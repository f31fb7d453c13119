//! Helm's own Go library for the garden chart (through the Python driver `tests/helm/helm.py`, in the
//! virtualenv `scripts/deps` creates under `target/helm-venv`), installed into this crate's API test
//! server, which stands for the garden until kubelink runs as a Gardener extension. The seed's charts
//! go in with the real `helm` CLI (`kubelink_tests::helm`).

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Why Helm did not give an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelmError {
    /// No Python with helm-sdkpy (run `scripts/deps`), or the driver could not be started.
    Unavailable(String),
    /// Helm refused: the values (schema, `required`) or the chart. Helm's message.
    Refused(String),
    /// The driver answered something that is not what it promises.
    Output(String),
}

impl fmt::Display for HelmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HelmError::Unavailable(m) => write!(f, "helm is not available: {m}"),
            HelmError::Refused(m) => write!(f, "helm refused: {m}"),
            HelmError::Output(m) => write!(f, "unexpected output of the helm driver: {m}"),
        }
    }
}

impl std::error::Error for HelmError {}

/// The repository root (this crate is `tests/apiserver`).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python driver, `tests/helm/helm.py`.
pub fn driver() -> PathBuf {
    repo_root().join("tests/helm/helm.py")
}

/// The Python that has helm-sdkpy: `$KUBELINK_HELM_PYTHON`, else `target/helm-venv/bin/python` in the
/// repository (created by `scripts/deps`).
pub fn python() -> PathBuf {
    match std::env::var_os("KUBELINK_HELM_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => repo_root().join("target/helm-venv/bin/python"),
    }
}

/// `Ok` when the driver can run (the Python exists and imports helm-sdkpy), else why not.
pub async fn available() -> Result<(), HelmError> {
    let python = python();
    if !python.is_file() {
        return Err(HelmError::Unavailable(format!("{} is missing; run scripts/deps", python.display())));
    }
    let out = tokio::process::Command::new(&python)
        .args(["-c", "import helm_sdkpy, yaml"])
        .output()
        .await
        .map_err(|e| HelmError::Unavailable(format!("{}: {e}", python.display())))?;
    if !out.status.success() {
        return Err(HelmError::Unavailable(format!(
            "{} cannot import helm_sdkpy and yaml: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Runs the driver with `args`; stdout on success.
async fn run_driver(args: &[&std::ffi::OsStr]) -> Result<String, HelmError> {
    let python = python();
    let out = tokio::process::Command::new(&python)
        .arg(driver())
        .args(args)
        // Read once when Helm's library loads; the driver re-executes itself without it, but set it
        // here so that it starts right.
        .env("HELM_DRIVER", "memory")
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| HelmError::Unavailable(format!("{}: {e}", python.display())))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    match out.status.code() {
        Some(0) => Ok(stdout),
        Some(1) => Err(HelmError::Refused(if stderr.is_empty() { stdout } else { stderr })),
        _ => Err(HelmError::Unavailable(format!("helm.py exited with {}: {stderr}", out.status))),
    }
}

/// Installs the chart in `chart_dir` as release `release` into `namespace` of the cluster that
/// `kubeconfig` points at, with `values` (a JSON object), and returns the rendered objects. Helm
/// validates the values against the chart's `values.schema.json` first and creates every object in
/// the cluster; the release record stays in the driver's memory (nothing else is written).
pub async fn install(
    chart_dir: &Path,
    kubeconfig: &Path,
    namespace: &str,
    release: &str,
    values: Value,
) -> Result<Vec<Value>, HelmError> {
    let values = values.to_string();
    let out = run_driver(&[
        "install".as_ref(),
        chart_dir.as_os_str(),
        "--kubeconfig".as_ref(),
        kubeconfig.as_os_str(),
        "--namespace".as_ref(),
        namespace.as_ref(),
        "--release".as_ref(),
        release.as_ref(),
        "--values-json".as_ref(),
        values.as_ref(),
        "--json".as_ref(),
    ])
    .await?;
    match serde_json::from_str(&out) {
        Ok(Value::Array(objects)) => Ok(objects),
        _ => Err(HelmError::Output(out)),
    }
}

/// What `helm lint` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LintReport {
    /// `(severity, path)` per message: INFO, WARNING or ERROR. The Python bindings drop each message's
    /// text; [`install`] gives Helm's message for values it rejects.
    pub messages: Vec<(String, String)>,
    /// What Helm logged while linting (e.g. a `required` value missing, which lint only warns about).
    pub log: Vec<String>,
}

/// `helm lint` of the chart with `values` (a JSON object) merged over its `values.yaml`, as
/// `helm lint --set-json` does. `Err(Refused)` when lint reports an error.
pub async fn lint(chart_dir: &Path, values: Value) -> Result<LintReport, HelmError> {
    let values = values.to_string();
    let parse = |out: &str| -> Result<LintReport, HelmError> {
        let v: Value = serde_json::from_str(out).map_err(|_| HelmError::Output(out.to_string()))?;
        let strings = |k: &str| -> Vec<Value> { v[k].as_array().cloned().unwrap_or_default() };
        Ok(LintReport {
            messages: strings("messages")
                .iter()
                .map(|m| (m["severity"].as_str().unwrap_or("").into(), m["path"].as_str().unwrap_or("").into()))
                .collect(),
            log: strings("log").iter().filter_map(|l| l.as_str().map(String::from)).collect(),
        })
    };
    match run_driver(&["lint".as_ref(), chart_dir.as_os_str(), "--set-json".as_ref(), values.as_ref()]).await {
        Ok(out) => parse(&out),
        Err(HelmError::Refused(out)) => {
            let report = parse(&out)?;
            let errors: Vec<&str> =
                report.messages.iter().filter(|(s, _)| s == "ERROR").map(|(_, p)| p.as_str()).collect();
            Err(HelmError::Refused(format!("lint reports errors in {errors:?}; log: {:?}", report.log)))
        }
        Err(e) => Err(e),
    }
}

/// A kubeconfig for `server` (e.g. the API test server's URL) with a bearer token.
pub fn kubeconfig(server: &str, token: &str) -> String {
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {"server": server}}],
        "users": [{"name": "test", "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
        "current-context": "test",
    });
    // JSON is YAML.
    serde_json::to_string_pretty(&doc).expect("a JSON value serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubeconfig_names_the_server_and_the_token() {
        let k: Value = serde_json::from_str(&kubeconfig("http://127.0.0.1:1", "t0k")).unwrap();
        assert_eq!(k["clusters"][0]["cluster"]["server"], "http://127.0.0.1:1");
        assert_eq!(k["users"][0]["user"]["token"], "t0k");
        assert_eq!(k["current-context"], "test");
    }
}
