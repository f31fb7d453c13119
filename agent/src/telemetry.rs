//! Logging setup.

use std::sync::atomic::{AtomicU64, Ordering};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// Text or JSON logs on stderr, filtered by `filter` (falls back to `info` when it does not parse).
pub fn init_logging(filter: &str, json: bool) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("kubelink: ignoring log filter {filter:?} ({e}); using info");
        EnvFilter::new("info")
    });
    use std::io::IsTerminal;
    let fmt = tracing_subscriber::fmt::layer().with_ansi(std::io::stderr().is_terminal()).with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(NoEndpoint).with(filter);
    if json {
        registry.with(fmt.json()).init();
    } else {
        registry.with(fmt).init();
    }
}

/// Packets the userspace WireGuard engine dropped because their peer has no endpoint yet.
static NO_ENDPOINT: AtomicU64 = AtomicU64::new(0);

/// How many "No endpoint" events [`NoEndpoint`] has counted instead of logging.
pub fn packets_without_endpoint() -> u64 {
    NO_ENDPOINT.load(Ordering::Relaxed)
}

/// gotatun logs `error!("No endpoint")` for every packet routed to a peer that has not dialed in: on a
/// gateway, every packet towards a hibernated shoot. Expected there, and one log line per packet, so
/// this layer drops that one event and counts it (`kubelink_gateway_packets_without_endpoint_total`).
pub struct NoEndpoint;

impl<S: Subscriber> Layer<S> for NoEndpoint {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() != Level::ERROR || !meta.target().starts_with("gotatun") {
            return true;
        }
        let mut message = MessageIs { want: "No endpoint", matched: false };
        event.record(&mut message);
        if message.matched {
            NO_ENDPOINT.fetch_add(1, Ordering::Relaxed);
        }
        !message.matched
    }
}

struct MessageIs {
    want: &'static str,
    matched: bool,
}

impl Visit for MessageIs {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.matched = format!("{value:?}") == self.want;
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.matched = value == self.want;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Collects the messages of the events that reach it.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<String>>>);

    impl<S: Subscriber> Layer<S> for Seen {
        fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
            struct Message(String);
            impl Visit for Message {
                fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
                    if f.name() == "message" {
                        self.0 = format!("{}: {v:?}", "msg");
                    }
                }
            }
            let mut m = Message(String::new());
            event.record(&mut m);
            self.0.lock().unwrap().push(format!("{} {} {}", event.metadata().level(), event.metadata().target(), m.0));
        }
    }

    #[test]
    fn only_gotatuns_per_packet_no_endpoint_error_is_dropped_and_counted() {
        let seen = Seen::default();
        let subscriber = tracing_subscriber::registry().with(NoEndpoint).with(seen.clone());
        let before = packets_without_endpoint();
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..3 {
                tracing::error!(target: "gotatun::device", "No endpoint");
            }
            tracing::error!(target: "gotatun::device", "Failed to send packet");
            tracing::warn!(target: "gotatun::device", "No endpoint");
            tracing::error!(target: "kubelink::agent", "No endpoint");
        });
        let seen = seen.0.lock().unwrap().clone();
        assert_eq!(
            seen,
            [
                "ERROR gotatun::device msg: Failed to send packet",
                "WARN gotatun::device msg: No endpoint",
                "ERROR kubelink::agent msg: No endpoint"
            ]
        );
        // Only subscribers built with this layer count, and this test's is the only one.
        assert_eq!(packets_without_endpoint() - before, 3);
    }
}
