//! The extension controller's `/metrics` and readiness: reconciles by operation and result. Ready
//! unless the last reconcile failed on the API (a status that says "not ready" is the Extension's
//! business, reported to gardenlet, not the controller's health).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use kubelink_ipam::extension::controller::{Observer, Reconciled};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::health::{Health, HealthError};
use crate::metrics::Labels;

#[derive(Clone, Default)]
pub struct ExtensionMetrics {
    reconciles: Family<Labels, Counter>,
    pool_size: Gauge,
    pool_used: Gauge,
    /// Shoots given a new address (first free, or adopted from a migrated state).
    assigned: Counter,
    /// The last API error, `None` after a reconcile that reached the API.
    last_error: Arc<Mutex<Option<String>>>,
}

impl ExtensionMetrics {
    pub fn register(&self, r: &mut Registry) {
        crate::metrics::register_build_info(r, "extension");
        let help = "Extension reconciles by operation (Reconcile, Migrate, Restore, Delete) and result \
                    (succeeded, failed: reported in the status, error: an API call failed and is retried)";
        r.register("kubelink_extension_reconciles", help, self.reconciles.clone());
        let size = "Addresses the WireGuard CIDR can hand to shoots, as of the last allocation";
        r.register("kubelink_extension_pool_size_addresses", size, self.pool_size.clone());
        let used = "Addresses held by shoots, as of the last allocation";
        r.register("kubelink_extension_pool_used_addresses", used, self.pool_used.clone());
        let assigned = "Shoots given a new address (first free, or adopted from a migrated state)";
        r.register("kubelink_extension_assigned", assigned, self.assigned.clone());
    }

    /// What the controller calls after each reconcile.
    pub fn observer(&self) -> Observer {
        let me = self.clone();
        Arc::new(move |r: &Reconciled| me.record(r))
    }

    fn record(&self, r: &Reconciled) {
        let labels = vec![("operation".to_string(), r.operation.to_string()), ("result".to_string(), r.result.into())];
        self.reconciles.get_or_create(&labels).inc();
        if let Some(pool) = r.pool {
            self.pool_size.set(i64::try_from(pool.capacity).unwrap_or(i64::MAX));
            self.pool_used.set(i64::try_from(pool.used).unwrap_or(i64::MAX));
        }
        if r.assigned {
            self.assigned.inc();
        }
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = r.error.clone();
    }

    /// Serves `/healthz`, `/readyz` and `/metrics` on `addr`.
    pub async fn serve(&self, addr: SocketAddr) -> Result<SocketAddr, HealthError> {
        let mut registry = Registry::default();
        self.register(&mut registry);
        let last = self.last_error.clone();
        let ready = Arc::new(move || match &*last.lock().unwrap_or_else(|e| e.into_inner()) {
            None => Ok(()),
            Some(e) => Err(format!("the last reconcile failed on the API: {e}")),
        });
        Health { ready, registry: Arc::new(Mutex::new(registry)), status: None }.serve(addr).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubelink_ipam::extension::controller::PoolUse;

    #[test]
    fn reconciles_are_counted_and_an_api_error_is_not_ready_until_the_next_success() {
        let m = ExtensionMetrics::default();
        let observe = m.observer();
        let pool = Some(PoolUse { capacity: 1020, used: 3 });
        observe(&Reconciled { operation: "Reconcile", result: "succeeded", error: None, pool, assigned: true });
        let error = Some("connection refused".to_string());
        observe(&Reconciled { operation: "Reconcile", result: "error", error, pool: None, assigned: false });
        assert_eq!(m.last_error.lock().unwrap().as_deref(), Some("connection refused"));
        observe(&Reconciled { operation: "Migrate", result: "failed", error: None, pool: None, assigned: false });
        assert_eq!(*m.last_error.lock().unwrap(), None);
        let mut registry = Registry::default();
        m.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "kubelink_extension_reconciles_total{operation=\"Reconcile\",result=\"succeeded\"} 1",
            "kubelink_extension_reconciles_total{operation=\"Reconcile\",result=\"error\"} 1",
            "kubelink_extension_reconciles_total{operation=\"Migrate\",result=\"failed\"} 1",
            "kubelink_extension_pool_size_addresses 1020",
            "kubelink_extension_pool_used_addresses 3",
            "kubelink_extension_assigned_total 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }
}
