//! Authorization as Kubernetes' RBAC authorizer decides it: from the Roles, ClusterRoles and their
//! bindings stored in the server, plus the bootstrap grants every cluster has (discovery to any
//! authenticated user, `/version` and the health paths to everyone, `system:masters` to everything).

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;

use super::kinds::ResourceKind;
use super::store::{Filter, Store};

/// The caller, as authentication found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

impl User {
    pub fn new(name: &str, groups: &[&str]) -> Self {
        Self { name: name.to_string(), groups: groups.iter().map(|g| g.to_string()).collect() }
    }

    fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// A request in the authorizer's terms (Kubernetes' `RequestInfo`); an empty string means "none".
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Attributes {
    pub verb: String,
    /// `false` for a non-resource URL such as `/version` or `/apis`: only `verb` and `path` count.
    pub resource_request: bool,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    pub path: String,
}

impl Attributes {
    /// Parses a request the way the real server's `RequestInfoFactory` does, including the name a
    /// list or watch gets from a `metadata.name=` field selector.
    pub fn from_request(method: &str, path: &str, query: &HashMap<String, String>) -> Self {
        let parts: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
        let method_verb = method.to_ascii_lowercase();
        let non_resource = Self { verb: method_verb.clone(), path: path.to_string(), ..Self::default() };
        let (group, rest) = match parts.as_slice() {
            ["api", _version, rest @ ..] if !rest.is_empty() => ("", rest),
            ["apis", group, _version, rest @ ..] if !rest.is_empty() => (*group, rest),
            _ => return non_resource,
        };
        let mut info = Self { resource_request: true, group: group.to_string(), ..non_resource };
        let mut rest = rest;
        if let ["namespaces", ns, tail @ ..] = rest {
            info.namespace = ns.to_string();
            if !tail.is_empty() && !matches!(tail[0], "status" | "finalize") {
                rest = tail;
            }
        }
        info.resource = rest[0].to_string();
        info.name = rest.get(1).map_or_else(String::new, |s| s.to_string());
        info.subresource = rest.get(2).map_or_else(String::new, |s| s.to_string());
        info.verb = resource_verb(&method_verb, info.name.is_empty(), query).to_string();
        if info.name.is_empty() && matches!(info.verb.as_str(), "list" | "watch") {
            info.name = selected_name(query).unwrap_or_default();
        }
        info
    }

    /// `resource` or `resource/subresource`, as rules and messages name it.
    fn combined_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    /// The real server's wording, e.g. `User "u" cannot list resource "secrets" in API group "" at the
    /// cluster scope`.
    pub fn forbidden_reason(&self, user: &User) -> String {
        let who = &user.name;
        if !self.resource_request {
            return format!("User {who:?} cannot {} path {:?}", self.verb, self.path);
        }
        let (verb, resource, group) = (&self.verb, self.combined_resource(), &self.group);
        let scope = if self.namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace {:?}", self.namespace)
        };
        format!("User {who:?} cannot {verb} resource {resource:?} in API group {group:?} {scope}")
    }
}

fn resource_verb(method: &str, collection: bool, query: &HashMap<String, String>) -> &'static str {
    let watch = query.get("watch").is_some_and(|v| v == "true" || v == "1");
    match (method, collection) {
        ("get" | "head", false) => "get",
        ("get" | "head", true) if watch => "watch",
        ("get" | "head", true) => "list",
        ("post", _) => "create",
        ("put", _) => "update",
        ("patch", _) => "patch",
        ("delete", false) => "delete",
        ("delete", true) => "deletecollection",
        _ => "unknown",
    }
}

/// The name a field selector pins, as `fields.Selector.RequiresExactMatch("metadata.name")` finds it.
fn selected_name(query: &HashMap<String, String>) -> Option<String> {
    let selector = query.get("fieldSelector")?;
    selector.split(',').find_map(|term| {
        let term = term.trim();
        let value = term.strip_prefix("metadata.name==").or_else(|| term.strip_prefix("metadata.name="))?;
        Some(value.trim().to_string()).filter(|v| !v.is_empty())
    })
}

/// One `PolicyRule`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Rule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    #[serde(rename = "nonResourceURLs")]
    pub non_resource_urls: Vec<String>,
}

fn has(list: &[String], value: &str) -> bool {
    list.iter().any(|v| v == value || v == "*")
}

impl Rule {
    /// `rbac.RuleAllows`: verbs, then resource rules or non-resource URLs.
    pub fn allows(&self, attrs: &Attributes) -> bool {
        if !has(&self.verbs, &attrs.verb) {
            return false;
        }
        if !attrs.resource_request {
            return self.non_resource_urls.iter().any(|u| match u.strip_suffix('*') {
                Some(prefix) => attrs.path.starts_with(prefix),
                None => *u == attrs.path,
            });
        }
        has(&self.api_groups, &attrs.group)
            && self.resource_matches(attrs)
            && (self.resource_names.is_empty() || (!attrs.name.is_empty() && has(&self.resource_names, &attrs.name)))
    }

    fn resource_matches(&self, attrs: &Attributes) -> bool {
        let combined = attrs.combined_resource();
        self.resources.iter().any(|r| {
            r == "*"
                || *r == combined
                || (!attrs.subresource.is_empty() && r.strip_prefix("*/") == Some(attrs.subresource.as_str()))
        })
    }
}

/// A RoleBinding (`namespace` set) or ClusterRoleBinding.
#[derive(Debug, Clone)]
struct Binding {
    namespace: Option<String>,
    role_kind: String,
    role_name: String,
    subjects: Vec<Value>,
}

impl Binding {
    fn from_object(object: &Value, namespaced: bool) -> Option<Self> {
        let role_ref = object.get("roleRef")?;
        Some(Self {
            namespace: namespaced.then(|| name_of(object, "namespace")),
            role_kind: role_ref.get("kind")?.as_str()?.to_string(),
            role_name: role_ref.get("name")?.as_str()?.to_string(),
            subjects: object.get("subjects").and_then(Value::as_array).cloned().unwrap_or_default(),
        })
    }

    /// `appliesToUser`: a ServiceAccount subject without a namespace means the binding's own.
    fn applies_to(&self, user: &User) -> bool {
        self.subjects.iter().any(|s| {
            let field = |f: &str| s.get(f).and_then(Value::as_str).unwrap_or("");
            match field("kind") {
                "User" => field("name") == user.name,
                "Group" => user.in_group(field("name")),
                "ServiceAccount" => {
                    let ns = Some(field("namespace")).filter(|n| !n.is_empty()).or(self.namespace.as_deref());
                    ns.is_some_and(|ns| user.name == format!("system:serviceaccount:{ns}:{}", field("name")))
                }
                _ => false,
            }
        })
    }

    /// A RoleBinding grants only within its namespace, and never non-resource URLs.
    fn in_scope(&self, attrs: &Attributes) -> bool {
        self.namespace.as_deref().is_none_or(|ns| attrs.resource_request && attrs.namespace == ns)
    }
}

/// A snapshot of the RBAC objects.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    roles: HashMap<(String, String), Vec<Rule>>,
    cluster_roles: HashMap<String, Vec<Rule>>,
    bindings: Vec<Binding>,
}

fn rules_of(role: &Value) -> Vec<Rule> {
    let rules = role.get("rules").and_then(Value::as_array).cloned().unwrap_or_default();
    // The real server validates rules on write; this one skips what does not parse.
    rules.into_iter().filter_map(|r| serde_json::from_value(r).ok()).collect()
}

fn name_of(object: &Value, field: &str) -> String {
    object.pointer(&format!("/metadata/{field}")).and_then(Value::as_str).unwrap_or("").to_string()
}

impl Policy {
    /// Builds a policy from Role, ClusterRole, RoleBinding and ClusterRoleBinding objects (any order).
    pub fn from_objects<'a>(objects: impl IntoIterator<Item = &'a Value>) -> Self {
        let mut policy = Self::default();
        for object in objects {
            match object.get("kind").and_then(Value::as_str) {
                Some("Role") => {
                    let key = (name_of(object, "namespace"), name_of(object, "name"));
                    policy.roles.insert(key, rules_of(object));
                }
                Some("ClusterRole") => _ = policy.cluster_roles.insert(name_of(object, "name"), rules_of(object)),
                Some("RoleBinding") => policy.bindings.extend(Binding::from_object(object, true)),
                Some("ClusterRoleBinding") => policy.bindings.extend(Binding::from_object(object, false)),
                _ => {}
            }
        }
        policy
    }

    /// The RBAC objects currently stored.
    pub fn from_store(store: &Store) -> Self {
        let kinds = ["roles", "clusterroles", "rolebindings", "clusterrolebindings"];
        let objects: Vec<Value> = kinds
            .iter()
            .filter_map(|plural| ResourceKind::find("rbac.authorization.k8s.io", "v1", plural))
            .flat_map(|kind| store.list(kind, &Filter::default()).0)
            .collect();
        Self::from_objects(&objects)
    }

    fn rules(&self, binding: &Binding) -> &[Rule] {
        let rules = match (binding.role_kind.as_str(), &binding.namespace) {
            ("ClusterRole", _) => self.cluster_roles.get(&binding.role_name),
            ("Role", Some(ns)) => self.roles.get(&(ns.clone(), binding.role_name.clone())),
            _ => None,
        };
        rules.map_or(&[], Vec::as_slice)
    }

    /// Whether `user` may do `attrs`.
    pub fn allows(&self, user: &User, attrs: &Attributes) -> bool {
        user.in_group("system:masters")
            || bootstrap_allows(user, attrs)
            || self
                .bindings
                .iter()
                .any(|b| b.in_scope(attrs) && b.applies_to(user) && self.rules(b).iter().any(|r| r.allows(attrs)))
    }
}

/// `system:discovery` (bound to `system:authenticated`) and `system:public-info-viewer` (bound to
/// everyone), as the real server bootstraps them.
fn bootstrap_allows(user: &User, attrs: &Attributes) -> bool {
    const PUBLIC: &[&str] = &["/healthz", "/livez", "/readyz", "/version", "/version/"];
    const DISCOVERY: &[&str] = &["/api", "/api/*", "/apis", "/apis/*", "/openapi", "/openapi/*"];
    if attrs.resource_request || attrs.verb != "get" {
        return false;
    }
    let matches = |urls: &[&str]| {
        urls.iter().any(|u| u.strip_suffix('*').map_or(*u == attrs.path, |p| attrs.path.starts_with(p)))
    };
    matches(PUBLIC) || (user.in_group("system:authenticated") && (matches(DISCOVERY)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SA: &str = "system:serviceaccount:kubelink:agent";

    fn agent() -> User {
        User::new(SA, &["system:serviceaccounts", "system:serviceaccounts:kubelink", "system:authenticated"])
    }

    fn request(method: &str, path: &str, query: &[(&str, &str)]) -> Attributes {
        let query = query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Attributes::from_request(method, path, &query)
    }

    fn role(kind: &str, ns: &str, name: &str, rules: Value) -> Value {
        json!({"kind": kind, "metadata": {"name": name, "namespace": ns}, "rules": rules})
    }

    fn binding(kind: &str, ns: &str, role_kind: &str, role: &str, subject: Value) -> Value {
        json!({"kind": kind, "metadata": {"name": "b", "namespace": ns},
               "roleRef": {"kind": role_kind, "name": role}, "subjects": [subject]})
    }

    fn sa_subject() -> Value {
        json!({"kind": "ServiceAccount", "name": "agent", "namespace": "kubelink"})
    }

    #[test]
    fn requests_parse_like_the_real_request_info() {
        let a = request("GET", "/api/v1/namespaces/kubelink/secrets", &[("fieldSelector", "metadata.name=s1")]);
        assert_eq!((a.verb.as_str(), a.namespace.as_str(), a.name.as_str()), ("list", "kubelink", "s1"));
        let a = request("GET", "/apis/coordination.k8s.io/v1/leases", &[("watch", "1")]);
        assert_eq!((a.verb.as_str(), a.group.as_str(), a.namespace.as_str()), ("watch", "coordination.k8s.io", ""));
        let a = request("POST", "/api/v1/namespaces/kubelink/serviceaccounts/agent/token", &[]);
        assert_eq!((a.verb.as_str(), a.name.as_str(), a.subresource.as_str()), ("create", "agent", "token"));
        let a = request("GET", "/api/v1/namespaces/kubelink", &[]);
        assert_eq!(
            (a.resource.as_str(), a.namespace.as_str(), a.name.as_str()),
            ("namespaces", "kubelink", "kubelink")
        );
        let a = request("DELETE", "/api/v1/namespaces/kubelink/pods", &[]);
        assert_eq!(a.verb, "deletecollection");
        for path in ["/api", "/api/v1", "/apis/apps/v1", "/version", "/openapi/v3/api/v1"] {
            assert!(!request("GET", path, &[]).resource_request, "{path}");
        }
    }

    /// Each row: why, the request, the objects, allowed?
    #[test]
    fn rbac_rules_match_as_in_kubernetes() {
        let secrets_get = json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]}]);
        let named = json!([{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["s1"], "verbs": ["*"]}]);
        let rb = |role_kind: &str, role: &str| binding("RoleBinding", "kubelink", role_kind, role, sa_subject());
        let secrets_ns = "/api/v1/namespaces/kubelink/secrets";
        let rows: Vec<(&str, Attributes, Vec<Value>, bool)> = vec![
            (
                "a Role bound in its namespace grants get",
                request("GET", &format!("{secrets_ns}/s1"), &[]),
                vec![role("Role", "kubelink", "r", secrets_get.clone()), rb("Role", "r")],
                true,
            ),
            (
                "no binding, no access",
                request("GET", &format!("{secrets_ns}/s1"), &[]),
                vec![role("Role", "kubelink", "r", secrets_get.clone())],
                false,
            ),
            (
                "a RoleBinding grants nothing in another namespace",
                request("GET", "/api/v1/namespaces/other/secrets/s1", &[]),
                vec![role("Role", "kubelink", "r", secrets_get.clone()), rb("Role", "r")],
                false,
            ),
            (
                "a RoleBinding to a ClusterRole is namespaced: no cluster-wide list",
                request("GET", "/api/v1/secrets", &[]),
                vec![role("ClusterRole", "", "cr", secrets_get.clone()), rb("ClusterRole", "cr")],
                false,
            ),
            (
                "a RoleBinding to a ClusterRole grants it in the binding's namespace",
                request("GET", secrets_ns, &[]),
                vec![role("ClusterRole", "", "cr", secrets_get.clone()), rb("ClusterRole", "cr")],
                true,
            ),
            (
                "a ClusterRoleBinding grants everywhere",
                request("GET", "/api/v1/secrets", &[("watch", "true")]),
                vec![
                    role("ClusterRole", "", "cr", secrets_get.clone()),
                    binding("ClusterRoleBinding", "", "ClusterRole", "cr", sa_subject()),
                ],
                true,
            ),
            (
                "resourceNames never match a create (no name yet)",
                request("POST", secrets_ns, &[]),
                vec![role("Role", "kubelink", "r", named.clone()), rb("Role", "r")],
                false,
            ),
            (
                "resourceNames never match a list without a name",
                request("GET", secrets_ns, &[]),
                vec![role("Role", "kubelink", "r", named.clone()), rb("Role", "r")],
                false,
            ),
            (
                "a list with a metadata.name field selector is authorized as that name",
                request("GET", secrets_ns, &[("fieldSelector", "metadata.name=s1"), ("watch", "1")]),
                vec![role("Role", "kubelink", "r", named.clone()), rb("Role", "r")],
                true,
            ),
            (
                "resourceNames allow the named object",
                request("PATCH", &format!("{secrets_ns}/s1"), &[]),
                vec![role("Role", "kubelink", "r", named.clone()), rb("Role", "r")],
                true,
            ),
            (
                "resourceNames deny other names",
                request("PATCH", &format!("{secrets_ns}/s2"), &[]),
                vec![role("Role", "kubelink", "r", named), rb("Role", "r")],
                false,
            ),
            (
                "a subresource needs resource/subresource",
                request("PATCH", "/api/v1/namespaces/kubelink/pods/p/status", &[]),
                vec![
                    role("Role", "kubelink", "r", json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]}])),
                    rb("Role", "r"),
                ],
                false,
            ),
            (
                "resource/subresource grants the subresource",
                request("POST", "/api/v1/namespaces/kubelink/serviceaccounts/agent/token", &[]),
                vec![
                    role(
                        "Role",
                        "kubelink",
                        "r",
                        json!([{"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]}]),
                    ),
                    rb("Role", "r"),
                ],
                true,
            ),
            (
                "a group subject matches the ServiceAccount's groups",
                request("GET", &format!("{secrets_ns}/s1"), &[]),
                vec![
                    role("Role", "kubelink", "r", secrets_get.clone()),
                    binding(
                        "RoleBinding",
                        "kubelink",
                        "Role",
                        "r",
                        json!({"kind": "Group", "name": "system:serviceaccounts:kubelink"}),
                    ),
                ],
                true,
            ),
            (
                "a wildcard verb grants delete",
                request("DELETE", "/apis/coordination.k8s.io/v1/namespaces/kubelink/leases/l", &[]),
                vec![
                    role(
                        "Role",
                        "kubelink",
                        "r",
                        json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["*"]}]),
                    ),
                    rb("Role", "r"),
                ],
                true,
            ),
            (
                "the API group must match",
                request("GET", "/apis/coordination.k8s.io/v1/namespaces/kubelink/leases/l", &[]),
                vec![
                    role(
                        "Role",
                        "kubelink",
                        "r",
                        json!([{"apiGroups": [""], "resources": ["leases"], "verbs": ["*"]}]),
                    ),
                    rb("Role", "r"),
                ],
                false,
            ),
            (
                "a binding to a missing role grants nothing",
                request("GET", &format!("{secrets_ns}/s1"), &[]),
                vec![rb("Role", "gone")],
                false,
            ),
            ("discovery is open to any authenticated user", request("GET", "/apis", &[]), vec![], true),
            ("but writes to discovery paths are not", request("POST", "/apis", &[]), vec![], false),
        ];
        for (why, attrs, objects, want) in rows {
            assert_eq!(Policy::from_objects(&objects).allows(&agent(), &attrs), want, "{why}: {attrs:?}");
        }
    }

    #[test]
    fn masters_and_anonymous_get_the_bootstrap_grants() {
        let policy = Policy::default();
        let admin = User::new("system:admin", &["system:masters", "system:authenticated"]);
        let anonymous = User::new("system:anonymous", &["system:unauthenticated"]);
        let secrets = request("DELETE", "/api/v1/namespaces/x/secrets/s", &[]);
        assert!(policy.allows(&admin, &secrets));
        assert!(!policy.allows(&anonymous, &secrets));
        assert!(policy.allows(&anonymous, &request("GET", "/version", &[])));
        assert!(!policy.allows(&anonymous, &request("GET", "/apis", &[])), "discovery needs authentication");
    }

    #[test]
    fn forbidden_messages_use_the_real_wording() {
        let user = agent();
        let get = request("GET", "/api/v1/namespaces/kubelink/secrets/x", &[]);
        assert_eq!(
            get.forbidden_reason(&user),
            format!("User \"{SA}\" cannot get resource \"secrets\" in API group \"\" in the namespace \"kubelink\"")
        );
        let list = request("GET", "/api/v1/secrets", &[]);
        assert_eq!(
            list.forbidden_reason(&user),
            format!("User \"{SA}\" cannot list resource \"secrets\" in API group \"\" at the cluster scope")
        );
        let status = request("PUT", "/apis/core.gardener.cloud/v1beta1/seeds/s/status", &[]);
        assert_eq!(
            status.forbidden_reason(&user),
            format!(
                "User \"{SA}\" cannot update resource \"seeds/status\" in API group \"core.gardener.cloud\" at the \
                 cluster scope"
            )
        );
    }
}
