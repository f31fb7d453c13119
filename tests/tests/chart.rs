//! The Helm chart (`charts/kubelink`) against the code it deploys. No helm binary is available here,
//! so the templates are read the way a reviewer reads them: every line that is only a template action
//! is dropped (conditionals keep their body: a superset of every rendering), and every other
//! `{{ ... }}` becomes a placeholder. What is checked:
//!
//! - every flag the chart passes is a flag of that `kubelink` subcommand, and the downward-API
//!   variables are the ones the agent reads;
//! - each slot's Service selects the agent Pods by the label the agent sets on the slot holder;
//! - RBAC allows every request the agent's and the IPAM's code made against the API test server.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use kubelink_apiserver::fixtures;
use kubelink_apiserver::kinds::ResourceKind;
use kubelink_apiserver::store::Access;
use kubelink_tests::netns;
use serde_json::Value;

fn chart_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/kubelink")
}

/// The documents of one template, read as described above.
fn documents(template: &str) -> Vec<Value> {
    let path = chart_dir().join("templates").join(template);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let lines: Vec<String> = text
        .lines()
        .filter(|l| {
            let t = l.trim();
            !(t.starts_with("{{") && t.ends_with("}}") && t.matches("{{").count() == 1)
        })
        .map(placeholders)
        .collect();
    lines
        .join("\n")
        .split("\n---")
        .filter(|doc| doc.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')))
        .map(|doc| serde_yaml_ng::from_str(doc).unwrap_or_else(|e| panic!("{template}: {e}\n{doc}")))
        .collect()
}

/// `a{{ x }}b` -> `aXb`.
fn placeholders(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").map_or(rest.len(), |e| start + e + 2);
        out.push('X');
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn kind_of<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn containers(workload: &Value) -> Vec<&Value> {
    workload["spec"]["template"]["spec"]["containers"].as_array().map(|a| a.iter().collect()).unwrap_or_default()
}

fn help(words: &[&str]) -> String {
    let out = std::process::Command::new(netns::kubelink_bin())
        .args(words)
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("kubelink {words:?} --help: {e}"));
    assert!(out.status.success(), "kubelink {words:?} --help failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Checks a container's args: subcommand words, then flags each of which the subcommand knows.
fn assert_flags_known(container: &Value) {
    let args: Vec<&str> = container["args"].as_array().expect("args").iter().filter_map(Value::as_str).collect();
    let words: Vec<&str> = args.iter().copied().take_while(|a| !a.starts_with("--")).collect();
    let text = help(&words);
    let known: BTreeSet<&str> =
        text.split(|c: char| c.is_whitespace() || c == ',' || c == '[').filter(|w| w.starts_with("--")).collect();
    for arg in &args[words.len()..] {
        let flag = arg.split('=').next().unwrap_or(arg);
        assert!(
            known.contains(flag),
            "the chart passes {flag} to `kubelink {}`, which has no such flag",
            words.join(" ")
        );
    }
    println!("kubelink {}: {} flags, all known", words.join(" "), args.len() - words.len());
}

#[test]
fn every_flag_in_the_chart_is_a_flag_of_the_binary() {
    let agent = documents("daemonset.yaml");
    let ipam = documents("deployment-ipam.yaml");
    let workloads: Vec<&Value> = kind_of(&agent, "DaemonSet").into_iter().chain(kind_of(&ipam, "Deployment")).collect();
    assert_eq!(workloads.len(), 2, "the agent DaemonSet and the IPAM Deployment");
    for w in workloads {
        for c in containers(w) {
            assert_flags_known(c);
        }
    }
}

#[test]
fn the_agent_gets_the_downward_api_variables_it_reads() {
    let docs = documents("daemonset.yaml");
    let ds = kind_of(&docs, "DaemonSet")[0];
    let env: BTreeSet<&str> =
        containers(ds)[0]["env"].as_array().unwrap().iter().filter_map(|e| e["name"].as_str()).collect();
    let text = help(&["agent"]);
    for var in ["NODE_NAME", "NODE_IP", "POD_NAME", "POD_NAMESPACE"] {
        assert!(env.contains(var), "DaemonSet does not set {var}");
        assert!(text.contains(&format!("[env: {var}=")), "`kubelink agent` does not read {var}");
    }
    assert_eq!(ds["spec"]["template"]["spec"]["hostNetwork"], true, "the agent routes the node: hostNetwork");
}

#[test]
fn each_slot_service_selects_the_slot_holder_among_the_agent_pods() {
    let services = documents("services.yaml");
    let svc = kind_of(&services, "Service");
    assert_eq!(svc.len(), 1, "one Service document, rendered once per slot");
    let selector = svc[0]["spec"]["selector"].as_object().unwrap();
    assert!(selector.contains_key(kubelink::agent::cluster::SLOT_LABEL), "Service must select on the slot label");
    let docs = documents("daemonset.yaml");
    let pod_labels = kind_of(&docs, "DaemonSet")[0]["spec"]["template"]["metadata"]["labels"].as_object().unwrap();
    for (k, v) in selector.iter().filter(|(k, _)| *k != kubelink::agent::cluster::SLOT_LABEL) {
        assert_eq!(pod_labels.get(k), Some(v), "the Service selects {k}={v}, which the agent Pods do not carry");
    }
    assert_eq!(svc[0]["spec"]["ports"][0]["protocol"], "UDP");
    let match_labels = kind_of(&docs, "DaemonSet")[0]["spec"]["selector"]["matchLabels"].as_object().unwrap();
    for (k, v) in match_labels {
        assert_eq!(pod_labels.get(k), Some(v), "the DaemonSet selects {k}={v}, which its Pods do not carry");
    }
}

/// Every (verb, group, resource) RBAC grants in the chart's Roles and ClusterRoles.
fn granted() -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    let docs = documents("rbac.yaml");
    for role in kind_of(&docs, "Role").into_iter().chain(kind_of(&docs, "ClusterRole")) {
        for rule in role["rules"].as_array().unwrap() {
            let list = |k: &str| -> Vec<String> {
                rule[k].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
            };
            for g in list("apiGroups") {
                for r in list("resources") {
                    for v in list("verbs") {
                        out.insert((v.clone(), g.clone(), r.clone()));
                    }
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn rbac_allows_every_request_of_the_agent_and_the_ipam() {
    let server = kubelink_apiserver::start().await;
    let client = server.client();
    let ns = "kubelink";
    fixtures::create_seed(&client, &fixtures::seed("local", "192.168.128.0/22")).await.unwrap();
    fixtures::create_shoots(&client, "local", 0..3).await.unwrap();
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(client.clone(), ns);
    let pod = serde_json::from_value(serde_json::json!({"metadata": {"name": "agent-a"}})).unwrap();
    pods.create(&Default::default(), &pod).await.unwrap();
    server.store().clear_accesses();

    // The IPAM controller allocates, then releases a shoot deleted behind its back.
    let ipam = |client: kube::Client| {
        let mut cfg = kubelink_ipam::controller::Config::new("local");
        cfg.namespace = ns.into();
        let c = kubelink_ipam::controller::Controller::new(client.clone(), client, cfg);
        tokio::spawn(async move { c.run().await })
    };
    let run = ipam(client.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let shoots = ResourceKind::find("core.gardener.cloud", "v1beta1", "shoots").unwrap();
    server.store().delete(shoots, fixtures::PROJECT_NS, &fixtures::shoot_name(2), None).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    run.abort();

    // The agent: election, watches, the slot Secret, its Pod's label, giving a slot up.
    let election = kubelink::election::kube::LeaseElection::new(
        client.clone(),
        ns,
        "node-a",
        "10.0.0.1",
        2,
        kubelink::election::Timing::default(),
    );
    let slot = election.round().await.unwrap().holding.expect("a slot") as u8;
    let wake = std::sync::Arc::new(tokio::sync::Notify::new());
    let cluster = kubelink::agent::cluster::Cluster::start(client.clone(), ns, "local", Some("agent-a".into()), wake);
    while !cluster.synced() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(cluster.shoots().len(), 2, "the agent sees the two allocated shoots");
    cluster.slot_key(slot, "gw-0.example:51820").await.unwrap();
    cluster.label_pod(Some(slot)).await.unwrap();
    cluster.label_pod(None).await.unwrap();
    election.release(usize::from(slot)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await; // the watches are established

    let granted = granted();
    let accesses: BTreeSet<Access> = server.store().accesses();
    let mut denied = Vec::new();
    for a in &accesses {
        let resource = match &a.subresource {
            Some(sub) => format!("{}/{sub}", a.resource),
            None => a.resource.to_string(),
        };
        if !granted.contains(&(a.verb.to_string(), a.group.to_string(), resource.clone())) {
            denied.push(format!("{} {}/{resource}", a.verb, a.group));
        }
    }
    println!("{} kinds of request made; RBAC allows each: {}", accesses.len(), denied.is_empty());
    assert!(accesses.len() >= 15, "too few requests recorded to mean anything: {accesses:?}");
    assert!(denied.is_empty(), "the chart's RBAC denies: {denied:?}");
}
