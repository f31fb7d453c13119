//! The test tool's user-space wire (`kubelink_tests::wire`), which stands in for netem: frames
//! cross it, and its delay and loss are what it was set to.

use std::time::{Duration, Instant};

use kubelink_tests::netns::{self, Netns, Segment};
use kubelink_tests::wire::Impairment;

#[test]
fn a_wire_passes_frames_and_delays_and_drops_as_set() {
    if !netns::require("wire-netns", &["ip", "ping", "iperf3"]) {
        return;
    }
    let lan = Segment::new("lan").unwrap();
    let (a, b) = (Netns::new("a").unwrap(), Netns::new("b").unwrap());
    lan.attach_wired(&a, "eth0", "10.9.0.1/24").unwrap();
    lan.attach(&b, "eth0", "10.9.0.2/24").unwrap();
    let (sent, got) = a.ping("10.9.0.2", 20, "0.01", None);
    println!("no impairment: {got} of {sent}");
    assert_eq!(got, sent, "frames cross the wire");

    // TCP too: checksums offloaded by the sender would arrive wrong.
    let _server =
        b.spawn("iperf3", &["-s", "-1", "-B", "10.9.0.2"], &netns::workdir("wire-netns").join("iperf.log")).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = a.sh(&["iperf3", "-c", "10.9.0.2", "-n", "4M", "-J"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let bytes = v["end"]["sum_sent"]["bytes"].as_u64().unwrap_or(0);
    let rate = v["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0);
    println!("TCP across the wire: {bytes} bytes at {:.0} Mbit/s", rate / 1e6);
    assert!(bytes >= 4 << 20, "TCP crosses the wire");

    lan.impair(&a, Impairment { delay: Duration::from_millis(100), loss_per_mille: 0 }).unwrap();
    let start = Instant::now();
    let (sent, got) = a.ping("10.9.0.2", 1, "0.2", None);
    let rtt = start.elapsed();
    println!("100 ms each way: {got} of {sent} in {rtt:?}");
    assert!(got == 1 && rtt >= Duration::from_millis(200), "delay each way: {rtt:?}");

    lan.impair(&a, Impairment { delay: Duration::ZERO, loss_per_mille: 200 }).unwrap();
    let (sent, got) = a.ping("10.9.0.2", 400, "0.005", None);
    let share = f64::from(got) / f64::from(sent);
    println!("20 % loss each way: {got} of {sent} answered ({:.0} %, expected 64 %)", share * 100.0);
    assert!((0.5..0.78).contains(&share), "answered share {share:.2}");
}
