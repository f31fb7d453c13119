//! The shoot Secret directory as the sidecar reads it: any bytes in any field. Never a panic, errors
//! stay short, and the private key never shows in an error or in the parsed config's `Debug`.
#![no_main]

use kubelink::shoot::config::{Input, Inputs, parse};
use kubelink_contract::shoot_secret;
use libfuzzer_sys::fuzz_target;

const MAX_ERROR: usize = 2048;

/// The input is the Secret's files, separated by NUL bytes, in the order of `shoot_secret::all()`
/// (an empty part is an absent file).
fn inputs(data: &[u8]) -> Inputs {
    let fields = shoot_secret::all();
    let parts = data.split(|b| *b == 0).map(String::from_utf8_lossy);
    let present = fields.into_iter().zip(parts).filter(|(_, text)| !text.is_empty());
    Inputs(
        present
            .map(|(field, text)| {
                let input = Input { origin: format!("/etc/kubelink/{field}"), text: text.into_owned() };
                (field, input)
            })
            .collect(),
    )
}

fuzz_target!(|data: &[u8]| {
    let inputs = inputs(data);
    // A key-like value (a real key is 44 characters, no spaces) must never come back; others could be
    // words of the message itself, which the fuzzer learns to write.
    let key_like = |k: &String| k.len() >= 40 && !k.contains(char::is_whitespace);
    let key = inputs.0.get(shoot_secret::PRIVATE_KEY).map(|i| i.text.trim().to_string()).filter(key_like);
    // Another field holding the same text may be quoted as that field's bad value.
    let elsewhere = |k: &String| {
        inputs.0.iter().any(|(field, i)| field != shoot_secret::PRIVATE_KEY && i.text.contains(k.as_str()))
    };
    let key = key.filter(|k| !elsewhere(k));
    let device = "kubelink0".parse().expect("a valid interface name");
    let shown = match parse(&inputs, &device) {
        Ok(config) => format!("{config:?}"),
        Err(e) => {
            let message = e.to_string();
            assert!(message.len() <= MAX_ERROR, "{} byte error", message.len());
            message
        }
    };
    if let Some(key) = key {
        assert!(!shown.contains(&key), "the private key shows: {shown}");
    }
});
