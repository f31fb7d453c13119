//! Metrics shared by the roles: `kubelink_build_info`, per-peer traffic read from a device (collected
//! at scrape time from the last reading, so a removed peer leaves no stale series), and the buckets of
//! pass-duration histograms. Names follow Prometheus conventions: counters end in `_total` (the
//! encoder appends it), base units (seconds, bytes), no sentinel values.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// Label pairs of one series.
pub type Labels = Vec<(String, String)>;

/// Registers `kubelink_build_info{version,role}` (always 1).
pub fn register_build_info(registry: &mut Registry, role: &str) {
    let labels = vec![("version".to_string(), env!("CARGO_PKG_VERSION").to_string()), ("role".into(), role.into())];
    registry.register("kubelink_build", "kubelink's version and the role this process runs", Info::new(labels));
}

/// A histogram of pass durations: 1 ms to about 16 s.
pub fn pass_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// One peer as last read from a device.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerSample {
    pub labels: Labels,
    /// Unix time of the last handshake; `None`: none yet (the series is absent).
    pub last_handshake: Option<f64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// Unix seconds of an event `age` ago.
pub fn unix_seconds_ago(age: Duration) -> f64 {
    let at = SystemTime::now().checked_sub(age).unwrap_or(UNIX_EPOCH);
    at.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Per-peer series of one device: `<prefix>_last_handshake_timestamp_seconds`,
/// `<prefix>_receive_bytes_total` and `<prefix>_transmit_bytes_total`.
#[derive(Debug, Clone)]
pub struct PeerTraffic {
    prefix: &'static str,
    whom: &'static str,
    samples: Arc<Mutex<Vec<PeerSample>>>,
}

impl PeerTraffic {
    /// `whom` names the peer in the help texts ("the gateway", "the shoot").
    pub fn new(prefix: &'static str, whom: &'static str) -> Self {
        Self { prefix, whom, samples: Arc::default() }
    }

    /// Replaces what the next scrape shows.
    pub fn set(&self, samples: Vec<PeerSample>) {
        *self.samples.lock().unwrap_or_else(|e| e.into_inner()) = samples;
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(self.clone()));
    }
}

/// A traffic counter: name suffix, help, and its value in a sample.
type Traffic = (&'static str, &'static str, fn(&PeerSample) -> u64);

impl Collector for PeerTraffic {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if samples.is_empty() {
            return Ok(());
        }
        let name = format!("{}_last_handshake_timestamp_seconds", self.prefix);
        let help = format!("Unix time of the last handshake with {} (absent: none yet)", self.whom);
        let mut family = encoder.encode_descriptor(&name, &help, None, MetricType::Gauge)?;
        for s in &samples {
            if let Some(at) = s.last_handshake {
                ConstGauge::new(at).encode(family.encode_family(&s.labels)?)?;
            }
        }
        let counters: [Traffic; 2] = [
            ("receive_bytes", "Bytes received from", |s| s.rx_bytes),
            ("transmit_bytes", "Bytes sent to", |s| s.tx_bytes),
        ];
        for (suffix, what, value) in counters {
            let name = format!("{}_{suffix}", self.prefix);
            let help = format!("{what} {} (since the peer was configured)", self.whom);
            let mut family = encoder.encode_descriptor(&name, &help, None, MetricType::Counter)?;
            for s in &samples {
                ConstCounter::new(value(s)).encode(family.encode_family(&s.labels)?)?;
            }
        }
        Ok(())
    }
}

/// `kubelink_gateway_packets_without_endpoint_total`: what [`crate::telemetry::NoEndpoint`] counted.
#[derive(Debug)]
pub struct PacketsWithoutEndpoint;

impl Collector for PacketsWithoutEndpoint {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let help = "Packets the userspace engine dropped: their shoot has not dialed in (hibernated or starting)";
        let name = "kubelink_gateway_packets_without_endpoint";
        let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        ConstCounter::new(crate::telemetry::packets_without_endpoint()).encode(metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    #[test]
    fn peer_series_follow_the_conventions_and_a_missing_handshake_is_absent() {
        let traffic = PeerTraffic::new("kubelink_gateway_peer", "the shoot");
        let mut registry = Registry::default();
        traffic.register(&mut registry);
        register_build_info(&mut registry, "agent");
        let labels = |shoot: &str| vec![("shoot".to_string(), shoot.to_string()), ("slot".into(), "0".into())];
        traffic.set(vec![
            PeerSample { labels: labels("garden-a/one"), last_handshake: Some(1.7e9), rx_bytes: 10, tx_bytes: 20 },
            PeerSample { labels: labels("garden-a/two"), last_handshake: None, rx_bytes: 0, tx_bytes: 0 },
        ]);
        let text = scrape(&registry);
        assert!(text.contains("# TYPE kubelink_gateway_peer_receive_bytes counter"), "{text}");
        assert!(
            text.contains("kubelink_gateway_peer_receive_bytes_total{shoot=\"garden-a/one\",slot=\"0\"} 10"),
            "{text}"
        );
        assert!(
            text.contains("kubelink_gateway_peer_transmit_bytes_total{shoot=\"garden-a/two\",slot=\"0\"} 0"),
            "{text}"
        );
        assert!(
            text.contains(
                "kubelink_gateway_peer_last_handshake_timestamp_seconds{shoot=\"garden-a/one\",slot=\"0\"} 1700000000"
            ),
            "{text}"
        );
        assert!(
            !text.contains("last_handshake_timestamp_seconds{shoot=\"garden-a/two\""),
            "no handshake, no series: {text}"
        );
        assert!(!text.contains(" -1"), "no sentinels: {text}");
        let version = env!("CARGO_PKG_VERSION");
        assert!(text.contains(&format!("kubelink_build_info{{version=\"{version}\",role=\"agent\"}} 1")), "{text}");
        // A peer that is gone leaves no series behind.
        traffic.set(vec![]);
        assert!(!scrape(&registry).contains("kubelink_gateway_peer"), "stale series after removal");
    }

    #[test]
    fn a_handshake_age_becomes_a_timestamp_in_the_past() {
        let now = unix_seconds_ago(Duration::ZERO);
        let earlier = unix_seconds_ago(Duration::from_secs(30));
        assert!((now - earlier - 30.0).abs() < 1.0, "{now} {earlier}");
    }
}
