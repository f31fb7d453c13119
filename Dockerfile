# The kubelink image: the `kubelink` binary (agent, extension controller, shoot sidecar) and the programs it
# starts at run time (agent/src/tools.rs RUNTIME_TOOLS). tests/tests/image.rs checks that the runtime
# stage installs exactly the Debian packages providing those programs, plus ca-certificates.
#
#   docker build -t kubelink:0.1.0 .
#
# The builder is the Rust release of the workspace's rust-version (Cargo.toml). The binary is built
# with the `dist` profile (Cargo.toml: stripped, fat LTO, size-optimised control plane; about 12 MB,
# docs/benchmarks.md), not `release`, which keeps line tables for the tests' backtraces.
FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
RUN cargo build --profile dist --locked -p kubelink --bin kubelink \
 && cp target/dist/kubelink /kubelink

FROM debian:bookworm-slim
# nftables: `nft`, the gateway's NAT table. conntrack: `conntrack`, flows towards the tunnel are
# forgotten when the node's forwarding changes. ca-certificates: the TLS roots of the Kubernetes client.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates \
      conntrack \
      nftables \
 && rm -rf /var/lib/apt/lists/*
COPY --from=builder /kubelink /usr/local/bin/kubelink
# Runs as root, deliberately: the agent configures the node's network (WireGuard device, routes,
# nftables, conntrack, net.ipv4.ip_forward), which needs NET_ADMIN in the host network namespace and
# a privileged container. The extension controller runs from this image as a non-root user set by its Pod
# (runAsUser in the chart).
ENTRYPOINT ["/usr/local/bin/kubelink"]
