//! The Helm chart `charts/kubelink` rendered
//! (`helm template`) and installed (`helm install`) by the real `helm` CLI into the real kube-apiserver
//! (which validates every object it is given), and checked on what Helm rendered and created:
//!
//! - every flag and variable the chart passes is one of that `kubelink` subcommand (its `--help`);
//! - each slot's Service selects the agent Pod that holds the slot;
//! - nothing gets garden credentials: the agent mounts no Secret, the controller reaches the seed only;
//! - the Roles grant exactly the contract's rules, the agent nothing cluster-wide and no Secret by
//!   kind alone;
//! - placement values (node selector, affinity, tolerations, pod annotations, pull secrets), the
//!   unprivileged agent and the PodMonitor render into the fields Kubernetes reads;
//! - `values.schema.json` rejects wrong values with a message that names them; `helm lint` passes.
//!
//! Without the binaries (`scripts/k8s-tools`, which `scripts/deps` runs) the tests print SKIPPED and
//! pass, and fail when `CI=true`.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::DynamicObject;
use kube::core::GroupVersionKind;
use kubelink_ipam::contract::{Slot, labels, names};
use kubelink_tests::helm::{self, Downward, HelmError, chart, helm_ready};
use kubelink_tests::{k8s, netns};
use serde_json::{Value, json};

/// The namespace `helm template` renders into; installs go into namespaces of their own.
const NS: &str = "kubelink";
const SEED: &str = "local";

/// `helm template` of `chart` into [`NS`]: what an install would create.
async fn render(chart_dir: &Path, values: Value) -> Result<Vec<Value>, HelmError> {
    helm::template(chart_dir, NS, "kubelink", values).await
}

/// A release `helm install`ed into the shared real cluster, in a fresh namespace.
struct Installed {
    ns: String,
    objects: Vec<Value>,
}

/// Installs `chart` with `values` into a fresh namespace `<prefix>-<n>` of the shared cluster, without
/// kubelink's CRDs, which the shared cluster has already (and only one release could own).
async fn install(chart_dir: &Path, prefix: &str, mut values: Value) -> Result<Installed, HelmError> {
    values["crds"] = json!({"enabled": false});
    static N: AtomicUsize = AtomicUsize::new(0);
    let cluster = k8s::shared().await.map_err(HelmError::Unavailable)?;
    let ns = format!("{prefix}-{}", N.fetch_add(1, Ordering::Relaxed));
    cluster.ensure_namespace(&ns).await.map_err(HelmError::Unavailable)?;
    let kubeconfig = cluster.admin_kubeconfig_file().map_err(HelmError::Unavailable)?;
    let objects = helm::install(chart_dir, &kubeconfig, &ns, "kubelink", values).await?;
    Ok(Installed { ns, objects })
}

/// The seed chart's values for the tests: the required ones (and an `agent` object the tests extend).
fn seed_values() -> Value {
    json!({"seedName": SEED, "agent": {}})
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered; rendered: {:?}", summary(objects)))
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn summary(objects: &[Value]) -> Vec<String> {
    objects.iter().map(|o| format!("{} {}", o["kind"].as_str().unwrap_or("?"), o["metadata"]["name"])).collect()
}

/// Asserts that Helm really created every rendered object in the real cluster (each read back by
/// its kind, found through discovery).
async fn assert_stored(objects: &[Value], namespace: &str) {
    let client = k8s::shared().await.unwrap().client().await.unwrap();
    for o in objects {
        let (group, version) = match o["apiVersion"].as_str().unwrap().split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", o["apiVersion"].as_str().unwrap()),
        };
        let gvk = GroupVersionKind::gvk(group, version, o["kind"].as_str().unwrap());
        let (resource, caps) = kube::discovery::pinned_kind(&client, &gvk)
            .await
            .unwrap_or_else(|e| panic!("the server does not serve {}: {e}", o["kind"]));
        let api: Api<DynamicObject> = match caps.scope {
            kube::discovery::Scope::Namespaced => {
                let ns = o["metadata"]["namespace"].as_str().unwrap_or(namespace);
                Api::namespaced_with(client.clone(), ns, &resource)
            }
            kube::discovery::Scope::Cluster => Api::all_with(client.clone(), &resource),
        };
        let name = o["metadata"]["name"].as_str().unwrap();
        api.get(name).await.unwrap_or_else(|e| panic!("{} {name} not created: {e}", o["kind"]));
    }
}

fn downward() -> Downward {
    downward_in(NS)
}

fn downward_in(ns: &str) -> Downward {
    Downward {
        node_name: "node-a".into(),
        host_ip: "10.250.0.7".into(),
        pod_name: "kubelink-agent-x1".into(),
        pod_namespace: ns.into(),
    }
}

fn help(words: &[String]) -> String {
    let out = std::process::Command::new(netns::kubelink_bin())
        .args(words)
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("kubelink {words:?} --help: {e}"));
    assert!(out.status.success(), "kubelink {words:?} --help failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Flags (`--x`) and environment variables (`[env: X=...]`) a subcommand's help lists.
fn help_lists(text: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let flags = text
        .split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == '=')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(String::from)
        .collect();
    let env = text
        .match_indices("[env: ")
        .filter_map(|(i, m)| {
            let rest = &text[i + m.len()..];
            rest.find(['=', ']']).map(|end| rest[..end].to_string())
        })
        .collect();
    (flags, env)
}

#[tokio::test]
async fn every_flag_and_variable_the_chart_passes_is_one_of_the_binary() {
    if !helm_ready("every_flag_and_variable_the_chart_passes_is_one_of_the_binary").await {
        return;
    }
    let mut values = seed_values();
    values["controller"] = json!({"enabled": true});
    values["gardener"] = json!({"seed": {"name": SEED, "spec": {"networks": {"nodes": "10.250.0.0/16"}}}});
    let objects = render(&chart("kubelink"), values).await.unwrap();
    let mut unknown = Vec::new();
    let workloads = [("DaemonSet", "kubelink-agent", "agent"), ("Deployment", "kubelink-controller", "controller")];
    for (kind, name, container) in workloads {
        let cmd = helm::container_command(find(&objects, kind, name), container, &downward()).unwrap();
        let words: Vec<String> = cmd.args.iter().take_while(|a| !a.starts_with("--")).cloned().collect();
        let (flags, env) = help_lists(&help(&words));
        let sub = format!("kubelink {}", words.join(" "));
        for arg in &cmd.args[words.len()..] {
            let flag = arg.split('=').next().unwrap();
            if !flags.contains(flag) {
                unknown.push(format!("{sub}: flag {flag}"));
            }
        }
        // KUBELINK_STATE_DIR is read by the userspace engine itself, not a flag.
        for (var, _) in cmd.env.iter().filter(|(k, _)| k != "KUBELINK_STATE_DIR") {
            if !env.contains(var) {
                unknown.push(format!("{sub}: variable {var}"));
            }
        }
        println!("{sub}: {} flags, {} variables", cmd.args.len() - words.len(), cmd.env.len());
    }
    assert!(unknown.is_empty(), "the chart passes what the binary does not know: {unknown:#?}");
}

#[tokio::test]
async fn the_agent_runs_with_the_downward_api_and_the_release_namespace() {
    if !helm_ready("the_agent_runs_with_the_downward_api_and_the_release_namespace").await {
        return;
    }
    let Installed { ns, objects } = install(&chart("kubelink"), "downward", seed_values()).await.unwrap();
    assert_stored(&objects, &ns).await;
    let ds = find(&objects, "DaemonSet", "kubelink-agent");
    let cmd = helm::container_command(ds, "agent", &downward_in(&ns)).unwrap();
    assert_eq!(cmd.args[0], "agent");
    // What shoots dial is the extension controller's to decide: no node is told an endpoint.
    assert!(!cmd.args.iter().any(|a| a.starts_with("--slot-endpoints")), "{:?}", cmd.args);
    // The Seed and the namespace come as variables, which `kubectl exec` into the Pod sees as well.
    assert_eq!((cmd.env("KUBELINK_SEED"), cmd.env("KUBELINK_NAMESPACE")), (Some(SEED), Some(ns.as_str())));
    assert!(!cmd.args.iter().any(|a| a.starts_with("--slots")), "the agent reads the slot count from the SeedTunnel");
    assert_eq!(cmd.env("KUBELINK_NODE_NAME"), Some("node-a"));
    assert_eq!(cmd.env("KUBELINK_NODE_IP"), Some("10.250.0.7"));
    assert_eq!(cmd.env("KUBELINK_POD_NAME"), Some("kubelink-agent-x1"));
    assert_eq!(cmd.env("KUBELINK_STATE_DIR"), Some("/run/kubelink"));
    assert_eq!(ds["spec"]["template"]["spec"]["hostNetwork"], true, "the agent routes the node: hostNetwork");
}

/// `kubectl -n kubelink exec ds/kubelink-agent -- kubelink seed-status`, the first command of
/// docs/operations.md: a process in the agent container with the container's environment and no
/// flags must find its Seed and namespace (it then fails only on reaching the API: nothing listens).
#[tokio::test]
async fn seed_status_runs_in_the_agent_pod_without_flags() {
    if !helm_ready("seed_status_runs_in_the_agent_pod_without_flags").await {
        return;
    }
    let objects = render(&chart("kubelink"), seed_values()).await.unwrap();
    let cmd = helm::container_command(find(&objects, "DaemonSet", "kubelink-agent"), "agent", &downward()).unwrap();
    // A seed where nothing listens, so that the client is not inferred from the test's environment.
    let kubeconfig = std::env::temp_dir().join(format!("kubelink-nothing-{}.kubeconfig", std::process::id()));
    let nowhere = "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: \"http://127.0.0.1:9\"}}]\n\
                   users: [{name: u, user: {}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n";
    std::fs::write(&kubeconfig, nowhere).unwrap();
    let out = std::process::Command::new(netns::kubelink_bin())
        .arg("seed-status")
        .env_clear()
        .envs(cmd.env.iter().map(|(k, v)| (k, v)))
        .env("KUBELINK_SEED_KUBECONFIG", &kubeconfig)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&kubeconfig);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("kubelink seed-status in the agent container: {:?}; {}", out.status.code(), stderr.trim());
    assert_ne!(out.status.code(), Some(2), "a usage error: {stderr}");
    assert!(!stderr.contains("required"), "{stderr}");
}

/// The pod template of a workload, read as Kubernetes' own type: a value in the wrong place would be
/// left out of it.
fn pod_template(object: &Value) -> k8s_openapi::api::core::v1::PodTemplateSpec {
    serde_json::from_value(object["spec"]["template"].clone()).expect("a core/v1 PodTemplateSpec")
}

fn matches(selector: &Value, labels: &Option<std::collections::BTreeMap<String, String>>) -> bool {
    let labels = labels.clone().unwrap_or_default();
    selector.as_object().unwrap().iter().all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
}

#[tokio::test]
async fn placement_unprivileged_mode_and_the_pod_monitor_render_as_kubernetes_reads_them() {
    if !helm_ready("placement_unprivileged_mode_and_the_pod_monitor_render_as_kubernetes_reads_them").await {
        return;
    }
    let placement = json!({
        "podAnnotations": {"example.org/team": "network"},
        "nodeSelector": {"node-role.example.org/seed": "true"},
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]}]}}},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "seed", "effect": "NoSchedule"}],
    });
    let mut values = seed_values();
    values["imagePullSecrets"] = json!([{"name": "pull"}]);
    values["agent"] = placement.clone();
    values["agent"]["privileged"] = json!(false);
    values["controller"] = placement.clone();
    values["metrics"] = json!({"podMonitor": {"enabled": true, "labels": {"release": "prometheus"}}});
    let Installed { ns, objects } = install(&chart("kubelink"), "placement", values).await.unwrap();
    assert_stored(&objects, &ns).await;
    for (kind, name, container) in
        [("DaemonSet", "kubelink-agent", "agent"), ("Deployment", "kubelink-controller", "controller")]
    {
        let template = pod_template(find(&objects, kind, name));
        let spec = template.spec.as_ref().unwrap();
        let annotations = template.metadata.as_ref().and_then(|m| m.annotations.clone()).unwrap_or_default();
        assert_eq!(annotations.get("example.org/team").map(String::as_str), Some("network"), "{name}");
        assert_eq!(spec.image_pull_secrets.as_ref().map(|s| s[0].name.as_str()), Some("pull"), "{name}");
        let selector = spec.node_selector.clone().unwrap_or_default();
        assert_eq!(selector.get("node-role.example.org/seed").map(String::as_str), Some("true"), "{name}");
        let required = spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref()?.required_during_scheduling_ignored_during_execution.as_ref());
        assert_eq!(required.map(|r| r.node_selector_terms.len()), Some(1), "{name}: affinity");
        let tolerations = spec.tolerations.clone().unwrap_or_default();
        assert_eq!(tolerations.len(), 1, "{name}: only the given tolerations: {tolerations:?}");
        assert_eq!(
            (tolerations[0].key.as_deref(), tolerations[0].effect.as_deref()),
            (Some("dedicated"), Some("NoSchedule"))
        );
        let c = spec.containers.iter().find(|c| c.name == container).unwrap();
        let ports: Vec<_> = c.ports.iter().flatten().filter_map(|p| p.name.as_deref()).collect();
        assert!(ports.contains(&"health"), "{name}: the PodMonitor scrapes port health: {ports:?}");
    }
    let agent = pod_template(find(&objects, "DaemonSet", "kubelink-agent"));
    let security = agent.spec.unwrap().containers[0].security_context.clone().unwrap();
    assert_eq!(security.privileged, Some(false));
    let caps = security.capabilities.unwrap();
    assert_eq!(caps.add, Some(vec!["NET_ADMIN".to_string(), "NET_RAW".to_string()]));
    assert_eq!(caps.drop, Some(vec!["ALL".to_string()]));

    // The PodMonitor selects the agent and the controller pods and scrapes their health port.
    let monitor = find(&objects, "PodMonitor", "kubelink");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(monitor["spec"]["podMetricsEndpoints"][0]["port"], "health");
    assert_eq!(monitor["spec"]["podMetricsEndpoints"][0]["path"], "/metrics");
    let selector = &monitor["spec"]["selector"]["matchLabels"];
    for (kind, name) in [("DaemonSet", "kubelink-agent"), ("Deployment", "kubelink-controller")] {
        let labels = pod_template(find(&objects, kind, name)).metadata.unwrap().labels;
        assert!(matches(selector, &labels), "the PodMonitor does not select {name}: {selector} vs {labels:?}");
    }

    // Defaults: an unprivileged agent on every node, no PodMonitor, no pull secrets.
    let objects = render(&chart("kubelink"), seed_values()).await.unwrap();
    assert!(of_kind(&objects, "PodMonitor").is_empty(), "the PodMonitor is off by default");
    let spec = pod_template(find(&objects, "DaemonSet", "kubelink-agent")).spec.unwrap();
    assert_eq!(spec.containers[0].security_context.as_ref().unwrap().privileged, Some(false));
    let everywhere = spec.tolerations.unwrap_or_default();
    assert!(
        everywhere.len() == 1 && everywhere[0].operator.as_deref() == Some("Exists") && everywhere[0].key.is_none()
    );
    assert!(spec.image_pull_secrets.is_none() && spec.node_selector.is_none(), "{:?}", spec.node_selector);
}

/// What Pod Security's `restricted` profile requires of a container, checked on the rendered pod
/// (the rules of https://kubernetes.io/docs/concepts/security/pod-security-standards/); the problems.
fn restricted_problems(spec: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        if spec[host] == true {
            problems.push(host.to_string());
        }
    }
    for v in spec["volumes"].as_array().into_iter().flatten() {
        let allowed = [
            "configMap",
            "csi",
            "downwardAPI",
            "emptyDir",
            "ephemeral",
            "persistentVolumeClaim",
            "projected",
            "secret",
        ];
        let kinds: Vec<&String> = v.as_object().unwrap().keys().filter(|k| *k != "name").collect();
        if !kinds.iter().all(|k| allowed.contains(&k.as_str())) {
            problems.push(format!("volume {kinds:?}"));
        }
    }
    let pod = &spec["securityContext"];
    let containers = spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(spec["initContainers"].as_array().into_iter().flatten());
    for c in containers {
        let name = c["name"].as_str().unwrap_or("?");
        let sc = &c["securityContext"];
        let either = |k: &str| if sc[k].is_null() { &pod[k] } else { &sc[k] };
        if sc["privileged"] == true {
            problems.push(format!("{name}: privileged"));
        }
        if sc["allowPrivilegeEscalation"] != false {
            problems.push(format!("{name}: allowPrivilegeEscalation not false"));
        }
        if either("runAsNonRoot") != &json!(true) {
            problems.push(format!("{name}: runAsNonRoot not true"));
        }
        if either("runAsUser") == &json!(0) {
            problems.push(format!("{name}: runAsUser 0"));
        }
        if !matches!(either("seccompProfile")["type"].as_str(), Some("RuntimeDefault" | "Localhost")) {
            problems.push(format!("{name}: seccompProfile {}", either("seccompProfile")));
        }
        if sc["capabilities"]["drop"] != json!(["ALL"]) {
            problems.push(format!("{name}: capabilities not dropped: {}", sc["capabilities"]));
        }
        let added: Vec<&Value> = sc["capabilities"]["add"].as_array().into_iter().flatten().collect();
        if added.iter().any(|a| *a != "NET_BIND_SERVICE") {
            problems.push(format!("{name}: capabilities added: {added:?}"));
        }
        if c["ports"].as_array().into_iter().flatten().any(|p| p["hostPort"].as_u64().is_some_and(|p| p != 0)) {
            problems.push(format!("{name}: hostPort"));
        }
    }
    problems
}

#[tokio::test]
async fn pod_security_the_controller_is_restricted_and_the_agent_confined_with_forwarding_from_an_init_container() {
    if !helm_ready(
        "pod_security_the_controller_is_restricted_and_the_agent_confined_with_forwarding_from_an_init_container",
    )
    .await
    {
        return;
    }
    let mut values = seed_values();
    values["controller"] = json!({"enabled": true});
    values["gardener"] = json!({"seed": {"name": SEED, "spec": {"networks": {"nodes": "10.250.0.0/16"}}}});
    // Installed, so that the real API server validates what is checked here.
    let Installed { ns, objects } = install(&chart("kubelink"), "podsecurity", values.clone()).await.unwrap();
    assert_stored(&objects, &ns).await;
    let controller = &find(&objects, "Deployment", "kubelink-controller")["spec"]["template"]["spec"];
    let problems = restricted_problems(controller);
    assert!(problems.is_empty(), "the controller breaks Pod Security restricted: {problems:?}");
    assert_eq!(controller["containers"][0]["securityContext"]["readOnlyRootFilesystem"], true);
    println!("controller: Pod Security restricted, read-only root");

    // The agent: hostNetwork and hostPath (it routes the node), so never restricted; its container
    // is not privileged, adds NET_ADMIN and NET_RAW only, seccomp RuntimeDefault, no escalation,
    // read-only root. What restricted says of it is exactly that.
    let agent = &find(&objects, "DaemonSet", "kubelink-agent")["spec"]["template"]["spec"];
    let problems = restricted_problems(&json!({"containers": agent["containers"]}));
    assert_eq!(
        problems,
        [
            "agent: runAsNonRoot not true",
            "agent: runAsUser 0",
            r#"agent: capabilities added: [String("NET_ADMIN"), String("NET_RAW")]"#
        ],
        "the agent container"
    );
    let sc = &agent["containers"][0]["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(sc["capabilities"], json!({"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]}));
    // What it writes is mounted: the state directory and the WireGuard socket directory (and the tun device).
    let mounts: Vec<&str> = agent["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    assert_eq!(mounts, ["/run/kubelink", "/var/run/wireguard", "/dev/net/tun"]);
    // The one privileged step: a short init container switching forwarding on, nothing else.
    let inits = agent["initContainers"].as_array().expect("an init container");
    assert_eq!(inits.len(), 1);
    assert_eq!(inits[0]["name"], "enable-forwarding");
    assert_eq!(inits[0]["securityContext"], json!({"privileged": true}));
    assert_eq!(inits[0]["command"], json!(["/bin/sh", "-ec", "echo 1 > /proc/sys/net/ipv4/ip_forward"]));
    assert!(inits[0]["volumeMounts"].is_null() && inits[0]["args"].is_null(), "{}", inits[0]);
    println!("agent: {problems:?}; init container {}", inits[0]["command"]);

    // IPv6 forwarding only for an IPv6 CIDR (it turns router advertisements off on the node).
    let mut v6 = values.clone();
    v6["gardener"]["seed"]["spec"]["extensions"] =
        json!([{"type": "kubelink-wireguard", "providerConfig": {"cidr": "fd00:7::/64"}}]);
    let objects = render(&chart("kubelink"), v6).await.unwrap();
    let init = &find(&objects, "DaemonSet", "kubelink-agent")["spec"]["template"]["spec"]["initContainers"][0];
    assert_eq!(
        init["command"][2],
        "echo 1 > /proc/sys/net/ipv4/ip_forward; echo 1 > /proc/sys/net/ipv6/conf/all/forwarding"
    );
    // No init container where the node provides forwarding, or the agent is privileged (it writes it itself).
    for agent_values in [json!({"enableForwarding": false}), json!({"privileged": true})] {
        let mut v = values.clone();
        v["agent"] = agent_values.clone();
        let objects = render(&chart("kubelink"), v).await.unwrap();
        let spec = &find(&objects, "DaemonSet", "kubelink-agent")["spec"]["template"]["spec"];
        assert!(spec["initContainers"].is_null(), "{agent_values}: {}", spec["initContainers"]);
    }
}

#[tokio::test]
async fn the_agents_health_server_listens_on_the_nodes_own_address() {
    if !helm_ready("the_agents_health_server_listens_on_the_nodes_own_address").await {
        return;
    }
    let objects = render(&chart("kubelink"), seed_values()).await.unwrap();
    let ds = find(&objects, "DaemonSet", "kubelink-agent");
    let env = &ds["spec"]["template"]["spec"]["containers"][0]["env"];
    let host_ip = env.as_array().unwrap().iter().find(|e| e["name"] == "KUBELINK_NODE_IP").unwrap();
    assert_eq!(host_ip["valueFrom"]["fieldRef"]["fieldPath"], "status.hostIP");
    let listen = |objects: &[Value], downward: &Downward| {
        let cmd = helm::container_command(find(objects, "DaemonSet", "kubelink-agent"), "agent", downward).unwrap();
        cmd.args.iter().find(|a| a.starts_with("--health-listen=")).cloned().unwrap()
    };
    // As a kubelet expands it: the Pod's host IP, of either family; the binary parses both.
    assert_eq!(listen(&objects, &downward()), "--health-listen=[10.250.0.7]:8093");
    let v6 = Downward { host_ip: "fd00::7".into(), ..downward() };
    assert_eq!(listen(&objects, &v6), "--health-listen=[fd00::7]:8093");
    for text in ["[10.250.0.7]:8093", "[fd00::7]:8093"] {
        assert!(kubelink::health::parse_listen(text).is_ok(), "{text}");
    }
    // The probes use the port by name on the Pod's IP, which is the host IP on the host network.
    let probe = &ds["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"];
    assert!(probe["host"].is_null() && probe["port"] == "health", "{probe}");
    // An address set by hand.
    let mut values = seed_values();
    values["agent"]["healthAddress"] = json!("0.0.0.0");
    let objects = render(&chart("kubelink"), values).await.unwrap();
    assert_eq!(listen(&objects, &downward()), "--health-listen=[0.0.0.0]:8093");
}

/// Each slot's Service has no selector: its endpoint is the EndpointSlice the slot holder writes,
/// with the Service's port name, the labels the admission policy requires and the contract names;
/// the agents find each other's Pods by the DaemonSet's labels.
#[tokio::test]
async fn each_slot_service_takes_its_endpoint_from_the_holders_endpointslice() {
    if !helm_ready("each_slot_service_takes_its_endpoint_from_the_holders_endpointslice").await {
        return;
    }
    for slots in [1, 2] {
        let mut values = seed_values();
        values["slots"] = json!(slots);
        let Installed { ns, objects } = install(&chart("kubelink"), "services", values).await.unwrap();
        let services: Api<Service> = Api::namespaced(k8s::shared().await.unwrap().client().await.unwrap(), &ns);
        let stored = services.list(&Default::default()).await.unwrap().items;
        assert_eq!(stored.len(), slots, "one Service per slot in the cluster");
        let services = of_kind(&objects, "Service");
        assert_eq!(services.len(), slots, "one Service per slot");
        let ds = find(&objects, "DaemonSet", "kubelink-agent");
        let pod_labels = ds["spec"]["template"]["metadata"]["labels"].as_object().unwrap();
        for (k, v) in ds["spec"]["selector"]["matchLabels"].as_object().unwrap() {
            assert_eq!(pod_labels.get(k), Some(v), "the DaemonSet selects {k}={v}, which its Pods do not carry");
        }
        for pair in labels::AGENT_PODS.split(',') {
            let (k, v) = pair.split_once('=').unwrap();
            assert_eq!(pod_labels.get(k), Some(&json!(v)), "the agents find each other's Pods by {k}={v}");
        }
        for slot in Slot::ALL.into_iter().take(slots) {
            // The chart's Service carries the name the agent's Lease, Secret and EndpointSlice use.
            let svc = find(&objects, "Service", &names::gateway(slot));
            assert!(svc["spec"].get("selector").is_none(), "slot {slot}: no selector: {}", svc["spec"]);
            assert_eq!(svc["spec"]["type"], "LoadBalancer");
            assert_eq!(svc["spec"]["ports"][0]["name"], names::SLOT_PORT, "kube-proxy pairs the ports by name");
            assert_eq!(svc["spec"]["ports"][0]["protocol"], "UDP");
            assert_eq!(svc["spec"]["ports"][0]["port"], 51820);
            let created = stored.iter().find(|s| s.metadata.name.as_deref() == Some(&names::gateway(slot)));
            let created = created.expect("the Service was created");
            let spec = created.spec.as_ref().unwrap();
            assert!(spec.selector.is_none(), "as the server stored it: no selector");
            let ports = spec.ports.clone().unwrap_or_default();
            assert_eq!((ports[0].protocol.as_deref(), ports[0].port), (Some("UDP"), 51820), "as the server stored it");
        }
        // The policy names what the agent writes (contract), each slot and the listen port.
        let policy = find(&objects, "ValidatingAdmissionPolicy", &format!("kubelink-agent-endpoints-{ns}"));
        let text = policy["spec"]["validations"].to_string();
        for word in [labels::SERVICE_NAME, labels::SLICE_MANAGED_BY, labels::SLICE_MANAGER, names::SLOT_PORT, "51820"] {
            assert!(text.contains(word), "the policy does not name {word}: {text}");
        }
        for slot in Slot::ALL.into_iter().take(slots) {
            assert!(text.contains(&names::gateway(slot)), "the policy does not allow {}: {text}", names::gateway(slot));
        }
        assert_eq!(text.contains("kubelink-gateway-1"), slots == 2, "only the deployed slots: {text}");
    }
}

/// gardenlet mediates everything of the garden: no kubelink workload gets garden credentials or
/// reaches anything but the seed's API server, in-cluster.
#[tokio::test]
async fn nothing_gets_garden_credentials_and_the_controller_reaches_the_seed_in_cluster() {
    if !helm_ready("nothing_gets_garden_credentials_and_the_controller_reaches_the_seed_in_cluster").await {
        return;
    }
    let mut values = seed_values();
    values["gardener"] = json!({"seed": {"name": SEED, "spec": {"networks": {"nodes": "10.250.0.0/16"}}}});
    let objects = render(&chart("kubelink"), values).await.unwrap();
    for o in &objects {
        // No kubeconfig of any kind: both components reach the seed in-cluster.
        assert!(!o.to_string().to_lowercase().contains("kubeconfig"), "{}", o["metadata"]["name"]);
    }

    let ds = find(&objects, "DaemonSet", "kubelink-agent");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "kubelink-agent");
    let volumes = pod["volumes"].as_array().cloned().unwrap_or_default();
    assert!(
        volumes.iter().all(|v| v.get("secret").is_none() && v.get("projected").is_none()),
        "the agent mounts no Secret: {volumes:?}"
    );

    let deploy = find(&objects, "Deployment", "kubelink-controller");
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "kubelink-controller");
    let volumes = pod["volumes"].as_array().cloned().unwrap_or_default();
    assert!(volumes.iter().all(|v| v.get("secret").is_none()), "the controller mounts no Secret: {volumes:?}");
    let cmd = helm::container_command(deploy, "controller", &downward()).unwrap();
    assert_eq!(cmd.args[..2], ["ipam", "extension"]);
    assert_eq!((cmd.env("KUBELINK_SEED"), cmd.env("KUBELINK_NAMESPACE")), (Some(SEED), Some(NS)));

    for cmd in [helm::container_command(ds, "agent", &downward()).unwrap(), cmd] {
        for a in &cmd.args {
            assert!(!a.contains("garden") && !a.contains("kubeconfig"), "flag {a}: the seed is reached in-cluster");
        }
        for (k, _) in &cmd.env {
            assert!(!k.contains("GARDEN") && !k.contains("KUBECONFIG"), "variable {k}");
        }
    }

    // Without the controller (a release whose shoots another release serves) there is nothing of it.
    let objects =
        render(&chart("kubelink"), json!({"seedName": SEED, "controller": {"enabled": false}})).await.unwrap();
    assert!(objects.iter().all(|o| !o.to_string().contains("kubelink-controller")), "{:?}", summary(&objects));
    assert!(of_kind(&objects, "DaemonSet").len() == 1);
}

/// A Role's rules as `(group, resource, verb, resourceNames)`; `*` for any name.
fn rules(role: &Value) -> BTreeSet<(String, String, String, String)> {
    let mut out = BTreeSet::new();
    let list = |rule: &Value, k: &str| -> Vec<String> {
        rule[k].as_array().map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect()).unwrap_or_default()
    };
    for rule in role["rules"].as_array().unwrap() {
        let names = list(rule, "resourceNames");
        let names = if names.is_empty() { "*".to_string() } else { names.join(",") };
        for g in list(rule, "apiGroups") {
            for r in list(rule, "resources") {
                for v in list(rule, "verbs") {
                    out.insert((g.clone(), r.clone(), v, names.clone()));
                }
            }
        }
    }
    out
}

fn expect(rows: &[(&str, &[&str], &[&str], &str)]) -> BTreeSet<(String, String, String, String)> {
    let mut out = BTreeSet::new();
    for (g, resources, verbs, names) in rows {
        for r in *resources {
            for v in *verbs {
                out.insert((g.to_string(), r.to_string(), v.to_string(), names.to_string()));
            }
        }
    }
    out
}

#[tokio::test]
async fn rbac_is_the_contract_and_the_agent_has_nothing_cluster_wide() {
    if !helm_ready("rbac_is_the_contract_and_the_agent_has_nothing_cluster_wide").await {
        return;
    }
    let Installed { ns, objects } = install(&chart("kubelink"), "rbac", seed_values()).await.unwrap();
    assert_stored(&objects, &ns).await;
    let slots = "kubelink-gateway-0,kubelink-gateway-1";
    let agent = expect(&[
        ("coordination.k8s.io", &["leases"], &["create"], "*"),
        ("coordination.k8s.io", &["leases"], &["get", "update"], slots),
        ("", &["secrets"], &["get"], slots),
        ("discovery.k8s.io", &["endpointslices"], &["create"], "*"),
        ("discovery.k8s.io", &["endpointslices"], &["get", "update"], slots),
        ("kubelink.gardener.cloud", &["seedtunnels"], &["list", "watch"], SEED),
        ("kubelink.gardener.cloud", &["shootpeers"], &["list", "watch"], "*"),
        ("events.k8s.io", &["events"], &["create", "patch"], "*"),
    ]);
    assert_eq!(rules(find(&objects, "Role", "kubelink-agent")), agent, "the agent's Role");
    let controller_role = expect(&[
        ("", &["secrets"], &["get", "list", "watch"], slots),
        ("", &["services"], &["get", "list", "watch"], slots),
        ("", &["configmaps"], &["create"], "*"),
        ("", &["configmaps"], &["get", "update"], "kubelink-allocations"),
        ("kubelink.gardener.cloud", &["seedtunnels"], &["create"], "*"),
        ("kubelink.gardener.cloud", &["seedtunnels"], &["get", "update"], SEED),
        ("kubelink.gardener.cloud", &["shootpeers"], &["get", "list", "watch", "create", "update", "delete"], "*"),
    ]);
    assert_eq!(rules(find(&objects, "Role", "kubelink-controller")), controller_role, "the controller's Role");
    let cluster_role_name = format!("extensions.gardener.cloud:extension-kubelink:controller-{ns}");
    let controller_cluster = expect(&[
        ("extensions.gardener.cloud", &["extensions"], &["get", "list", "watch", "patch"], "*"),
        ("extensions.gardener.cloud", &["extensions/status"], &["patch"], "*"),
        ("extensions.gardener.cloud", &["clusters"], &["get", "list", "watch"], "*"),
        ("discovery.k8s.io", &["endpointslices"], &["list", "watch"], "*"),
        ("", &["secrets"], &["create"], "*"),
        ("", &["secrets"], &["get", "update", "delete"], "kubelink-shoot,managedresource-kubelink-shoot"),
        ("resources.gardener.cloud", &["managedresources"], &["create"], "*"),
        ("resources.gardener.cloud", &["managedresources"], &["get", "update", "patch", "delete"], "kubelink-shoot"),
    ]);
    let cluster_role = rules(find(&objects, "ClusterRole", &cluster_role_name));
    assert_eq!(cluster_role, controller_cluster, "the controller's ClusterRole");

    // One ServiceAccount per component, each bound to its own Roles only; the agent reads Pods cluster-wide.
    let sas: BTreeSet<&str> =
        of_kind(&objects, "ServiceAccount").iter().map(|s| s["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(sas, BTreeSet::from(["kubelink-agent", "kubelink-controller"]));
    let binds = |sa: &str| -> Vec<String> {
        objects
            .iter()
            .filter(|o| o["kind"] == "RoleBinding" || o["kind"] == "ClusterRoleBinding")
            .filter(|b| {
                b["subjects"].as_array().unwrap().iter().any(|s| s["name"] == sa && s["namespace"] == ns.as_str())
            })
            .map(|b| format!("{} -> {} {}", b["kind"], b["roleRef"]["kind"], b["roleRef"]["name"]).replace('"', ""))
            .collect()
    };
    let mut agent_binds = binds("kubelink-agent");
    agent_binds.sort();
    let pods_role = format!("kubelink-agent-pods-{ns}");
    assert_eq!(
        agent_binds,
        [format!("ClusterRoleBinding -> ClusterRole {pods_role}"), "RoleBinding -> Role kubelink-agent".into()]
    );
    // Cluster-wide, the agent reads Pods (its own node's, by field selector) and nothing else.
    let pods_read = expect(&[("", &["pods"], &["list", "watch"], "*")]);
    assert_eq!(rules(find(&objects, "ClusterRole", &pods_role)), pods_read, "the agent's ClusterRole");
    let mut controller = binds("kubelink-controller");
    controller.sort();
    assert_eq!(
        controller,
        [
            format!("ClusterRoleBinding -> ClusterRole {cluster_role_name}"),
            "RoleBinding -> Role kubelink-controller".into()
        ]
    );
    let agent_role = find(&objects, "Role", "kubelink-agent");
    for rule in agent_role["rules"].as_array().unwrap() {
        if rule["resources"].as_array().unwrap().iter().any(|r| r == "secrets") {
            assert!(rule["resourceNames"].as_array().is_some_and(|n| !n.is_empty()), "secrets by kind: {rule}");
        }
    }

    // One slot: one Lease and one Secret name.
    let mut values = seed_values();
    values["slots"] = json!(1);
    let objects = render(&chart("kubelink"), values).await.unwrap();
    let role = rules(find(&objects, "Role", "kubelink-agent"));
    assert!(role.contains(&("".into(), "secrets".into(), "get".into(), "kubelink-gateway-0".into())), "{role:?}");
    assert!(role.iter().all(|r| !r.3.contains("kubelink-gateway-1")), "{role:?}");
    // The controller keeps both slot names: a seed may go from one slot to two.
    let controller = rules(find(&objects, "Role", "kubelink-controller"));
    assert!(controller.contains(&("".into(), "secrets".into(), "watch".into(), slots.into())), "{controller:?}");
}

/// Renders `values` and expects Helm to refuse with a message that names each of `names`.
async fn assert_refused(chart_name: &str, values: Value, names: &[&str]) {
    match render(&chart(chart_name), values.clone()).await {
        Err(HelmError::Refused(msg)) => {
            println!("{chart_name} {values}: {msg}");
            for n in names {
                assert!(msg.contains(n), "{chart_name} {values}: the message does not name {n}: {msg}");
            }
        }
        Err(e) => panic!("{chart_name} {values}: {e}"),
        Ok(objects) => panic!("{chart_name} {values}: Helm rendered {:?}", summary(&objects)),
    }
}

#[tokio::test]
async fn wrong_values_are_refused_with_a_message_naming_them() {
    if !helm_ready("wrong_values_are_refused_with_a_message_naming_them").await {
        return;
    }
    let with = |patch: Value| {
        let mut v = seed_values();
        for (k, val) in patch.as_object().unwrap() {
            if let (Some(obj), Some(p)) = (v[k].as_object_mut(), val.as_object()) {
                obj.extend(p.clone());
            } else {
                v[k] = val.clone();
            }
        }
        v
    };
    assert_refused("kubelink", with(json!({"slots": "two"})), &["slots"]).await;
    assert_refused("kubelink", with(json!({"slots": 5})), &["slots"]).await;
    assert_refused("kubelink", with(json!({"agent": {"wgBackend": "kernal"}})), &["wgBackend"]).await;
    assert_refused("kubelink", with(json!({"agent": {"wgOffload": true}})), &["wgOffload"]).await;
    assert_refused("kubelink", with(json!({"seedname": "x"})), &["seedname"]).await;
    assert_refused("kubelink", with(json!({"agent": {"warmup": "45 seconds"}})), &["warmup"]).await;
    assert_refused("kubelink", with(json!({"agent": {"listenPort": 70000}})), &["listenPort"]).await;
    // Endpoints are the extension controller's (the seed's providerConfig), not the agents'.
    let endpoints = json!({"agent": {"slotEndpoints": ["gw-0.example:51820"]}});
    assert_refused("kubelink", with(endpoints), &["slotEndpoints"]).await;
    assert_refused("kubelink", with(json!({"agent": {"slots": 2}})), &["slots"]).await;
    // Required values, from the templates.
    assert_refused("kubelink", json!({}), &["seedName is required"]).await;
    assert_refused("kubelink", with(json!({"gardenKubeconfigSecret": "g"})), &["gardenKubeconfigSecret"]).await;
    assert_refused("kubelink", with(json!({"ipam": {"enabled": true}})), &["ipam"]).await;
}

#[tokio::test]
async fn helm_lint_passes() {
    if !helm_ready("helm_lint_passes").await {
        return;
    }
    for (name, values) in [("kubelink", seed_values()), ("kubelink", json!({}))] {
        let report = helm::lint(&chart(name), values.clone()).await.unwrap_or_else(|e| panic!("{name} {values}: {e}"));
        println!("lint {name} {values}: {:?}", report.messages);
    }
    // Lint fails on a value the schema rejects (the check is real).
    let err = helm::lint(&chart("kubelink"), json!({"slots": "two"})).await.unwrap_err();
    assert!(matches!(err, HelmError::Refused(_)), "{err}");
}

/// gardenlet renders `templates/` only: kubelink's CRDs come with the release from there. Into a
/// cluster of its own without them (Gardener's are there), with the chart's defaults: the CRDs are
/// created, Established, and serve a ShootPeer; `crds.enabled: false` renders none.
#[tokio::test]
async fn the_chart_installs_its_crds_from_templates() {
    let test = "the_chart_installs_its_crds_from_templates";
    if !helm_ready(test).await {
        return;
    }
    let Some(cluster) = k8s::own_for_test(test, false).await else { return };
    cluster.install_crds(&k8s::tools::gardener_crds().unwrap()).await.unwrap();
    cluster.ensure_namespace(NS).await.unwrap();
    let kubeconfig = cluster.admin_kubeconfig_file().unwrap();
    let objects = helm::install(&chart("kubelink"), &kubeconfig, NS, "kubelink", seed_values()).await.unwrap();
    let rendered: Vec<&str> =
        of_kind(&objects, "CustomResourceDefinition").iter().filter_map(|c| c["metadata"]["name"].as_str()).collect();
    assert_eq!(rendered, ["seedtunnels.kubelink.gardener.cloud", "shootpeers.kubelink.gardener.cloud"]);
    let client = cluster.client().await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in &rendered {
        let crd = crds.get(name).await.unwrap();
        let labels = crd.metadata.labels.unwrap_or_default();
        assert_eq!(labels.get("app.kubernetes.io/managed-by").map(String::as_str), Some("Helm"), "{name}: {labels:?}");
    }
    let peer = json!({"apiVersion": "kubelink.gardener.cloud/v1alpha1", "kind": "ShootPeer",
        "metadata": {"name": "shoot--p--a"},
        "spec": {"shoot": "garden-p/a", "address": "192.168.128.3", "publicKey": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}});
    let resource = kube::core::ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kubelink.gardener.cloud", "v1alpha1", "ShootPeer"),
        "shootpeers",
    );
    let peers: Api<DynamicObject> = Api::namespaced_with(client, NS, &resource);
    let established = std::time::Instant::now();
    loop {
        match peers.create(&Default::default(), &serde_json::from_value(peer.clone()).unwrap()).await {
            Ok(_) => break,
            Err(e) if established.elapsed() < std::time::Duration::from_secs(20) => {
                println!("waiting for the CRD to serve: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the chart's ShootPeer CRD does not serve: {e}"),
        }
    }
    let mut values = seed_values();
    values["crds"] = json!({"enabled": false});
    let objects = render(&chart("kubelink"), values).await.unwrap();
    assert!(of_kind(&objects, "CustomResourceDefinition").is_empty());
}

/// Every object a schema defines (one with `properties`) refuses unknown keys, except `gardener`:
/// gardenlet injects it, and its tree grows with Gardener's versions (kubelink reads only
/// `gardener.seed.name` and `gardener.seed.spec`).
fn assert_closed(schema: &Value, at: &str) {
    if at == "kubelink/gardener" {
        assert_eq!(schema["additionalProperties"], true, "{at}: gardenlet's values must be accepted as they come");
        return;
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        assert_eq!(schema["additionalProperties"], false, "{at}: an object schema that allows unknown keys");
        for (k, v) in props {
            assert_closed(v, &format!("{at}/{k}"));
        }
    }
    // (`if`/`then` only narrow objects defined, and closed, under `properties`.)
    if let Some(items) = schema.get("items") {
        assert_closed(items, &format!("{at}[]"));
    }
}

#[test]
fn the_schema_refuses_unknown_keys_at_every_level() {
    let path = chart("kubelink").join("values.schema.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(schema["type"], "object");
    assert_closed(&schema, "kubelink");
}

/// The garden admission webhook's charts (`charts/kubelink-admission`) as gardener-operator installs
/// them (`spec.deployment.admission`): each installed by the real helm into the real server, which
/// validates every object. The runtime Deployment passes only flags `kubelink garden-admission`
/// knows, and gardener-operator's `GARDEN_KUBECONFIG` is one of its variables; the virtual garden's
/// part grants `get` on Seeds, Shoots and ManagedSeeds and nothing else, to the ServiceAccount
/// gardener-operator names, and registers the webhook for Seeds and ManagedSeeds only.
#[tokio::test]
async fn the_admission_charts_install_and_pass_only_what_the_binary_knows() {
    let test = "the_admission_charts_install_and_pass_only_what_the_binary_knows";
    if !helm_ready(test).await {
        return;
    }
    let cluster = k8s::shared().await.unwrap();
    let kubeconfig = cluster.admin_kubeconfig_file().unwrap();
    cluster.ensure_namespace("admission-runtime").await.unwrap();
    let runtime = chart("kubelink-admission/runtime");
    let values = json!({"gardener": {"runtimeCluster": {"priorityClassName": "gardener-garden-system-400"}}});
    let objects =
        helm::install(&runtime, &kubeconfig, "admission-runtime", "kubelink-admission", values).await.unwrap();
    assert_stored(&objects, "admission-runtime").await;
    let cmd =
        helm::container_command(find(&objects, "Deployment", "kubelink-admission"), "kubelink-admission", &downward())
            .unwrap();
    assert_eq!(cmd.args.first().map(String::as_str), Some("garden-admission"));
    let (flags, env) = help_lists(&help(&cmd.args[..1]));
    for arg in &cmd.args[1..] {
        assert!(flags.contains(arg.split('=').next().unwrap()), "kubelink garden-admission has no {arg}");
    }
    assert!(env.contains("GARDEN_KUBECONFIG"), "gardener-operator's GARDEN_KUBECONFIG is not read: {env:?}");

    cluster.ensure_namespace("admission-application").await.unwrap();
    let application = chart("kubelink-admission/application");
    let ca = std::fs::read_to_string(cluster.dir.join("ca.crt")).unwrap();
    let values = json!({"webhook": {"caBundle": ca}});
    let objects =
        helm::install(&application, &kubeconfig, "admission-application", "kubelink-admission", values).await.unwrap();
    assert_stored(&objects, "admission-application").await;
    let roles = of_kind(&objects, "ClusterRole");
    assert_eq!(roles.len(), 1, "{:?}", summary(&objects));
    let want = expect(&[
        ("core.gardener.cloud", &["seeds", "shoots"], &["get"], "*"),
        ("seedmanagement.gardener.cloud", &["managedseeds"], &["get"], "*"),
    ]);
    assert_eq!(rules(roles[0]), want);
    let binding = &of_kind(&objects, "ClusterRoleBinding")[0];
    assert_eq!(binding["subjects"][0]["name"], "extension-kubelink-admission");
    let webhook = find(&objects, "ValidatingWebhookConfiguration", "kubelink-admission");
    let resources: Vec<&Value> =
        webhook["webhooks"][0]["rules"].as_array().unwrap().iter().map(|r| &r["resources"]).collect();
    assert_eq!(resources, [&json!(["seeds"]), &json!(["managedseeds"])]);
}

/// The slots and the gateways' MTU are the seed's own setting: rendered with gardenlet's injected
/// Seed whose kubelink-wireguard entry says `slots: 1, mtu: 1380`, the chart deploys one slot Service,
/// grants one slot Lease, tells the controller it deployed one slot and runs the agents at MTU 1380,
/// whatever its own values say; without such an entry the values decide.
#[tokio::test]
async fn the_seeds_provider_config_sets_the_slots_and_the_mtu() {
    if !helm_ready("the_seeds_provider_config_sets_the_slots_and_the_mtu").await {
        return;
    }
    let entry =
        json!({"type": "kubelink-wireguard", "providerConfig": {"cidr": "192.168.128.0/22", "slots": 1, "mtu": 1380}});
    let spec = json!({"networks": {"nodes": "10.250.0.0/16"}, "extensions": [{"type": "other"}, entry]});
    let mut values = json!({"controller": {"enabled": true}});
    values["gardener"] = json!({"seed": {"name": SEED, "spec": spec}});
    let seeds_own = render(&chart("kubelink"), values.clone()).await.unwrap();
    values["gardener"]["seed"]["spec"]["extensions"] = json!([]);
    let from_values = render(&chart("kubelink"), values).await.unwrap();
    for (objects, slots, mtu) in [(&seeds_own, 1, "1380"), (&from_values, 2, "auto")] {
        assert_eq!(of_kind(objects, "Service").len(), slots, "{:?}", summary(objects));
        let controller =
            helm::container_command(find(objects, "Deployment", "kubelink-controller"), "controller", &downward());
        assert!(controller.unwrap().args.contains(&format!("--deployed-slots={slots}")));
        let agent =
            helm::container_command(find(objects, "DaemonSet", "kubelink-agent"), "agent", &downward()).unwrap();
        assert!(agent.args.contains(&format!("--mtu={mtu}")), "{:?}", agent.args);
    }
}
