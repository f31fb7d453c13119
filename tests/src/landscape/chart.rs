//! The seed landscape deployed as an operator deploys kubelink: `charts/kubelink-garden` into the
//! garden and `charts/kubelink` into the seed, both by real Helm into API servers with
//! authentication and RBAC on, and every agent and the IPAM controller started with the args and
//! env of the rendered DaemonSet and Deployment ([`helm::container_command`]), as a kubelet would.
//!
//! What a kubelet adds stands in here, and only that:
//! - the Pod's ServiceAccount token: a kubeconfig named by `KUBECONFIG` (a fresh token of the Pod's
//!   ServiceAccount, the server's CA), where a kubelet mounts the token for in-cluster config;
//! - Secret volumes: the Secret read from the seed and written to a directory, the container's
//!   paths under the mount rewritten to it;
//! - the node's own filesystem: the namespaces share this machine's, so each node gets its own
//!   device name (its UAPI socket `/var/run/wireguard/<device>.sock` is a file) and state directory.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use kubelink_apiserver::ApiServer;

use crate::helm;
use crate::k8s::Cluster;
use serde_json::{Value, json};

/// The release name of both charts.
pub const RELEASE: &str = "kubelink";
/// The Secret (in the seed chart's namespace) holding the IPAM's garden kubeconfig, as an operator
/// creates it.
pub const GARDEN_SECRET: &str = "kubelink-garden-kubeconfig";
/// The namespace of the garden chart (its ServiceAccount for the IPAM).
pub const GARDEN_NS: &str = "garden";

/// The chart `name` under `charts/`.
pub fn chart_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts").join(name)
}

/// The workloads Helm rendered and installed into the seed.
pub struct Workloads {
    /// DaemonSet `kubelink-agent`.
    pub agent: Value,
    /// Deployment `kubelink-ipam`.
    pub ipam: Value,
}

/// The garden's identity for the IPAM of `seed`: ServiceAccount `garden/kubelink-ipam-<seed>`.
pub fn garden_account(seed: &str) -> String {
    format!("kubelink-ipam-{seed}")
}

/// Installs both charts as the clusters' admin: the garden chart with `seedName` (Helm's library,
/// [`kubelink_apiserver::helm`], into the garden's API test server), the seed chart into `namespace`
/// with `values` (the `helm` CLI into the real seed); then creates the garden kubeconfig Secret the
/// seed chart names, for the IPAM's garden identity reaching the garden at `garden_url` (https).
pub async fn install(
    garden: &ApiServer,
    seed: &Cluster,
    dir: &Path,
    namespace: &str,
    values: Value,
    garden_url: &str,
) -> Result<Workloads, String> {
    helm::available().await.map_err(|e| e.to_string())?;
    let seed_name = values["seedName"].as_str().ok_or("values without seedName")?.to_string();
    install_garden(garden, dir, json!({"seedName": seed_name})).await?;
    seed.ensure_namespace(namespace).await?;
    let kubeconfig = seed.admin_kubeconfig_file()?;
    let objects = helm::install(&chart_dir("kubelink"), &kubeconfig, namespace, RELEASE, values)
        .await
        .map_err(|e| format!("installing kubelink: {e}"))?;
    let token = garden.token_for(GARDEN_NS, &garden_account(&seed_name));
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": GARDEN_SECRET},
                        "stringData": {"kubeconfig": garden.kubeconfig_at(garden_url, &token)}});
    let secret: Secret = serde_json::from_value(secret).map_err(|e| e.to_string())?;
    Api::<Secret>::namespaced(seed.client().await?, namespace)
        .create(&PostParams::default(), &secret)
        .await
        .map_err(|e| format!("creating the garden kubeconfig Secret: {e}"))?;
    Ok(Workloads {
        agent: find(&objects, "DaemonSet", "kubelink-agent")?,
        ipam: find(&objects, "Deployment", "kubelink-ipam")?,
    })
}

/// The garden chart into the garden's API test server, by Helm's library (the garden is not a real
/// API server: Gardener's own cannot run here).
async fn install_garden(garden: &ApiServer, dir: &Path, values: Value) -> Result<Vec<Value>, String> {
    let token = garden.admin_token().ok_or("the API server runs without authentication")?;
    let kubeconfig = dir.join("kubelink-garden.admin.kubeconfig");
    std::fs::write(&kubeconfig, garden.kubeconfig(token)).map_err(|e| format!("{}: {e}", kubeconfig.display()))?;
    kubelink_apiserver::helm::install(&chart_dir("kubelink-garden"), &kubeconfig, GARDEN_NS, RELEASE, values)
        .await
        .map_err(|e| format!("installing kubelink-garden: {e}"))
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

/// The IPAM container of `deployment`: its Secret volumes read from the seed (as the admin, as a
/// kubelet reads them) into `volumes/<volume>/`, the mount paths rewritten, and `kubeconfig` as its
/// in-cluster credentials.
pub async fn ipam_container(
    seed: &kube::Client,
    deployment: &Value,
    namespace: &str,
    volumes: &Path,
    kubeconfig: &Path,
) -> Result<Container, String> {
    let downward = helm::Downward {
        node_name: "control".into(),
        host_ip: String::new(),
        pod_name: "kubelink-ipam-0".into(),
        pod_namespace: namespace.into(),
    };
    let mut c = helm::container_command(deployment, "ipam", &downward).map_err(|e| e.to_string())?;
    for (mount, secret) in secret_mounts(deployment, "ipam")? {
        let local = volumes.join(&secret);
        write_secret(seed, namespace, &secret, &local).await?;
        let local = local.to_string_lossy();
        for text in c.args.iter_mut().chain(c.env.iter_mut().map(|(_, v)| v)) {
            *text = text.replace(&mount, &local);
        }
    }
    set_env(&mut c, "KUBECONFIG", &kubeconfig.to_string_lossy());
    Ok(c)
}

/// (mount path, Secret name) of every Secret volume `container` mounts.
fn secret_mounts(workload: &Value, container: &str) -> Result<Vec<(String, String)>, String> {
    let spec = &workload["spec"]["template"]["spec"];
    let c = spec["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == container))
        .ok_or_else(|| format!("no container {container}"))?;
    let mut out = Vec::new();
    for m in c["volumeMounts"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let volume = spec["volumes"].as_array().and_then(|vs| vs.iter().find(|v| v["name"] == m["name"]));
        let Some(volume) = volume else { return Err(format!("volumeMount {} has no volume", m["name"])) };
        match (volume["secret"]["secretName"].as_str(), m["mountPath"].as_str()) {
            (Some(secret), Some(path)) => out.push((path.to_string(), secret.to_string())),
            (None, _) => return Err(format!("volume {} is not a Secret; only Secret volumes are provided", m["name"])),
            (_, None) => return Err(format!("volumeMount {} has no mountPath", m["name"])),
        }
    }
    Ok(out)
}

/// Writes every key of Secret `name` as a file in `dir` (mode 0600).
async fn write_secret(seed: &kube::Client, namespace: &str, name: &str, dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let secret = Api::<Secret>::namespaced(seed.clone(), namespace)
        .get(name)
        .await
        .map_err(|e| format!("reading Secret {namespace}/{name} for a volume: {e}"))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (key, value) in secret.data.unwrap_or_default() {
        let path = dir.join(&key);
        std::fs::write(&path, &value.0).map_err(|e| format!("{}: {e}", path.display()))?;
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
    fn only_secret_volumes_are_provided() {
        let mut d = json!({"spec": {"template": {"spec": {
            "containers": [{"name": "ipam", "volumeMounts": [{"name": "g", "mountPath": "/etc/g"}]}],
            "volumes": [{"name": "g", "secret": {"secretName": "garden"}}]}}}});
        assert_eq!(secret_mounts(&d, "ipam").unwrap(), [("/etc/g".to_string(), "garden".to_string())]);
        d["spec"]["template"]["spec"]["volumes"][0] = json!({"name": "g", "hostPath": {"path": "/x"}});
        assert!(secret_mounts(&d, "ipam").unwrap_err().contains("not a Secret"));
    }
}
