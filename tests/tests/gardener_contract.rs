//! kubelink's contract with Gardener, checked by Gardener's own code: `gardener-contract`
//! (`tests/gardener/`, built from the gardener module by `scripts/k8s-tools --gardener-contract`).
//!
//! - the registration (`example/`: ControllerRegistration, ControllerDeployment, gardener-operator's
//!   Extension) passes Gardener's validation, and gardener-apiserver's ExtensionValidator admits a
//!   Seed and a Shoot that use `kubelink-wireguard`; broken copies are refused with Gardener's message;
//! - the committed files are what `scripts/registration` writes (the chart inside is current);
//! - gardenlet's ControllerInstallation reconciler renders the committed ControllerDeployment's chart
//!   for a realistic Seed: what it puts into its class-seed ManagedResource, every namespaced object in
//!   the release namespace, each accepted by the real kube-apiserver (dry run); the values schema
//!   refuses bad values on that path too.
//!
//! Without the binaries the tests print SKIPPED and pass, and fail when `CI=true`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use kube::Api;
use kube::api::{DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use kubelink_tests::gardenlet::{SeedFixture, ShootFixture};
use kubelink_tests::k8s::{self, tools};
use kubelink_tests::skip::skip;
use serde_json::{Value, json};

/// Where gardenlet installs the chart: `extension-<ControllerInstallation name>`, the installation
/// named by gardener-controller-manager after the registration with a random suffix.
const NAMESPACE: &str = "extension-kubelink-x7k2q";
const EXTENSION_TYPE: &str = "kubelink-wireguard";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn example(file: &str) -> PathBuf {
    repo().join("example").join(file)
}

/// The gardener-contract binary, or `None` after a SKIPPED line (a failure under CI).
fn contract(test: &str) -> Option<PathBuf> {
    match tools::gardener_contract() {
        Ok(bin) => Some(bin.to_path_buf()),
        Err(e) => {
            skip(test, &e);
            None
        }
    }
}

/// A fresh directory under the system temp dir.
fn scratch(what: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "kubelink-gardener-{}-{what}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `text` to `dir/name` and returns the path.
fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn run(bin: &Path, args: &[&std::ffi::OsStr]) -> Run {
    let out = Command::new(bin).args(args).output().unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn validate(bin: &Path, files: &[&Path]) -> Run {
    let mut args: Vec<&std::ffi::OsStr> = vec!["validate-registration".as_ref()];
    args.extend(files.iter().map(|f| f.as_os_str()));
    run(bin, &args)
}

/// A Seed as gardener-apiserver accepts it (v1.149: DNS provider and internal domain required),
/// with kubelink's seed configuration in `spec.extensions` and what gardenlet needs in its status.
fn seed() -> Value {
    let config = json!({
        "cidr": "192.168.128.0/22",
        "slots": 2,
        "slotEndpoints": ["gw-0.seed.example:51820", "gw-1.seed.example:51820"],
    });
    let mut seed = SeedFixture::new("local").with_extension(EXTENSION_TYPE, Some(config)).to_json();
    let kubernetes = tools::tools().map(|t| t.version("kubernetes").to_string()).unwrap_or("v1.34.3".into());
    seed["metadata"]["labels"] = json!({"seed.gardener.cloud/region": "local"});
    seed["spec"]["provider"]["zones"] = json!(["0"]);
    seed["spec"]["networks"]["blockCIDRs"] = json!(["169.254.169.254/32"]);
    let credentials = |name: &str| json!({"apiVersion": "v1", "kind": "Secret", "name": name, "namespace": "garden"});
    seed["spec"]["dns"] = json!({
        "provider": {"type": "local", "credentialsRef": credentials("seed-dns")},
        "internal": {"type": "local", "domain": "internal.local.gardener.cloud", "credentialsRef": credentials("internal-dns")},
    });
    seed["status"] = json!({"clusterIdentity": "seed-local", "kubernetesVersion": kubernetes});
    seed
}

/// A Shoot on that Seed listing `extensions` (types) in `spec.extensions`.
fn shoot(extensions: &[&str]) -> Value {
    let mut fixture = ShootFixture::new("dev", "s1", "local");
    for ext in extensions {
        fixture = fixture.with_extension(ext, None);
    }
    fixture.to_json()
}

/// The provider's registration every landscape has: the Seed's and the Shoot's provider, DNS,
/// networking and OS types (ExtensionValidator requires them registered too).
const PROVIDER: &str = "apiVersion: core.gardener.cloud/v1beta1
kind: ControllerRegistration
metadata:
  name: provider-local
spec:
  resources:
  - {kind: ControlPlane, type: local}
  - {kind: Infrastructure, type: local}
  - {kind: Worker, type: local}
  - {kind: DNSRecord, type: local}
  - {kind: OperatingSystemConfig, type: local}
  - {kind: Network, type: calico}
";

/// The committed registration files with a Seed and a Shoot using the type, in `dir`.
fn landscape(dir: &Path, shoot_value: &Value) -> Vec<PathBuf> {
    vec![
        write(dir, "provider.yaml", PROVIDER),
        write(dir, "seed.json", &seed().to_string()),
        write(dir, "shoot.json", &shoot_value.to_string()),
    ]
}

#[test]
fn registration_passes_gardeners_validation_and_admission() {
    let Some(bin) = contract("registration_passes_gardeners_validation_and_admission") else { return };
    let dir = scratch("valid");
    let mut files = vec![example("controller-registration.yaml"), example("controller-deployment.yaml")];
    files.extend(landscape(&dir, &shoot(&[EXTENSION_TYPE])));
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let r = validate(&bin, &refs);
    assert!(r.ok, "Gardener refuses the registration:\n{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("5 object(s) valid"), "{}", r.stderr);

    // gardener-operator's form: the Extension itself (its webhook's validation), and the
    // ControllerRegistration and ControllerDeployment gardener-operator makes of it
    // (gardener-apiserver's validation), which alone register the type for the Seed and the Shoot.
    let mut files = vec![example("extension-operator.yaml")];
    files.extend(landscape(&dir, &shoot(&[EXTENSION_TYPE])));
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let r = validate(&bin, &refs);
    assert!(r.ok, "Gardener refuses the operator Extension:\n{}{}", r.stdout, r.stderr);
}

/// Each broken copy of a committed file is refused, with Gardener's message.
#[test]
fn broken_registrations_are_refused_with_gardeners_message() {
    let Some(bin) = contract("broken_registrations_are_refused_with_gardeners_message") else { return };
    let dir = scratch("broken");
    let registration = std::fs::read_to_string(example("controller-registration.yaml")).unwrap();
    let deployment = std::fs::read_to_string(example("controller-deployment.yaml")).unwrap();
    let operator = std::fs::read_to_string(example("extension-operator.yaml")).unwrap();
    let landscape = landscape(&dir, &shoot(&[EXTENSION_TYPE]));
    let with = |changed: &str, replace: (&str, &str), file: &str| {
        assert!(changed.contains(replace.0), "{file} no longer contains {:?}", replace.0);
        write(&dir, file, &changed.replacen(replace.0, replace.1, 1))
    };

    let cases: Vec<(&str, PathBuf, Vec<PathBuf>, &str)> = vec![
        (
            "clusterCompatibility without seed: the Seed's extension type is not registered for seeds",
            with(&registration, ("    - seed\n", ""), "no-seed.yaml"),
            landscape.clone(),
            r#"given Seed uses non-registered extension type: spec.extensions[0].type ("kubelink-wireguard")"#,
        ),
        (
            "clusterCompatibility left out: Gardener defaults it to [shoot]",
            with(&registration, ("    clusterCompatibility:\n    - seed\n    - shoot\n", ""), "default-compat.yaml"),
            landscape.clone(),
            r#"given Seed uses non-registered extension type: spec.extensions[0].type ("kubelink-wireguard")"#,
        ),
        (
            "a type nobody registered in a Shoot",
            example("controller-registration.yaml"),
            vec![landscape[0].clone(), write(&dir, "typo-shoot.json", &shoot(&["kubelink-wirguard"]).to_string())],
            r#"given Shoot uses non-registered extension type: spec.extensions[0].type ("kubelink-wirguard")"#,
        ),
        (
            "a workerless Shoot (kubelink is not workerlessSupported)",
            example("controller-registration.yaml"),
            vec![
                landscape[0].clone(),
                write(&dir, "workerless.json", &workerless(shoot(&[EXTENSION_TYPE])).to_string()),
            ],
            r#"given Shoot is workerless and uses non-supported extension type: spec.extensions[0].type ("kubelink-wireguard")"#,
        ),
        (
            "an unknown kind",
            with(&registration, ("  - kind: Extension\n", "  - kind: Extensions\n"), "kind.yaml"),
            vec![],
            r#"spec.resources[0].kind: Unsupported value: "Extensions""#,
        ),
        (
            "an unknown cluster type",
            with(&registration, ("    - seed\n", "    - garden\n"), "garden.yaml"),
            vec![],
            r#"spec.resources[0].clusterCompatibility[0]: Unsupported value: "garden": supported values: "seed", "shoot""#,
        ),
        (
            "autoEnable for seeds without seed compatibility",
            with(
                &registration,
                ("    - seed\n    - shoot\n", "    - shoot\n    autoEnable:\n    - seed\n"),
                "auto.yaml",
            ),
            vec![],
            r#"spec.resources[0].autoEnable[0]: Forbidden: autoEnable is not allowed for cluster type "seed""#,
        ),
        (
            "a misspelt field (gardener-apiserver with kubectl's strict field validation)",
            with(&registration, ("  deployment:\n", "  deploymnet:\n"), "field.yaml"),
            vec![],
            r#"strict decoding error: unknown field "spec.deploymnet""#,
        ),
        (
            "a ControllerDeployment with both rawChart and ociRepository",
            with(
                &deployment,
                ("  rawChart: ", "  ociRepository:\n    ref: example/kubelink:0.1.0\n  rawChart: "),
                "both.yaml",
            ),
            vec![],
            "helm: Required value: must provide either rawChart or ociRepository",
        ),
        (
            "an operator Extension without the chart's reference",
            with(&operator, ("          ref: ", "          tag: "), "no-ref.yaml"),
            vec![],
            "spec.deployment.extension.helm.ociRepository: Required value: must provide either ref or repository",
        ),
    ];
    for (what, file, others, message) in cases {
        let mut files = vec![file.as_path()];
        files.extend(others.iter().map(PathBuf::as_path));
        let r = validate(&bin, &files);
        assert!(!r.ok, "{what}: accepted\n{}{}", r.stdout, r.stderr);
        assert!(r.stdout.contains(message), "{what}: Gardener's message {message:?} not in:\n{}{}", r.stdout, r.stderr);
    }
}

/// The Shoot without workers, as a workerless Shoot is.
fn workerless(mut shoot: Value) -> Value {
    let spec = shoot["spec"].as_object_mut().unwrap();
    spec["provider"].as_object_mut().unwrap().remove("workers");
    spec.remove("networking");
    spec.remove("credentialsBindingName");
    shoot
}

/// The Extension as gardener-operator's runtime cluster stores it: its CRD from the gardener module
/// in the real kube-apiserver, `kubectl create --dry-run=server` (strict field validation).
#[tokio::test]
async fn operator_extension_is_accepted_by_its_crd() {
    let test = "operator_extension_is_accepted_by_its_crd";
    let Some(cluster) = k8s::for_test(test).await else { return };
    let crd = match tools::gardener_dir() {
        Ok(dir) => dir.join("example/operator/10-crd-operator.gardener.cloud_extensions.yaml"),
        Err(e) => {
            skip(test, &e);
            return;
        }
    };
    cluster.install_crds(&[crd]).await.unwrap();
    let kubeconfig = cluster.admin_kubeconfig_file().unwrap();
    let out = cluster
        .kubectl(&kubeconfig)
        .unwrap()
        .args(["create", "--dry-run=server", "-o", "json", "-f"])
        .arg(example("extension-operator.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "the Extension CRD refuses it: {}", String::from_utf8_lossy(&out.stderr));
    let stored: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stored["spec"]["resources"][0]["type"], EXTENSION_TYPE);
    assert_eq!(stored["spec"]["resources"][0]["clusterCompatibility"], json!(["seed", "shoot"]));
}

#[test]
fn committed_registration_is_what_scripts_registration_writes() {
    let test = "committed_registration_is_what_scripts_registration_writes";
    if contract(test).is_none() {
        return;
    }
    if let Err(e) = tools::tools() {
        skip(test, &e);
        return;
    }
    let dir = scratch("generated");
    let out = Command::new(repo().join("scripts/registration")).arg("--out").arg(&dir).output().unwrap();
    assert!(out.status.success(), "scripts/registration: {}", String::from_utf8_lossy(&out.stderr));
    for file in ["controller-registration.yaml", "controller-deployment.yaml", "extension-operator.yaml"] {
        let generated = std::fs::read_to_string(dir.join(file)).unwrap();
        let committed = std::fs::read_to_string(example(file)).unwrap_or_default();
        assert!(
            generated == committed,
            "example/{file} is stale (charts/kubelink or scripts/registration changed): run scripts/registration \
             and commit example/"
        );
    }
}

/// Renders `deployment` (a ControllerDeployment) as gardenlet does, for [`seed`].
fn render(bin: &Path, dir: &Path, deployment: &Path, values: Option<&Value>) -> Run {
    let seed = write(dir, "seed.json", &seed().to_string());
    let mut args: Vec<std::ffi::OsString> = vec!["render".into(), "--output".into(), "json".into()];
    for (flag, value) in [
        ("--seed", seed.into_os_string()),
        ("--namespace", NAMESPACE.into()),
        ("--controller-deployment", deployment.as_os_str().to_owned()),
        ("--registration", example("controller-registration.yaml").into_os_string()),
    ] {
        args.push(flag.into());
        args.push(value);
    }
    if let Some(values) = values {
        args.push("--values".into());
        args.push(write(dir, "values.json", &values.to_string()).into_os_string());
    }
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    run(bin, &args)
}

/// gardenlet renders the committed ControllerDeployment for a realistic Seed: the release, the
/// values it mixes in, and objects that a seed's gardener-resource-manager can apply as they are.
#[tokio::test]
async fn gardenlet_renders_the_chart() {
    let test = "gardenlet_renders_the_chart";
    let Some(bin) = contract(test) else { return };
    let Some(cluster) = k8s::for_test(test).await else { return };
    let dir = scratch("render");
    let r = render(&bin, &dir, &example("controller-deployment.yaml"), None);
    assert!(r.ok, "gardenlet cannot render the chart:\n{}", r.stderr);
    let report: Value = serde_json::from_str(&r.stdout).unwrap();

    // The release: named after the ControllerRegistration, in the installation's namespace, which
    // gardenlet labels and makes privileged as the registration asks.
    assert_eq!(report["release"], json!({"name": "kubelink", "namespace": NAMESPACE}));
    let labels = &report["namespace"]["metadata"]["labels"];
    assert_eq!(labels["gardener.cloud/role"], "extension");
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "privileged");
    assert_eq!(report["managedResource"]["spec"]["class"], "seed");

    // What gardenlet mixes in under `gardener`.
    let gardener = &report["values"]["gardener"];
    if let Ok(tools) = tools::tools() {
        assert_eq!(gardener["version"], tools.version("gardener"), "the gardener release of the CRDs and of gardenlet");
    }
    assert_eq!(gardener["garden"]["clusterIdentity"], "garden");
    assert!(gardener["gardenlet"]["featureGates"]["DefaultSeccompProfile"].is_boolean(), "{gardener}");
    let seed_values = &gardener["seed"];
    assert_eq!(seed_values["name"], "local");
    assert_eq!(seed_values["clusterIdentity"], "seed-local");
    assert_eq!(seed_values["blockCIDRs"], json!(["169.254.169.254/32"]));
    assert_eq!(seed_values["networks"]["nodes"], "172.18.0.0/16");
    assert_eq!(seed_values["spec"]["extensions"][0]["type"], EXTENSION_TYPE);
    assert_eq!(seed_values["spec"]["settings"]["scheduling"]["visible"], true, "the Seed is read defaulted");

    // The objects of the ManagedResource: each namespaced one in the release namespace (the
    // resource manager applies them as they are, with no release namespace to fill in), each
    // accepted by the real kube-apiserver; every container told the seed's name by gardenlet.
    let objects = report["objects"].as_array().unwrap();
    assert!(!objects.is_empty(), "nothing rendered");
    cluster.ensure_namespace(NAMESPACE).await.unwrap();
    let client = cluster.client().await.unwrap();
    let mut workloads = 0;
    for o in objects {
        let (kind, name) = (o["kind"].as_str().unwrap(), o["metadata"]["name"].as_str().unwrap());
        let (group, version) = match o["apiVersion"].as_str().unwrap().split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", o["apiVersion"].as_str().unwrap()),
        };
        let (resource, caps) = kube::discovery::pinned_kind(&client, &GroupVersionKind::gvk(group, version, kind))
            .await
            .unwrap_or_else(|e| panic!("a seed does not serve {kind}: {e}"));
        let api: Api<DynamicObject> = match caps.scope {
            kube::discovery::Scope::Namespaced => {
                assert_eq!(
                    o["metadata"]["namespace"].as_str(),
                    Some(NAMESPACE),
                    "{kind} {name} is not in the release namespace"
                );
                Api::namespaced_with(client.clone(), NAMESPACE, &resource)
            }
            kube::discovery::Scope::Cluster => Api::all_with(client.clone(), &resource),
        };
        let object: DynamicObject = serde_json::from_value(o.clone()).unwrap();
        let params = PostParams { dry_run: true, ..PostParams::default() };
        match api.create(&params, &object).await {
            Ok(_) => {}
            // kubelink's CRDs are on the test cluster already: the server checks them as an update.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let apply = kube::api::PatchParams::apply("gardener-contract").dry_run().force();
                let patch = kube::api::Patch::Apply(&object);
                api.patch(name, &apply, &patch).await.unwrap_or_else(|e| panic!("the seed refuses {kind} {name}: {e}"));
            }
            Err(e) => panic!("the seed refuses {kind} {name}: {e}"),
        }
        if let Some(containers) = o["spec"]["template"]["spec"]["containers"].as_array() {
            workloads += 1;
            for c in containers {
                let env = c["env"].as_array().cloned().unwrap_or_default();
                assert!(
                    env.contains(&json!({"name": "SEED_NAME", "value": "local"})),
                    "{kind} {name}: gardenlet's SEED_NAME missing in {}",
                    c["name"]
                );
            }
        }
    }
    assert!(workloads > 0, "no workload rendered");
}

/// gardenlet's renderer enforces `values.schema.json` (Helm's engine does, before any template).
#[test]
fn gardenlet_enforces_the_values_schema() {
    let Some(bin) = contract("gardenlet_enforces_the_values_schema") else { return };
    let dir = scratch("schema");
    let values = json!({"controller": {"enabled": true}, "slots": 5});
    let r = render(&bin, &dir, &example("controller-deployment.yaml"), Some(&values));
    assert!(!r.ok, "rendered with slots: 5:\n{}", r.stdout);
    assert!(r.stderr.contains("values don't meet the specifications of the schema"), "{}", r.stderr);
    assert!(r.stderr.contains("slots"), "{}", r.stderr);
    assert!(r.stderr.contains("ChartCannotBeRendered"), "{}", r.stderr);
}

/// The SeedTunnel and ShootPeer CRDs reach the seed with the chart: gardenlet renders templates only
/// and drops `crds/` (chartrenderer), so they come from `templates/`.
#[test]
fn gardenlet_deploys_kubelinks_crds() {
    let Some(bin) = contract("gardenlet_deploys_kubelinks_crds") else { return };
    let dir = scratch("crds");
    let r = render(&bin, &dir, &example("controller-deployment.yaml"), None);
    assert!(r.ok, "gardenlet cannot render the chart:\n{}", r.stderr);
    let report: Value = serde_json::from_str(&r.stdout).unwrap();
    let crds: Vec<&str> = report["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
        .filter_map(|o| o["metadata"]["name"].as_str())
        .collect();
    for name in ["seedtunnels.kubelink.gardener.cloud", "shootpeers.kubelink.gardener.cloud"] {
        assert!(crds.contains(&name), "CRD {name} not rendered (rendered CRDs: {crds:?})");
    }
}

/// What Gardener's vpn-shoot component writes for a shoot (gardenlet's botanist configuration), the
/// objects kubelink's shoot webhook is to give the sidecar: a class-shoot ManagedResource
/// `shoot-core-vpn-shoot` whose `kube-system/vpn-shoot` is a Deployment of one replica, or with HA VPN
/// a StatefulSet of two (Pods `vpn-shoot-0`, `vpn-shoot-1`: the name a replica's identity is chosen
/// by), with one OpenVPN client container per seed server and the tunnel controller.
#[test]
fn gardeners_vpn_shoot_is_a_deployment_or_an_ha_statefulset_in_kube_system() {
    let Some(bin) = contract("gardeners_vpn_shoot_is_a_deployment_or_an_ha_statefulset_in_kube_system") else {
        return;
    };
    let namespace = "shoot--dev--a";
    for (clients, kind, replicas, containers) in [
        ("0", "Deployment", 1, vec!["vpn-shoot"]),
        ("2", "StatefulSet", 2, vec!["vpn-shoot-s0", "vpn-shoot-s1", "tunnel-controller"]),
    ] {
        let args = ["render-vpn-shoot", "--namespace", namespace, "--ha-clients", clients];
        let r = run(&bin, &args.map(std::ffi::OsStr::new));
        assert!(r.ok, "Gardener's vpn-shoot component failed:\n{}", r.stderr);
        let report: Value = serde_json::from_str(&r.stdout).unwrap();
        let mr = &report["managedResource"];
        assert_eq!(
            (&mr["metadata"]["name"], &mr["metadata"]["namespace"]),
            (&json!("shoot-core-vpn-shoot"), &json!(namespace))
        );
        assert!(mr["spec"]["class"].is_null(), "delivered into the shoot (no class): {mr}");
        let objects = report["objects"].as_array().unwrap();
        let workloads: Vec<&Value> =
            objects.iter().filter(|o| o["kind"] == "Deployment" || o["kind"] == "StatefulSet").collect();
        assert_eq!(workloads.len(), 1, "one vpn-shoot workload: {workloads:?}");
        let w = workloads[0];
        assert_eq!(w["kind"], kind);
        assert_eq!((&w["metadata"]["namespace"], &w["metadata"]["name"]), (&json!("kube-system"), &json!("vpn-shoot")));
        assert_eq!(w["spec"]["replicas"], replicas);
        let pod = &w["spec"]["template"]["spec"];
        let names: Vec<&str> =
            pod["containers"].as_array().unwrap().iter().filter_map(|c| c["name"].as_str()).collect();
        assert_eq!(names, containers);
        let volumes: Vec<&str> = pod["volumes"].as_array().unwrap().iter().filter_map(|v| v["name"].as_str()).collect();
        assert!(volumes.contains(&"dev-net-tun"), "{volumes:?}");
        println!("{kind}: {replicas} replica(s), containers {names:?}, volumes {volumes:?}, {} objects", objects.len());
    }
}
