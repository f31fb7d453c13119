//! An in-process Kubernetes API test server.
//!
//! It speaks the real REST paths and JSON for the resources kubelink uses (see [`kinds::KINDS`]): get,
//! list (label and field selectors), watch (from a resourceVersion, bookmarks, `410 Gone` past the kept
//! history), create (`409 AlreadyExists`), update with a resourceVersion precondition (`409 Conflict`),
//! merge/strategic/JSON patch, delete (finalizers honoured), the `status` subresource, discovery and the
//! OpenAPI v3 documents `kubectl` needs ([`openapi`]). One global resourceVersion counts every write, as
//! etcd's revision does.
//!
//! Authentication and authorization are opt-in ([`serve_with`] with [`Options::auth`]). Then, as on a
//! real cluster: an admin bearer token (`system:admin` in `system:masters`, which bypasses RBAC) that
//! [`ApiServer::client`] uses; ServiceAccount tokens from the TokenRequest API
//! (`POST .../serviceaccounts/{name}/token`, or [`ApiServer::token_for`]); no token means
//! `system:anonymous`; an unknown token gets `401`. RBAC ([`rbac`]) decides from the Roles, ClusterRoles
//! and bindings stored in the server, with the real `403` messages. Every request is recorded per user
//! with the authorizer's answer, and the response bytes each user received are counted
//! ([`Store::usage`], [`Store::requests_of`]). With authentication off every request is allowed and
//! recorded as [`auth::UNSECURED_USER`].
//!
//! As the real server does by default (`APIResponseCompression`), a response body of at least 128 KiB
//! ([`http::GZIP_THRESHOLD`]) is gzipped (fast level) for a client whose `Accept-Encoding` lists
//! `gzip`; watch streams never are. kube clients send that header with kube's `gzip` feature, which
//! the workspace enables. The bytes counted per user are the bytes sent, compressed when gzipped.
//!
//! The port also speaks TLS (a self-signed certificate per server, see [`tls`]) because `kubectl` and
//! Helm send a bearer token only over TLS: give them [`ApiServer::kubeconfig`] (the `https://` URL
//! and the certificate). `kube::Client`s may use plain HTTP ([`ApiServer::url`]).
//!
//! Every write is validated for types as the real server does ([`schema`]): built-in kinds by decoding
//! into their k8s-openapi types (`400`), custom resources against their CRD's OpenAPI v3 schema (`422`),
//! the Gardener kinds against a schema of the fields kubelink uses (`400`, as their decoder answers). A
//! test that needs an object the API refuses plants it with [`Store::plant`].
//!
//! Known differences from a real server, none of which kubelink relies on: no admission, no validation
//! beyond names and types (no required fields of built-in kinds, no pruning), namespaces need not exist, `limit` is ignored (lists are never
//! paginated, as when the real server answers from its watch cache), a watch with a selector does not
//! turn "modified out of the selector" into DELETED, and server-side apply is a merge that creates a
//! missing object (no field managers). Tokens are opaque random strings, not JWTs (no audiences, no
//! binding to a Pod); a ServiceAccount's token stops working when the ServiceAccount is deleted. The
//! bootstrap grants (discovery, `/version`) are built in rather than stored as ClusterRoles; ClusterRole
//! aggregation, impersonation, client certificates and the `*AccessReview` APIs are not served. The
//! OpenAPI schemas name `apiVersion`, `kind` and `metadata` only and keep unknown fields; strategic merge
//! patch knows no merge keys, so lists are replaced whole; `/openapi/v2` is not served. Request bodies
//! must be JSON: protobuf (which `kubectl create <kind>` and `kubectl create token` send) gets `415`.
//! A Secret's `stringData` is folded into `data` as the real server does.

pub mod auth;
pub mod fixtures;
pub mod helm;
pub mod http;
pub mod kinds;
pub mod openapi;
pub mod rbac;
pub mod schema;
pub mod selector;
pub mod status;
pub mod store;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

pub use store::Store;

/// A running server. Dropping it stops it.
pub struct ApiServer {
    url: String,
    store: Arc<Store>,
    tls: Arc<tls::Tls>,
    task: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `https://127.0.0.1:PORT`: the same port with TLS, for clients that send tokens only over TLS.
    pub fn https_url(&self) -> String {
        self.url.replacen("http://", "https://", 1)
    }

    /// The server's self-signed certificate, PEM.
    pub fn certificate_pem(&self) -> &str {
        &self.tls.certificate_pem
    }

    /// A kubeconfig for `kubectl` or Helm: [`Self::https_url`], trusting the server's certificate, bearer
    /// `token`.
    pub fn kubeconfig(&self, token: &str) -> String {
        use base64::Engine;
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.tls.certificate_pem);
        kubeconfig_with(&self.https_url(), &format!("certificate-authority-data: {ca}"), token)
    }

    /// [`Self::kubeconfig`] for the same server reached at `https_url` (another listener of
    /// [`Self::serve_also`], whose address [`Options::tls_names`] names).
    pub fn kubeconfig_at(&self, https_url: &str, token: &str) -> String {
        use base64::Engine;
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.tls.certificate_pem);
        kubeconfig_with(https_url, &format!("certificate-authority-data: {ca}"), token)
    }

    /// Direct access to the stored objects, for assertions that must not go through a client.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// A real `kube::Client` talking HTTP to this server, as the admin when authentication is on.
    pub fn client(&self) -> kube::Client {
        match self.store.admin_token() {
            Some(token) => client_with_token(&self.url, token),
            None => client_for(&self.url),
        }
    }

    /// The admin's bearer token (`system:admin`, `system:masters`), when authentication is on.
    pub fn admin_token(&self) -> Option<&str> {
        self.store.admin_token()
    }

    /// A token for ServiceAccount `namespace/name` (valid for an hour), made without a request; the
    /// ServiceAccount is created first when it does not exist yet.
    pub fn token_for(&self, namespace: &str, name: &str) -> String {
        let kind = kinds::ResourceKind::find("", "v1", "serviceaccounts").expect("serviceaccounts are served");
        let account = serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}});
        // AlreadyExists is fine; any other failure shows in issue_token below.
        let _ = self.store.create(kind, namespace, account);
        let issued = self.store.issue_token(namespace, name, auth::DEFAULT_TOKEN_SECONDS);
        issued.map(|(token, _)| token).unwrap_or_else(|e| panic!("a token for {namespace}/{name}: {}", e.message))
    }

    /// Serves the same objects on another, already bound listener too, e.g. one opened inside a network
    /// namespace so that processes there reach this server. Abort the handle to stop it.
    pub fn serve_also(&self, listener: std::net::TcpListener) -> std::io::Result<tokio::task::JoinHandle<()>> {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        Ok(tokio::spawn(accept_loop(listener, self.store.clone(), self.tls.clone())))
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A `kube::Client` for a server URL, without credentials (anonymous when authentication is on).
pub fn client_for(url: &str) -> kube::Client {
    // kube builds a TLS connector even for plain HTTP; with more than one rustls backend in the dependency
    // graph it then needs a process-wide default. Installing one fails harmlessly when one is set.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let uri = url.parse().expect("the server's own URL parses");
    let config = kube::Config::new(uri);
    kube::Client::try_from(config).expect("a plain-HTTP client config is always valid")
}

/// A `kube::Client` for a server URL that sends `token` as its bearer token.
pub fn client_with_token(url: &str, token: &str) -> kube::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let uri = url.parse().expect("the server's own URL parses");
    let mut config = kube::Config::new(uri);
    config.auth_info.token = Some(token.to_string().into());
    kube::Client::try_from(config).expect("a plain-HTTP client config is always valid")
}

/// A kubeconfig with one cluster, user and context (all named `test`) and bearer `token`. An `https://`
/// URL is used without verifying the certificate ([`ApiServer::kubeconfig`] verifies it); note that
/// `kubectl` and Helm send no token over plain `http://`, so they are anonymous there.
pub fn kubeconfig_yaml(server_url: &str, token: &str) -> String {
    let trust = if server_url.starts_with("https://") { "insecure-skip-tls-verify: true" } else { "" };
    kubeconfig_with(server_url, trust, token)
}

fn kubeconfig_with(server_url: &str, cluster_extra: &str, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {server_url:?}\n    \
         {cluster_extra}\nusers:\n- name: test\n  user:\n    token: {token:?}\n\
         contexts:\n- name: test\n  context:\n    cluster: test\n    user: test\ncurrent-context: test\n"
    )
}

/// How to start a server.
#[derive(Debug, Clone)]
pub struct Options {
    /// Events kept for watches; older resourceVersions get `410 Gone`.
    pub history: usize,
    /// Bearer-token authentication and RBAC, as described in the module doc.
    pub auth: bool,
    /// Addresses the certificate names besides the loopback ones, e.g. one that
    /// [`ApiServer::serve_also`] listens on.
    pub tls_names: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self { history: store::DEFAULT_HISTORY, auth: false, tls_names: Vec::new() }
    }
}

/// Starts the server on `addr` (use `127.0.0.1:0` for a free port) with the default history size.
pub async fn serve(addr: SocketAddr) -> std::io::Result<ApiServer> {
    serve_with(addr, Options::default()).await
}

/// Starts the server keeping `history` events for watches; older resourceVersions get `410 Gone`.
pub async fn serve_with_history(addr: SocketAddr, history: usize) -> std::io::Result<ApiServer> {
    serve_with(addr, Options { history, ..Options::default() }).await
}

/// Starts a server with authentication and RBAC on a free loopback port.
pub async fn start_with_auth() -> ApiServer {
    let addr = SocketAddr::from(([127, 0, 0, 1], 0));
    serve_with(addr, Options { auth: true, ..Options::default() }).await.expect("binding a free loopback port")
}

/// Starts the server on `addr` with `options`.
pub async fn serve_with(addr: SocketAddr, options: Options) -> std::io::Result<ApiServer> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let store = Arc::new(Store::with_auth(options.history, options.auth));
    let tls = Arc::new(tls::Tls::self_signed(&options.tls_names).map_err(std::io::Error::other)?);
    let task = tokio::spawn(accept_loop(listener, store.clone(), tls.clone()));
    Ok(ApiServer { url, store, tls, task })
}

/// Starts a server on a free loopback port.
pub async fn start() -> ApiServer {
    serve(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("binding a free loopback port")
}

async fn accept_loop(listener: tokio::net::TcpListener, store: Arc<Store>, tls: Arc<tls::Tls>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let (store, tls) = (store.clone(), tls.clone());
        connections.spawn(async move { tls.serve(stream, store).await });
        while connections.try_join_next().is_some() {}
    }
}
