//! An in-process Kubernetes API test server.
//!
//! It speaks the real REST paths and JSON for the resources kubelink uses (see [`kinds::KINDS`]): get,
//! list (label and field selectors), watch (from a resourceVersion, bookmarks, `410 Gone` past the kept
//! history), create (`409 AlreadyExists`), update with a resourceVersion precondition (`409 Conflict`),
//! merge/JSON patch, delete (finalizers honoured), the `status` subresource and discovery. One global
//! resourceVersion counts every write, as etcd's revision does.
//!
//! Known differences from a real server, none of which kubelink relies on: no authentication or
//! admission, no schema validation beyond names and types, namespaces need not exist, `limit` is
//! ignored (lists are never paginated, as when the real server answers from its watch cache), a watch
//! with a selector does not turn "modified out of the selector" into DELETED, and server-side apply is
//! a merge that creates a missing object (no field managers).

pub mod fixtures;
pub mod helm;
pub mod http;
pub mod kinds;
pub mod selector;
pub mod status;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

pub use store::Store;

/// A running server. Dropping it stops it.
pub struct ApiServer {
    url: String,
    store: Arc<Store>,
    task: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Direct access to the stored objects, for assertions that must not go through a client.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// A real `kube::Client` talking HTTP to this server.
    pub fn client(&self) -> kube::Client {
        client_for(&self.url)
    }

    /// Serves the same objects on another, already bound listener too, e.g. one opened inside a network
    /// namespace so that processes there reach this server. Abort the handle to stop it.
    pub fn serve_also(&self, listener: std::net::TcpListener) -> std::io::Result<tokio::task::JoinHandle<()>> {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        Ok(tokio::spawn(accept_loop(listener, self.store.clone())))
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A `kube::Client` for a server URL, without credentials (the test server has no authentication).
pub fn client_for(url: &str) -> kube::Client {
    // kube builds a TLS connector even for plain HTTP; with more than one rustls backend in the dependency
    // graph it then needs a process-wide default. Installing one fails harmlessly when one is set.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let uri = url.parse().expect("the server's own URL parses");
    let config = kube::Config::new(uri);
    kube::Client::try_from(config).expect("a plain-HTTP client config is always valid")
}

/// Starts the server on `addr` (use `127.0.0.1:0` for a free port) with the default history size.
pub async fn serve(addr: SocketAddr) -> std::io::Result<ApiServer> {
    serve_with_history(addr, store::DEFAULT_HISTORY).await
}

/// Starts the server keeping `history` events for watches; older resourceVersions get `410 Gone`.
pub async fn serve_with_history(addr: SocketAddr, history: usize) -> std::io::Result<ApiServer> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let store = Arc::new(Store::new(history));
    let task = tokio::spawn(accept_loop(listener, store.clone()));
    Ok(ApiServer { url, store, task })
}

/// Starts a server on a free loopback port.
pub async fn start() -> ApiServer {
    serve(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("binding a free loopback port")
}

async fn accept_loop(listener: tokio::net::TcpListener, store: Arc<Store>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let store = store.clone();
        connections.spawn(async move {
            let service = service_fn(move |req| http::handle(store.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
        while connections.try_join_next().is_some() {}
    }
}
