//! Real Helm for the tests: the chart rendered and installed by Helm's own Go library (through the
//! Python driver `tests/helm/helm.py`, in the virtualenv `scripts/deps` creates under
//! `target/helm-venv`), typically into this crate's API test server; and the command line a kubelet
//! would start from a rendered workload's container ([`container_command`]), so that a harness runs
//! the agents and the IPAM exactly as the chart configures them.

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
    /// [`container_command`]: something a kubelet would resolve that this cannot, or no such container.
    Unresolved(String),
}

impl fmt::Display for HelmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HelmError::Unavailable(m) => write!(f, "helm is not available: {m}"),
            HelmError::Refused(m) => write!(f, "helm refused: {m}"),
            HelmError::Output(m) => write!(f, "unexpected output of the helm driver: {m}"),
            HelmError::Unresolved(m) => write!(f, "cannot build the container's command: {m}"),
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

/// What the downward API gives the Pod a kubelet starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Downward {
    /// `spec.nodeName`
    pub node_name: String,
    /// `status.hostIP`
    pub host_ip: String,
    /// `metadata.name`
    pub pod_name: String,
    /// `metadata.namespace`
    pub pod_namespace: String,
}

/// The arguments after the image's entrypoint (the `kubelink` binary) and the environment, as a
/// kubelet starts the container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Command {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl Command {
    pub fn env(&self, name: &str) -> Option<&str> {
        self.env.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// The command a kubelet would start for `container` of a rendered workload (anything with
/// `spec.template.spec.containers`: DaemonSet, Deployment): its `args` after the image's entrypoint,
/// `$(VAR)` references expanded as a kubelet does, and its `env` with `valueFrom.fieldRef` resolved
/// from `downward`. Anything else a kubelet would resolve from the cluster (Secret or ConfigMap
/// references, `envFrom`, resource fields, other field paths) or a `command` that replaces the
/// entrypoint is an error: the caller could not start the same process.
pub fn container_command(object: &Value, container: &str, downward: &Downward) -> Result<Command, HelmError> {
    let what = format!(
        "{} {}",
        object["kind"].as_str().unwrap_or("object"),
        object["metadata"]["name"].as_str().unwrap_or("(unnamed)")
    );
    let containers = object["spec"]["template"]["spec"]["containers"]
        .as_array()
        .ok_or_else(|| HelmError::Unresolved(format!("{what} has no spec.template.spec.containers")))?;
    let c = containers
        .iter()
        .find(|c| c["name"] == container)
        .ok_or_else(|| HelmError::Unresolved(format!("{what} has no container {container:?}")))?;
    if !c["command"].is_null() {
        return Err(HelmError::Unresolved(format!(
            "{what}/{container} sets command {}, replacing the image's entrypoint",
            c["command"]
        )));
    }
    if !c["envFrom"].is_null() {
        return Err(HelmError::Unresolved(format!("{what}/{container} has envFrom {}", c["envFrom"])));
    }
    let mut env: Vec<(String, String)> = Vec::new();
    for e in c["env"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let name = e["name"]
            .as_str()
            .ok_or_else(|| HelmError::Unresolved(format!("{what}/{container}: env entry without a name: {e}")))?;
        let value = if let Some(from) = e.get("valueFrom") {
            let path = from["fieldRef"]["fieldPath"].as_str().ok_or_else(|| {
                HelmError::Unresolved(format!("{what}/{container}: env {name} comes from {from}, not a field"))
            })?;
            match path {
                "spec.nodeName" => downward.node_name.clone(),
                "status.hostIP" => downward.host_ip.clone(),
                "metadata.name" => downward.pod_name.clone(),
                "metadata.namespace" => downward.pod_namespace.clone(),
                other => {
                    return Err(HelmError::Unresolved(format!(
                        "{what}/{container}: env {name} comes from field {other}, which is not in Downward"
                    )));
                }
            }
        } else {
            match &e["value"] {
                Value::Null => String::new(),
                Value::String(s) => expand(s, &env),
                other => {
                    return Err(HelmError::Unresolved(format!(
                        "{what}/{container}: env {name} has a non-string value {other}"
                    )));
                }
            }
        };
        env.push((name.to_string(), value));
    }
    let mut args = Vec::new();
    for a in c["args"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let a = a
            .as_str()
            .ok_or_else(|| HelmError::Unresolved(format!("{what}/{container}: a non-string argument {a}")))?;
        args.push(expand(a, &env));
    }
    Ok(Command { args, env })
}

/// `$(VAR)` expansion as a kubelet does it: a defined variable is replaced, `$$` is a literal `$`,
/// anything else (an undefined variable included) stays as written.
fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(')
            && let Some(end) = body.find(')')
            && let Some((_, v)) = env.iter().rev().find(|(k, _)| *k == body[..end])
        {
            out.push_str(v);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn downward() -> Downward {
        Downward {
            node_name: "node-a".into(),
            host_ip: "10.0.0.1".into(),
            pod_name: "agent-x".into(),
            pod_namespace: "kubelink".into(),
        }
    }

    fn workload(container: Value) -> Value {
        json!({"kind": "DaemonSet", "metadata": {"name": "ds"},
               "spec": {"template": {"spec": {"containers": [{"name": "other"}, container]}}}})
    }

    #[test]
    fn downward_fields_plain_values_and_references_resolve_as_a_kubelet_does() {
        let ds = workload(json!({
            "name": "agent",
            "args": ["agent", "--seed=s", "--node=$(NODE)", "--cost=$$5", "--x=$(UNSET)", "--lit=$$(NODE)"],
            "env": [
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
                {"name": "POD", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
                {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "DIR", "value": "/run/$(POD)"},
                {"name": "EMPTY"},
            ],
        }));
        let cmd = container_command(&ds, "agent", &downward()).unwrap();
        assert_eq!(cmd.args, ["agent", "--seed=s", "--node=node-a", "--cost=$5", "--x=$(UNSET)", "--lit=$(NODE)"]);
        let env: Vec<(&str, &str)> = cmd.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            env,
            [
                ("NODE", "node-a"),
                ("IP", "10.0.0.1"),
                ("POD", "agent-x"),
                ("NS", "kubelink"),
                ("DIR", "/run/agent-x"),
                ("EMPTY", "")
            ]
        );
        assert_eq!(cmd.env("IP"), Some("10.0.0.1"));
        assert_eq!(cmd.env("NOPE"), None);
    }

    #[test]
    fn a_reference_to_a_later_variable_is_not_expanded() {
        let ds = workload(json!({"name": "agent", "env": [
            {"name": "A", "value": "$(B)"},
            {"name": "B", "value": "b"},
        ]}));
        let cmd = container_command(&ds, "agent", &downward()).unwrap();
        assert_eq!(cmd.env("A"), Some("$(B)"));
        assert!(cmd.args.is_empty());
    }

    #[test]
    fn what_a_kubelet_would_fetch_from_the_cluster_is_an_error() {
        let cases = [
            json!({"name": "agent", "env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}),
            json!({"name": "agent", "env": [{"name": "K", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]}),
            json!({"name": "agent", "env": [{"name": "K", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]}),
            json!({"name": "agent", "env": [{"name": "K", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}]}),
            json!({"name": "agent", "envFrom": [{"secretRef": {"name": "s"}}]}),
            json!({"name": "agent", "command": ["/bin/sh"]}),
            json!({"name": "agent", "args": [5]}),
        ];
        for c in cases {
            let err = container_command(&workload(c.clone()), "agent", &downward()).unwrap_err();
            assert!(matches!(err, HelmError::Unresolved(_)), "{c}: {err}");
        }
        let err = container_command(&workload(json!({"name": "agent"})), "ipam", &downward()).unwrap_err();
        assert!(err.to_string().contains("no container \"ipam\""), "{err}");
        let err = container_command(&json!({"kind": "Service"}), "agent", &downward()).unwrap_err();
        assert!(err.to_string().contains("no spec.template.spec.containers"), "{err}");
    }

    #[test]
    fn the_kubeconfig_names_the_server_and_the_token() {
        let k: Value = serde_json::from_str(&kubeconfig("http://127.0.0.1:1", "t0k")).unwrap();
        assert_eq!(k["clusters"][0]["cluster"]["server"], "http://127.0.0.1:1");
        assert_eq!(k["users"][0]["user"]["token"], "t0k");
        assert_eq!(k["current-context"], "test");
    }
}
