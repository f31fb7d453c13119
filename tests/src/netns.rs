//! Network namespaces as hosts: create, wire with veth to a bridge, run commands and processes
//! inside, and remove everything on drop (also after a failed test); and what the tests that need
//! root and real kernel state share: the gate that fails under CI and skips loudly elsewhere, the
//! kubelink binary, kubelink processes in namespaces. Used by `kubelink-landscape` and the tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Prefix of every namespace kubelink creates; followed by the creating process id.
pub const PREFIX: &str = "kl";

/// A unique suffix for names in this process: `<pid>x<n>` in hex, short enough for interface names.
pub fn unique(role: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!("{role}{:x}x{n:x}", std::process::id() & 0xfffff);
    name.chars().take(15).collect()
}

/// Runs a command, returning its output; the error says what ran and what it printed.
pub fn run(cmd: &mut Command) -> Result<Output, String> {
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}

fn ip(args: &[&str]) -> Result<Output, String> {
    run(Command::new("ip").args(args))
}

/// Removes namespaces left behind by processes that no longer run (a test killed mid-way).
pub fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let pid = name.strip_prefix(PREFIX).and_then(|rest| rest.split('-').next()).and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid.filter(|p| *p != std::process::id() && !Path::new(&format!("/proc/{p}")).exists()) {
            let _ = Netns { name: name.clone(), owned: true }.kill_all();
            let _ = ip(&["netns", "del", &name]);
            eprintln!("removed stale namespace {name} of process {pid}");
        }
    }
}

/// A network namespace standing for one host.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
    owned: bool,
}

impl Netns {
    /// Creates `kl<pid>-<role>-<n>` with loopback up.
    pub fn new(role: &str) -> Result<Self, String> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{}-{role}-{n}", std::process::id());
        ip(&["netns", "add", &name])?;
        let ns = Netns { name, owned: true };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n <ns> ...`
    pub fn ip(&self, args: &[&str]) -> Result<String, String> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        ip(&full).map(|o| String::from_utf8_lossy(&o.stdout).to_string())
    }

    /// A command that runs inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs a command inside and returns stdout; fails with what it printed.
    pub fn sh(&self, args: &[&str]) -> Result<String, String> {
        let (program, rest) = args.split_first().ok_or("empty command")?;
        run(self.command(program).args(rest)).map(|o| String::from_utf8_lossy(&o.stdout).to_string())
    }

    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), String> {
        self.sh(&["sysctl", "-qw", &format!("{key}={value}")]).map(|_| ())
    }

    /// Starts a process inside with stdout and stderr going to `log`.
    pub fn spawn(&self, program: impl AsRef<std::ffi::OsStr>, args: &[&str], log: &Path) -> Result<Proc, String> {
        self.spawn_with(program, args, None, log)
    }

    /// [`Self::spawn`] with exactly the environment `env` (plus `PATH`), as a container gets it.
    pub fn spawn_env(
        &self,
        program: impl AsRef<std::ffi::OsStr>,
        args: &[&str],
        env: &[(String, String)],
        log: &Path,
    ) -> Result<Proc, String> {
        self.spawn_with(program, args, Some(env), log)
    }

    fn spawn_with(
        &self,
        program: impl AsRef<std::ffi::OsStr>,
        args: &[&str],
        env: Option<&[(String, String)]>,
        log: &Path,
    ) -> Result<Proc, String> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let err = file.try_clone().map_err(|e| e.to_string())?;
        let mut command = self.command(program);
        if let Some(env) = env {
            command.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default());
            command.envs(env.iter().map(|(k, v)| (k, v)));
        }
        let child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("spawning in {}: {e}", self.name))?;
        Ok(Proc { child: Some(child), log: log.to_path_buf() })
    }

    /// Pings `dst` `count` times every `interval`; returns (sent, received).
    pub fn ping(&self, dst: &str, count: u32, interval: &str, source: Option<&str>) -> (u32, u32) {
        ping_in(&self.name, dst, count, interval, source)
    }

    /// Waits until a ping gets through, up to `timeout`; returns how long it took.
    pub fn wait_ping(&self, dst: &str, source: Option<&str>, timeout: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.ping(dst, 1, "0.2", source).1 == 1 {
                return Some(start.elapsed());
            }
        }
        None
    }

    /// Kills every process in the namespace and deletes it: its links (and the far ends of its veths)
    /// vanish with it, as a node that is gone. The struct stays (dropping it then does nothing).
    pub fn remove(&self) -> Result<(), String> {
        self.kill_all()?;
        ip(&["netns", "del", &self.name]).map(|_| ())
    }

    /// The kernel's IP fragmentation counters (IPv4 and IPv6 together): fragments created when
    /// sending, and packets that needed fragmenting but could not be (DF set).
    pub fn fragment_counters(&self) -> Result<FragmentCounters, String> {
        let snmp = self.sh(&["cat", "/proc/net/snmp"])?;
        let snmp6 = self.sh(&["cat", "/proc/net/snmp6"])?;
        Ok(FragmentCounters::parse(&snmp, &snmp6))
    }

    /// The MTU of link `dev`, when it exists.
    pub fn link_mtu(&self, dev: &str) -> Option<u32> {
        let out = self.ip(&["-j", "link", "show", "dev", dev]).ok()?;
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        v.get(0)?.get("mtu")?.as_u64().and_then(|m| u32::try_from(m).ok())
    }

    /// Pings `dst` `count` times every `interval` seconds; returns the sequence numbers answered.
    pub fn ping_seqs(&self, dst: &str, count: u32, interval: f64, source: Option<&str>) -> Vec<u32> {
        let (count, interval) = (count.to_string(), interval.to_string());
        let mut args = vec!["ping", "-n", "-c", &count, "-i", &interval, "-W", "1"];
        if let Some(s) = source {
            args.extend(["-I", s]);
        }
        args.push(dst);
        let out = self.command(args[0]).args(&args[1..]).stdin(Stdio::null()).output();
        let text = out.map(|o| String::from_utf8_lossy(&o.stdout).to_string()).unwrap_or_default();
        parse_ping_seqs(&text)
    }

    fn kill_all(&self) -> Result<(), String> {
        let out = self.ip_netns_pids()?;
        for pid in out.split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
        Ok(())
    }

    fn ip_netns_pids(&self) -> Result<String, String> {
        ip(&["netns", "pids", &self.name]).map(|o| String::from_utf8_lossy(&o.stdout).to_string())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if self.owned {
            let _ = self.kill_all();
            let _ = ip(&["netns", "del", &self.name]);
        }
    }
}

/// Sequence numbers of the replies in ping's output ("64 bytes from ...: icmp_seq=3 ttl=64 ...").
fn parse_ping_seqs(text: &str) -> Vec<u32> {
    let mut seqs: Vec<u32> = text
        .lines()
        .filter(|l| l.contains(" bytes from "))
        .filter_map(|l| l.split("icmp_seq=").nth(1)?.split_whitespace().next()?.parse().ok())
        .collect();
    seqs.sort_unstable();
    seqs.dedup();
    seqs
}

/// The longest run of unanswered pings among `count` (sequence numbers 1..=count) given the ones
/// answered: the longest gap in seconds is this times the interval.
pub fn longest_loss_run(answered: &[u32], count: u32) -> u32 {
    let mut bounds = vec![0];
    bounds.extend(answered.iter().copied().filter(|s| (1..=count).contains(s)));
    bounds.push(count + 1);
    bounds.windows(2).map(|w| w[1] - w[0] - 1).max().unwrap_or(count)
}

/// IPv4 and IPv6 fragmentation counters of one namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FragmentCounters {
    /// Fragments this host created when sending or forwarding (Ip FragCreates, Ip6FragCreates).
    pub created: u64,
    /// Packets dropped because they needed fragmenting and could not be (Ip FragFails, Ip6FragFails).
    pub failed: u64,
}

impl FragmentCounters {
    fn parse(snmp: &str, snmp6: &str) -> Self {
        // /proc/net/snmp: a header line "Ip: Forwarding ... FragCreates" and a value line "Ip: 1 ...".
        let lines: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Ip:")).collect();
        let v4 = |name: &str| -> u64 {
            let (Some(head), Some(vals)) = (lines.first(), lines.get(1)) else { return 0 };
            let i = head.split_whitespace().position(|h| h == name);
            i.and_then(|i| vals.split_whitespace().nth(i)?.parse().ok()).unwrap_or(0)
        };
        let v6 = |name: &str| -> u64 {
            let line = snmp6.lines().find(|l| l.split_whitespace().next() == Some(name));
            line.and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0)
        };
        FragmentCounters {
            created: v4("FragCreates") + v6("Ip6FragCreates"),
            failed: v4("FragFails") + v6("Ip6FragFails"),
        }
    }
}

fn parse_ping(text: &str) -> (u32, u32) {
    // "5 packets transmitted, 5 received, 0% packet loss, time 801ms"
    let line = text.lines().find(|l| l.contains("packets transmitted")).unwrap_or("");
    let nums: Vec<u32> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|s| s.parse().ok()).collect();
    (nums.first().copied().unwrap_or(0), nums.get(1).copied().unwrap_or(0))
}

/// A layer-2 segment: a bridge in its own namespace, hosts attached with veth pairs.
#[derive(Debug)]
pub struct Segment {
    pub switch: Netns,
    bridge: &'static str,
    ports: AtomicU32,
    /// Both ends (namespace, interface) of every veth of the segment.
    links: std::sync::Mutex<Vec<[(String, String); 2]>>,
    /// The wires of hosts attached through one ([`Segment::attach_wired`]), by host namespace.
    wires: std::sync::Mutex<Vec<(String, crate::wire::Wire)>>,
}

impl Segment {
    pub fn new(role: &str) -> Result<Self, String> {
        let switch = Netns::new(role)?;
        switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        switch.ip(&["link", "set", "br0", "up"])?;
        Ok(Segment {
            switch,
            bridge: "br0",
            ports: AtomicU32::new(0),
            links: Default::default(),
            wires: Default::default(),
        })
    }

    /// Attaches `host` with interface `ifname` and address `cidr` (e.g. 10.250.0.11/24).
    pub fn attach(&self, host: &Netns, ifname: &str, cidr: &str) -> Result<(), String> {
        let port = format!("p{}", self.ports.fetch_add(1, Ordering::Relaxed));
        self.switch.ip(&["link", "add", &port, "type", "veth", "peer", "name", ifname, "netns", &host.name])?;
        self.switch.ip(&["link", "set", &port, "master", self.bridge, "up"])?;
        host.ip(&["addr", "add", cidr, "dev", ifname])?;
        host.ip(&["link", "set", ifname, "up"])?;
        self.links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push([(self.switch.name.clone(), port), (host.name.clone(), ifname.into())]);
        Ok(())
    }

    /// [`Segment::attach`] through a [`crate::wire::Wire`] of its own, whose delay and loss
    /// [`Segment::impair`] sets.
    pub fn attach_wired(&self, host: &Netns, ifname: &str, cidr: &str) -> Result<(), String> {
        let wire = Netns::new("wire")?;
        let port = format!("p{}", self.ports.fetch_add(1, Ordering::Relaxed));
        self.switch.ip(&["link", "add", &port, "type", "veth", "peer", "name", "up0", "netns", &wire.name])?;
        self.switch.ip(&["link", "set", &port, "master", self.bridge, "up"])?;
        wire.ip(&["link", "add", "down0", "type", "veth", "peer", "name", ifname, "netns", &host.name])?;
        for dev in ["up0", "down0"] {
            wire.ip(&["link", "set", dev, "promisc", "on", "up"])?;
        }
        host.ip(&["addr", "add", cidr, "dev", ifname])?;
        host.ip(&["link", "set", ifname, "up"])?;
        // The two links that send into the wire.
        let name = ifname.to_string();
        host.run_in(move || crate::wire::tx_checksum_off(&name))??;
        let name = port.clone();
        self.switch.run_in(move || crate::wire::tx_checksum_off(&name))??;
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        links.push([(self.switch.name.clone(), port), (wire.name.clone(), "up0".into())]);
        links.push([(wire.name.clone(), "down0".into()), (host.name.clone(), ifname.into())]);
        let relay = crate::wire::Wire::start(wire, "up0", "down0")?;
        self.wires.lock().unwrap_or_else(|e| e.into_inner()).push((host.name.clone(), relay));
        Ok(())
    }

    /// Delay and loss, each direction, on the wire of `host` (attached with [`Segment::attach_wired`]).
    pub fn impair(&self, host: &Netns, impairment: crate::wire::Impairment) -> Result<(), String> {
        let wires = self.wires.lock().unwrap_or_else(|e| e.into_inner());
        let (_, wire) = wires.iter().find(|(h, _)| *h == host.name).ok_or("host not attached through a wire")?;
        wire.impair(impairment);
        Ok(())
    }

    /// Sets the MTU of every link of the segment, both ends (the bridge follows its ports).
    /// Hosts that are gone are skipped.
    pub fn set_mtu(&self, mtu: u32) -> Result<(), String> {
        let mtu = mtu.to_string();
        for [(ns_a, a), (ns_b, b)] in self.links.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            if ip(&["-n", ns_a, "link", "set", a, "mtu", &mtu]).is_ok() {
                ip(&["-n", ns_b, "link", "set", b, "mtu", &mtu])?;
            }
        }
        Ok(())
    }
}

/// [`Netns::ping`] by namespace name, for threads that cannot borrow the namespace.
pub fn ping_in(ns: &str, dst: &str, count: u32, interval: &str, source: Option<&str>) -> (u32, u32) {
    let count_text = count.to_string();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, "ping"]);
    cmd.args(["-n", "-q", "-c", &count_text, "-i", interval, "-W", "1"]);
    if let Some(s) = source {
        cmd.args(["-I", s]);
    }
    let out = cmd.arg(dst).stdin(Stdio::null()).output();
    out.map(|o| parse_ping(&String::from_utf8_lossy(&o.stdout))).unwrap_or((count, 0))
}

/// A child process that is killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Proc {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGTERM, then wait up to `grace` before SIGKILL. Returns the exit success.
    pub fn stop(&mut self, grace: Duration) -> bool {
        let Some(mut child) = self.child.take() else { return false };
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < grace {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// SIGKILL now (a crash).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits up to `timeout` for the process to exit on its own; `None` while it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Netns {
    /// Runs `f` on a thread that has entered this namespace (sockets it opens live there).
    pub fn run_in<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
        let path = format!("/run/netns/{}", self.name);
        let file = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            // SAFETY: setns on a valid namespace fd; only this new thread changes namespace.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(format!("setns: {}", std::io::Error::last_os_error()));
            }
            Ok(f())
        })
        .join()
        .map_err(|_| "namespace thread panicked".to_string())?
    }
}

impl Netns {
    /// `GET path` on `addr` from inside this namespace: the whole response (status line, headers,
    /// body), or empty when nothing answers within 2 s.
    pub fn http_get(&self, addr: &str, path: &str) -> String {
        let (addr, path) = (addr.to_string(), path.to_string());
        self.run_in(move || {
            use std::io::{Read, Write};
            let Ok(mut s) = std::net::TcpStream::connect(&addr) else { return String::new() };
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            out
        })
        .unwrap_or_default()
    }
}

/// Checks that the test can run: root, and the given tools on PATH. When it cannot: under CI the
/// test fails (panics) with the reason; elsewhere it reports the skip ([`crate::skip::skip`]) and returns false.
#[must_use]
pub fn require(test: &str, tools: &[&str]) -> bool {
    let mut missing = Vec::new();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root (network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN)".to_string());
    }
    for tool in tools {
        if which(tool).is_none() {
            missing.push(format!("`{tool}` on PATH (install it; .ci/run lists the packages)"));
        }
    }
    if missing.is_empty() {
        sweep_stale();
        return true;
    }
    crate::skip::skip(test, &format!("needs {}", missing.join(", ")))
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(tool)).find(|p| p.is_file())
}

/// The kubelink binary: `$KUBELINK_BIN`, else `kubelink` beside this executable (the landscape in
/// `target/release/`) or beside its `deps/` directory (a test).
pub fn find_kubelink() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("KUBELINK_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| format!("locating this executable: {e}"))?;
    let dir = exe.parent().ok_or("this executable has no directory")?;
    let candidates = [Some(dir.join("kubelink")), dir.parent().map(|d| d.join("kubelink"))];
    candidates.into_iter().flatten().find(|p| p.is_file()).ok_or_else(|| {
        format!(
            "no kubelink binary beside {}: build it with `cargo build --release -p kubelink` (scripts/test and \
             scripts/landscape do), or set KUBELINK_BIN",
            exe.display()
        )
    })
}

/// [`find_kubelink`] for tests: panics with the reason.
pub fn kubelink_bin() -> PathBuf {
    find_kubelink().unwrap_or_else(|e| panic!("{e}"))
}

/// A scratch directory for logs and configs, kept when the test fails (its path is printed).
pub fn workdir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kubelink-test-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create workdir");
    dir
}

/// Starts `kubelink <args>` inside `ns`, logging to `<dir>/<log>.log`.
pub fn start_kubelink(ns: &Netns, dir: &Path, log: &str, args: &[&str]) -> Proc {
    let path = dir.join(format!("{log}.log"));
    ns.spawn(kubelink_bin(), args, &path).unwrap_or_else(|e| panic!("{e}"))
}

/// A fresh key pair as (private base64, public base64).
pub fn keypair() -> (String, String) {
    let k = kubelink_ipam::keys::PrivateKey::generate();
    (k.expose_base64().to_string(), k.public_key().to_base64())
}

/// Polls `f` every 10 ms until it returns true or `timeout` passes; returns the time it took.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// `kubelink status --json` for a device inside `ns`.
pub fn status(ns: &Netns, device: &str) -> Result<serde_json::Value, String> {
    let bin = kubelink_bin();
    let out = ns.sh(&[bin.to_str().unwrap_or("kubelink"), "status", "--device", device, "--json"])?;
    serde_json::from_str(&out).map_err(|e| format!("status output is not JSON ({e}): {out}"))
}

/// The ifindex of `dev` in `ns`.
pub fn ifindex(ns: &Netns, dev: &str) -> Option<u64> {
    let out = ns.ip(&["-j", "link", "show", dev]).ok()?;
    let v: serde_json::Value = serde_json::from_str(&out).ok()?;
    v.get(0)?.get("ifindex")?.as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_summary_parses() {
        let text = "--- 10.0.0.1 ping statistics ---\n5 packets transmitted, 4 received, 20% packet loss, time 801ms\n";
        assert_eq!(parse_ping(text), (5, 4));
        assert_eq!(parse_ping("garbage"), (0, 0));
    }

    #[test]
    fn ping_replies_give_the_longest_loss_run() {
        let text = "PING 10.0.0.1 (10.0.0.1) 56(84) bytes of data.\n64 bytes from 10.0.0.1: icmp_seq=1 ttl=64 time=0.1 ms\n\
                    64 bytes from 10.0.0.1: icmp_seq=5 ttl=64 time=0.1 ms\n64 bytes from 10.0.0.1: icmp_seq=6 ttl=64 time=9 ms\n";
        let seqs = parse_ping_seqs(text);
        assert_eq!(seqs, [1, 5, 6]);
        assert_eq!(longest_loss_run(&seqs, 6), 3, "2, 3 and 4 lost");
        assert_eq!(longest_loss_run(&seqs, 10), 4, "7..=10 lost at the end");
        assert_eq!(longest_loss_run(&[], 10), 10);
        assert_eq!(longest_loss_run(&[2, 3], 3), 1, "the first lost");
    }

    #[test]
    fn fragment_counters_add_both_families() {
        let snmp = "Ip: Forwarding DefaultTTL FragOKs FragFails FragCreates\nIp: 1 64 3 2 7\nIcmp: InMsgs\nIcmp: 0\n";
        let snmp6 = "Ip6FragOKs                      \t1\nIp6FragFails 4\nIp6FragCreates 5\n";
        assert_eq!(FragmentCounters::parse(snmp, snmp6), FragmentCounters { created: 12, failed: 6 });
    }

    #[test]
    fn unique_names_fit_interfaces() {
        let a = unique("gw");
        let b = unique("gw");
        assert_ne!(a, b);
        assert!(a.len() <= 15);
    }
}
