//! Real Helm for the tests: the `helm` CLI built from the `helm.sh/helm/v4` Go module
//! (`scripts/k8s-tools`), run as an operator runs it (`install`, `upgrade`, `template`, `lint`) against
//! the real API server; and the command line a kubelet would start from a rendered workload's container
//! ([`container_command`]), so that a harness runs the agents and the IPAM exactly as the chart
//! configures them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

/// Why Helm did not give an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelmError {
    /// No `helm` binary (run `scripts/k8s-tools`, which `scripts/deps` runs), or it could not be started.
    Unavailable(String),
    /// Helm refused: the values (schema, `required`), the chart or the cluster. Helm's message.
    Refused(String),
    /// Helm answered something that is not what it promises.
    Output(String),
    /// [`container_command`]: something a kubelet would resolve that this cannot, or no such container.
    Unresolved(String),
}

impl fmt::Display for HelmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HelmError::Unavailable(m) => write!(f, "helm is not available: {m}"),
            HelmError::Refused(m) => write!(f, "helm refused: {m}"),
            HelmError::Output(m) => write!(f, "unexpected output of helm: {m}"),
            HelmError::Unresolved(m) => write!(f, "cannot build the container's command: {m}"),
        }
    }
}

impl std::error::Error for HelmError {}

/// The chart `name` under `charts/`.
pub fn chart(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts").join(name)
}

/// The `helm` binary, or why there is none.
pub fn binary() -> Result<PathBuf, HelmError> {
    crate::k8s::tools::tools().map(|t| t.helm.clone()).map_err(HelmError::Unavailable)
}

/// `Ok` when Helm can run, else why not.
pub async fn available() -> Result<(), HelmError> {
    binary().map(drop)
}

/// `true` when Helm can run; else reports the skip (or fails under CI, [`crate::skip::skip`]).
pub async fn helm_ready(test: &str) -> bool {
    match available().await {
        Ok(()) => true,
        Err(e) => crate::skip::skip(test, &e.to_string()),
    }
}

/// Writes `values` (a JSON object; JSON is YAML) to a file of its own for `helm -f`.
fn values_file(values: &Value) -> Result<tempfile::NamedTempFile, HelmError> {
    let mut file = tempfile::Builder::new()
        .prefix("values-")
        .suffix(".json")
        .tempfile()
        .map_err(|e| HelmError::Unavailable(format!("a values file: {e}")))?;
    std::io::Write::write_all(&mut file, values.to_string().as_bytes())
        .map_err(|e| HelmError::Unavailable(format!("writing the values file: {e}")))?;
    Ok(file)
}

/// Runs `helm args`; stdout on success, Helm's message as [`HelmError::Refused`] otherwise.
async fn helm(args: &[&std::ffi::OsStr]) -> Result<String, HelmError> {
    let bin = binary()?;
    let out: Output = tokio::process::Command::new(&bin)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| HelmError::Unavailable(format!("{}: {e}", bin.display())))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    Err(HelmError::Refused(if stderr.is_empty() { stdout } else { stderr }))
}

/// The objects of a rendered manifest (YAML documents; empty ones dropped).
pub fn parse_manifest(manifest: &str) -> Result<Vec<Value>, HelmError> {
    let mut objects = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(manifest) {
        let value: Value = serde::Deserialize::deserialize(doc).map_err(|e| HelmError::Output(e.to_string()))?;
        if !value.is_null() {
            objects.push(value);
        }
    }
    Ok(objects)
}

/// Which `helm` command [`release`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Install,
    Upgrade,
}

/// `helm install|upgrade RELEASE CHART --namespace NS -f values -o json` into the cluster `kubeconfig`
/// points at; the objects Helm rendered and created or changed. Helm validates the values against the
/// chart's `values.schema.json` first and keeps its release record in the cluster, as it does on a seed.
pub async fn release(
    verb: Verb,
    chart_dir: &Path,
    kubeconfig: &Path,
    (namespace, name): (&str, &str),
    values: Value,
) -> Result<Vec<Value>, HelmError> {
    let file = values_file(&values)?;
    let os = std::ffi::OsStr::new;
    let verb = os(match verb {
        Verb::Install => "install",
        Verb::Upgrade => "upgrade",
    });
    let args = [verb, os(name), chart_dir.as_os_str(), os("--kubeconfig"), kubeconfig.as_os_str()];
    let more = [os("--namespace"), os(namespace), os("-f"), file.path().as_os_str(), os("-o"), os("json")];
    let out = helm(&[&args[..], &more[..]].concat()).await?;
    let record: Value = serde_json::from_str(&out).map_err(|_| HelmError::Output(out.clone()))?;
    let manifest = record["manifest"].as_str().ok_or_else(|| HelmError::Output(out.clone()))?;
    parse_manifest(manifest)
}

/// `helm install` (see [`release`]).
pub async fn install(
    chart_dir: &Path,
    kubeconfig: &Path,
    namespace: &str,
    name: &str,
    values: Value,
) -> Result<Vec<Value>, HelmError> {
    release(Verb::Install, chart_dir, kubeconfig, (namespace, name), values).await
}

/// `helm template RELEASE CHART --namespace NS -f values`: what an install would create, without a
/// cluster.
pub async fn template(chart_dir: &Path, namespace: &str, name: &str, values: Value) -> Result<Vec<Value>, HelmError> {
    let file = values_file(&values)?;
    let out = helm(&[
        "template".as_ref(),
        name.as_ref(),
        chart_dir.as_os_str(),
        "--namespace".as_ref(),
        namespace.as_ref(),
        "-f".as_ref(),
        file.path().as_os_str(),
    ])
    .await?;
    parse_manifest(&out)
}

/// What `helm lint` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LintReport {
    /// `(severity, path, message)` per finding: INFO, WARNING or ERROR.
    pub messages: Vec<(String, String, String)>,
}

/// The findings of `helm lint` output: lines `[SEVERITY] path: message`.
fn lint_findings(out: &str) -> Vec<(String, String, String)> {
    out.lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix('[')?;
            let (severity, rest) = rest.split_once("] ")?;
            let (path, message) = rest.split_once(": ").unwrap_or((rest, ""));
            Some((severity.to_string(), path.to_string(), message.to_string()))
        })
        .collect()
}

/// `helm lint CHART -f values --strict`-less, as operators run it. `Err(Refused)` when lint reports
/// an error (Helm exits non-zero), with its findings.
pub async fn lint(chart_dir: &Path, values: Value) -> Result<LintReport, HelmError> {
    let file = values_file(&values)?;
    let bin = binary()?;
    let out = tokio::process::Command::new(&bin)
        .args(["lint".as_ref(), chart_dir.as_os_str(), "-f".as_ref(), file.path().as_os_str()])
        .output()
        .await
        .map_err(|e| HelmError::Unavailable(format!("{}: {e}", bin.display())))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let report = LintReport { messages: lint_findings(&text) };
    if out.status.success() { Ok(report) } else { Err(HelmError::Refused(text)) }
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
}
