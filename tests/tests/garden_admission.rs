//! `kubelink garden-admission` in a real garden: gardener-apiserver of the pinned gardener release,
//! aggregated into the test kube-apiserver (`k8s::garden`), calls the webhook the application chart
//! registers, with its own admission chain and Kubernetes' webhook plugin: every request the webhook
//! decides is a real AdmissionReview for a Seed or ManagedSeed that gardener-apiserver already
//! defaulted and validated. The webhook reads the garden with a token of the ServiceAccount the chart
//! binds, as gardener-operator's injected kubeconfig would carry it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use kubelink_tests::k8s::garden::{self, GardenApi};
use kubelink_tests::k8s::process::Daemon;
use kubelink_tests::k8s::{self, Cluster};
use kubelink_tests::{helm, netns, skip};
use serde_json::{Value, json};

/// The ServiceAccount gardener-operator makes for an extension's admission in the virtual garden.
const SA: (&str, &str) = ("kube-system", "extension-kubelink-admission");

struct Env {
    cluster: Cluster,
    _garden: GardenApi,
    webhook: Daemon,
    /// The webhook's ServiceAccount token (what its injected kubeconfig carries).
    token: String,
}

/// The garden with the webhook registered and running, shared by the tests of this binary; `None`
/// after a SKIPPED line (a failure under CI) when a tool is missing.
async fn env(test: &str) -> Option<&'static Env> {
    static ENV: tokio::sync::OnceCell<Result<Env, String>> = tokio::sync::OnceCell::const_new();
    let missing = k8s::tools::tools()
        .err()
        .or_else(|| k8s::tools::gardener_apiserver().err())
        .or_else(|| netns::find_kubelink().err());
    if let Some(why) = missing {
        skip::skip(test, &why);
        return None;
    }
    match ENV.get_or_init(start).await {
        Ok(env) => Some(env),
        Err(e) => panic!("starting the garden: {e}"),
    }
}

async fn start() -> Result<Env, String> {
    let cluster = Cluster::start(k8s::Options { name: "garden-admission".into(), ..Default::default() }).await?;
    let garden_api = GardenApi::start(&cluster).await?;
    let admin = cluster.client().await?;
    // What every garden has: the provider's and kubelink's registrations, a CloudProfile, the
    // garden project and the credentials its shoots use.
    let registration = |file: &str| -> Result<Vec<Value>, String> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../example").join(file);
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let value: Value = serde_yaml_ng::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(vec![value])
    };
    let mut objects = registration("controller-deployment.yaml")?;
    objects.extend(registration("controller-registration.yaml")?);
    let secret =
        |name: &str| json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "garden"}});
    objects.extend([
        json!({"apiVersion": "core.gardener.cloud/v1beta1", "kind": "ControllerRegistration",
               "metadata": {"name": "provider-local"}, "spec": {"resources": [
                   {"kind": "ControlPlane", "type": "local"}, {"kind": "Infrastructure", "type": "local"},
                   {"kind": "Worker", "type": "local"}, {"kind": "DNSRecord", "type": "local"},
                   {"kind": "OperatingSystemConfig", "type": "local"}, {"kind": "Network", "type": "calico"}]}}),
        kubelink_tests::gardenlet::cloud_profile_json("local", "local"),
        json!({"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Project", "metadata": {"name": "garden"},
               "spec": {"namespace": "garden"}}),
        secret("local"),
        secret("seed-dns"),
        secret("internal-dns"),
        json!({"apiVersion": "security.gardener.cloud/v1alpha1", "kind": "CredentialsBinding",
               "metadata": {"name": "local", "namespace": "garden"}, "provider": {"type": "local"},
               "credentialsRef": {"apiVersion": "v1", "kind": "Secret", "name": "local", "namespace": "garden"}}),
    ]);
    for object in &objects {
        garden::apply(&admin, object).await?;
    }

    // The webhook: its serving certificate, the application chart's grants and registration, the
    // process with a token of the bound ServiceAccount.
    let serving = garden::serving_cert(&cluster.dir, "kubelink-admission", &["localhost"])?;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        l.local_addr().map_err(|e| e.to_string())?.port()
    };
    let values = json!({
        "gardener": {"virtualCluster": {"serviceAccount": {"name": SA.1, "namespace": SA.0}}},
        "webhook": {"url": format!("https://127.0.0.1:{port}/validate"), "caBundle": serving.ca_pem},
    });
    let kubeconfig = cluster.admin_kubeconfig_file()?;
    helm::install(&helm::chart("kubelink-admission/application"), &kubeconfig, "garden", "kubelink-admission", values)
        .await
        .map_err(|e| e.to_string())?;
    let token = cluster.token_for(SA.0, SA.1).await?;
    let garden_kubeconfig = cluster.dir.join("garden-admission.kubeconfig");
    std::fs::write(&garden_kubeconfig, cluster.kubeconfig(None, &token)).map_err(|e| e.to_string())?;
    let args = [
        "garden-admission".to_string(),
        format!("--listen=127.0.0.1:{port}"),
        format!("--tls-cert-file={}", serving.cert.display()),
        format!("--tls-key-file={}", serving.key.display()),
        format!("--kubeconfig={}", garden_kubeconfig.display()),
        "--log=info,kubelink=debug".into(),
    ];
    let webhook = Daemon::start(&netns::find_kubelink()?, &args, None, &cluster.dir.join("garden-admission.log"))?;
    let env = Env { cluster, _garden: garden_api, webhook, token };
    // Ready once gardener-apiserver calls it: a refused probe (a ManagedSeed without a shoot name is
    // refused by Gardener's validation before any webhook, so probe with a Seed that overlaps its nodes).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let probe = seed("probe", Some("10.250.1.0/24"));
        match create(&admin, &probe).await {
            Err(e) if e.contains("denied the request") => break,
            Ok(_) => {
                let _ = seeds(&admin).delete("probe", &Default::default()).await;
            }
            Err(_) => {}
        }
        if Instant::now() > deadline {
            return Err(format!("the webhook is not called within 60 s:\n{}", env.webhook.log_tail(20)));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(env)
}

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

fn seeds(client: &Client) -> Api<DynamicObject> {
    Api::all_with(client.clone(), &resource("core.gardener.cloud", "v1beta1", "Seed", "seeds"))
}

fn api_for(client: &Client, object: &Value) -> Api<DynamicObject> {
    match object["kind"].as_str() {
        Some("Seed") => seeds(client),
        Some("Shoot") => Api::namespaced_with(
            client.clone(),
            "garden",
            &resource("core.gardener.cloud", "v1beta1", "Shoot", "shoots"),
        ),
        _ => Api::namespaced_with(
            client.clone(),
            "garden",
            &resource("seedmanagement.gardener.cloud", "v1alpha1", "ManagedSeed", "managedseeds"),
        ),
    }
}

/// Creates `object`; the API's refusal as its message.
async fn create(client: &Client, object: &Value) -> Result<Value, String> {
    let obj: DynamicObject = serde_json::from_value(object.clone()).map_err(|e| e.to_string())?;
    match api_for(client, object).create(&PostParams::default(), &obj).await {
        Ok(o) => Ok(serde_json::to_value(o).unwrap()),
        Err(kube::Error::Api(s)) => Err(s.message),
        Err(e) => Err(e.to_string()),
    }
}

/// A seed's spec with kubelink's CIDR (none: no kubelink), networks `nodes`, ingress under `domain`.
fn seed_spec(cidr: Option<&str>, nodes: &str, domain: &str) -> Value {
    let credentials = |name: &str| json!({"apiVersion": "v1", "kind": "Secret", "name": name, "namespace": "garden"});
    let mut spec = json!({
        "provider": {"type": "local", "region": "local", "zones": ["0"]},
        "networks": {"nodes": nodes, "pods": "100.96.0.0/11", "services": "100.64.0.0/13", "ipFamilies": ["IPv4"]},
        "ingress": {"domain": domain, "controller": {"kind": "nginx"}},
        "dns": {"provider": {"type": "local", "credentialsRef": credentials("seed-dns")},
                "internal": {"type": "local", "domain": "internal.local.gardener.cloud",
                             "credentialsRef": credentials("internal-dns")}},
    });
    if let Some(cidr) = cidr {
        spec["extensions"] = json!([{"type": "kubelink-wireguard", "providerConfig": {"cidr": cidr, "slots": 2}}]);
    }
    spec
}

/// A Seed `name` (what gardenlet registers), with kubelink's CIDR when given.
fn seed(name: &str, cidr: Option<&str>) -> Value {
    json!({"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Seed",
           "metadata": {"name": name, "labels": {"seed.gardener.cloud/region": "local"}},
           "spec": seed_spec(cidr, "10.250.0.0/16", &format!("ingress.{name}.seed.local.gardener.cloud"))})
}

/// Shoot `garden/name` on seed `parent`, to become a managed seed.
fn shoot(name: &str, parent: &str) -> Value {
    json!({"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot",
           "metadata": {"name": name, "namespace": "garden"},
           "spec": {"cloudProfile": {"kind": "CloudProfile", "name": "local"}, "credentialsBindingName": "local",
                    "region": "local", "seedName": parent, "purpose": "evaluation",
                    "kubernetes": {"version": "1.34.3"},
                    "networking": {"type": "calico", "ipFamilies": ["IPv4"], "nodes": "10.250.0.0/16",
                                   "pods": "100.96.0.0/11", "services": "100.64.0.0/13"},
                    "dns": {"domain": format!("{name}.local.gardener.cloud")},
                    "provider": {"type": "local", "workers": [{"name": "worker",
                        "machine": {"type": "local", "image": {"name": "local", "version": "1.0.0"}},
                        "minimum": 1, "maximum": 2, "zones": ["0"]}]}}})
}

/// ManagedSeed `garden/name` on Shoot `garden/name`, its seed with kubelink's CIDR when given.
fn managed_seed(name: &str, cidr: Option<&str>) -> Value {
    let spec = seed_spec(cidr, "10.250.0.0/16", &format!("ingress.{name}.local.gardener.cloud"));
    json!({"apiVersion": "seedmanagement.gardener.cloud/v1alpha1", "kind": "ManagedSeed",
           "metadata": {"name": name, "namespace": "garden"},
           "spec": {"shoot": {"name": name}, "gardenlet": {"config": {
               "apiVersion": "gardenlet.config.gardener.cloud/v1alpha1", "kind": "GardenletConfiguration",
               "seedConfig": {"metadata": {"labels": {"seed.gardener.cloud/region": "local"}}, "spec": spec}}}}})
}

/// A parent seed `parent` with `cidr` and a shoot `child` on it.
async fn parent_and_shoot(client: &Client, parent: &str, cidr: Option<&str>, child: &str) {
    create(client, &seed(parent, cidr)).await.expect("the parent Seed");
    create(client, &shoot(child, parent)).await.expect("the shoot to become a seed");
}

#[tokio::test]
async fn a_child_managed_seed_with_its_parents_cidr_is_refused_a_disjoint_one_admitted() {
    let Some(env) = env("a_child_managed_seed_with_its_parents_cidr_is_refused_a_disjoint_one_admitted").await else {
        return;
    };
    let admin = env.cluster.client().await.unwrap();
    parent_and_shoot(&admin, "parent-a", Some("192.168.128.0/22"), "child-a").await;
    let refused = create(&admin, &managed_seed("child-a", Some("192.168.128.0/22"))).await.unwrap_err();
    assert_eq!(
        refused,
        "admission webhook \"seeds.kubelink.gardener.cloud\" denied the request: \
         spec.gardenlet.config.seedConfig.spec.extensions[kubelink-wireguard].providerConfig.cidr 192.168.128.0/22 \
         overlaps the WireGuard CIDR of parent seed parent-a 192.168.128.0/22; the WireGuard CIDR must share no \
         address with it, pick another range"
    );
    let inside = create(&admin, &managed_seed("child-a", Some("192.168.130.0/24"))).await.unwrap_err();
    assert!(inside.contains("overlaps the WireGuard CIDR of parent seed parent-a"), "{inside}");
    create(&admin, &managed_seed("child-a", Some("192.168.132.0/22"))).await.expect("a disjoint range is admitted");
    // Its Seed, as gardenlet registers it from the ManagedSeed's seedConfig: admitted too.
    let mut child = seed("child-a", Some("192.168.132.0/22"));
    child["spec"] =
        managed_seed("child-a", Some("192.168.132.0/22"))["spec"]["gardenlet"]["config"]["seedConfig"]["spec"].clone();
    create(&admin, &child).await.expect("the child's Seed");
}

#[tokio::test]
async fn a_seed_update_into_its_parents_range_is_refused() {
    let Some(env) = env("a_seed_update_into_its_parents_range_is_refused").await else { return };
    let admin = env.cluster.client().await.unwrap();
    parent_and_shoot(&admin, "parent-b", Some("192.168.128.0/22"), "child-b").await;
    create(&admin, &managed_seed("child-b", Some("10.10.0.0/22"))).await.expect("the ManagedSeed");
    create(&admin, &seed("child-b", Some("10.10.0.0/22"))).await.expect("the child's Seed");
    let patch = json!({"spec": {"extensions": [{"type": "kubelink-wireguard",
        "providerConfig": {"cidr": "192.168.129.0/24", "slots": 2}}]}});
    let refused = seeds(&admin)
        .patch("child-b", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(drop)
        .map_err(|e| e.to_string())
        .unwrap_err();
    assert!(
        refused.contains(
            "denied the request: spec.extensions[kubelink-wireguard].providerConfig.cidr 192.168.129.0/24 overlaps the \
             WireGuard CIDR of parent seed parent-b 192.168.128.0/22"
        ),
        "{refused}"
    );
    // A change that keeps the range (a label) is admitted; so is another disjoint range.
    let label = json!({"metadata": {"labels": {"example": "x"}}});
    seeds(&admin).patch("child-b", &PatchParams::default(), &Patch::Merge(&label)).await.expect("a label");
    let patch =
        json!({"spec": {"extensions": [{"type": "kubelink-wireguard", "providerConfig": {"cidr": "10.20.0.0/22"}}]}});
    seeds(&admin).patch("child-b", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("a disjoint range");
}

#[tokio::test]
async fn a_seed_without_kubelink_settings_is_admitted() {
    let Some(env) = env("a_seed_without_kubelink_settings_is_admitted").await else { return };
    let admin = env.cluster.client().await.unwrap();
    parent_and_shoot(&admin, "parent-c", Some("192.168.128.0/22"), "child-c").await;
    create(&admin, &managed_seed("child-c", None)).await.expect("a ManagedSeed without kubelink");
    create(&admin, &seed("child-c", None)).await.expect("its Seed without kubelink");
    // A parent without kubelink: nothing to overlap.
    parent_and_shoot(&admin, "parent-d", None, "child-d").await;
    create(&admin, &managed_seed("child-d", Some("192.168.128.0/22"))).await.expect("the parent has no range");
}

#[tokio::test]
async fn the_webhooks_credentials_read_only_what_it_needs() {
    let Some(env) = env("the_webhooks_credentials_read_only_what_it_needs").await else { return };
    let admin = env.cluster.client().await.unwrap();
    parent_and_shoot(&admin, "parent-e", None, "child-e").await;
    let client = env.cluster.client_with_token(&env.token).await.unwrap();
    // What the rule reads, by name: allowed.
    seeds(&client).get("parent-e").await.expect("get a Seed");
    api_for(&client, &json!({"kind": "Shoot"})).get("child-e").await.expect("get a Shoot");
    let missing = api_for(&client, &json!({"kind": "ManagedSeed"})).get_opt("nothing").await;
    assert!(matches!(missing, Ok(None)), "get a ManagedSeed: {missing:?}");
    // Anything else: 403.
    let forbidden = |r: Result<(), kube::Error>, what: &str| match r {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("{what}: expected 403, got {other:?}"),
    };
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), "garden");
    forbidden(secrets.get("local").await.map(drop), "get a Secret");
    forbidden(secrets.list(&Default::default()).await.map(drop), "list Secrets");
    forbidden(seeds(&client).list(&Default::default()).await.map(drop), "list Seeds");
    let seed_obj: DynamicObject = serde_json::from_value(seed("by-webhook", None)).unwrap();
    forbidden(seeds(&client).create(&PostParams::default(), &seed_obj).await.map(drop), "create a Seed");
    let patch = json!({"metadata": {"labels": {"x": "y"}}});
    forbidden(
        seeds(&client).patch("parent-e", &PatchParams::default(), &Patch::Merge(&patch)).await.map(drop),
        "patch a Seed",
    );
    let hooks = resource(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
    );
    forbidden(
        Api::<DynamicObject>::all_with(client.clone(), &hooks).get("kubelink-admission").await.map(drop),
        "its webhook",
    );
}
