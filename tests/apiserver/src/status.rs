//! Failures as the real API server reports them: a `Status` object with `code` and `reason`.

use serde_json::{Value, json};

use super::kinds::ResourceKind;
use super::rbac::{Attributes, User};

/// A failed request, rendered as a `meta/v1` `Status`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String) -> Self {
        Self { code, reason, message, details: None }
    }

    fn with_details(mut self, kind: &ResourceKind, name: &str) -> Self {
        self.details = Some(json!({"name": name, "group": kind.group, "kind": kind.plural}));
        self
    }

    pub fn not_found(kind: &ResourceKind, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{} \"{name}\" not found", kind.qualified())).with_details(kind, name)
    }

    pub fn already_exists(kind: &ResourceKind, name: &str) -> Self {
        Self::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", kind.qualified()))
            .with_details(kind, name)
    }

    pub fn conflict(kind: &ResourceKind, name: &str) -> Self {
        let message = format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes \
             to the latest version and try again",
            kind.qualified()
        );
        Self::new(409, "Conflict", message).with_details(kind, name)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message.into())
    }

    pub fn invalid(kind: &ResourceKind, name: &str, message: impl Into<String>) -> Self {
        let message = format!("{} \"{name}\" is invalid: {}", kind.kind, message.into());
        Self::new(422, "Invalid", message).with_details(kind, name)
    }

    /// A custom resource that fails its CRD's schema: `Kind.group "name" is invalid: ...`.
    pub fn invalid_custom(kind: &ResourceKind, name: &str, message: impl Into<String>) -> Self {
        let message = format!("{}.{} \"{name}\" is invalid: {}", kind.kind, kind.group, message.into());
        Self::new(422, "Invalid", message).with_details(kind, name)
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message.into())
    }

    pub fn method_not_allowed(method: &str) -> Self {
        Self::new(405, "MethodNotAllowed", format!("the server does not allow the method {method} here"))
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format: {content_type}"),
        )
    }

    /// A patch type the resource does not take, e.g. a strategic merge patch of a custom resource.
    pub fn unsupported_patch() -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: \
             application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
                .to_string(),
        )
    }

    pub fn path_not_found(path: &str) -> Self {
        Self::new(404, "NotFound", format!("the server could not find the requested resource ({path})"))
    }

    /// An unknown or expired bearer token: the real server says no more than this.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized".to_string())
    }

    /// As `responsewriters.ForbiddenStatusError`: `details` names the group and resource (as `kind`)
    /// and the object, each left out when empty, as the real server's JSON omits empty fields.
    pub fn forbidden(user: &User, attrs: &Attributes) -> Self {
        let reason = attrs.forbidden_reason(user);
        let resource =
            if attrs.group.is_empty() { attrs.resource.clone() } else { format!("{}.{}", attrs.resource, attrs.group) };
        let message = match (resource.is_empty(), attrs.name.is_empty()) {
            (true, _) => format!("forbidden: {reason}"),
            (false, true) => format!("{resource} is forbidden: {reason}"),
            (false, false) => format!("{resource} {:?} is forbidden: {reason}", attrs.name),
        };
        let mut details = serde_json::Map::new();
        for (key, value) in [("name", &attrs.name), ("group", &attrs.group), ("kind", &attrs.resource)] {
            if !value.is_empty() {
                details.insert(key.to_string(), json!(value));
            }
        }
        Self { code: 403, reason: "Forbidden", message, details: Some(Value::Object(details)) }
    }

    /// The JSON body: `kind: Status`, `status: Failure`, `reason`, `code`.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn unauthorized_is_the_bare_status_kubernetes_sends() {
        assert_eq!(
            ApiError::unauthorized().to_status(),
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": "Unauthorized", "reason": "Unauthorized", "code": 401})
        );
    }

    #[test]
    fn forbidden_bodies_match_kubernetes() {
        let user = User::new("system:serviceaccount:kubelink:kubelink-agent", &["system:authenticated"]);
        let attrs = |method, path, query: &[(&str, &str)]| {
            let query: HashMap<String, String> = query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            Attributes::from_request(method, path, &query)
        };
        let get = ApiError::forbidden(&user, &attrs("GET", "/api/v1/namespaces/kubelink/secrets/x", &[])).to_status();
        assert_eq!(
            get,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Forbidden",
                   "code": 403, "details": {"name": "x", "kind": "secrets"},
                   "message": "secrets \"x\" is forbidden: User \"system:serviceaccount:kubelink:kubelink-agent\" \
                               cannot get resource \"secrets\" in API group \"\" in the namespace \"kubelink\""})
        );
        let list = ApiError::forbidden(&user, &attrs("GET", "/apis/coordination.k8s.io/v1/leases", &[("watch", "1")]));
        assert_eq!(
            list.message,
            "leases.coordination.k8s.io is forbidden: User \"system:serviceaccount:kubelink:kubelink-agent\" cannot \
             watch resource \"leases\" in API group \"coordination.k8s.io\" at the cluster scope"
        );
        assert_eq!(list.details, Some(json!({"group": "coordination.k8s.io", "kind": "leases"})));
        let path = ApiError::forbidden(&User::new("system:anonymous", &[]), &attrs("GET", "/apis", &[]));
        assert_eq!(path.message, "forbidden: User \"system:anonymous\" cannot get path \"/apis\"");
        assert_eq!(path.details, Some(json!({})));
    }
}
