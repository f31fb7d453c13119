//! A TCP forwarder from the test process's loopback to an API server that runs inside a network
//! namespace: the landscapes' nodes reach the server on its own address in their network, and the
//! test's own clients (which live in the host's namespace) reach it through this. It runs on a thread
//! of its own that has entered the target namespace, so every connection it opens is made there,
//! and it outlives the tests' runtimes.

use std::fs::File;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::Path;

/// A running forwarder; dropping it stops accepting (open connections end with their peers).
#[derive(Debug)]
pub struct Forwarder {
    pub local: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Forwarder {
    /// Listens on a free port of 127.0.0.1 here and forwards each connection to `target` as seen from
    /// the namespace at `netns` (a path under `/run/netns`).
    pub fn start(netns: &Path, target: SocketAddr) -> Result<Self, String> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let ns = File::open(netns).map_err(|e| format!("{}: {e}", netns.display()))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready) = std::sync::mpsc::channel::<Result<(), String>>();
        std::thread::Builder::new()
            .name("k8s-forward".into())
            .spawn(move || {
                // SAFETY: setns on a valid namespace fd; only this thread changes namespace.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    let _ = ready_tx.send(Err(format!("setns: {}", std::io::Error::last_os_error())));
                    return;
                }
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(r) => r,
                    Err(e) => return drop(ready_tx.send(Err(e.to_string()))),
                };
                let _ = ready_tx.send(Ok(()));
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
                    tokio::select! {
                        _ = accept_loop(listener, target) => {}
                        _ = stopped => {}
                    }
                });
            })
            .map_err(|e| e.to_string())?;
        ready.recv().map_err(|e| e.to_string())??;
        Ok(Self { local, stop: Some(stop) })
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, target: SocketAddr) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else { continue };
        tokio::spawn(async move {
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
