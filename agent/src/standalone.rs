//! `kubelink run`'s role for the [`crate::driver`]: the desired state from a file, reloaded on SIGHUP
//! and when the file changes. A file that fails to load keeps the last good state: a typo never tears
//! the tunnel down.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::config::{self, Desired};
use crate::driver::Role;
use crate::reconcile::{ReconcileError, Reconciler, report_failure};

/// How often the file's modification time is checked.
pub const POLL: Duration = Duration::from_secs(1);

pub struct Standalone {
    path: PathBuf,
    pub rec: Reconciler,
    pub desired: Desired,
    /// The file's modification time when it was last read.
    stamp: Option<SystemTime>,
}

impl Standalone {
    pub fn new(path: PathBuf, rec: Reconciler, desired: Desired) -> Self {
        let stamp = modified(&path);
        Self { path, rec, desired, stamp }
    }

    /// Takes a changed file; returns whether the desired state changed.
    fn load(&mut self) -> bool {
        match config::load(&self.path) {
            Ok(new) if new == self.desired => false,
            Ok(new) => {
                tracing::info!("{}: configuration changed", self.path.display());
                self.desired = new;
                true
            }
            Err(e) => {
                tracing::error!("keeping the previous configuration: {e}");
                false
            }
        }
    }

    /// Removes the device and routes of the current desired state, reporting every error.
    pub async fn teardown(&self) -> Result<(), Vec<String>> {
        self.rec.teardown(&self.desired).await?;
        tracing::info!(device = %self.desired.device.name, "removed device and routes");
        Ok(())
    }
}

impl Role for Standalone {
    type Error = ReconcileError;

    async fn pass(&mut self) -> Result<(), ReconcileError> {
        self.rec.pass(&self.desired).await.map(drop)
    }

    fn failed(&mut self, error: &ReconcileError, retry_in: Duration) {
        report_failure(&self.desired.device.name, error, retry_in);
    }

    fn reload(&mut self) {
        self.stamp = modified(&self.path);
        self.load();
    }

    fn poll(&mut self) -> bool {
        let now = modified(&self.path);
        if now == self.stamp {
            return false;
        }
        self.stamp = now;
        self.load()
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
