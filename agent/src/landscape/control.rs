//! The landscape's control plane alone: the embedded Kubernetes API test server with the Seed and its
//! Shoots, and the IPAM controller, plus each shoot's Secret copied into `DIR/<shoot>/` as a kubelet
//! mounts it. Agents and sidecars are started by hand against it (the kernel scenario under qemu
//! does, where network namespaces of the full landscape would cost too much).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kubelink_apiserver::fixtures;
use kubelink_ipam::controller::{Config, Controller};

use super::seed::{AGENT_NS, CIDR, SEED, secret_files, write_files};

/// A running control plane; dropping it stops the API server.
pub struct ControlPlane {
    pub server: kubelink_apiserver::ApiServer,
    controller: tokio::task::JoinHandle<()>,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.controller.abort();
    }
}

impl ControlPlane {
    /// Serves the API on `listen`, creates the Seed (CIDR [`CIDR`]) and `shoots` Shoots, and starts
    /// the IPAM controller for `slots` gateway slots with its gateway objects in [`AGENT_NS`].
    pub async fn start(listen: SocketAddr, shoots: usize, slots: u8) -> Result<Self, String> {
        let server = kubelink_apiserver::serve(listen).await.map_err(|e| format!("serving on {listen}: {e}"))?;
        let client = server.client();
        fixtures::create_seed(&client, &fixtures::seed(SEED, CIDR)).await.map_err(|e| e.to_string())?;
        fixtures::create_shoots(&client, SEED, 0..shoots).await.map_err(|e| e.to_string())?;
        let mut cfg = Config::new(SEED);
        cfg.gateway_namespace = AGENT_NS.into();
        cfg.slots = slots;
        let ipam = Controller::new(client.clone(), client, cfg);
        let controller = tokio::spawn(async move {
            if let Err(e) = ipam.run().await {
                eprintln!("ipam controller stopped: {e}");
            }
        });
        Ok(ControlPlane { server, controller })
    }

    /// Copies every shoot's Secret into `dir/<shoot>/` (changed files only); returns how many
    /// shoots have one.
    pub async fn write_secrets(&self, dir: &Path, shoots: usize) -> usize {
        let mut written = 0;
        for i in 0..shoots {
            let name = fixtures::shoot_name(i);
            let ns = format!("shoot--{}--{name}", fixtures::PROJECT_NS.trim_start_matches("garden-"));
            let secrets: Api<Secret> = Api::namespaced(self.server.client(), &ns);
            let Ok(Some(secret)) = secrets.get_opt(kubelink_ipam::secret::SHOOT_SECRET_NAME).await else { continue };
            match write_files(&dir.join(&name), &secret_files(&secret)) {
                Ok(()) => written += 1,
                Err(e) => eprintln!("{name}: {e}"),
            }
        }
        written
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
