//! The seed landscape deployed as gardenlet deploys kubelink: `charts/kubelink` into the seed by the
//! real helm CLI, with the values a ControllerDeployment gives and the `gardener.*` values gardenlet
//! injects, into an API server with authentication and RBAC on; every agent and the extension
//! controller started with the args and env of the rendered DaemonSet and Deployment
//! ([`helm::container_command`]), as a kubelet would.
//!
//! What a kubelet adds stands in here, and only that:
//! - the Pod's ServiceAccount token: a kubeconfig named by `KUBECONFIG` (a fresh token of the Pod's
//!   ServiceAccount, the server's CA), where a kubelet mounts the token for in-cluster config;
//! - Secret and ConfigMap volumes: the object read from the seed and written to a directory, the
//!   container's paths under the mount rewritten to it;
//! - the node's own filesystem: the namespaces share this machine's, so each node gets its own
//!   device name (its UAPI socket `/var/run/wireguard/<device>.sock` is a file) and state directory.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;

use crate::helm;
use crate::k8s::Cluster;
use serde_json::{Value, json};

/// The release name.
pub const RELEASE: &str = "kubelink";

/// The chart `name` under `charts/`.
pub fn chart_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts").join(name)
}

/// The workloads Helm rendered and installed into the seed.
pub struct Workloads {
    /// DaemonSet `kubelink-agent`.
    pub agent: Value,
    /// Deployment `kubelink-controller`.
    pub controller: Value,
}

/// Installs the seed chart into `namespace` with `values` as the cluster's admin (the `helm` CLI).
pub async fn install(seed: &Cluster, namespace: &str, values: Value) -> Result<Workloads, String> {
    helm::available().await.map_err(|e| e.to_string())?;
    seed.ensure_namespace(namespace).await?;
    let kubeconfig = seed.admin_kubeconfig_file()?;
    let objects = helm::install(&chart_dir("kubelink"), &kubeconfig, namespace, RELEASE, values)
        .await
        .map_err(|e| format!("installing kubelink: {e}"))?;
    Ok(Workloads {
        agent: find(&objects, "DaemonSet", "kubelink-agent")?,
        controller: find(&objects, "Deployment", "kubelink-controller")?,
    })
}

fn find(objects: &[Value], kind: &str, name: &str) -> Result<Value, String> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .cloned()
        .ok_or_else(|| format!("the chart rendered no {kind} {name}"))
}

/// The ServiceAccount a workload's Pods run as.
pub fn service_account(workload: &Value) -> Result<String, String> {
    let name = workload["spec"]["template"]["spec"]["serviceAccountName"].as_str();
    name.map(str::to_string).ok_or_else(|| format!("{} sets no serviceAccountName", workload["metadata"]["name"]))
}

/// The Pod the DaemonSet controller creates for `node`: the template's labels and spec, bound to
/// the node.
pub fn agent_pod(daemonset: &Value, name: &str, node: &str) -> Value {
    let template = &daemonset["spec"]["template"];
    let mut spec = template["spec"].clone();
    spec["nodeName"] = json!(node);
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "labels": template["metadata"]["labels"]},
           "spec": spec})
}

/// A process to start: arguments after the `kubelink` entrypoint, and its whole environment.
pub type Container = helm::Command;

/// The agent container of `daemonset` on one node, with the node's own device name and state
/// directory, and `kubeconfig` (its ServiceAccount's token) as its in-cluster credentials.
pub fn agent_container(
    daemonset: &Value,
    downward: &helm::Downward,
    device: &str,
    state_dir: &Path,
    kubeconfig: &Path,
) -> Result<Container, String> {
    let mut c = helm::container_command(daemonset, "agent", downward).map_err(|e| e.to_string())?;
    let device_args = c.args.iter().filter(|a| a.starts_with("--device=")).count();
    if device_args != 1 {
        return Err(format!("the agent container has {device_args} --device= arguments, expected one: {:?}", c.args));
    }
    for a in c.args.iter_mut().filter(|a| a.starts_with("--device=")) {
        *a = format!("--device={device}");
    }
    set_env(&mut c, "KUBELINK_STATE_DIR", &state_dir.to_string_lossy());
    set_env(&mut c, "KUBECONFIG", &kubeconfig.to_string_lossy());
    Ok(c)
}

/// How a container runtime would confine container `name` of `workload`, as a `setpriv` (util-linux)
/// command line to put in front of the program: for a container that is not privileged, exactly the
/// capabilities its `securityContext` adds (it must drop `ALL`) as the bounding, inheritable and
/// ambient sets, and `no_new_privs` for `allowPrivilegeEscalation: false`. Empty for a privileged
/// container (the process keeps all of root's capabilities). The process stays uid 0, as
/// `runAsUser: 0` gives; seccomp and the read-only root are not reproduced.
pub fn confinement(workload: &Value, name: &str) -> Result<Vec<String>, String> {
    let containers = workload["spec"]["template"]["spec"]["containers"].as_array();
    let container = containers
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .ok_or_else(|| format!("{} has no container {name}", workload["metadata"]["name"]))?;
    let security = &container["securityContext"];
    if security["privileged"] == true {
        return Ok(Vec::new());
    }
    let caps = &security["capabilities"];
    if caps["drop"] != json!(["ALL"]) {
        return Err(format!("container {name} keeps the runtime's default capabilities: {caps}"));
    }
    let added: Vec<String> = caps["add"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|c| format!("+{}", c.to_ascii_lowercase()))
        .collect();
    let set = std::iter::once("-all".to_string()).chain(added).collect::<Vec<_>>().join(",");
    let mut out = vec![
        "setpriv".to_string(),
        format!("--bounding-set={set}"),
        format!("--inh-caps={set}"),
        format!("--ambient-caps={set}"),
    ];
    if security["allowPrivilegeEscalation"] == false {
        out.push("--no-new-privs".into());
    }
    out.push("--".into());
    Ok(out)
}

/// The command lines of the init containers of `workload`, in order (`command` then `args`).
pub fn init_commands(workload: &Value) -> Vec<Vec<String>> {
    let inits = workload["spec"]["template"]["spec"]["initContainers"].as_array();
    inits
        .into_iter()
        .flatten()
        .map(|c| {
            let words = |k: &str| c[k].as_array().into_iter().flatten().filter_map(Value::as_str).map(String::from);
            words("command").chain(words("args")).collect()
        })
        .collect()
}

/// The container `name` of `deployment`: its Secret and ConfigMap volumes read from the seed (as the
/// admin, as a kubelet reads them) into `volumes/<object>/`, the mount paths rewritten, and
/// `kubeconfig` as its in-cluster credentials.
pub async fn deployment_container(
    seed: &kube::Client,
    deployment: &Value,
    name: &str,
    namespace: &str,
    volumes: &Path,
    kubeconfig: &Path,
) -> Result<Container, String> {
    let downward = helm::Downward {
        node_name: "control".into(),
        host_ip: String::new(),
        pod_name: format!("{}-0", deployment["metadata"]["name"].as_str().unwrap_or(name)),
        pod_namespace: namespace.into(),
    };
    let mut c = helm::container_command(deployment, name, &downward).map_err(|e| e.to_string())?;
    for (mount, source) in volume_mounts(deployment, name)? {
        let local = volumes.join(source.name());
        write_volume(seed, namespace, &source, &local).await?;
        let local = local.to_string_lossy();
        for text in c.args.iter_mut().chain(c.env.iter_mut().map(|(_, v)| v)) {
            *text = text.replace(&mount, &local);
        }
    }
    set_env(&mut c, "KUBECONFIG", &kubeconfig.to_string_lossy());
    Ok(c)
}

/// What a volume holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Secret(String),
    ConfigMap(String),
}

impl Source {
    fn name(&self) -> &str {
        match self {
            Self::Secret(n) | Self::ConfigMap(n) => n,
        }
    }
}

/// (mount path, source) of every volume `container` mounts; only Secrets and ConfigMaps.
fn volume_mounts(workload: &Value, container: &str) -> Result<Vec<(String, Source)>, String> {
    let spec = &workload["spec"]["template"]["spec"];
    let c = spec["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == container))
        .ok_or_else(|| format!("no container {container}"))?;
    let mut out = Vec::new();
    for m in c["volumeMounts"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let volume = spec["volumes"].as_array().and_then(|vs| vs.iter().find(|v| v["name"] == m["name"]));
        let Some(volume) = volume else { return Err(format!("volumeMount {} has no volume", m["name"])) };
        let path = m["mountPath"].as_str().ok_or_else(|| format!("volumeMount {} has no mountPath", m["name"]))?;
        let source = match (volume["secret"]["secretName"].as_str(), volume["configMap"]["name"].as_str()) {
            (Some(secret), _) => Source::Secret(secret.into()),
            (None, Some(map)) => Source::ConfigMap(map.into()),
            (None, None) => {
                return Err(format!("volume {} is not a Secret or ConfigMap; only those are provided", m["name"]));
            }
        };
        out.push((path.to_string(), source));
    }
    Ok(out)
}

/// Writes every key of the volume's object as a file in `dir` (mode 0600).
async fn write_volume(seed: &kube::Client, namespace: &str, source: &Source, dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let files: Vec<(String, Vec<u8>)> = match source {
        Source::Secret(name) => {
            let secret = Api::<Secret>::namespaced(seed.clone(), namespace)
                .get(name)
                .await
                .map_err(|e| format!("reading Secret {namespace}/{name} for a volume: {e}"))?;
            secret.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect()
        }
        Source::ConfigMap(name) => {
            let map = Api::<ConfigMap>::namespaced(seed.clone(), namespace)
                .get(name)
                .await
                .map_err(|e| format!("reading ConfigMap {namespace}/{name} for a volume: {e}"))?;
            map.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect()
        }
    };
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (key, value) in files {
        let path = dir.join(&key);
        std::fs::write(&path, &value).map_err(|e| format!("{}: {e}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

fn set_env(c: &mut Container, name: &str, value: &str) {
    c.env.retain(|(k, _)| k != name);
    c.env.push((name.into(), value.into()));
}

/// A kubeconfig file with a fresh token of ServiceAccount `namespace/account` (TokenRequest), bound
/// to Pod `pod` when given (as the kubelet's projected token is), reaching `seed` at `https_url`.
pub async fn write_kubeconfig(
    seed: &Cluster,
    https_url: &str,
    (namespace, account, pod): (&str, &str, Option<&str>),
    path: &Path,
) -> Result<(), String> {
    let token = match pod {
        Some(pod) => seed.token_for_pod(namespace, account, pod).await?,
        None => seed.token_for(namespace, account).await?,
    };
    std::fs::write(path, seed.kubeconfig(Some(https_url), &token)).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daemonset() -> Value {
        json!({"kind": "DaemonSet", "metadata": {"name": "kubelink-agent"},
               "spec": {"template": {"metadata": {"labels": {"app": "x"}},
                        "spec": {"containers": [{"name": "agent",
                            "args": ["agent", "--device=kubelink0", "--node=$(N)"],
                            "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                                    {"name": "KUBELINK_STATE_DIR", "value": "/run/kubelink"}]}]}}}})
    }

    #[test]
    fn the_agent_gets_its_node_device_state_dir_and_credentials() {
        let downward = helm::Downward { node_name: "n1".into(), ..Default::default() };
        let c = agent_container(&daemonset(), &downward, "n1dev", Path::new("/tmp/n1"), Path::new("/tmp/k")).unwrap();
        assert_eq!(c.args, ["agent", "--device=n1dev", "--node=n1"]);
        assert_eq!(c.env("KUBELINK_STATE_DIR"), Some("/tmp/n1"));
        assert_eq!(c.env("KUBECONFIG"), Some("/tmp/k"));
        assert_eq!(c.env.iter().filter(|(k, _)| k == "KUBELINK_STATE_DIR").count(), 1);
    }

    #[test]
    fn the_pod_carries_the_template_and_its_node() {
        let pod = agent_pod(&daemonset(), "kubelink-agent-n1", "n1");
        assert_eq!(pod["metadata"]["labels"]["app"], "x");
        assert_eq!(pod["spec"]["nodeName"], "n1");
        assert_eq!(pod["spec"]["containers"][0]["name"], "agent");
    }

    #[test]
    fn only_secret_and_config_map_volumes_are_provided() {
        let mut d = json!({"spec": {"template": {"spec": {
            "containers": [{"name": "c", "volumeMounts": [{"name": "g", "mountPath": "/etc/g"}]}],
            "volumes": [{"name": "g", "secret": {"secretName": "s"}}]}}}});
        assert_eq!(volume_mounts(&d, "c").unwrap(), [("/etc/g".to_string(), Source::Secret("s".into()))]);
        d["spec"]["template"]["spec"]["volumes"][0] = json!({"name": "g", "configMap": {"name": "m"}});
        assert_eq!(volume_mounts(&d, "c").unwrap(), [("/etc/g".to_string(), Source::ConfigMap("m".into()))]);
        d["spec"]["template"]["spec"]["volumes"][0] = json!({"name": "g", "hostPath": {"path": "/x"}});
        assert!(volume_mounts(&d, "c").unwrap_err().contains("not a Secret or ConfigMap"));
    }
}
