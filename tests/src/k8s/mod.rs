//! A real Kubernetes control plane for the tests: etcd and kube-apiserver built from their Go modules
//! (`scripts/k8s-tools`), started the way a seed runs them.
//!
//! - TLS with a CA made at start ([`pki`]); the admin authenticates with a client certificate in group
//!   `system:masters`; components get tokens of their own ServiceAccounts through the TokenRequest API
//!   ([`Cluster::token_for`]).
//! - `--authorization-mode=Node,RBAC`, the default admission plugins plus `NodeRestriction`, an audit
//!   log of every request (user, verb, resource, answer; [`Cluster::audit`]) for the RBAC proofs.
//! - Gardener's seed CRDs from the gardener module and kubelink's own CRDs, on request.
//! - Faults from the real processes: the API server frozen and thawed (SIGSTOP/SIGCONT), etcd
//!   stopped and started again on its data.
//!
//! No kube-controller-manager runs: nothing creates a namespace's `default` ServiceAccount, collects
//! garbage or finishes a namespace's deletion. [`Cluster::ensure_namespace`] creates the namespace and
//! its `default` ServiceAccount, as the controller would.
//!
//! One cluster per test binary is shared ([`shared`]); a landscape runs its own inside a network
//! namespace ([`Options::netns`]), reached by the nodes on its address there and by the test's own
//! clients through a forwarder on the host's loopback.

pub mod audit;
pub mod forward;
pub mod garden;
pub mod pki;
pub mod process;
pub mod resource_manager;
pub mod tools;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};

pub use pki::ADMIN_USER;
use process::Daemon;

/// How to start a cluster.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// A short name for its directory and logs.
    pub name: String,
    /// Run etcd and kube-apiserver inside this network namespace (its name under `/run/netns`),
    /// listening on every address there; `None`: on the host's loopback.
    pub netns: Option<String>,
    /// Addresses the serving certificate names besides 127.0.0.1: where others reach the server.
    pub ips: Vec<IpAddr>,
    /// Install Gardener's seed CRDs (Extension, Cluster, ManagedResource) and kubelink's CRDs.
    pub crds: bool,
}

/// The `kubernetes` Service's range and address.
const SERVICE_RANGE: &str = "10.0.0.0/24";
const SERVICE_IP: [u8; 4] = [10, 0, 0, 1];
/// Inside a namespace of its own the ports are fixed; on the host they are free ones.
const NS_PORTS: Ports = Ports { api: 6443, etcd_client: 2379, etcd_peer: 2380 };

#[derive(Debug, Clone, Copy)]
struct Ports {
    api: u16,
    etcd_client: u16,
    etcd_peer: u16,
}

/// A running etcd and kube-apiserver.
#[derive(Debug)]
pub struct Cluster {
    pub dir: PathBuf,
    pki: pki::Pki,
    /// The https URL the test process reaches (the forwarder's when in a namespace).
    url: String,
    ports: Ports,
    netns: Option<PathBuf>,
    etcd: Mutex<Option<Daemon>>,
    apiserver: Mutex<Option<Daemon>>,
    audit_log: PathBuf,
    _forward: Option<forward::Forwarder>,
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn work_dir(name: &str) -> PathBuf {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/k8s");
    remove_dead_dirs(&base);
    // Numbered: two clusters of one process with one name (two seeds) must not share etcd's data.
    static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    base.join(format!("{name}-{n}-{}", std::process::id()))
}

/// Removes the work directories of test processes that have ended. A cluster's directory (its etcd
/// data, about 125 MB with the preallocated WAL) outlives its process only until the next run: long
/// enough to read the logs of a failed test, not long enough to fill the disk over many runs.
fn remove_dead_dirs(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.rsplit_once('-')).and_then(|(_, p)| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// What the audit log records: every request at `Metadata` level (who, what, the answer; no bodies).
const AUDIT_POLICY: &str =
    "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n";

impl Cluster {
    /// Starts etcd and kube-apiserver and waits until `/readyz` answers ok.
    pub async fn start(options: Options) -> Result<Self, String> {
        let tools = tools::tools()?;
        let name = if options.name.is_empty() { "cluster" } else { &options.name };
        let dir = work_dir(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let pki = pki::make(&dir, &options.ips, IpAddr::from(SERVICE_IP))?;
        let netns = options.netns.as_ref().map(|n| PathBuf::from(format!("/run/netns/{n}")));
        let ports = if netns.is_some() {
            NS_PORTS
        } else {
            Ports { api: free_port()?, etcd_client: free_port()?, etcd_peer: free_port()? }
        };
        let etcd = Daemon::start(&tools.etcd, &etcd_args(&dir, ports), netns.as_deref(), &dir.join("etcd.log"))?;
        let audit_log = dir.join("audit.log");
        let policy = dir.join("audit-policy.yaml");
        std::fs::write(&policy, AUDIT_POLICY).map_err(|e| e.to_string())?;
        let advertise = options.ips.first().copied().unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let args = apiserver_args(&pki, ports, netns.is_some(), advertise, &policy, &audit_log);
        let apiserver = Daemon::start(&tools.kube_apiserver, &args, netns.as_deref(), &dir.join("kube-apiserver.log"))?;
        let (url, forward) = match &netns {
            Some(ns) => {
                let f = forward::Forwarder::start(Some(ns), SocketAddr::from(([127, 0, 0, 1], ports.api)))?;
                (format!("https://{}", f.local), Some(f))
            }
            None => (format!("https://127.0.0.1:{}", ports.api), None),
        };
        let cluster = Cluster {
            dir,
            pki,
            url,
            ports,
            netns,
            etcd: Mutex::new(Some(etcd)),
            apiserver: Mutex::new(Some(apiserver)),
            audit_log,
            _forward: forward,
        };
        cluster.wait_ready(Duration::from_secs(90)).await?;
        if options.crds {
            let mut crds = tools::gardener_crds()?;
            crds.extend(tools::kubelink_crds());
            cluster.install_crds(&crds).await?;
        }
        Ok(cluster)
    }

    /// The https URL for the test process's own clients.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// etcd's client URL (an aggregated API server keeps its objects there too, under its own prefix).
    pub fn etcd_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.etcd_client)
    }

    /// The https URL at `ip` (an address of [`Options::ips`]), for processes in other namespaces.
    pub fn url_at(&self, ip: IpAddr) -> String {
        format!("https://{}", SocketAddr::new(ip, self.ports.api))
    }

    /// A kubeconfig for the admin (client certificate, `system:masters`) at [`Self::url`].
    pub fn admin_kubeconfig(&self) -> String {
        let user = format!(
            "client-certificate-data: {}\n    client-key-data: {}",
            b64(&self.pki.admin_cert_pem),
            b64(&self.pki.admin_key_pem)
        );
        kubeconfig(&self.url, &self.pki.ca_pem, &user)
    }

    /// A kubeconfig at `url` (default [`Self::url`]) sending bearer `token`.
    pub fn kubeconfig(&self, url: Option<&str>, token: &str) -> String {
        kubeconfig(url.unwrap_or(&self.url), &self.pki.ca_pem, &format!("token: {token:?}"))
    }

    /// Writes the admin kubeconfig into the cluster's directory and returns its path.
    pub fn admin_kubeconfig_file(&self) -> Result<PathBuf, String> {
        // Tests of one binary share the cluster and call this concurrently: write a file of our
        // own and rename it into place, so a reader (helm, kubectl) never sees it truncated.
        let path = self.dir.join("admin.kubeconfig");
        let err = |e: std::io::Error| format!("{}: {e}", path.display());
        let mut file = tempfile::NamedTempFile::new_in(&self.dir).map_err(err)?;
        std::io::Write::write_all(&mut file, self.admin_kubeconfig().as_bytes()).map_err(err)?;
        file.persist(&path).map_err(|e| err(e.error))?;
        Ok(path)
    }

    /// A client authenticated as the admin.
    pub async fn client(&self) -> Result<kube::Client, String> {
        client_from_kubeconfig(&self.admin_kubeconfig()).await
    }

    /// A client sending bearer `token`.
    pub async fn client_with_token(&self, token: &str) -> Result<kube::Client, String> {
        client_from_kubeconfig(&self.kubeconfig(None, token)).await
    }

    /// A client sending bearer `token` through a forwarder of its own, which counts the bytes the
    /// server sends it ([`forward::Forwarder::received`]).
    pub async fn counted_client_with_token(&self, token: &str) -> Result<(kube::Client, forward::Forwarder), String> {
        let netns = self.netns.as_deref();
        let forwarder = forward::Forwarder::start(netns, SocketAddr::from(([127, 0, 0, 1], self.ports.api)))?;
        let url = format!("https://{}", forwarder.local);
        let client = client_from_kubeconfig(&self.kubeconfig(Some(&url), token)).await?;
        Ok((client, forwarder))
    }

    /// Creates `namespace` when missing, with its `default` ServiceAccount (what
    /// kube-controller-manager would add).
    pub async fn ensure_namespace(&self, namespace: &str) -> Result<(), String> {
        let client = self.client().await?;
        let ns: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": namespace}})).map_err(|e| e.to_string())?;
        ignore_exists(Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await)?;
        self.ensure_service_account(&client, namespace, "default").await
    }

    async fn ensure_service_account(&self, client: &kube::Client, namespace: &str, name: &str) -> Result<(), String> {
        let sa: ServiceAccount =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).map_err(|e| e.to_string())?;
        ignore_exists(
            Api::<ServiceAccount>::namespaced(client.clone(), namespace).create(&PostParams::default(), &sa).await,
        )
    }

    /// A token of ServiceAccount `namespace/name` from the TokenRequest API, valid for a day; the
    /// namespace and the ServiceAccount are created when missing.
    pub async fn token_for(&self, namespace: &str, name: &str) -> Result<String, String> {
        self.request_token(namespace, name, serde_json::json!({"expirationSeconds": 86400})).await
    }

    /// A token of ServiceAccount `namespace/name` bound to Pod `namespace/pod`, as the kubelet's
    /// projected token is: the API server then knows the Pod's node
    /// (`authentication.kubernetes.io/node-name` in the user's extra), and the token dies with the Pod.
    pub async fn token_for_pod(&self, namespace: &str, name: &str, pod: &str) -> Result<String, String> {
        let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(self.client().await?, namespace);
        let uid = pods.get(pod).await.map_err(|e| format!("Pod {namespace}/{pod}: {e}"))?.metadata.uid;
        let bound = serde_json::json!({"kind": "Pod", "apiVersion": "v1", "name": pod, "uid": uid});
        self.request_token(namespace, name, serde_json::json!({"expirationSeconds": 86400, "boundObjectRef": bound}))
            .await
    }

    async fn request_token(&self, namespace: &str, name: &str, spec: serde_json::Value) -> Result<String, String> {
        self.ensure_namespace(namespace).await?;
        let client = self.client().await?;
        self.ensure_service_account(&client, namespace, name).await?;
        let api = Api::<ServiceAccount>::namespaced(client, namespace);
        let request = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec
        });
        let answer: serde_json::Value = api
            .create_subresource("token", name, &PostParams::default(), &request)
            .await
            .map_err(|e| format!("TokenRequest for {namespace}/{name}: {e}"))?;
        answer["status"]["token"].as_str().map(String::from).ok_or_else(|| format!("TokenRequest answered {answer}"))
    }

    /// Creates or updates each CRD in `files` (YAML, one object each; template lines skipped) and waits
    /// until all are Established.
    pub async fn install_crds(&self, files: &[PathBuf]) -> Result<(), String> {
        let api = Api::<CustomResourceDefinition>::all(self.client().await?);
        let mut names = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
            // kubelink's CRDs are chart templates: their guard lines (`{{ ... }}`) are not YAML.
            let text: String =
                text.lines().filter(|l| !l.trim_start().starts_with("{{")).map(|l| format!("{l}\n")).collect();
            let crd: CustomResourceDefinition =
                serde_yaml_ng::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
            let name = crd.metadata.name.clone().ok_or_else(|| format!("{}: a CRD without a name", file.display()))?;
            let params = PatchParams::apply("kubelink-tests").force();
            api.patch(&name, &params, &Patch::Apply(&crd)).await.map_err(|e| format!("applying CRD {name}: {e}"))?;
            names.push(name);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for name in names {
            loop {
                let crd = api.get(&name).await.map_err(|e| format!("reading CRD {name}: {e}"))?;
                let established = crd
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                if established {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("CRD {name} not Established within 30 s"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// `/version`'s `gitVersion`, e.g. `v1.34.3`.
    pub async fn version(&self) -> Result<String, String> {
        let info = self.client().await?.apiserver_version().await.map_err(|e| e.to_string())?;
        Ok(info.git_version)
    }

    /// Every request the API server answered so far, from its audit log.
    pub fn audit(&self) -> Vec<audit::Event> {
        audit::read(&self.audit_log)
    }

    /// A `kubectl` of the same release, with `--kubeconfig kubeconfig`.
    pub fn kubectl(&self, kubeconfig: &Path) -> Result<std::process::Command, String> {
        let mut c = std::process::Command::new(&tools::tools()?.kubectl);
        c.arg("--kubeconfig").arg(kubeconfig);
        Ok(c)
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the API server: connections stay open and nothing answers.
    pub fn freeze_apiserver(&self, frozen: bool) {
        let signal = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
        if let Some(d) = self.apiserver.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            d.signal(signal);
        }
    }

    /// Stops etcd (SIGTERM, as a node shutting it down); the API server stays up and answers with
    /// errors. [`Cluster::start_etcd`] brings it back on the same data directory.
    pub fn stop_etcd(&self) {
        if let Some(mut d) = self.etcd.lock().unwrap_or_else(|e| e.into_inner()).take() {
            d.stop(Duration::from_secs(5));
        }
    }

    /// Starts etcd again on its data directory and waits until the API server is ready again.
    pub async fn start_etcd(&self) -> Result<(), String> {
        let tools = tools::tools()?;
        let log = self.dir.join("etcd.log.restarted");
        let etcd = Daemon::start(&tools.etcd, &etcd_args(&self.dir, self.ports), self.netns.as_deref(), &log)?;
        *self.etcd.lock().unwrap_or_else(|e| e.into_inner()) = Some(etcd);
        self.wait_ready(Duration::from_secs(60)).await
    }

    async fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let start = Instant::now();
        let client = self.client().await?;
        let mut last = String::new();
        while start.elapsed() < timeout {
            let request = http::Request::get("/readyz").body(Vec::new()).map_err(|e| e.to_string())?;
            match client.request_text(request).await {
                Ok(text) if text.trim() == "ok" => return Ok(()),
                Ok(text) => last = text,
                Err(e) => last = e.to_string(),
            }
            for (what, daemon) in [("etcd", &self.etcd), ("kube-apiserver", &self.apiserver)] {
                let mut guard = daemon.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(d) = guard.as_mut()
                    && let Some(status) = d.exited()
                {
                    return Err(format!("{what} exited ({status}):\n{}", d.log_tail(30)));
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let tail = self
            .apiserver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|d| d.log_tail(30))
            .unwrap_or_default();
        Err(format!("kube-apiserver not ready within {timeout:?} (last answer: {last}):\n{tail}"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(mut d) = self.apiserver.lock().unwrap_or_else(|e| e.into_inner()).take() {
            d.stop(Duration::from_secs(2));
        }
        if let Some(mut d) = self.etcd.lock().unwrap_or_else(|e| e.into_inner()).take() {
            d.stop(Duration::from_secs(2));
        }
        // A failed test keeps its logs for reading; a passed one leaves nothing on the disk.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The cluster the tests of this binary share (started on first use, on the host's loopback, with
/// every CRD). Tests keep out of each other's way with namespaces of their own.
pub async fn shared() -> Result<&'static Cluster, String> {
    static SHARED: tokio::sync::OnceCell<Result<Cluster, String>> = tokio::sync::OnceCell::const_new();
    let cluster = SHARED
        .get_or_init(|| Cluster::start(Options { name: "shared".into(), crds: true, ..Options::default() }))
        .await;
    cluster.as_ref().map_err(Clone::clone)
}

fn etcd_args(dir: &Path, ports: Ports) -> Vec<String> {
    let client = format!("http://127.0.0.1:{}", ports.etcd_client);
    let peer = format!("http://127.0.0.1:{}", ports.etcd_peer);
    vec![
        "--name=etcd".into(),
        format!("--data-dir={}", dir.join("etcd").display()),
        format!("--listen-client-urls={client}"),
        format!("--advertise-client-urls={client}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster=etcd={peer}"),
        // Test data: no fsync per write (a test's etcd is thrown away with its directory).
        "--unsafe-no-fsync".into(),
        "--log-level=warn".into(),
    ]
}

fn apiserver_args(
    pki: &pki::Pki,
    ports: Ports,
    all: bool,
    advertise: IpAddr,
    policy: &Path,
    audit: &Path,
) -> Vec<String> {
    let bind = if all { "0.0.0.0" } else { "127.0.0.1" };
    let p = |path: &Path| path.display().to_string();
    vec![
        format!("--etcd-servers=http://127.0.0.1:{}", ports.etcd_client),
        format!("--bind-address={bind}"),
        format!("--secure-port={}", ports.api),
        format!("--advertise-address={advertise}"),
        format!("--tls-cert-file={}", p(&pki.serving_cert)),
        format!("--tls-private-key-file={}", p(&pki.serving_key)),
        format!("--client-ca-file={}", p(&pki.ca)),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
        format!("--service-account-key-file={}", p(&pki.sa_pub)),
        format!("--service-account-signing-key-file={}", p(&pki.sa_key)),
        format!("--service-cluster-ip-range={SERVICE_RANGE}"),
        "--authorization-mode=Node,RBAC".into(),
        // The defaults (NamespaceLifecycle, ServiceAccount, Priority, PodSecurity, the webhooks, ...)
        // and NodeRestriction, as a seed runs them.
        "--enable-admission-plugins=NodeRestriction".into(),
        "--allow-privileged=true".into(),
        // The aggregation layer, as every cluster has it (the garden's gardener-apiserver is served
        // through it: k8s::garden).
        format!("--requestheader-client-ca-file={}", p(&pki.front_proxy_ca)),
        format!("--requestheader-allowed-names={}", pki::FRONT_PROXY_CLIENT),
        "--requestheader-username-headers=X-Remote-User".into(),
        "--requestheader-group-headers=X-Remote-Group".into(),
        "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
        format!("--proxy-client-cert-file={}", p(&pki.proxy_cert)),
        format!("--proxy-client-key-file={}", p(&pki.proxy_key)),
        format!("--audit-policy-file={}", p(policy)),
        format!("--audit-log-path={}", p(audit)),
        "--audit-log-format=json".into(),
        "--profiling=false".into(),
        "--v=0".into(),
    ]
}

fn b64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn kubeconfig(url: &str, ca_pem: &str, user: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {url:?}\n    \
         certificate-authority-data: {}\nusers:\n- name: test\n  user:\n    {user}\n\
         contexts:\n- name: test\n  context:\n    cluster: test\n    user: test\ncurrent-context: test\n",
        b64(ca_pem)
    )
}

/// A `kube::Client` from kubeconfig text.
pub async fn client_from_kubeconfig(yaml: &str) -> Result<kube::Client, String> {
    // kube builds its TLS connector with rustls; with more than one rustls backend in the dependency
    // graph it needs a process-wide default. Installing one fails harmlessly when one is set.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let kubeconfig = kube::config::Kubeconfig::from_yaml(yaml).map_err(|e| e.to_string())?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.map_err(|e| e.to_string())?;
    kube::Client::try_from(config).map_err(|e| e.to_string())
}

fn ignore_exists<T>(result: Result<T, kube::Error>) -> Result<(), String> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// The shared cluster for `test`, or `None` after a SKIPPED line (a failure under CI) when the
/// binaries are not built. Any other failure to start panics: it is a failure of the harness.
pub async fn for_test(test: &str) -> Option<&'static Cluster> {
    match shared().await {
        Ok(c) => Some(c),
        Err(e) if tools::tools().is_err() => {
            crate::skip::skip(test, &e);
            None
        }
        Err(e) => panic!("starting the real control plane: {e}"),
    }
}

/// A cluster of its own for `test` (one whose API server the test freezes, say), or `None` after a
/// SKIPPED line as for [`for_test`].
pub async fn own_for_test(test: &str, crds: bool) -> Option<Cluster> {
    if let Err(e) = tools::tools() {
        crate::skip::skip(test, &e);
        return None;
    }
    let name = test.chars().take(24).collect();
    Some(Cluster::start(Options { name, crds, ..Options::default() }).await.expect("starting the real control plane"))
}
