//! The IPAM controller's `/metrics` and readiness: the pool (size, used, free), allocation outcomes,
//! and passes (result, duration). Ready once a pass has completed and the last one did.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kubelink_ipam::alloc::Pool;
use kubelink_ipam::controller::PassReport;
use kubelink_ipam::store::StoreError;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::health::{Health, HealthError};
use crate::metrics::Labels;

#[derive(Clone)]
pub struct IpamMetrics {
    pool_size: Gauge,
    pool_used: Gauge,
    pool_free: Gauge,
    /// Shoots without an address because the pool is exhausted, after the last pass.
    waiting: Gauge,
    /// 1 while the Seed's WireGuard configuration is usable.
    seed_config_valid: Gauge,
    allocations: Family<Labels, Counter>,
    passes: Family<Labels, Counter>,
    pass_duration: Histogram,
    /// Why the last pass failed; `None` after a good one. Empty until the first pass.
    last: Arc<Mutex<Option<Result<(), String>>>>,
}

impl Default for IpamMetrics {
    fn default() -> Self {
        Self {
            pool_size: Gauge::default(),
            pool_used: Gauge::default(),
            pool_free: Gauge::default(),
            waiting: Gauge::default(),
            seed_config_valid: Gauge::default(),
            allocations: Family::default(),
            passes: Family::default(),
            pass_duration: crate::metrics::pass_histogram(),
            last: Arc::default(),
        }
    }
}

fn label(key: &str, value: &str) -> Labels {
    vec![(key.to_string(), value.to_string())]
}

/// A count as a gauge value (pools beyond i64 are IPv6 ranges: shown as i64::MAX).
fn count(n: u128) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl IpamMetrics {
    pub fn register(&self, r: &mut Registry) {
        crate::metrics::register_build_info(r, "ipam");
        r.register(
            "kubelink_ipam_pool_size_addresses",
            "Addresses the CIDR can hand to shoots",
            self.pool_size.clone(),
        );
        r.register("kubelink_ipam_pool_used_addresses", "Addresses held by shoots", self.pool_used.clone());
        r.register("kubelink_ipam_pool_free_addresses", "Addresses left to hand out", self.pool_free.clone());
        r.register(
            "kubelink_ipam_shoots_waiting",
            "Shoots without an address: the pool is exhausted",
            self.waiting.clone(),
        );
        let valid = "1 while the Seed's WireGuard configuration is usable";
        r.register("kubelink_ipam_seed_config_valid", valid, self.seed_config_valid.clone());
        let allocations =
            "Allocation outcomes by outcome: assigned, released, exhausted (a shoot waited a pass), rejected";
        r.register("kubelink_ipam_allocations", allocations, self.allocations.clone());
        r.register("kubelink_ipam_passes", "IPAM passes by result", self.passes.clone());
        r.register_with_unit(
            "kubelink_ipam_pass_duration",
            "Duration of IPAM passes",
            Unit::Seconds,
            self.pass_duration.clone(),
        );
    }

    /// Serves `/healthz`, `/readyz` and `/metrics` on `addr`.
    pub async fn serve(&self, addr: SocketAddr) -> Result<SocketAddr, HealthError> {
        let mut registry = Registry::default();
        self.register(&mut registry);
        let last = self.last.clone();
        let ready = Arc::new(move || match &*last.lock().unwrap_or_else(|e| e.into_inner()) {
            None => Err("no pass has completed yet".to_string()),
            Some(result) => result.clone(),
        });
        Health { ready, registry: Arc::new(Mutex::new(registry)), status: None }.serve(addr).await
    }

    /// Counts one pass.
    pub fn record(&self, result: &Result<PassReport, StoreError>, took: Duration) {
        let outcome = if result.is_ok() { "ok" } else { "failed" };
        self.passes.get_or_create(&label("result", outcome)).inc();
        self.pass_duration.observe(took.as_secs_f64());
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(result.as_ref().map(|_| ()).map_err(|e| format!("the last pass failed: {e}")));
        if let Ok(report) = result {
            self.report(report);
        }
    }

    fn report(&self, r: &PassReport) {
        let outcomes = [
            ("assigned", r.assigned.len()),
            ("released", r.released.len()),
            ("exhausted", r.exhausted.len()),
            ("rejected", r.rejected.len()),
        ];
        for (outcome, n) in outcomes {
            // Created at zero too: an alert on `increase(...)` needs the series before the first event.
            self.allocations.get_or_create(&label("outcome", outcome)).inc_by(n as u64);
        }
        self.seed_config_valid.set(r.seed_error.is_none() as i64);
        self.waiting.set(r.exhausted.len() as i64);
        let Some(cidr) = r.cidr else { return };
        let size = Pool::new(cidr).capacity();
        let used = r.table.len() as u128;
        self.pool_size.set(count(size));
        self.pool_used.set(count(used));
        self.pool_free.set(count(size.saturating_sub(used)));
    }
}

#[cfg(test)]
mod tests {
    use kubelink_ipam::gardener::ShootKey;
    use kubelink_ipam::table::Table;

    use super::*;

    fn scrape(m: &IpamMetrics) -> String {
        let mut registry = Registry::default();
        m.register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn a_pass_sets_the_pool_and_counts_the_outcomes() {
        let m = IpamMetrics::default();
        let (table, _) = Table::parse(r#"{"garden-p/a": "192.168.128.3", "garden-p/b": "192.168.128.4"}"#);
        assert_eq!(table.len(), 2, "fixture table");
        let report = PassReport {
            cidr: Some("192.168.128.0/29".parse().unwrap()),
            table,
            assigned: vec![(ShootKey::new("garden-p", "b"), "192.168.128.4".parse().unwrap())],
            exhausted: vec![ShootKey::new("garden-p", "c")],
            ..Default::default()
        };
        m.record(&Ok(report), Duration::from_millis(20));
        let text = scrape(&m);
        // /29: 8 addresses minus network, two slots and broadcast.
        for line in [
            "kubelink_ipam_pool_size_addresses 4",
            "kubelink_ipam_pool_used_addresses 2",
            "kubelink_ipam_pool_free_addresses 2",
            "kubelink_ipam_shoots_waiting 1",
            "kubelink_ipam_seed_config_valid 1",
            "kubelink_ipam_allocations_total{outcome=\"assigned\"} 1",
            "kubelink_ipam_allocations_total{outcome=\"released\"} 0",
            "kubelink_ipam_allocations_total{outcome=\"exhausted\"} 1",
            "kubelink_ipam_passes_total{result=\"ok\"} 1",
            "kubelink_ipam_pass_duration_seconds_count 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }
}
