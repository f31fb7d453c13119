//! The garden admission rule (GEP-14): a seed that runs on a shoot must not use a WireGuard CIDR
//! that overlaps its parent seed's. Pure: the AdmissionReview decoder, reading kubelink's settings
//! out of a Seed or a ManagedSeed, and the decision, with the garden behind the [`Garden`] trait.
//!
//! Only the garden sees both seeds, so this is the one place the parent rule can be checked; every
//! rule a seed can check alone (a valid range, its size, the seed's own networks, Gardener's
//! reserved ranges) is checked here too, with the extension controller's own functions, so the
//! webhook refuses nothing the controller would accept.

use kubelink_ipam::gardener::{EXTENSION_TYPE, Seed};
use kubelink_ipam::validate;
use serde_json::{Value, json};

pub use crate::webhook::{AdmissionRequest as Request, MAX_REVIEW_BYTES, decode};

/// The namespace of ManagedSeeds and their shoots.
pub const GARDEN_NAMESPACE: &str = "garden";

const SEED_GROUP: &str = "core.gardener.cloud";
const MANAGED_SEED_GROUP: &str = "seedmanagement.gardener.cloud";
/// Where a ManagedSeed keeps the seed's spec (GardenletConfiguration's `seedConfig`).
const SEED_CONFIG: &str = "spec.gardenlet.config.seedConfig";

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// Why it is refused: names the field and the fix.
    pub message: Option<String>,
    /// Shown to the client on an allowed request (kubectl prints them).
    pub warnings: Vec<String>,
}

impl Verdict {
    fn allow() -> Self {
        Verdict { allowed: true, message: None, warnings: Vec::new() }
    }
    fn warn(warning: String) -> Self {
        Verdict { allowed: true, message: None, warnings: vec![warning] }
    }
    fn deny(message: String) -> Self {
        Verdict { allowed: false, message: Some(message), warnings: Vec::new() }
    }
}

/// The AdmissionReview answering `uid` with `verdict`.
pub fn response(uid: &str, verdict: &Verdict) -> Value {
    let mut response = json!({"uid": uid, "allowed": verdict.allowed});
    if let Some(message) = &verdict.message {
        response["status"] = json!({"code": 403, "reason": "Forbidden", "message": message});
    }
    if !verdict.warnings.is_empty() {
        response["warnings"] = json!(verdict.warnings);
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

/// An object the rule reads from the garden.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ref {
    Shoot { namespace: String, name: String },
    Seed { name: String },
    ManagedSeed { namespace: String, name: String },
}

impl std::fmt::Display for Ref {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ref::Shoot { namespace, name } => write!(f, "Shoot {namespace}/{name}"),
            Ref::Seed { name } => write!(f, "Seed {name}"),
            Ref::ManagedSeed { namespace, name } => write!(f, "ManagedSeed {namespace}/{name}"),
        }
    }
}

/// Read access to the garden: the object, `None` when it does not exist, or why it could not be read.
pub trait Garden {
    fn get(&self, what: &Ref) -> impl Future<Output = Result<Option<Value>, String>> + Send;
}

/// kubelink's CIDR setting in a seed's spec, with its field path: the `providerConfig.cidr` of the
/// `spec.extensions[]` entry of type `kubelink-wireguard` (not disabled), else GEP-14's
/// `spec.wireguard.cidr`; the order in which the extension controller reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub field: String,
    pub cidr: String,
}

/// Reads the [`Setting`] of the seed `seed` (an object with `spec`), whose fields are written under
/// `prefix` in messages. `Ok(None)`: the seed does not use kubelink.
pub fn read_setting(seed: &Value, prefix: &str) -> Result<Option<Setting>, String> {
    let spec = &seed["spec"];
    let entry = spec["extensions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["type"].as_str() == Some(EXTENSION_TYPE) && e["disabled"].as_bool() != Some(true));
    let candidates = [
        (entry.map(|e| &e["providerConfig"]["cidr"]), format!("spec.extensions[{EXTENSION_TYPE}].providerConfig.cidr")),
        (Some(&spec["wireguard"]["cidr"]), "spec.wireguard.cidr".to_string()),
    ];
    for (value, field) in candidates {
        let field = format!("{prefix}{field}");
        match value {
            None | Some(Value::Null) => continue,
            Some(Value::String(cidr)) => return Ok(Some(Setting { field, cidr: cidr.clone() })),
            Some(other) => {
                return Err(format!(
                    "{field}: {} is not a string; write the range as a string, e.g. \"192.168.128.0/22\"",
                    kubelink_ipam::excerpt(&other.to_string())
                ));
            }
        }
    }
    Ok(None)
}

/// What is being admitted: the seed's spec holder (`{metadata, spec}`) and how it is named in messages.
struct Subject {
    /// `{metadata: {name}, spec}` of the seed, for the seed-level rules.
    seed: Value,
    prefix: String,
    /// The ManagedSeed's shoot, when known from the object itself.
    shoot: Option<String>,
}

fn read_subject(object: &Value, req: &Request) -> Result<Option<Subject>, String> {
    match (req.group.as_str(), req.kind.as_str()) {
        (SEED_GROUP, "Seed") => Ok(Some(Subject { seed: object.clone(), prefix: String::new(), shoot: None })),
        (MANAGED_SEED_GROUP, "ManagedSeed") => {
            let config = &object["spec"]["gardenlet"]["config"]["seedConfig"];
            let seed = json!({"metadata": {"name": req.name}, "spec": config["spec"].clone()});
            let shoot = object["spec"]["shoot"]["name"].as_str().map(String::from);
            Ok(Some(Subject { seed, prefix: format!("{SEED_CONFIG}."), shoot }))
        }
        _ => Ok(None),
    }
}

/// The seed-level rules without the parent, then with it, as the extension controller checks them.
fn check(setting: &Setting, seed: &Value, parent: Option<(&str, &str)>) -> Result<(), String> {
    let seed: Seed = serde_json::from_value(json!({"metadata": {"name": seed["metadata"]["name"]},
        "spec": {"networks": seed["spec"]["networks"]}}))
    .map_err(|e| format!("spec.networks: {e}"))?;
    validate::wireguard_cidr(&setting.field, &setting.cidr, &seed, parent).map(|_| ()).map_err(|e| e.to_string())
}

/// Decides `req`. Reads the garden only for a seed whose kubelink setting is new or changed.
pub async fn decide<G: Garden>(garden: &G, req: &Request) -> Verdict {
    if req.operation != "CREATE" && req.operation != "UPDATE" {
        return Verdict::allow();
    }
    let subject = match read_subject(&req.object, req) {
        Ok(Some(s)) => s,
        Ok(None) => return Verdict::allow(),
        Err(e) => return Verdict::deny(e),
    };
    let setting = match read_setting(&subject.seed, &subject.prefix) {
        Ok(Some(s)) => s,
        Ok(None) => return Verdict::allow(),
        Err(e) => return Verdict::deny(e),
    };
    if req.operation == "UPDATE"
        && let Ok(Some(old)) = read_subject(&req.old_object, req)
        && read_setting(&old.seed, &old.prefix) == Ok(Some(setting.clone()))
    {
        // Unchanged: nothing to decide again (metadata and finalizer updates pass without a read).
        return Verdict::allow();
    }
    if let Err(e) = check(&setting, &subject.seed, None) {
        return Verdict::deny(e);
    }
    let shoot = match subject.shoot {
        Some(shoot) => Some((req.namespace.clone(), shoot)),
        None => {
            // A Seed: a seed that runs on a shoot has the ManagedSeed of its name in `garden`.
            let managed = Ref::ManagedSeed { namespace: GARDEN_NAMESPACE.into(), name: req.name.clone() };
            match garden.get(&managed).await {
                Ok(None) => None,
                Ok(Some(ms)) => match ms["spec"]["shoot"]["name"].as_str() {
                    Some(shoot) => Some((GARDEN_NAMESPACE.to_string(), shoot.to_string())),
                    None => return Verdict::deny(format!("{managed} names no spec.shoot.name")),
                },
                Err(e) => return unreadable(&managed, &e),
            }
        }
    };
    let Some((namespace, shoot)) = shoot else { return Verdict::allow() };
    let shoot_ref = Ref::Shoot { namespace, name: shoot };
    let parent = match garden.get(&shoot_ref).await {
        Ok(Some(s)) => match s["spec"]["seedName"].as_str() {
            Some(seed) if !seed.is_empty() => seed.to_string(),
            _ => {
                return Verdict::deny(format!(
                    "{shoot_ref} has no spec.seedName yet, so its parent seed is unknown and {} cannot be checked \
                     against it; create this once the shoot is scheduled",
                    setting.field
                ));
            }
        },
        Ok(None) => return Verdict::deny(format!("{shoot_ref} does not exist; the seed's parent cannot be found")),
        Err(e) => return unreadable(&shoot_ref, &e),
    };
    let parent_ref = Ref::Seed { name: parent.clone() };
    let parent_setting = match garden.get(&parent_ref).await {
        Ok(Some(seed)) => read_setting(&seed, ""),
        Ok(None) => return Verdict::deny(format!("{parent_ref} (the parent: {shoot_ref} runs on it) does not exist")),
        Err(e) => return unreadable(&parent_ref, &e),
    };
    let parent_cidr = match parent_setting {
        Ok(Some(p)) => p,
        Ok(None) => return Verdict::allow(),
        Err(e) => return Verdict::warn(format!("the parent seed {parent}'s kubelink setting is not checked: {e}")),
    };
    if let Err(e) = validate::parse_cidr(&parent_cidr.field, &parent_cidr.cidr) {
        return Verdict::warn(format!("the parent seed {parent}'s kubelink setting is not checked: {e}"));
    }
    match check(&setting, &subject.seed, Some((&parent, &parent_cidr.cidr))) {
        Ok(()) => Verdict::allow(),
        Err(e) => Verdict::deny(e),
    }
}

/// Fail closed: a seed whose parent cannot be read is refused (docs/security.md says why).
fn unreadable(what: &Ref, error: &str) -> Verdict {
    Verdict::deny(format!(
        "{what} cannot be read to check the parent seed's WireGuard CIDR ({}); try again",
        kubelink_ipam::shorten(error, 300)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    /// The garden as a map; a name in `broken` answers with an error; every read is recorded.
    #[derive(Default)]
    struct Fake {
        objects: BTreeMap<String, Value>,
        broken: Vec<String>,
        reads: Mutex<Vec<String>>,
    }

    impl Garden for Fake {
        async fn get(&self, what: &Ref) -> Result<Option<Value>, String> {
            let key = what.to_string();
            self.reads.lock().unwrap().push(key.clone());
            if self.broken.contains(&key) {
                return Err("connection refused".into());
            }
            Ok(self.objects.get(&key).cloned())
        }
    }

    fn seed_spec(cidr: Option<&str>) -> Value {
        let mut spec = json!({"networks": {"nodes": "10.250.0.0/16", "pods": "100.96.0.0/11",
            "services": "100.64.0.0/13"}});
        if let Some(cidr) = cidr {
            spec["extensions"] = json!([{"type": "kubelink-wireguard", "providerConfig": {"cidr": cidr}}]);
        }
        spec
    }

    fn garden(parent_cidr: Option<&str>) -> Fake {
        let mut f = Fake::default();
        f.objects.insert("Seed local".into(), json!({"metadata": {"name": "local"}, "spec": seed_spec(parent_cidr)}));
        f.objects.insert("Shoot garden/child".into(), json!({"spec": {"seedName": "local"}}));
        f.objects.insert("ManagedSeed garden/child".into(), json!({"spec": {"shoot": {"name": "child"}}}));
        f
    }

    fn managed_seed(cidr: Option<&str>) -> Value {
        json!({"metadata": {"name": "child", "namespace": "garden"}, "spec": {"shoot": {"name": "child"},
            "gardenlet": {"config": {"seedConfig": {"spec": seed_spec(cidr)}}}}})
    }

    fn review(kind: &str, operation: &str, object: Value, old: Value) -> Request {
        let group = if kind == "Seed" { SEED_GROUP } else { MANAGED_SEED_GROUP };
        let namespace = if kind == "Seed" { "" } else { "garden" };
        let body = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "u1", "kind": {"group": group, "version": "v1", "kind": kind}, "operation": operation,
            "name": "child", "namespace": namespace, "object": object, "oldObject": old}});
        decode(body.to_string().as_bytes()).unwrap()
    }

    fn run(garden: &Fake, req: &Request) -> Verdict {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(decide(garden, req))
    }

    #[test]
    fn a_managed_seed_with_its_parents_range_is_refused_naming_the_field_and_the_fix() {
        let v = run(
            &garden(Some("192.168.128.0/22")),
            &review("ManagedSeed", "CREATE", managed_seed(Some("192.168.128.0/22")), Value::Null),
        );
        let message = v.message.unwrap();
        assert!(!v.allowed);
        assert_eq!(
            message,
            "spec.gardenlet.config.seedConfig.spec.extensions[kubelink-wireguard].providerConfig.cidr 192.168.128.0/22 \
             overlaps the WireGuard CIDR of parent seed local 192.168.128.0/22; the WireGuard CIDR must share no \
             address with it, pick another range"
        );
        let v = run(
            &garden(Some("192.168.0.0/16")),
            &review("ManagedSeed", "CREATE", managed_seed(Some("192.168.130.0/24")), Value::Null),
        );
        assert!(!v.allowed, "a range inside the parent's overlaps too");
    }

    #[test]
    fn a_disjoint_range_and_a_seed_without_kubelink_are_admitted() {
        let g = garden(Some("192.168.128.0/22"));
        assert!(run(&g, &review("ManagedSeed", "CREATE", managed_seed(Some("192.168.132.0/22")), Value::Null)).allowed);
        let reads = g.reads.lock().unwrap().clone();
        assert_eq!(reads, ["Shoot garden/child", "Seed local"]);
        let g = garden(Some("192.168.128.0/22"));
        assert_eq!(run(&g, &review("ManagedSeed", "CREATE", managed_seed(None), Value::Null)), Verdict::allow());
        assert!(g.reads.lock().unwrap().is_empty(), "nothing read for a seed without kubelink");
        let g = garden(None);
        assert!(run(&g, &review("ManagedSeed", "CREATE", managed_seed(Some("192.168.128.0/22")), Value::Null)).allowed);
    }

    #[test]
    fn a_seed_update_into_overlap_is_refused_and_an_unchanged_one_reads_nothing() {
        let seed = |cidr| json!({"metadata": {"name": "child"}, "spec": seed_spec(Some(cidr))});
        let g = garden(Some("192.168.128.0/22"));
        let v = run(&g, &review("Seed", "UPDATE", seed("192.168.128.0/23"), seed("10.0.0.0/22")));
        assert!(!v.allowed);
        assert!(
            v.message
                .unwrap()
                .starts_with("spec.extensions[kubelink-wireguard].providerConfig.cidr 192.168.128.0/23 overlaps")
        );
        assert_eq!(*g.reads.lock().unwrap(), ["ManagedSeed garden/child", "Shoot garden/child", "Seed local"]);
        let g = garden(Some("192.168.128.0/22"));
        assert!(run(&g, &review("Seed", "UPDATE", seed("192.168.128.0/23"), seed("192.168.128.0/23"))).allowed);
        assert!(g.reads.lock().unwrap().is_empty());
        // A Seed no ManagedSeed is named after: no parent.
        let mut g = garden(Some("192.168.128.0/22"));
        g.objects.remove("ManagedSeed garden/child");
        assert!(run(&g, &review("Seed", "CREATE", seed("192.168.128.0/23"), Value::Null)).allowed);
    }

    #[test]
    fn an_unreadable_parent_is_refused_and_says_so() {
        for broken in ["Shoot garden/child", "Seed local", "ManagedSeed garden/child"] {
            let mut g = garden(Some("192.168.128.0/22"));
            g.broken.push(broken.into());
            let object = json!({"metadata": {"name": "child"}, "spec": seed_spec(Some("10.10.0.0/22"))});
            let v = run(&g, &review("Seed", "CREATE", object, Value::Null));
            assert!(!v.allowed, "{broken}");
            assert_eq!(
                v.message.unwrap(),
                format!(
                    "{broken} cannot be read to check the parent seed's WireGuard CIDR (connection refused); try again"
                )
            );
        }
        let mut g = garden(Some("192.168.128.0/22"));
        g.objects.insert("Shoot garden/child".into(), json!({"spec": {}}));
        let v = run(&g, &review("ManagedSeed", "CREATE", managed_seed(Some("10.10.0.0/22")), Value::Null));
        assert!(v.message.unwrap().contains("has no spec.seedName yet"));
    }

    #[test]
    fn local_rules_are_the_controllers() {
        let g = garden(None);
        for (cidr, want) in [
            ("10.250.1.0/24", "overlaps spec.networks.nodes 10.250.0.0/16"),
            ("241.0.0.0/22", "Gardener's reserved range"),
            ("192.168.128.0/33", "is not a valid CIDR"),
            ("192.168.128.0/30", "too small"),
        ] {
            let v = run(&g, &review("ManagedSeed", "CREATE", managed_seed(Some(cidr)), Value::Null));
            assert!(v.message.as_deref().unwrap_or_default().contains(want), "{cidr}: {v:?}");
        }
        let mut object = managed_seed(None);
        object["spec"]["gardenlet"]["config"]["seedConfig"]["spec"]["wireguard"] = json!({"enabled": true, "cidr": 7});
        let v = run(&g, &review("ManagedSeed", "CREATE", object, Value::Null));
        assert!(
            v.message
                .unwrap()
                .starts_with("spec.gardenlet.config.seedConfig.spec.wireguard.cidr: \"7\" is not a string")
        );
        // A disabled entry is no setting; GEP-14's field is read then.
        let mut object = managed_seed(Some("10.250.1.0/24"));
        object["spec"]["gardenlet"]["config"]["seedConfig"]["spec"]["extensions"][0]["disabled"] = json!(true);
        assert!(run(&g, &review("ManagedSeed", "CREATE", object, Value::Null)).allowed);
    }

    #[test]
    fn other_kinds_and_operations_pass_and_bad_reviews_are_errors() {
        let g = garden(Some("192.168.128.0/22"));
        let mut req = review("ManagedSeed", "DELETE", managed_seed(Some("192.168.128.0/22")), Value::Null);
        assert!(run(&g, &req).allowed);
        req.operation = "CREATE".into();
        req.kind = "Shoot".into();
        assert!(run(&g, &req).allowed);
        for (body, want) in [
            ("{", "not an AdmissionReview"),
            (r#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview"}"#, "expected apiVersion"),
            (r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#, "has no request"),
            (
                r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"","kind":{"kind":"Seed"},"operation":"CREATE"}}"#,
                "no uid",
            ),
        ] {
            assert!(decode(body.as_bytes()).unwrap_err().contains(want), "{body}");
        }
        assert!(decode(&vec![b' '; MAX_REVIEW_BYTES + 1]).unwrap_err().contains("more than"));
    }

    #[test]
    fn the_response_carries_the_uid_the_message_and_warnings() {
        let r = response("u1", &Verdict::deny("no".into()));
        assert_eq!(
            r["response"],
            json!({"uid": "u1", "allowed": false, "status": {"code": 403, "reason": "Forbidden", "message": "no"}})
        );
        let r = response("u2", &Verdict::warn("careful".into()));
        assert_eq!(r["response"], json!({"uid": "u2", "allowed": true, "warnings": ["careful"]}));
    }
}
