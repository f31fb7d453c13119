//! The resource table: which group/version/plural the test server serves, as which kind.
//!
//! Everything else in the server is generic over this table, so a new kind is one row.

/// One served resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceKind {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    /// Has a `status` subresource: writes to the main resource keep the stored status, `/status`
    /// writes change only the status, and `metadata.generation` counts spec changes.
    pub status: bool,
}

const fn kind(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    status: bool,
) -> ResourceKind {
    ResourceKind { group, version, plural, kind, namespaced, status }
}

/// Every resource the server knows.
pub const KINDS: &[ResourceKind] = &[
    kind("", "v1", "namespaces", "Namespace", false, true),
    kind("", "v1", "nodes", "Node", false, true),
    kind("", "v1", "pods", "Pod", true, true),
    kind("", "v1", "services", "Service", true, true),
    kind("", "v1", "secrets", "Secret", true, false),
    kind("", "v1", "configmaps", "ConfigMap", true, false),
    kind("", "v1", "serviceaccounts", "ServiceAccount", true, false),
    kind("", "v1", "events", "Event", true, false),
    kind("events.k8s.io", "v1", "events", "Event", true, false),
    kind("coordination.k8s.io", "v1", "leases", "Lease", true, false),
    kind("rbac.authorization.k8s.io", "v1", "roles", "Role", true, false),
    kind("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", true, false),
    kind("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", false, false),
    kind("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", false, false),
    kind("apps", "v1", "daemonsets", "DaemonSet", true, true),
    kind("apps", "v1", "deployments", "Deployment", true, true),
    kind("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", false, true),
    kind("resources.gardener.cloud", "v1alpha1", "managedresources", "ManagedResource", true, true),
    kind("kubelink.gardener.cloud", "v1alpha1", "seedtunnels", "SeedTunnel", true, false),
    kind("kubelink.gardener.cloud", "v1alpha1", "shootpeers", "ShootPeer", true, false),
    kind("core.gardener.cloud", "v1beta1", "seeds", "Seed", false, true),
    kind("core.gardener.cloud", "v1beta1", "shoots", "Shoot", true, true),
    kind("core.gardener.cloud", "v1beta1", "shootstates", "ShootState", true, false),
    // prometheus-operator's, as on a seed that runs it (the chart's optional PodMonitor).
    kind("monitoring.coreos.com", "v1", "podmonitors", "PodMonitor", true, false),
];

impl ResourceKind {
    /// `v1` for the core group, `group/version` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_string() } else { format!("{}/{}", self.group, self.version) }
    }

    /// `plural` or `plural.group`, as the real server names resources in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() { self.plural.to_string() } else { format!("{}.{}", self.plural, self.group) }
    }

    /// Served by a CustomResourceDefinition on a real cluster: no strategic merge patch.
    pub fn is_custom(&self) -> bool {
        matches!(self.group, "kubelink.gardener.cloud" | "resources.gardener.cloud")
    }

    pub fn find(group: &str, version: &str, plural: &str) -> Option<usize> {
        KINDS.iter().position(|k| k.group == group && k.version == version && k.plural == plural)
    }
}
