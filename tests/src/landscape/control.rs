//! The landscape's control plane alone: the embedded seed API server (on the given address) and the
//! garden API server (on a loopback port of its own) with the Seed and its Shoots, and the IPAM
//! controller, plus each shoot's Secret copied into `DIR/<shoot>/` as a kubelet mounts it. Agents and sidecars are started by hand against it (the kernel scenario under qemu
//! does, where network namespaces of the full landscape would cost too much).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use kubelink_apiserver::fixtures;

use super::seed::{CIDR, SEED, shoot_secret_files, spawn_ipam, write_files};

/// A running control plane; dropping it stops the API server.
pub struct ControlPlane {
    /// The seed's API server: what agents talk to.
    pub server: kubelink_apiserver::ApiServer,
    pub garden: kubelink_apiserver::ApiServer,
    controller: tokio::task::JoinHandle<()>,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.controller.abort();
    }
}

impl ControlPlane {
    /// Serves the API on `listen`, creates the Seed (CIDR [`CIDR`]) and `shoots` Shoots, and starts
    /// the IPAM controller for `slots` gateway slots with its gateway objects in [`super::seed::AGENT_NS`].
    pub async fn start(listen: SocketAddr, shoots: usize, slots: u8) -> Result<Self, String> {
        let server = kubelink_apiserver::serve(listen).await.map_err(|e| format!("serving on {listen}: {e}"))?;
        let garden = kubelink_apiserver::start().await;
        let client = garden.client();
        fixtures::create_seed(&client, &fixtures::seed(SEED, CIDR)).await.map_err(|e| e.to_string())?;
        fixtures::create_shoots(&client, SEED, 0..shoots).await.map_err(|e| e.to_string())?;
        let controller = spawn_ipam(client, server.client(), slots);
        Ok(ControlPlane { server, garden, controller })
    }

    /// Copies every shoot's Secret into `dir/<shoot>/` (changed files only).
    pub async fn write_secrets(&self, dir: &Path, shoots: usize) {
        let client = self.server.client();
        for name in (0..shoots).map(fixtures::shoot_name) {
            let Some(files) = shoot_secret_files(&client, &name).await else { continue };
            if let Err(e) = write_files(&dir.join(&name), &files) {
                eprintln!("{name}: {e}");
            }
        }
    }

    /// Writes the Secrets every 500 ms until Ctrl-C or SIGTERM.
    pub async fn run(&self, dir: &Path, shoots: usize) -> std::io::Result<()> {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            self.write_secrets(dir, shoots).await;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok(()),
                _ = term.recv() => return Ok(()),
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }
}
