//! The slot key a holder reads from its slot Secret, again every [`RECHECK`]: a rotated key (the
//! Secret deleted, the extension controller writing a new one) reaches the device without a restart.
//! The holder writes nothing there: what shoots dial (the endpoint) and the public key they trust
//! are the extension controller's alone.

use std::time::{Duration, Instant};

use kubelink_contract::Slot;
use kubelink_contract::keys::PrivateKey;

/// How often a holder reads its slot Secret again.
pub const RECHECK: Duration = Duration::from_secs(15);
/// How long such a re-read may take before the key in use is kept until the next one.
pub const RECHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The slot this node holds and its key.
/// `Debug` shows the key as its redacted form ([`PrivateKey`]'s own).
#[derive(Clone, Debug)]
pub struct HeldSlot {
    pub slot: Slot,
    pub key: PrivateKey,
    pub checked: Instant,
}

impl HeldSlot {
    /// Whether `slot`'s key can be used as read, without asking the API server.
    pub fn fresh_for(&self, slot: Slot, now: Instant) -> bool {
        self.slot == slot && now.saturating_duration_since(self.checked) < RECHECK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_key_is_read_again_after_the_recheck_period_or_for_another_slot() {
        let now = Instant::now();
        let held = HeldSlot { slot: Slot::ALL[0], key: PrivateKey::generate(), checked: now };
        assert!(held.fresh_for(Slot::ALL[0], now + RECHECK / 2));
        assert!(!held.fresh_for(Slot::ALL[0], now + RECHECK));
        assert!(!held.fresh_for(Slot::ALL[1], now));
    }
}
