//! What the shoot webhook does to vpn-shoot, as pure functions: which objects it touches, the
//! sidecar container, and the JSON patch that puts it into a Pod template. The patch is computed
//! against the object as it arrives, so it converges: a template that already has the sidecar as
//! it should be gets no patch, one with an outdated or hand-edited sidecar gets it replaced, and an
//! object written without it (gardener-resource-manager applying vpn-shoot again) gets it back.

use serde_json::{Value, json};

/// The namespace and name Gardener gives vpn-shoot (`pkg/component/networking/vpn/shoot`).
pub const NAMESPACE: &str = "kube-system";
pub const NAME: &str = "vpn-shoot";
/// The sidecar's container and the volume of the shoot's kubelink Secret.
pub const CONTAINER: &str = "kubelink";
pub const VOLUME: &str = "kubelink-shoot";
/// Where the sidecar reads the Secret's files.
pub const CONFIG_DIR: &str = "/etc/kubelink";
/// vpn-shoot's own volume of `/dev/net/tun`: the sidecar mounts it for the userspace engine.
pub const TUN_VOLUME: &str = "dev-net-tun";
/// The sidecar's health port (readiness).
pub const HEALTH_PORT: u16 = 8093;

/// How the sidecar is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sidecar {
    pub image: String,
}

/// Whether an admission request is for vpn-shoot: a Deployment (one replica) or, with HA VPN, a
/// StatefulSet, `kube-system/vpn-shoot`. Everything else passes unchanged.
pub fn is_vpn_shoot(group: &str, kind: &str, namespace: &str, name: &str) -> bool {
    group == "apps" && matches!(kind, "Deployment" | "StatefulSet") && namespace == NAMESPACE && name == NAME
}

/// The sidecar container for a Pod template whose volumes are `volumes`.
pub fn container(sidecar: &Sidecar, volumes: &[Value]) -> Value {
    let mut mounts = vec![json!({"name": VOLUME, "mountPath": CONFIG_DIR, "readOnly": true})];
    if volumes.iter().any(|v| v["name"] == TUN_VOLUME) {
        mounts.push(json!({"name": TUN_VOLUME, "mountPath": "/dev/net/tun"}));
    }
    json!({
        "name": CONTAINER,
        "image": sidecar.image,
        "args": ["shoot", "--config-dir", CONFIG_DIR],
        "ports": [{"name": "kubelink-health", "containerPort": HEALTH_PORT, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "kubelink-health"}, "periodSeconds": 5},
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]},
        },
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "128Mi"}},
        "volumeMounts": mounts,
    })
}

/// The Secret volume (only the owner may read the private key).
pub fn volume() -> Value {
    json!({"name": VOLUME, "secret": {"secretName": kubelink_contract::names::SHOOT_SECRET, "defaultMode": 0o400}})
}

/// Why an object cannot be patched (the request is then allowed unchanged, with this as a warning:
/// the API server's own validation refuses a broken object anyway).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MutateError {
    #[error("{0} is missing or not a list: vpn-shoot's Pod template must have containers")]
    NoContainers(&'static str),
    #[error("spec.template.spec.volumes is not a list")]
    Volumes,
}

const POD: &str = "/spec/template/spec";

/// The JSON patch (RFC 6902) that gives `object`'s Pod template the sidecar and its Secret volume;
/// empty when it has both as they should be.
pub fn patch(object: &Value, sidecar: &Sidecar) -> Result<Vec<Value>, MutateError> {
    let pod = &object["spec"]["template"]["spec"];
    let containers = pod["containers"].as_array().ok_or(MutateError::NoContainers("spec.template.spec.containers"))?;
    let volumes = match &pod["volumes"] {
        Value::Null => None,
        Value::Array(v) => Some(v),
        _ => return Err(MutateError::Volumes),
    };
    let mut ops = Vec::new();
    let want = volume();
    match volumes {
        None => ops.push(json!({"op": "add", "path": format!("{POD}/volumes"), "value": [want]})),
        Some(vs) => ops.extend(upsert(vs, &want, &format!("{POD}/volumes"))),
    }
    let want = container(sidecar, volumes.map_or(&[][..], |v| v.as_slice()));
    ops.extend(upsert(containers, &want, &format!("{POD}/containers")));
    Ok(ops)
}

/// The operation that makes the entry of `list` (at `path`) named like `want` equal to it: none,
/// a replace of that entry, or an add at the end.
fn upsert(list: &[Value], want: &Value, path: &str) -> Option<Value> {
    match list.iter().position(|v| v["name"] == want["name"]) {
        Some(i) if list[i] == *want => None,
        Some(i) => Some(json!({"op": "replace", "path": format!("{path}/{i}"), "value": want})),
        None => Some(json!({"op": "add", "path": format!("{path}/-"), "value": want})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sidecar() -> Sidecar {
        Sidecar { image: "kubelink:test".into() }
    }

    /// vpn-shoot's shape as Gardener renders it (the parts the patch reads).
    fn vpn_shoot() -> Value {
        json!({"spec": {"template": {"spec": {
            "containers": [{"name": "vpn-shoot", "image": "vpn-client"}],
            "volumes": [{"name": "vpn-shoot", "secret": {"secretName": "vpn-shoot-client"}},
                        {"name": "dev-net-tun", "hostPath": {"path": "/dev/net/tun", "type": "CharDevice"}}],
        }}}})
    }

    fn applied(mut object: Value, ops: &[Value]) -> Value {
        let patch: json_patch::Patch = serde_json::from_value(json!(ops)).unwrap();
        json_patch::patch(&mut object, &patch).unwrap();
        object
    }

    #[test]
    fn only_kube_system_vpn_shoot_deployments_and_statefulsets_are_mutated() {
        assert!(is_vpn_shoot("apps", "Deployment", "kube-system", "vpn-shoot"));
        assert!(is_vpn_shoot("apps", "StatefulSet", "kube-system", "vpn-shoot"));
        for (group, kind, ns, name) in [
            ("apps", "DaemonSet", "kube-system", "vpn-shoot"),
            ("apps", "Deployment", "default", "vpn-shoot"),
            ("apps", "Deployment", "kube-system", "coredns"),
            ("", "Pod", "kube-system", "vpn-shoot"),
        ] {
            assert!(!is_vpn_shoot(group, kind, ns, name), "{group}/{kind} {ns}/{name}");
        }
    }

    #[test]
    fn the_sidecar_and_its_secret_are_added_once_and_then_left_alone() {
        let ops = patch(&vpn_shoot(), &sidecar()).unwrap();
        assert_eq!(ops.len(), 2, "{ops:?}");
        let mutated = applied(vpn_shoot(), &ops);
        let pod = &mutated["spec"]["template"]["spec"];
        let names: Vec<&str> =
            pod["containers"].as_array().unwrap().iter().filter_map(|c| c["name"].as_str()).collect();
        assert_eq!(names, ["vpn-shoot", "kubelink"], "vpn-shoot's own container stays first");
        let sidecar_container = &pod["containers"][1];
        assert_eq!(sidecar_container["args"], json!(["shoot", "--config-dir", "/etc/kubelink"]));
        assert_eq!(sidecar_container["securityContext"]["capabilities"]["add"], json!(["NET_ADMIN", "NET_RAW"]));
        let mounts: Vec<&str> =
            sidecar_container["volumeMounts"].as_array().unwrap().iter().filter_map(|m| m["name"].as_str()).collect();
        assert_eq!(mounts, ["kubelink-shoot", "dev-net-tun"]);
        assert_eq!(pod["volumes"][2]["secret"]["secretName"], "kubelink-shoot");
        assert_eq!(pod["volumes"][2]["secret"]["defaultMode"], 0o400);
        assert_eq!(patch(&mutated, &sidecar()).unwrap(), Vec::<Value>::new(), "converged: no patch");
    }

    #[test]
    fn an_outdated_or_edited_sidecar_is_replaced_in_place() {
        let mutated = applied(vpn_shoot(), &patch(&vpn_shoot(), &sidecar()).unwrap());
        let newer = Sidecar { image: "kubelink:newer".into() };
        let ops = patch(&mutated, &newer).unwrap();
        assert_eq!(
            ops,
            vec![
                json!({"op": "replace", "path": "/spec/template/spec/containers/1", "value": container(&newer, mutated["spec"]["template"]["spec"]["volumes"].as_array().unwrap())})
            ]
        );
        let mut edited = mutated.clone();
        edited["spec"]["template"]["spec"]["containers"][1]["securityContext"] = json!({"privileged": true});
        let fixed = applied(edited.clone(), &patch(&edited, &sidecar()).unwrap());
        assert_eq!(fixed, mutated, "a hand edit of the sidecar is undone");
    }

    #[test]
    fn a_template_without_volumes_gets_the_list_and_no_tun_mount() {
        let mut object = vpn_shoot();
        object["spec"]["template"]["spec"].as_object_mut().unwrap().remove("volumes");
        let mutated = applied(object, &patch(&vpn_shoot_without_volumes(), &sidecar()).unwrap());
        let pod = &mutated["spec"]["template"]["spec"];
        assert_eq!(pod["volumes"].as_array().unwrap().len(), 1);
        assert_eq!(pod["containers"][1]["volumeMounts"].as_array().unwrap().len(), 1, "no /dev/net/tun to mount");
    }

    fn vpn_shoot_without_volumes() -> Value {
        let mut object = vpn_shoot();
        object["spec"]["template"]["spec"].as_object_mut().unwrap().remove("volumes");
        object
    }

    #[test]
    fn what_cannot_be_patched_is_named() {
        let err = patch(&json!({"spec": {}}), &sidecar()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec.template.spec.containers is missing or not a list: vpn-shoot's Pod template must have containers"
        );
        let mut object = vpn_shoot();
        object["spec"]["template"]["spec"]["volumes"] = json!("x");
        assert_eq!(patch(&object, &sidecar()).unwrap_err(), MutateError::Volumes);
    }
}
