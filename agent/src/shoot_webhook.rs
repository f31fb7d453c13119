//! `kubelink shoot-webhook`: the shoot webhook that gives vpn-shoot the kubelink sidecar, the way
//! Gardener's extensions change what gardenlet deploys into a shoot (`extensions/pkg/webhook/shoot`).
//! vpn-shoot belongs to gardener-resource-manager's ManagedResource `shoot-core-vpn-shoot`, which
//! puts hand edits back; a mutating webhook registered in the shoot changes each write of it instead,
//! so every apply carries the sidecar. It runs on the seed, next to the extension controller: the
//! shoot's kube-apiserver runs in the seed and calls it by the Service's name
//! ([`configuration`]), as Gardener's `ModeURLWithServiceName` does.
//!
//! The server is bounded as every kubelink webhook ([`crate::webhook`]); it reads nothing but the
//! request, so it holds no credential at all.

pub mod mutate;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use base64::Engine;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};

use crate::webhook::{self, AdmissionRequest};
use mutate::Sidecar;

/// The path the shoot's kube-apiserver posts vpn-shoot's AdmissionReviews to.
pub const PATH: &str = "/webhooks/vpn-shoot";
/// The MutatingWebhookConfiguration's name in the shoot (Gardener's extension prefix).
pub const CONFIGURATION: &str = "gardener-extension-kubelink-wireguard-shoot";

#[derive(clap::Args, Clone, Debug)]
pub struct ShootWebhookArgs {
    /// Where to serve HTTPS (the webhook's Service targets this port).
    #[arg(long, env = "KUBELINK_SHOOT_WEBHOOK_LISTEN", default_value = "0.0.0.0:10250")]
    pub listen: SocketAddr,
    /// The serving certificate (PEM, the chain after it), e.g. a mounted Secret's `tls.crt`.
    #[arg(long, env = "KUBELINK_SHOOT_WEBHOOK_TLS_CERT_FILE")]
    pub tls_cert_file: PathBuf,
    /// The serving certificate's private key (PEM), e.g. a mounted Secret's `tls.key`.
    #[arg(long, env = "KUBELINK_SHOOT_WEBHOOK_TLS_KEY_FILE")]
    pub tls_key_file: PathBuf,
    /// The image of the sidecar (kubelink's own).
    #[arg(long, env = "KUBELINK_SIDECAR_IMAGE")]
    pub sidecar_image: String,
}

/// The answer to one AdmissionReview: vpn-shoot gets the patch, everything else (and an object that
/// cannot be patched, with a warning naming why) is allowed unchanged. Never a refusal: whether the
/// object is valid is the API server's to say.
pub fn review(request: &AdmissionRequest, sidecar: &Sidecar) -> Value {
    let mut response = json!({"uid": request.uid, "allowed": true});
    let (group, kind, ns, name) = (&request.group, &request.kind, &request.namespace, &request.name);
    if mutate::is_vpn_shoot(group, kind, ns, name) && matches!(request.operation.as_str(), "CREATE" | "UPDATE") {
        match mutate::patch(&request.object, sidecar) {
            Ok(ops) if ops.is_empty() => {}
            Ok(ops) => {
                let patch = base64::engine::general_purpose::STANDARD.encode(Value::from(ops).to_string());
                response["patchType"] = json!("JSONPatch");
                response["patch"] = json!(patch);
            }
            Err(e) => response["warnings"] = json!([format!("{kind} {ns}/{name} has no kubelink sidecar: {e}")]),
        }
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

/// The MutatingWebhookConfiguration delivered into the shoot: only vpn-shoot's Deployment and
/// StatefulSet in `kube-system` are sent (namespace and object selectors, Gardener's `app: vpn-shoot`
/// label), so the shoot's other writes never wait for the seed. `Fail`: a vpn-shoot without the
/// sidecar is a shoot the seed cannot reach, which must not happen silently.
pub fn configuration(url: &str, ca_bundle: &[u8]) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": CONFIGURATION},
        "webhooks": [{
            "name": "vpn-shoot.kubelink.gardener.cloud",
            "admissionReviewVersions": ["v1"],
            "clientConfig": {
                "url": url,
                "caBundle": base64::engine::general_purpose::STANDARD.encode(ca_bundle),
            },
            "rules": [{
                "apiGroups": ["apps"],
                "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"],
                "resources": ["deployments", "statefulsets"],
                "scope": "Namespaced",
            }],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": mutate::NAMESPACE}},
            "objectSelector": {"matchLabels": {"app": mutate::NAME}},
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "reinvocationPolicy": "IfNeeded",
            "timeoutSeconds": 10,
        }],
    })
}

/// One HTTP request: `POST` [`PATH`] with an AdmissionReview; `/healthz` for probes.
pub async fn handle(sidecar: &Sidecar, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let request = match webhook::review_of(req, PATH).await {
        Ok(r) => r,
        Err(answer) => return answer,
    };
    let answer = review(&request, sidecar);
    let patched = answer["response"]["patch"].is_string();
    let (kind, namespace, name) = (&request.kind, &request.namespace, &request.name);
    tracing::debug!(%kind, %namespace, %name, operation = %request.operation, patched, "reviewed");
    webhook::answer(StatusCode::OK, "application/json", answer.to_string())
}

/// `kubelink shoot-webhook`.
pub async fn run(args: ShootWebhookArgs) -> anyhow::Result<()> {
    let acceptor = webhook::tls_acceptor(&args.tls_cert_file, &args.tls_key_file)?;
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(listen = %listener.local_addr()?, image = %args.sidecar_image, "shoot webhook serving POST {PATH}");
    let sidecar = std::sync::Arc::new(Sidecar { image: args.sidecar_image });
    webhook::serve(listener, acceptor, move |req| {
        let sidecar = sidecar.clone();
        async move { handle(&sidecar, req).await }
    })
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(kind: &str, namespace: &str, name: &str, object: Value) -> AdmissionRequest {
        AdmissionRequest {
            uid: "u-1".into(),
            group: "apps".into(),
            kind: kind.into(),
            operation: "CREATE".into(),
            namespace: namespace.into(),
            name: name.into(),
            object,
            old_object: Value::Null,
        }
    }

    fn vpn_shoot() -> Value {
        json!({"spec": {"template": {"spec": {"containers": [{"name": "vpn-shoot"}]}}}})
    }

    #[test]
    fn vpn_shoot_gets_a_base64_json_patch_and_others_pass_untouched() {
        let sidecar = Sidecar { image: "kubelink:test".into() };
        let answer = review(&request("StatefulSet", "kube-system", "vpn-shoot", vpn_shoot()), &sidecar);
        let response = &answer["response"];
        assert_eq!(
            (&response["uid"], &response["allowed"], &response["patchType"]),
            (&json!("u-1"), &json!(true), &json!("JSONPatch"))
        );
        let patch = base64::engine::general_purpose::STANDARD.decode(response["patch"].as_str().unwrap()).unwrap();
        let ops: Vec<Value> = serde_json::from_slice(&patch).unwrap();
        assert_eq!(ops.len(), 2, "{ops:?}");
        let other = review(&request("Deployment", "kube-system", "coredns", vpn_shoot()), &sidecar);
        assert_eq!(other["response"], json!({"uid": "u-1", "allowed": true}));
    }

    #[test]
    fn an_object_that_cannot_be_patched_is_allowed_with_a_warning_naming_why() {
        let sidecar = Sidecar { image: "kubelink:test".into() };
        let answer = review(&request("Deployment", "kube-system", "vpn-shoot", json!({"spec": {}})), &sidecar);
        assert_eq!(answer["response"]["allowed"], true);
        assert!(answer["response"].get("patch").is_none());
        let warning = answer["response"]["warnings"][0].as_str().unwrap();
        assert!(
            warning.contains("kube-system/vpn-shoot has no kubelink sidecar: spec.template.spec.containers"),
            "{warning}"
        );
    }

    #[test]
    fn the_configuration_sends_only_vpn_shoot_and_fails_closed() {
        let c = configuration("https://kubelink-shoot-webhook.extension-kubelink:443/webhooks/vpn-shoot", b"CA");
        let w = &c["webhooks"][0];
        assert_eq!(w["clientConfig"]["caBundle"], "Q0E=");
        assert_eq!(w["rules"][0]["resources"], json!(["deployments", "statefulsets"]));
        assert_eq!(w["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"], "kube-system");
        assert_eq!(w["objectSelector"]["matchLabels"]["app"], "vpn-shoot");
        assert_eq!(w["failurePolicy"], "Fail");
    }
}
