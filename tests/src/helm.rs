//! What the tests that run real Helm share.

use std::path::PathBuf;

/// The chart `name` under `charts/`.
pub fn chart(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts").join(name)
}

/// `true` when Helm can run; else reports the skip (or fails under CI, [`crate::skip::skip`]).
pub async fn helm_ready(test: &str) -> bool {
    match kubelink_apiserver::helm::available().await {
        Ok(()) => true,
        Err(e) => crate::skip::skip(test, &e.to_string()),
    }
}
