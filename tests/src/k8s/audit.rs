//! The API server's audit log (JSON lines, `Metadata` level): who asked what, and the answer. The
//! RBAC proofs read what each component did from here, as a security review of a real seed would.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;

/// One request, as the audit log records it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    #[serde(rename = "auditID")]
    pub audit_id: String,
    pub stage: String,
    pub verb: String,
    #[serde(rename = "requestURI")]
    pub request_uri: String,
    pub user: User,
    #[serde(default)]
    pub object_ref: Option<ObjectRef>,
    #[serde(default)]
    pub response_status: Option<ResponseStatus>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct User {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    #[serde(default)]
    pub resource: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub api_group: String,
    #[serde(default)]
    pub subresource: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ResponseStatus {
    #[serde(default)]
    pub code: u16,
}

impl Event {
    /// The HTTP status answered (0 when the log has none).
    pub fn code(&self) -> u16 {
        self.response_status.as_ref().map(|s| s.code).unwrap_or(0)
    }

    /// Whether RBAC allowed it (anything but 401 and 403).
    pub fn allowed(&self) -> bool {
        !matches!(self.code(), 401 | 403)
    }
}

/// Every request in the log at `path`, once each (a watch logs when it starts and when it ends; the
/// first record counts). Lines that do not parse are skipped.
pub fn read(path: &Path) -> Vec<Event> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut seen = BTreeSet::new();
    text.lines()
        .filter_map(|line| serde_json::from_str::<Event>(line).ok())
        .filter(|e| seen.insert(e.audit_id.clone()))
        .collect()
}

/// The requests of `user` in `events`.
pub fn of<'a>(events: &'a [Event], user: &str) -> Vec<&'a Event> {
    events.iter().filter(|e| e.user.username == user).collect()
}

/// The user name of ServiceAccount `namespace/name`.
pub fn service_account(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}
