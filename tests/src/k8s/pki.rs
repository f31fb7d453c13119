//! The certificates and keys of one test cluster, made at start as a cluster's installer makes them:
//! a CA, the API server's serving certificate (loopback, the cluster's service IP and the addresses
//! the caller names), the admin's client certificate (group `system:masters`) and the key that signs
//! ServiceAccount tokens, and the aggregation layer's front-proxy CA and client certificate.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

/// Where the files are; every path is inside the cluster's directory.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca_pem: String,
    pub ca: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub sa_key: PathBuf,
    pub sa_pub: PathBuf,
    pub admin_cert_pem: String,
    pub admin_key_pem: String,
    /// The aggregation layer's front proxy: its CA (`--requestheader-client-ca-file`) and the client
    /// certificate kube-apiserver presents to aggregated API servers (gardener-apiserver).
    pub front_proxy_ca: PathBuf,
    pub proxy_cert: PathBuf,
    pub proxy_key: PathBuf,
}

/// The front proxy's client certificate name (`--requestheader-allowed-names`).
pub const FRONT_PROXY_CLIENT: &str = "front-proxy-client";

/// The admin's user name; its group `system:masters` passes every RBAC check, as on a real cluster.
pub const ADMIN_USER: &str = "kubelink-test-admin";

fn write(dir: &Path, name: &str, pem: &str) -> Result<PathBuf, String> {
    let path = dir.join(name);
    std::fs::write(&path, pem).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

fn err(what: &str) -> impl Fn(rcgen::Error) -> String + '_ {
    move |e| format!("making {what}: {e}")
}

/// Makes every certificate and key into `dir`. `ips`: addresses the serving certificate names besides
/// 127.0.0.1 and `service_ip` (the `kubernetes` Service's address).
pub fn make(dir: &Path, ips: &[IpAddr], service_ip: IpAddr) -> Result<Pki, String> {
    let ca_key = KeyPair::generate().map_err(err("the CA key"))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err("the CA"))?;
    ca_params.distinguished_name.push(DnType::CommonName, "kubelink-test-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(err("the CA"))?;

    let names = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"].map(String::from).to_vec();
    let mut serving = CertificateParams::new(names).map_err(err("the serving certificate"))?;
    serving.distinguished_name.push(DnType::CommonName, "kube-apiserver");
    let loopback: IpAddr = [127, 0, 0, 1].into();
    for ip in [loopback, service_ip].iter().chain(ips) {
        serving.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_key = KeyPair::generate().map_err(err("the serving key"))?;
    let serving_cert = serving.signed_by(&serving_key, &ca).map_err(err("the serving certificate"))?;

    let mut admin = CertificateParams::new(Vec::<String>::new()).map_err(err("the admin certificate"))?;
    admin.distinguished_name.push(DnType::CommonName, ADMIN_USER);
    admin.distinguished_name.push(DnType::OrganizationName, "system:masters");
    admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let admin_key = KeyPair::generate().map_err(err("the admin key"))?;
    let admin_cert = admin.signed_by(&admin_key, &ca).map_err(err("the admin certificate"))?;

    let fp_key = KeyPair::generate().map_err(err("the front-proxy CA key"))?;
    let mut fp_params = CertificateParams::new(Vec::<String>::new()).map_err(err("the front-proxy CA"))?;
    fp_params.distinguished_name.push(DnType::CommonName, "kubelink-test-front-proxy-ca");
    fp_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    fp_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let fp_ca = CertifiedIssuer::self_signed(fp_params, fp_key).map_err(err("the front-proxy CA"))?;
    let mut proxy = CertificateParams::new(Vec::<String>::new()).map_err(err("the front-proxy client"))?;
    proxy.distinguished_name.push(DnType::CommonName, FRONT_PROXY_CLIENT);
    proxy.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let proxy_key = KeyPair::generate().map_err(err("the front-proxy client key"))?;
    let proxy_cert = proxy.signed_by(&proxy_key, &fp_ca).map_err(err("the front-proxy client"))?;

    let sa_key = KeyPair::generate().map_err(err("the ServiceAccount signing key"))?;
    Ok(Pki {
        ca_pem: ca.pem(),
        ca: write(dir, "ca.crt", &ca.pem())?,
        serving_cert: write(dir, "apiserver.crt", &serving_cert.pem())?,
        serving_key: write(dir, "apiserver.key", &serving_key.serialize_pem())?,
        sa_key: write(dir, "sa.key", &sa_key.serialize_pem())?,
        sa_pub: write(dir, "sa.pub", &sa_key.public_key_pem())?,
        admin_cert_pem: admin_cert.pem(),
        admin_key_pem: admin_key.serialize_pem(),
        front_proxy_ca: write(dir, "front-proxy-ca.crt", &fp_ca.pem())?,
        proxy_cert: write(dir, "front-proxy-client.crt", &proxy_cert.pem())?,
        proxy_key: write(dir, "front-proxy-client.key", &proxy_key.serialize_pem())?,
    })
}
