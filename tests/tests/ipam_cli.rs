//! `kubelink ipam controller --once` and `kubelink ipam list` against the API test server, parsed from
//! the same arguments an operator would type.

use clap::Parser;
use kubelink::cmd::ipam::{IpamArgs, run};
use kubelink_ipam::store::list_allocations;
use kubelink_tests::apiserver::{self, fixtures};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    ipam: IpamArgs,
}

fn args(line: &str) -> IpamArgs {
    Cli::try_parse_from(std::iter::once("ipam").chain(line.split_whitespace())).unwrap().ipam
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_once_then_list() {
    let server = apiserver::start().await;
    let client = server.client();
    fixtures::create_seed(&client, &fixtures::seed("seed-a", "192.168.128.0/24")).await.unwrap();
    fixtures::create_shoots(&client, "seed-a", 0..3).await.unwrap();
    let url = server.url();
    let both = format!("--garden-server {url} --seed-server {url}");
    run(args(&format!("controller --seed seed-a {both} --once --slots 1"))).await.unwrap();
    let listed = list_allocations(&client, "kubelink").await.unwrap();
    assert_eq!(listed.entries.len(), 3);
    run(args(&format!("list --seed-server {url}"))).await.unwrap();
    run(args(&format!("list --seed-server {url} --json"))).await.unwrap();

    // An unusable seed configuration makes `--once` fail with the field in the message.
    fixtures::create_seed(&client, &fixtures::seed("seed-b", "10.250.0.0/24")).await.unwrap();
    let err = run(args(&format!("controller --seed seed-b {both} --once"))).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("spec.wireguard.cidr 10.250.0.0/24 overlaps spec.networks.nodes 10.250.0.0/16"), "{text}");
}

#[test]
fn bad_arguments_are_rejected_by_the_parser() {
    let garden = ["--garden-server", "http://g"];
    let with = |extra: &[&'static str]| [["ipam", "controller", "--seed", "s"].as_slice(), &garden, extra].concat();
    assert!(Cli::try_parse_from(with(&[])).is_ok());
    assert!(Cli::try_parse_from(with(&["--slots", "3"])).is_err());
    assert!(Cli::try_parse_from(with(&["--resync", "soon"])).is_err());
    let no_garden = Cli::try_parse_from(["ipam", "controller", "--seed", "s"]);
    assert!(no_garden.is_err(), "the garden is named explicitly, never defaulted");
    assert!(Cli::try_parse_from(["ipam", "controller", "--garden-server", "http://g"]).is_err(), "--seed is required");
}
