//! `kubelink run`'s config file: never a panic, and an error quotes at most a short excerpt.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// Longest error any input may produce (the path and field names included).
const MAX_ERROR: usize = 2048;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = kubelink::config::parse(text, std::path::Path::new("kubelink.yaml")) {
        let message = e.to_string();
        assert!(message.len() <= MAX_ERROR, "{} byte error for {} byte input", message.len(), text.len());
    }
});
