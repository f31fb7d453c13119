//! A TCP forwarder from the test process's loopback to an API server: into a network namespace
//! (the landscapes' nodes reach the server on its own address in their network, and the test's own
//! clients, which live in the host's namespace, reach it through this), or on the loopback to count
//! the bytes one client receives ([`Forwarder::received`]: what the server sent it, TLS included).
//! It runs on a thread of its own, which enters the target namespace so that every connection it
//! opens is made there, and it outlives the tests' runtimes.

use std::fs::File;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A running forwarder; dropping it stops accepting (open connections end with their peers).
#[derive(Debug)]
pub struct Forwarder {
    pub local: SocketAddr,
    received: Arc<AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Forwarder {
    /// Listens on a free port of 127.0.0.1 here and forwards each connection to `target` as seen from
    /// the namespace at `netns` (a path under `/run/netns`), or from here when `None`.
    pub fn start(netns: Option<&Path>, target: SocketAddr) -> Result<Self, String> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let ns = match netns {
            Some(p) => Some(File::open(p).map_err(|e| format!("{}: {e}", p.display()))?),
            None => None,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready) = std::sync::mpsc::channel::<Result<(), String>>();
        let received = Arc::new(AtomicU64::new(0));
        let counter = received.clone();
        std::thread::Builder::new()
            .name("k8s-forward".into())
            .spawn(move || {
                // SAFETY: setns on a valid namespace fd; only this thread changes namespace.
                if let Some(ns) = ns
                    && unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0
                {
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
                        _ = accept_loop(listener, target, counter) => {}
                        _ = stopped => {}
                    }
                });
            })
            .map_err(|e| e.to_string())?;
        ready.recv().map_err(|e| e.to_string())??;
        Ok(Self { local, received, stop: Some(stop) })
    }

    /// Bytes the server sent through this forwarder so far (TLS records as on the wire).
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, target: SocketAddr, received: Arc<AtomicU64>) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else { continue };
        let received = received.clone();
        tokio::spawn(async move {
            if let Ok(outbound) = tokio::net::TcpStream::connect(target).await {
                pipe(inbound, outbound, received).await;
            }
        });
    }
}

/// Copies both ways until either side closes, counting the server's bytes.
async fn pipe(inbound: tokio::net::TcpStream, outbound: tokio::net::TcpStream, received: Arc<AtomicU64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client_read, mut client_write) = inbound.into_split();
    let (mut server_read, mut server_write) = outbound.into_split();
    let up = async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        let _ = server_write.shutdown().await;
    };
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = server_read.read(&mut buf).await {
            if n == 0 || client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
            received.fetch_add(n as u64, Ordering::Relaxed);
        }
        let _ = client_write.shutdown().await;
    };
    tokio::join!(up, down);
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
