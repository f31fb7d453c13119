//! What the tests that run real Helm share.

use std::path::PathBuf;

/// The chart `name` under `charts/`.
pub fn chart(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts").join(name)
}

/// `true` when Helm can run; else prints SKIPPED (or panics with `CI=true`).
pub async fn helm_ready(test: &str) -> bool {
    match kubelink_apiserver::helm::available().await {
        Ok(()) => true,
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => panic!("{test}: {e}"),
        Err(e) => {
            println!("SKIPPED {test}: {e}");
            false
        }
    }
}
