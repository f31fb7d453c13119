//! The input of kubelink's admission webhooks: any request body. Never a panic; a body that decodes
//! gets a verdict from the garden webhook with a garden holding the parent seed (its reads answer
//! at once, so the decision is polled once), whose answer is a well-formed AdmissionReview carrying
//! the request's uid, and whose refusal stays short enough to read; and the shoot webhook's answer,
//! for that request and for it renamed to kube-system/vpn-shoot, whatever the object: allowed, with the uid, a patch only as base64.
#![no_main]

use std::future::Future;
use std::task::{Context, Poll, Waker};

use kubelink::garden_admission::review::{Garden, Ref, decide, decode, response};
use kubelink::shoot_webhook::mutate::Sidecar;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

const MAX_MESSAGE: usize = 4096;

/// The parent seed `local` (kubelink on 192.168.128.0/22) and a ManagedSeed `child` on its shoot.
struct Parent;

impl Garden for Parent {
    async fn get(&self, what: &Ref) -> Result<Option<Value>, String> {
        Ok(match what {
            Ref::Seed { name } if name == "local" => Some(json!({"metadata": {"name": "local"}, "spec": {
                "extensions": [{"type": "kubelink-wireguard", "providerConfig": {"cidr": "192.168.128.0/22"}}]}})),
            Ref::Shoot { .. } => Some(json!({"spec": {"seedName": "local"}})),
            Ref::ManagedSeed { name, .. } => Some(json!({"spec": {"shoot": {"name": name}}})),
            _ => None,
        })
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(request) = decode(data) else { return };
    let mut decision = std::pin::pin!(decide(&Parent, &request));
    let Poll::Ready(verdict) = decision.as_mut().poll(&mut Context::from_waker(Waker::noop())) else {
        panic!("the decision waited with a garden that answers at once");
    };
    if let Some(m) = &verdict.message {
        assert!(m.len() <= MAX_MESSAGE, "{} byte message", m.len());
    }
    let answer = response(&request.uid, &verdict);
    assert_eq!(answer["response"]["uid"], json!(request.uid));
    assert_eq!(answer["response"]["allowed"], json!(verdict.allowed));
    let mut shoot = request.clone();
    (shoot.group, shoot.namespace, shoot.name) = ("apps".into(), "kube-system".into(), "vpn-shoot".into());
    let sidecar = Sidecar { image: "kubelink:fuzz".into() };
    for r in [&request, &shoot] {
        let answer = kubelink::shoot_webhook::review(r, &sidecar);
        assert_eq!(answer["response"]["uid"], json!(r.uid));
        assert_eq!(answer["response"]["allowed"], json!(true));
        if let Some(patch) = answer["response"]["patch"].as_str() {
            assert!(patch.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)), "not base64: {patch}");
        }
    }
});
