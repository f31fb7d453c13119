//! The data-path benchmark behind `scripts/bench`: two network namespaces over veth, the same tunnel
//! engine on both ends, iperf3 and ping through it. Engines are alternated round by round in one run,
//! so a busy machine slows every engine alike and the ratios stay comparable.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::netns::{self, Netns, Proc};

const UNDERLAY: [&str; 2] = ["10.0.0.1", "10.0.0.2"];
const TUNNEL: [&str; 2] = ["10.98.0.1", "10.98.0.2"];
const PORT: u16 = 51820;
pub const TOOLS: &[&str] = &["ip", "ping", "iperf3", "wireguard-go", "wg"];

/// What carries the traffic between the two namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// No tunnel: the veth itself, the ceiling.
    Veth,
    /// `kubelink run --wg-backend userspace` as shipped.
    Kubelink,
    /// The same with the fast data path off (plain gotatun transports).
    KubelinkPlain,
    /// Debian's wireguard-go.
    WireguardGo,
}

impl Engine {
    pub const ALL: [Engine; 4] = [Engine::Veth, Engine::Kubelink, Engine::WireguardGo, Engine::KubelinkPlain];

    pub fn label(self) -> &'static str {
        match self {
            Engine::Veth => "plain veth (ceiling)",
            Engine::Kubelink => "kubelink userspace",
            Engine::KubelinkPlain => "kubelink, fast path off",
            Engine::WireguardGo => "wireguard-go (Debian)",
        }
    }

    pub fn parse(name: &str) -> Option<Engine> {
        match name {
            "veth" => Some(Engine::Veth),
            "kubelink" => Some(Engine::Kubelink),
            "kubelink-plain" => Some(Engine::KubelinkPlain),
            "wireguard-go" => Some(Engine::WireguardGo),
            _ => None,
        }
    }
}

/// The measurements, in the order they are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Tcp1,
    Tcp1Rev,
    Tcp4,
    Tcp4Rev,
    PingMs,
    RssMib,
}

impl Metric {
    pub const ALL: [Metric; 6] =
        [Metric::Tcp1, Metric::Tcp1Rev, Metric::Tcp4, Metric::Tcp4Rev, Metric::PingMs, Metric::RssMib];

    pub fn header(self) -> &'static str {
        match self {
            Metric::Tcp1 => "TCP 1 stream a->b Gbit/s",
            Metric::Tcp1Rev => "TCP 1 stream b->a",
            Metric::Tcp4 => "TCP 4 streams a->b",
            Metric::Tcp4Rev => "TCP 4 streams b->a",
            Metric::PingMs => "ping rtt ms",
            Metric::RssMib => "daemon peak RSS MiB",
        }
    }
}

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub engines: Vec<Engine>,
    pub rounds: usize,
    pub seconds: u32,
    pub pings: u32,
    pub kubelink: PathBuf,
    pub dir: PathBuf,
}

/// One engine's samples: per metric, one value per round.
#[derive(Debug, Clone)]
pub struct Samples {
    pub engine: Engine,
    pub values: Vec<(Metric, Vec<f64>)>,
}

impl Samples {
    fn new(engine: Engine) -> Self {
        Samples { engine, values: Metric::ALL.iter().map(|m| (*m, Vec::new())).collect() }
    }

    fn push(&mut self, metric: Metric, value: f64) {
        if let Some((_, v)) = self.values.iter_mut().find(|(m, _)| *m == metric) {
            v.push(value);
        }
    }

    pub fn get(&self, metric: Metric) -> &[f64] {
        self.values.iter().find(|(m, _)| *m == metric).map(|(_, v)| v.as_slice()).unwrap_or(&[])
    }

    /// The median over rounds, None without samples.
    pub fn median(&self, metric: Metric) -> Option<f64> {
        let mut v = self.get(metric).to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        match n {
            0 => None,
            _ if n % 2 == 1 => Some(v[n / 2]),
            _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
        }
    }
}

/// Two namespaces joined by a veth pair.
pub struct Pair {
    pub ns: [Netns; 2],
}

impl Pair {
    pub fn new() -> Result<Self, String> {
        let a = Netns::new("ba")?;
        let b = Netns::new("bb")?;
        a.ip(&["link", "add", "veth0", "type", "veth", "peer", "name", "veth0", "netns", &b.name])?;
        for (ns, addr) in [(&a, UNDERLAY[0]), (&b, UNDERLAY[1])] {
            ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "veth0"])?;
            ns.ip(&["link", "set", "veth0", "up"])?;
        }
        Ok(Pair { ns: [a, b] })
    }
}

/// The tunnel daemons of one engine on both sides; stopped on drop.
struct Tunnel {
    procs: Vec<Proc>,
}

impl Tunnel {
    /// Starts `engine` on both sides and waits until a ping crosses it.
    fn start(engine: Engine, pair: &Pair, plan: &Plan) -> Result<(Tunnel, [&'static str; 2]), String> {
        if engine == Engine::Veth {
            return Ok((Tunnel { procs: Vec::new() }, UNDERLAY));
        }
        let keys = [netns::keypair(), netns::keypair()];
        let mut procs = Vec::new();
        for side in 0..2 {
            let other = 1 - side;
            let dev = netns::unique("bw");
            let proc = match engine {
                Engine::WireguardGo => start_wireguard_go(pair, plan, side, &dev, &keys[side].0, &keys[other].1)?,
                _ => start_kubelink(pair, plan, engine, side, &dev, &keys[side].0, &keys[other].1)?,
            };
            procs.push(proc);
        }
        let tunnel = Tunnel { procs };
        if pair.ns[0].wait_ping(TUNNEL[1], None, Duration::from_secs(15)).is_none() {
            let logs: Vec<String> = tunnel.procs.iter().map(|p| p.log_text()).collect();
            return Err(format!("{} never passed a ping:\n{}", engine.label(), logs.join("\n")));
        }
        Ok((tunnel, TUNNEL))
    }

    /// The larger VmHWM of the two daemons, MiB.
    fn peak_rss_mib(&self) -> Option<f64> {
        self.procs.iter().filter_map(|p| vm_hwm_kib(p.pid())).max().map(|k| k as f64 / 1024.0)
    }

    fn stop(mut self) {
        for p in &mut self.procs {
            p.stop(Duration::from_secs(10));
        }
    }
}

fn peer_endpoint(side: usize) -> String {
    format!("{}:{PORT}", UNDERLAY[1 - side])
}

fn start_kubelink(
    pair: &Pair,
    plan: &Plan,
    engine: Engine,
    side: usize,
    dev: &str,
    private: &str,
    peer_public: &str,
) -> Result<Proc, String> {
    let config = serde_json::json!({"device": {
        "name": dev, "privateKey": private, "listenPort": PORT,
        "addresses": [format!("{}/24", TUNNEL[side])],
        "peers": [{"publicKey": peer_public, "endpoint": peer_endpoint(side),
                   "allowedIPs": [format!("{}/32", TUNNEL[1 - side])]}],
    }});
    let path = plan.dir.join(format!("{dev}.json"));
    std::fs::write(&path, config.to_string()).map_err(|e| format!("{}: {e}", path.display()))?;
    let offload = if engine == Engine::KubelinkPlain { "off" } else { "on" };
    let bin = plan.kubelink.to_string_lossy();
    let path = path.to_string_lossy();
    // `env` execs kubelink, so the spawned pid is kubelink's own (for its VmHWM).
    let args = [
        &format!("KUBELINK_WG_OFFLOAD={offload}"),
        &*bin,
        "run",
        "--config",
        &path,
        "--wg-backend",
        "userspace",
        "--on-exit",
        "remove",
    ];
    let proc = pair.ns[side].spawn("env", &args, &plan.dir.join(format!("{dev}.log")))?;
    let ns = &pair.ns[side];
    let up = netns::wait_for(Duration::from_secs(20), || {
        let addr = ns.ip(&["-br", "addr", "show", dev]).is_ok_and(|o| o.contains(TUNNEL[side]));
        addr && ns.ip(&["link", "show", dev]).is_ok_and(|o| o.contains(",UP"))
    });
    up.map(|_| proc).ok_or_else(|| format!("kubelink device {dev} never came up"))
}

fn start_wireguard_go(
    pair: &Pair,
    plan: &Plan,
    side: usize,
    dev: &str,
    private: &str,
    peer_public: &str,
) -> Result<Proc, String> {
    let ns = &pair.ns[side];
    let proc = ns.spawn("wireguard-go", &["-f", dev], &plan.dir.join(format!("{dev}.log")))?;
    let sock = Path::new("/var/run/wireguard").join(format!("{dev}.sock"));
    netns::wait_for(Duration::from_secs(10), || sock.exists()).ok_or("wireguard-go made no UAPI socket")?;
    let key = plan.dir.join(format!("{dev}.key"));
    std::fs::write(&key, private).map_err(|e| format!("{}: {e}", key.display()))?;
    let allowed = format!("{}/32", TUNNEL[1 - side]);
    let endpoint = peer_endpoint(side);
    let port = PORT.to_string();
    let key = key.to_string_lossy();
    ns.sh(&["wg", "set", dev, "private-key", &key, "listen-port", &port])?;
    ns.sh(&["wg", "set", dev, "peer", peer_public, "allowed-ips", &allowed, "endpoint", &endpoint])?;
    ns.ip(&["addr", "add", &format!("{}/24", TUNNEL[side]), "dev", dev])?;
    ns.ip(&["link", "set", dev, "up"])?;
    Ok(proc)
}

/// VmHWM (peak resident set) of a process, KiB.
pub fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// [`iperf_once`], again while the server is still closing the previous test (it says it is busy,
/// or resets the new test's control connection).
fn iperf(pair: &Pair, dst: &str, streams: u32, reverse: bool, seconds: u32) -> Result<f64, String> {
    let closing = |e: &str| e.contains("server is busy") || e.contains("unable to receive control message");
    let mut tries = 0;
    loop {
        match iperf_once(pair, dst, streams, reverse, seconds) {
            Err(e) if closing(&e) && tries < 20 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(250));
            }
            result => return result,
        }
    }
}

/// iperf3 from side a to `dst` (`reverse`: b sends); returns the received rate in Gbit/s.
fn iperf_once(pair: &Pair, dst: &str, streams: u32, reverse: bool, seconds: u32) -> Result<f64, String> {
    let (t, p) = (seconds.to_string(), streams.to_string());
    let mut args = vec!["iperf3", "-c", dst, "-t", &t, "-P", &p, "-J", "--connect-timeout", "3000"];
    if reverse {
        args.push("-R");
    }
    let report = pair.ns[0].sh(&args)?;
    let v: serde_json::Value = serde_json::from_str(&report).map_err(|e| format!("iperf3 JSON: {e}"))?;
    let bps = v["end"]["sum_received"]["bits_per_second"].as_f64();
    bps.map(|b| b / 1e9).ok_or_else(|| format!("iperf3 reported no rate: {report}"))
}

/// The average ping rtt (ms) of `count` pings, 20 ms apart.
fn ping_avg_ms(pair: &Pair, dst: &str, count: u32) -> Result<f64, String> {
    let c = count.to_string();
    let out = pair.ns[0].sh(&["ping", "-n", "-q", "-c", &c, "-i", "0.02", "-W", "1", dst])?;
    parse_rtt_avg(&out).ok_or_else(|| format!("no rtt in ping output: {out}"))
}

/// "rtt min/avg/max/mdev = 0.041/0.052/0.080/0.011 ms" -> 0.052
pub fn parse_rtt_avg(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.contains("min/avg/max"))?;
    line.split('=').nth(1)?.trim().split('/').nth(1)?.parse().ok()
}

/// Runs every engine `plan.rounds` times, rotating the order each round.
pub fn run(plan: &Plan) -> Result<Vec<Samples>, String> {
    std::fs::create_dir_all(&plan.dir).map_err(|e| format!("{}: {e}", plan.dir.display()))?;
    let pair = Pair::new()?;
    let server_log = plan.dir.join("iperf3-server.log");
    let _server = pair.ns[1].spawn("iperf3", &["-s"], &server_log)?;
    let listening = netns::wait_for(Duration::from_secs(10), || {
        pair.ns[1].sh(&["ss", "-Hltn", "sport", "=", ":5201"]).is_ok_and(|out| !out.trim().is_empty())
    });
    listening.ok_or("the iperf3 server did not listen")?;
    let mut all: Vec<Samples> = plan.engines.iter().map(|e| Samples::new(*e)).collect();
    for round in 0..plan.rounds {
        for i in 0..all.len() {
            let k = (i + round) % all.len();
            let engine = all[k].engine;
            let started = Instant::now();
            measure(&pair, plan, &mut all[k])?;
            eprintln!("round {}/{}: {} measured in {:.0?}", round + 1, plan.rounds, engine.label(), started.elapsed());
        }
    }
    Ok(all)
}

fn measure(pair: &Pair, plan: &Plan, samples: &mut Samples) -> Result<(), String> {
    let (tunnel, addrs) = Tunnel::start(samples.engine, pair, plan)?;
    let dst = addrs[1];
    let cases =
        [(Metric::Tcp1, 1, false), (Metric::Tcp1Rev, 1, true), (Metric::Tcp4, 4, false), (Metric::Tcp4Rev, 4, true)];
    for (metric, streams, reverse) in cases {
        samples.push(metric, iperf(pair, dst, streams, reverse, plan.seconds)?);
    }
    samples.push(Metric::PingMs, ping_avg_ms(pair, dst, plan.pings)?);
    if let Some(rss) = tunnel.peak_rss_mib() {
        samples.push(Metric::RssMib, rss);
    }
    tunnel.stop();
    Ok(())
}

/// Single-core ChaCha20-Poly1305 sealing rate (Gbit/s) on WireGuard-sized packets, with the AEAD
/// gotatun uses: the ceiling no per-packet optimisation can pass on one core.
pub fn crypto_ceiling(duration: Duration) -> f64 {
    use aws_lc_rs::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
    let Ok(key) = UnboundKey::new(&CHACHA20_POLY1305, &[7u8; 32]) else { return 0.0 };
    let key = LessSafeKey::new(key);
    let mut buf = vec![0u8; 1420];
    let (mut bytes, mut counter, start) = (0u64, 0u64, Instant::now());
    while start.elapsed() < duration {
        for _ in 0..256 {
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&counter.to_le_bytes());
            counter += 1;
            let sealed = key.seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf);
            bytes += sealed.map(|_| buf.len() as u64).unwrap_or(0);
        }
    }
    bytes as f64 * 8.0 / start.elapsed().as_secs_f64() / 1e9
}

/// The result table: per engine and metric the median and the min–max over rounds.
pub fn table(all: &[Samples]) -> String {
    let mut out = String::from("| engine |");
    for m in Metric::ALL {
        out += &format!(" {} |", m.header());
    }
    out += "\n|---|";
    out += &"---|".repeat(Metric::ALL.len());
    out += "\n";
    for s in all {
        out += &format!("| {} |", s.engine.label());
        for m in Metric::ALL {
            out += &format!(" {} |", cell(s.get(m), s.median(m)));
        }
        out += "\n";
    }
    out
}

fn cell(values: &[f64], median: Option<f64>) -> String {
    let Some(median) = median else { return "–".into() };
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if values.len() > 1 { format!("{median:.2} ({min:.2}–{max:.2})") } else { format!("{median:.2}") }
}

/// Ratios of kubelink's medians to each baseline that ran (throughput: higher is better; ping and
/// RSS: kubelink's value over the baseline's, lower is better).
pub fn ratios(all: &[Samples]) -> String {
    let Some(kl) = all.iter().find(|s| s.engine == Engine::Kubelink) else { return String::new() };
    let mut out = String::new();
    for base in all.iter().filter(|s| s.engine != Engine::Kubelink) {
        out += &format!("kubelink userspace / {}:", base.engine.label());
        for m in Metric::ALL {
            if let (Some(a), Some(b)) = (kl.median(m), base.median(m)) {
                out += &format!(" {} {:.2}x;", short(m), a / b);
            }
        }
        out += "\n";
    }
    out
}

fn short(m: Metric) -> &'static str {
    match m {
        Metric::Tcp1 => "1 stream",
        Metric::Tcp1Rev => "1 stream rev",
        Metric::Tcp4 => "4 streams",
        Metric::Tcp4Rev => "4 streams rev",
        Metric::PingMs => "ping",
        Metric::RssMib => "RSS",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtt_average_parses() {
        let text = "5 packets transmitted, 5 received\nrtt min/avg/max/mdev = 0.041/0.052/0.080/0.011 ms\n";
        assert_eq!(parse_rtt_avg(text), Some(0.052));
        assert_eq!(parse_rtt_avg("nothing"), None);
    }

    #[test]
    fn median_and_ratio() {
        let mut kl = Samples::new(Engine::Kubelink);
        let mut go = Samples::new(Engine::WireguardGo);
        for v in [3.0, 1.0, 2.0] {
            kl.push(Metric::Tcp1, v);
            go.push(Metric::Tcp1, v / 2.0);
        }
        assert_eq!(kl.median(Metric::Tcp1), Some(2.0));
        assert!(ratios(&[kl, go]).contains("1 stream 2.00x"));
    }
}
