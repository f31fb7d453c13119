//! Kernel WireGuard in a real kernel. This machine's kernel has no WireGuard, so `tests/qemu/run.sh`
//! boots Debian's stock kernel under qemu (TCG) once, with an initramfs holding busybox, ip, wg, the
//! WireGuard modules and the kubelink binary, and runs every scenario in `tests/qemu/scenarios/`.
//! Each test here asserts one scenario's PASS marker on the serial console.
//!
//! The guest's seed agent (scenario `agent-restart`) talks to a real control plane on this host
//! (`kubelink_tests::landscape::control`: kube-apiserver, etcd, the chart, the extension controller,
//! gardenlet's stand-in), started before the boot and reached over qemu's user network; its
//! kubeconfig and the shoot's Secret go into the initramfs (`KUBELINK_QEMU_CONTROL_DIR`).
//!
//! Missing ingredients (qemu, busybox, kmod, cpio, the kernel package, the kubelink binary, the
//! control plane's binaries) fail the tests when `CI=true` and skip them loudly otherwise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kubelink_tests::landscape::control::ControlPlane;
use kubelink_tests::skip::skip;
use std::process::Command;
use std::sync::OnceLock;

/// What one scenario printed as its last marker.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Pass,
    Fail(String),
    /// BEGIN without PASS/FAIL: the guest died or timed out inside the scenario.
    Unfinished,
}

/// The markers of one boot, in the format `tests/qemu/init` prints.
#[derive(Debug, Default, PartialEq, Eq)]
struct Markers {
    scenarios: BTreeMap<String, Outcome>,
    /// `DONE pass=N fail=M`, present when the guest ran to the end.
    done: Option<(u32, u32)>,
}

const MARK: &str = "@@KLQ ";

fn parse_markers(console: &str) -> Markers {
    let mut m = Markers::default();
    for line in console.lines() {
        // The console may prefix lines with carriage returns or kernel noise.
        let Some(at) = line.find(MARK) else { continue };
        let mut words = line[at + MARK.len()..].split_whitespace();
        match (words.next(), words.next()) {
            (Some("BEGIN"), Some(name)) => {
                m.scenarios.insert(name.to_string(), Outcome::Unfinished);
            }
            (Some("PASS"), Some(name)) => {
                m.scenarios.insert(name.to_string(), Outcome::Pass);
            }
            (Some("FAIL"), Some(name)) => {
                let why = words.collect::<Vec<_>>().join(" ");
                m.scenarios.insert(name.to_string(), Outcome::Fail(why));
            }
            (Some("DONE"), Some(pass)) => m.done = parse_done(pass, words.next()),
            _ => {}
        }
    }
    m
}

fn parse_done(pass: &str, fail: Option<&str>) -> Option<(u32, u32)> {
    let pass = pass.strip_prefix("pass=")?.parse().ok()?;
    let fail = fail?.strip_prefix("fail=")?.parse().ok()?;
    Some((pass, fail))
}

/// The console lines of one scenario, from its BEGIN to its last marker, for failure messages.
fn scenario_excerpt(console: &str, name: &str) -> String {
    let begin = format!("{MARK}BEGIN {name}");
    let Some(start) = console.find(&begin) else {
        return format!("(no BEGIN marker for {name})");
    };
    let rest = &console[start..];
    let end = rest[begin.len()..]
        .find(MARK)
        .map(|i| {
            let after = begin.len() + i;
            after + rest[after..].find('\n').unwrap_or(rest.len() - after)
        })
        .unwrap_or(rest.len());
    rest[..end].to_string()
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The kubelink binary: `KUBELINK_BIN`, else `target/release/kubelink` next to this test's `deps/`.
fn kubelink_bin() -> Option<PathBuf> {
    let bin = match std::env::var_os("KUBELINK_BIN") {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe().ok()?.parent()?.parent()?.join("kubelink"),
    };
    bin.is_file().then_some(bin)
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file())).unwrap_or(false)
}

/// Every host tool the boot needs, with the package that provides it.
fn missing_ingredients() -> Vec<String> {
    let tools = [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("busybox", "busybox-static"),
        ("cpio", "cpio"),
        ("modprobe", "kmod"),
        ("wg", "wireguard-tools"),
        ("ip", "iproute2"),
        ("dpkg-deb", "dpkg"),
        ("jq", "jq"),
        ("nft", "nftables"),
        ("conntrack", "conntrack"),
    ];
    let mut missing: Vec<String> =
        tools.iter().filter(|(tool, _)| !on_path(tool)).map(|(tool, pkg)| format!("{tool} (package {pkg})")).collect();
    if kubelink_bin().is_none() {
        missing.push("kubelink binary (cargo build --release -p kubelink, or KUBELINK_BIN)".into());
    }
    if let Err(e) = kubelink_tests::k8s::tools::tools() {
        missing.push(format!("the control plane's binaries ({e})"));
    }
    missing
}

struct Boot {
    console: String,
    markers: Markers,
    /// Requests the host's API server refused during the boot (the guest's agent, the controller).
    refused: Vec<String>,
}

/// One boot for all tests of this file; `None` means skipped (ingredients missing, not under CI).
/// A boot that could not run fails every test with the same message, and is not tried again.
fn boot() -> Option<&'static Boot> {
    static BOOT: OnceLock<Result<Option<Boot>, String>> = OnceLock::new();
    BOOT.get_or_init(run_guest).as_ref().unwrap_or_else(|e| panic!("{e}")).as_ref()
}

fn run_guest() -> Result<Option<Boot>, String> {
    let missing = missing_ingredients();
    if !missing.is_empty() {
        skip("kernel_qemu", &format!("missing: {}", missing.join(", ")));
        return Ok(None);
    }
    // The control plane runs on this runtime's threads while this one waits for qemu, and stops
    // when the boot is over.
    let rt = tokio::runtime::Runtime::new().map_err(|e| format!("a tokio runtime: {e}"))?;
    let files = tempfile::tempdir().map_err(|e| format!("a directory for the guest's control-plane files: {e}"))?;
    let control = rt
        .block_on(ControlPlane::start(files.path()))
        .map_err(|e| format!("starting the guest's control plane: {e}"))?;
    let mut cmd = Command::new(repo_root().join("tests/qemu/run.sh"));
    if let Some(bin) = kubelink_bin() {
        cmd.env("KUBELINK_BIN", bin);
    }
    cmd.env("KUBELINK_QEMU_CONTROL_DIR", files.path());
    let out = cmd.output().map_err(|e| format!("starting tests/qemu/run.sh: {e}"))?;
    let refused = control.refused();
    drop(control);
    let console = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    let markers = parse_markers(&console);
    if markers.scenarios.is_empty() {
        return Err(format!(
            "guest ran no scenario (run.sh exit {:?}); stderr:\n{}\nconsole:\n{console}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr),
        ));
    }
    Ok(Some(Boot { console, markers, refused }))
}

fn assert_scenario(name: &str) {
    let Some(boot) = boot() else { return };
    let outcome = boot.markers.scenarios.get(name);
    assert_eq!(
        outcome,
        Some(&Outcome::Pass),
        "guest scenario {name}: {outcome:?}\n--- console ---\n{}",
        scenario_excerpt(&boot.console, name)
    );
}

/// Prints the lines a scenario logged as `measured:` (shown with `--nocapture`), so its numbers land in
/// the test output and not only in `target/qemu/console.log`.
fn print_measurements(name: &str) {
    let Some(boot) = boot() else { return };
    for line in measured_lines(&scenario_excerpt(&boot.console, name)) {
        println!("{name}: {line}");
    }
}

fn measured_lines(excerpt: &str) -> Vec<&str> {
    excerpt.lines().filter_map(|l| l.find("measured: ").map(|at| l[at + "measured: ".len()..].trim_end())).collect()
}

/// Scenario names as the guest derives them: `NN-name.sh` -> `name`.
fn scenario_files() -> Vec<String> {
    let dir = repo_root().join("tests/qemu/scenarios");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("read tests/qemu/scenarios")
        .filter_map(|e| {
            let file = e.ok()?.file_name().into_string().ok()?;
            let stem = file.strip_suffix(".sh")?;
            Some(stem.split_once('-').map_or(stem, |(_, n)| n).to_string())
        })
        .collect();
    names.sort();
    names
}

/// ip + wg only: the module loads, two namespaces handshake and ping.
#[test]
fn kernel_shell_handshake_and_ping() {
    assert_scenario("kernel-shell");
}

/// `--wg-backend auto` picks kernel; key, port, peers set; `wg show` == `kubelink status` == config.
#[test]
fn agent_auto_picks_kernel_and_reads_back_what_wg_shows() {
    assert_scenario("agent-kernel");
}

/// A ping across an agent restart loses nothing; same ifindex; the peer is not re-applied.
#[test]
fn agent_restart_adopts_the_kernel_device() {
    assert_scenario("adoption");
}

/// 1000 peers applied in one reconcile pass and read back equal by wg and kubelink.
#[test]
fn thousand_peers_applied_in_one_pass() {
    print_measurements("large-peer-set");
    assert_scenario("large-peer-set");
}

/// 1000 peers applied cold, batched (about 30 messages) against one message per peer (fresh device
/// each), times and message counts printed; one more peer is one message, and a listen-port change
/// keeps every peer; a live peer's handshake and counters survive both. Also 999 endpoint changes,
/// batched against one message each.
#[test]
fn thousand_peers_batched_then_one_more_and_a_port_change_keep_the_others() {
    print_measurements("batched-peers");
    assert_scenario("batched-peers");
}

/// Kernel device against kubelink's userspace (gotatun) device: handshake, pings, TCP transfer.
#[test]
fn kernel_device_talks_to_userspace_device() {
    assert_scenario("kernel-vs-userspace");
}

/// `kubelink agent` as a kernel-mode gateway against the host's real control plane, with a shoot
/// sidecar dialling it: SIGKILL and restart lose no ping, keep the device and re-apply nothing. The
/// agent runs with the chart's grants: a refused request fails the test.
#[test]
fn seed_agent_restart_on_a_kernel_gateway_loses_nothing() {
    assert_scenario("agent-restart");
    let Some(boot) = boot() else { return };
    assert_eq!(boot.refused, Vec::<String>::new(), "requests the host's API server refused");
}

/// The gateway's firewall on a kernel device, an IPv4 and an IPv6 run: a hostile shoot with its own key
/// and AllowedIPs 0.0.0.0/0 and ::/0 reaches no other shoot (a victim shoot dialling the same gateway),
/// no seed pod, not the other shoot's VPN server nor another port of its own, and no listener of the
/// gateway node on its node or slot address; the drops are counted (printed). Before and after the
/// attempts: both shoots' probes of the slot address, the gateway's probe of both shoots, the seed
/// pod's ping and TCP to both, and each shoot's VPN connection (slot address, TCP 1194) arriving at its
/// own server only. Whether the hostile shoot reaches its own server's address directly on 1194 is
/// printed, not asserted.
#[test]
fn a_hostile_shoot_is_filtered_on_a_kernel_gateway() {
    assert_scenario("hostile-shoot");
    print_measurements("hostile-shoot");
}

/// Every scenario file ran and passed, and the guest reached its end (no timeout, no panic).
#[test]
fn guest_ran_every_scenario_to_the_end() {
    let Some(boot) = boot() else { return };
    for name in scenario_files() {
        assert_scenario(&name);
    }
    let total = boot.markers.scenarios.len() as u32;
    assert_eq!(boot.markers.done, Some((total, 0)), "guest did not finish cleanly");
}

#[test]
fn markers_parse_pass_fail_unfinished_and_done() {
    let console = "noise\n\r@@KLQ BEGIN a\nx\n@@KLQ PASS a 3s\n@@KLQ BEGIN b\n\
                   @@KLQ FAIL b exit=1 2s\n@@KLQ BEGIN c\n[ 9.1] panic\n";
    let m = parse_markers(console);
    assert_eq!(m.scenarios["a"], Outcome::Pass);
    assert_eq!(m.scenarios["b"], Outcome::Fail("exit=1 2s".into()));
    assert_eq!(m.scenarios["c"], Outcome::Unfinished);
    assert_eq!(m.done, None, "no DONE marker: the guest did not finish");
    let done = parse_markers("@@KLQ DONE pass=2 fail=1\n");
    assert_eq!(done.done, Some((2, 1)));
}

#[test]
fn measured_lines_are_picked_from_the_console() {
    let excerpt = "@@KLQ BEGIN a\n[12.3] measured: 1000 peers in 80 ms\r\nnoise\n[13.0] done\n";
    assert_eq!(measured_lines(excerpt), vec!["1000 peers in 80 ms"]);
}

#[test]
fn excerpt_spans_one_scenario() {
    let console = "@@KLQ BEGIN a\nline a\n@@KLQ PASS a\n@@KLQ BEGIN b\nline b\n@@KLQ FAIL b exit=1\nafter\n";
    assert_eq!(scenario_excerpt(console, "b"), "@@KLQ BEGIN b\nline b\n@@KLQ FAIL b exit=1");
    assert!(scenario_excerpt(console, "zz").contains("no BEGIN"));
}
