//! Day-two operations on a running [`SeedLandscape`], done as docs/operations.md tells an operator:
//! rotating a slot's key (delete the slot Secret, restart the holder's agent, the kubelet refreshes
//! the shoots' Secrets) and going from one slot to two (`helm upgrade` with `slots: 2` by the real
//! `helm` CLI against the seed, the Deployment and DaemonSet rolled out). And
//! what the tests read meanwhile: the slot keys, the devices' keys and handshakes, the controller's and the
//! sidecars' `/metrics`, and pings from the pod that run until stopped.

use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kubelink_ipam::contract::{Slot, gateway_secret, names};

use super::{AGENT_NS, API_IP, NODES, POD_IP, SeedLandscape, chart_values, lb_ip};
use crate::landscape::chart;
use crate::netns::{Netns, longest_loss_run};

/// The agent Pod's `terminationGracePeriodSeconds`: how long a deleted Pod's agent gets after SIGTERM.
const AGENT_GRACE: Duration = Duration::from_secs(10);
/// The extension controller's port for `/metrics` (chart value `controller.healthPort`).
pub const CONTROLLER_HEALTH_PORT: u16 = 8093;

/// A stretch of wall-clock time, e.g. an agent's restart from its stop to Ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: SystemTime,
    pub to: SystemTime,
}

impl Window {
    /// Whether `t` falls inside, the end extended by `slack`.
    pub fn contains(&self, t: SystemTime, slack: Duration) -> bool {
        t >= self.from && t <= self.to + slack
    }
}

/// What [`SeedLandscape::upgrade_slots`] did, in order.
#[derive(Debug, Default)]
pub struct Upgrade {
    /// `Kind/name` of the objects the new render added, and of those it changed.
    pub created: Vec<String>,
    pub changed: Vec<String>,
    /// The controller Deployment's Pod template changed: the controller was restarted.
    pub controller_restarted: bool,
    /// The DaemonSet's Pod template changed: these nodes' agents were restarted, in this order, each
    /// after the one before was Ready again; from the stop to Ready.
    pub agents_restarted: Vec<(usize, Window)>,
    /// From the start of the render to the last rollout.
    pub took: Duration,
}

impl SeedLandscape {
    /// The public key in slot `slot`'s Secret, once the controller has created it.
    pub async fn slot_public_key(&self, slot: usize) -> Option<String> {
        let secrets: Api<Secret> = Api::namespaced(self.client(), AGENT_NS);
        let secret = secrets.get_opt(&names::gateway(Slot::try_from(slot).ok()?)).await.ok()??;
        let bytes = secret.data?.remove(gateway_secret::PUBLIC_KEY)?.0;
        String::from_utf8(bytes).ok()
    }

    /// `kubectl -n kubelink delete secret kubelink-gateway-<slot>`.
    pub async fn delete_slot_secret(&self, slot: usize) -> Result<(), String> {
        let slot = Slot::try_from(slot).map_err(|e| e.to_string())?;
        let secrets: Api<Secret> = Api::namespaced(self.client(), AGENT_NS);
        secrets.delete(&names::gateway(slot), &Default::default()).await.map(drop).map_err(|e| e.to_string())
    }

    /// Waits up to `timeout` for slot `slot`'s Secret to hold a public key other than `old`.
    pub async fn wait_slot_key(&self, slot: usize, old: &str, timeout: Duration) -> Option<String> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(key) = self.slot_public_key(slot).await.filter(|k| k != old) {
                return Some(key);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// Node `i`'s agent as the DaemonSet replaces a deleted Pod on the same node: SIGTERM, the Pod's
    /// grace period at most, then the container started again. Returns how long the agent was away.
    pub fn restart_agent(&mut self, i: usize) -> Result<Duration, String> {
        let start = Instant::now();
        if let Some(mut agent) = self.agents[i].take() {
            agent.stop(AGENT_GRACE);
        }
        self.start_agent(i)?;
        Ok(start.elapsed())
    }

    /// The public key of node `i`'s WireGuard device (`wg show <device> public-key`).
    pub fn device_public_key(&self, i: usize) -> Option<String> {
        let out = self.nodes[i].sh(&["wg", "show", &self.devices[i], "public-key"]).ok()?;
        Some(out.trim().to_string()).filter(|k| !k.is_empty())
    }

    /// Shoot `i`'s last handshake with the peer `public_key` (unix seconds), from its device.
    pub fn shoot_handshake(&self, i: usize, public_key: &str) -> Option<u64> {
        let shoot = &self.shoots[i];
        let out = shoot.ns.sh(&["wg", "show", &shoot.device, "latest-handshakes"]).ok()?;
        out.lines().find_map(|l| {
            let (key, at) = l.split_once('\t')?;
            (key == public_key).then(|| at.trim().parse().ok()).flatten().filter(|t| *t > 0)
        })
    }

    /// The file `name` of shoot `i`'s mounted Secret, as its sidecar reads it.
    pub fn shoot_file(&self, i: usize, name: &str) -> Option<String> {
        std::fs::read_to_string(self.shoots[i].config_dir.join(name)).ok()
    }

    /// Whether node `i`'s agent answers `/readyz` with 200.
    pub fn agent_ready(&self, i: usize) -> bool {
        self.readyz(i) == Some(200)
    }

    /// `/metrics` of the extension controller, on its health port in the API server's namespace,
    /// where it runs (the Pod IP a PodMonitor would scrape).
    pub fn scrape_controller(&self) -> String {
        self.api_ns.http_get(&format!("{API_IP}:{CONTROLLER_HEALTH_PORT}"), "/metrics")
    }

    /// Where shoot `i`'s sidecar serves `/metrics`: the address its last start logged
    /// (`--health-listen 127.0.0.1:0` binds a free port and logs it as `health=<addr>`).
    pub fn sidecar_health(&self, i: usize) -> Option<String> {
        let log = std::fs::read_to_string(self.dir.join(format!("{}.log", self.shoots[i].name))).ok()?;
        let line = log.lines().rev().find(|l| l.contains("shoot sidecar starting"))?;
        let addr = line.split_whitespace().find_map(|w| w.strip_prefix("health="))?;
        Some(addr.to_string())
    }

    /// `/metrics` of shoot `i`'s sidecar, from the shoot's namespace; empty when it does not answer.
    pub fn scrape_sidecar(&self, i: usize) -> String {
        match self.sidecar_health(i) {
            Some(addr) => self.shoots[i].ns.http_get(&addr, "/metrics"),
            None => String::new(),
        }
    }

    /// Pings shoot `i`'s tunnel address from the pod every `interval` seconds until
    /// [`Pinger::finish`].
    pub fn ping_shoot(&self, i: usize, interval: f64) -> Result<Pinger, String> {
        let dst = self.shoots[i].address.ok_or("no address allocated yet")?.to_string();
        let log = self.dir.join(format!("ping-{}-{}.log", self.shoots[i].name, crate::netns::unique("p")));
        Pinger::start(&self.nodes[NODES - 1], &dst, &POD_IP.to_string(), interval, &log)
    }

    /// Waits until every slot's holder has held it for the agents' warm-up (chart value
    /// `agent.warmup`): gateways that have run a while, whose shoots all have sessions.
    pub async fn wait_gateways_warm(&self, timeout: Duration) -> Result<(), String> {
        use k8s_openapi::api::coordination::v1::Lease;
        let warmup = humantime::parse_duration(super::AGENT_WARMUP).map_err(|e| e.to_string())?;
        let leases: Api<Lease> = Api::namespaced(self.client(), AGENT_NS);
        let start = Instant::now();
        loop {
            let mut latest = None;
            for slot in Slot::ALL.into_iter().take(self.slots) {
                let lease = leases.get_opt(&names::gateway(slot)).await.map_err(|e| e.to_string())?;
                let acquired = lease.and_then(|l| l.spec?.acquire_time).map(|t| t.0);
                latest = latest.max(Some(acquired.ok_or_else(|| format!("slot {slot} has no holder"))?));
            }
            let warm = latest.and_then(|t| t.checked_add(warmup).ok());
            if warm.is_some_and(|w| w < k8s_openapi::jiff::Timestamp::now()) {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(format!("the gateways are not warm within {timeout:?}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The slot count the controller published in the SeedTunnel.
    pub async fn published_slots(&self) -> Option<u8> {
        let api: Api<kubelink_ipam::projection::SeedTunnel> = Api::namespaced(self.client(), AGENT_NS);
        Some(api.get_opt(&self.name).await.ok()??.spec.slots)
    }

    /// `helm upgrade` of the running release with the values for `slots` slots, by the real `helm`
    /// CLI: Helm creates every object that is new and patches every one that differs (Services, RBAC,
    /// the workloads); what it created and changed is read from the manifests before and after; a
    /// load balancer for each new Service, as the cloud provider provisions one; the controller
    /// restarted when its Pod template changed (the Deployment's rollout; the old Pod stops first,
    /// both bind the same port here); gardenlet's reconcile of the seed's Extension with the new slot
    /// count; the agents restarted one at a time, each after the one before is Ready, when the
    /// DaemonSet's template changed (its rolling update, `maxUnavailable: 1`).
    pub async fn upgrade_slots(&mut self, slots: usize) -> Result<Upgrade, String> {
        let start = Instant::now();
        let mut done = Upgrade::default();
        let chart_dir = chart::chart_dir("kubelink");
        let before = crate::helm::template(&chart_dir, AGENT_NS, chart::RELEASE, chart_values(&self.name, self.slots))
            .await
            .map_err(|e| format!("rendering the installed release: {e}"))?;
        let kubeconfig = self.seed.admin_kubeconfig_file()?;
        let release = (AGENT_NS, chart::RELEASE);
        let objects = crate::helm::release(
            crate::helm::Verb::Upgrade,
            &chart_dir,
            &kubeconfig,
            release,
            chart_values(&self.name, slots),
        )
        .await
        .map_err(|e| format!("helm upgrade: {e}"))?;
        let client = self.client();
        for object in &objects {
            let old = before.iter().find(|o| o["kind"] == object["kind"] && o["metadata"] == object["metadata"]);
            let old = old.or_else(|| {
                before
                    .iter()
                    .find(|o| o["kind"] == object["kind"] && o["metadata"]["name"] == object["metadata"]["name"])
            });
            let name = format!(
                "{}/{}",
                object["kind"].as_str().unwrap_or("?"),
                object["metadata"]["name"].as_str().unwrap_or("?")
            );
            match old {
                None => done.created.push(name),
                Some(old) if old != object => done.changed.push(name),
                Some(_) => {}
            }
        }
        let find = |kind: &str, name: &str| {
            objects
                .iter()
                .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
                .cloned()
                .ok_or_else(|| format!("the upgrade rendered no {kind} {name}"))
        };
        let (agent, controller) = (find("DaemonSet", "kubelink-agent")?, find("Deployment", "kubelink-controller")?);

        // A load balancer per new slot Service; the follower restarted to serve every slot.
        for slot in self.lbs.len()..slots {
            let ns = Netns::new("lb")?;
            self.lan.attach(&ns, "eth0", &format!("{}/24", lb_ip(slot)))?;
            ns.sysctl("net.ipv4.ip_forward", "1")?;
            self.lbs.push(Arc::new(ns));
            // The cloud's part: the new Service's load balancer gets its address.
            crate::landscape::lb::assign_address(&client, AGENT_NS, slot, &lb_ip(slot)).await?;
        }
        self.slots = slots;
        self.stop.store(true, Ordering::Relaxed);
        // The follower checks its flag every 100 ms.
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.stop = Arc::new(AtomicBool::new(false));
        self.follow_load_balancers();

        if controller["spec"]["template"] != self.workloads.controller["spec"]["template"] {
            self.workloads.controller = controller;
            if let Some(mut old) = self.controller.take() {
                old.stop(Duration::from_secs(30));
            }
            self.controller = Some(self.start_controller().await?);
            done.controller_restarted = true;
        }
        // gardenlet's part: the seed's configuration (gardenlet's seed config) names the new slot
        // count; it reconciles the seed's Extension, and the controller publishes it.
        self.reconcile_seed_extension(slots).await?;
        if agent["spec"]["template"] != self.workloads.agent["spec"]["template"] {
            self.workloads.agent = agent;
            for i in 0..NODES {
                let from = SystemTime::now();
                self.restart_agent(i)?;
                let since = Instant::now();
                while !self.agent_ready(i) {
                    if since.elapsed() > Duration::from_secs(60) {
                        return Err(format!("node {i}'s agent is not Ready 60 s after its restart"));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                done.agents_restarted.push((i, Window { from, to: SystemTime::now() }));
            }
        }
        done.took = start.elapsed();
        Ok(done)
    }
}

/// `ping` from a namespace, every `interval` seconds until stopped; its output goes to a file.
pub struct Pinger {
    child: Child,
    log: std::path::PathBuf,
    interval: f64,
    started: SystemTime,
}

/// What a [`Pinger`] counted.
#[derive(Debug, Clone, PartialEq)]
pub struct PingCount {
    /// Echo requests counted: every one sent but the last (see [`Pinger::finish`]).
    pub sent: u32,
    pub answered: u32,
    /// The longest run of unanswered requests in a row.
    pub longest_loss_run: u32,
    /// When each unanswered request was sent (from ping's start and the interval).
    pub lost_at: Vec<SystemTime>,
}

impl PingCount {
    pub fn lost(&self) -> u32 {
        self.sent - self.answered
    }

    /// Requests lost while one of `windows` (extended by `slack`) was under way.
    pub fn lost_within(&self, windows: &[Window], slack: Duration) -> u32 {
        self.lost_at.iter().filter(|t| windows.iter().any(|w| w.contains(**t, slack))).count() as u32
    }
}

impl Pinger {
    pub fn start(ns: &Netns, dst: &str, source: &str, interval: f64, log: &Path) -> Result<Self, String> {
        let file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let started = SystemTime::now();
        let child = ns
            .command("ping")
            .args(["-n", "-D", "-i", &interval.to_string(), "-W", "1", "-I", source, dst])
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("ping in {}: {e}", ns.name))?;
        Ok(Pinger { child, log: log.to_path_buf(), interval, started })
    }

    /// The interval between two requests, in seconds.
    pub fn interval(&self) -> f64 {
        self.interval
    }

    /// Stops ping (SIGINT, as Ctrl-C: it prints its summary) and counts. The last request sent is not
    /// counted: it may still be on its way when ping stops, and ping does not wait for it.
    pub fn finish(mut self) -> PingCount {
        // SAFETY: kill(2) on our own child (`ip netns exec` execs ping, so the pid is ping's).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let transmitted = text
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .and_then(|l| l.split_whitespace().next()?.parse::<u32>().ok())
            .unwrap_or(0);
        let sent = transmitted.saturating_sub(1);
        // "[1795664331.123456] 64 bytes from 192.168.128.3: icmp_seq=5 ttl=63 time=0.9 ms" (-D)
        let mut replies: Vec<(u32, Option<f64>)> = text
            .lines()
            .filter(|l| l.contains(" bytes from "))
            .filter_map(|l| {
                let seq = l.split("icmp_seq=").nth(1)?.split_whitespace().next()?.parse().ok()?;
                let at = l.strip_prefix('[').and_then(|r| r.split(']').next()?.parse().ok());
                Some((seq, at))
            })
            .filter(|(s, _)| (1..=sent).contains(s))
            .collect();
        replies.sort_by_key(|(s, _)| *s);
        replies.dedup_by_key(|(s, _)| *s);
        let answered: Vec<u32> = replies.iter().map(|(s, _)| *s).collect();
        // A lost request's send time: the last answered one before it (its reply came within a
        // millisecond or so) plus the intervals between them; ping's own clock, not ours.
        let at = |s: u32| -> SystemTime {
            let before = replies.iter().rev().find(|(a, t)| *a < s && t.is_some());
            match before {
                Some((a, Some(t))) => {
                    SystemTime::UNIX_EPOCH + Duration::from_secs_f64(t + f64::from(s - a) * self.interval)
                }
                _ => self.started + Duration::from_secs_f64(f64::from(s - 1) * self.interval),
            }
        };
        let lost_at = (1..=sent).filter(|s| answered.binary_search(s).is_err()).map(at).collect();
        PingCount {
            sent,
            answered: answered.len() as u32,
            longest_loss_run: longest_loss_run(&answered, sent),
            lost_at,
        }
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SeedLandscape {
    /// What the agents, the controller and the sidecars logged (info and above) from `since` on, merged in
    /// time order, each line prefixed with its log's name: the story of a failed test, in its message.
    pub fn timeline(&self, since: SystemTime) -> String {
        // Whole seconds: log lines carry microseconds, and a line of the same second is kept.
        let since = jiff::Timestamp::try_from(since).map(|t| t.strftime("%Y-%m-%dT%H:%M:%S").to_string());
        let since = since.unwrap_or_default();
        let mut lines = vec![];
        let logs = std::fs::read_dir(&self.dir).into_iter().flatten().flatten().map(|e| e.path());
        for path in logs.filter(|p| is_daemon_log(p)) {
            let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let story = text.lines().filter(|l| !l.contains(" DEBUG ") && !l.contains(" TRACE "));
            lines.extend(story.filter(|l| *l >= since.as_str()).map(|l| (l.to_string(), name.clone())));
        }
        lines.sort();
        lines.into_iter().map(|(line, name)| format!("{name:<11} {line}")).collect::<Vec<_>>().join("\n")
    }
}

/// The logs of kubelink's own processes in a landscape directory (not iperf's or ping's).
fn is_daemon_log(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    name.ends_with(".log") && ["agent-", "controller", "shoot-"].iter().any(|p| name.starts_with(p))
}
