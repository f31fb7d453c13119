#!/usr/bin/env bash
# Assemble the guest's initramfs: busybox, iproute2's ip, wg, jq, nft, conntrack, optionally the kubelink binary
# (each with the shared libraries ldd lists), the WireGuard/veth/tun/NIC modules of the given kernel in load
# order, /init, the scenario scripts and, optionally, the files of the host's control plane for the guest's
# seed agent (its kubeconfig, the shoot's Secret; tests/src/landscape/control.rs writes them) under
# /etc/kubelink-control.
#
# usage: build-initramfs.sh KERNEL_ROOT OUT.cpio.gz [KUBELINK_BIN [CONTROL_DIR]]
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
die() { echo "build-initramfs: $*" >&2; exit 1; }

[[ $# -ge 2 ]] || die "usage: build-initramfs.sh KERNEL_ROOT OUT.cpio.gz [KUBELINK_BIN [CONTROL_DIR]]"
kroot="$1"
out="$2"
kubelink="${3:-}"
control="${4:-}"
# WireGuard, links, what the agent's nftables table (NAT, the shoot filter's ct state) and
# connection-tracking reset need, and the NIC on qemu's user network (virtio-net on PCI; Debian builds
# both as modules) through which the guest's seed agent reaches the host's API server.
modules=(wireguard veth tun nf_tables nft_chain_nat nft_nat nft_ct nf_conntrack_netlink virtio_net virtio_pci)

need() { command -v "$1" >/dev/null || die "missing tool '$1' (install: $2)"; }
need busybox busybox-static
need cpio cpio
need modprobe kmod
need ldd libc-bin
[[ -x /usr/sbin/ip || -x /sbin/ip ]] || die "missing iproute2's ip (install: iproute2)"
need wg wireguard-tools
need jq jq
need nft nftables
need conntrack conntrack

stage="$(mktemp -d "${out%/*}/initramfs.XXXXXX")"
trap 'rm -rf "$stage"' EXIT

# Copy a binary to DEST inside the stage, plus every library ldd names, at the same paths.
copy_with_libs() {
  local bin="$1" dest="$2"
  install -D -m 0755 "$bin" "$stage$dest"
  ldd "$bin" 2>/dev/null | grep -oE '/[^ ]+' | while read -r lib; do
    [[ -e "$stage$lib" ]] || install -D -m 0755 "$(readlink -f "$lib")" "$stage$lib"
  done
}

add_tools() {
  install -D -m 0755 "$(command -v busybox)" "$stage/bin/busybox"
  ln -s busybox "$stage/bin/sh"
  # iproute2's ip goes where busybox's applet cannot shadow it; guest-lib.sh calls it by full path.
  copy_with_libs "$(command -v ip)" /usr/local/sbin/ip
  copy_with_libs "$(command -v wg)" /usr/bin/wg
  copy_with_libs "$(command -v jq)" /usr/bin/jq
  copy_with_libs "$(command -v nft)" /usr/sbin/nft
  copy_with_libs "$(command -v conntrack)" /usr/sbin/conntrack
  if [[ -n "$kubelink" ]]; then
    [[ -x "$kubelink" ]] || die "kubelink binary '$kubelink' not found or not executable"
    copy_with_libs "$kubelink" /usr/bin/kubelink
    # Debug line tables only matter on the host; a smaller image unpacks faster in the guest.
    if command -v strip >/dev/null; then strip "$stage/usr/bin/kubelink"; fi
  fi
}

# The host's control-plane files, as written (the shoot's private key keeps its mode 0600).
add_control() {
  [[ -n "$control" ]] || return 0
  [[ -d "$control" ]] || die "control-plane directory '$control' not found"
  mkdir -p "$stage/etc/kubelink-control"
  cp -a "$control/." "$stage/etc/kubelink-control/"
}

# Modules and their dependencies, in the order modprobe would load them, as guest paths.
add_modules() {
  local kver order="$stage/etc/modules.order" line path
  kver="$(basename "$(ls -d "$kroot"/lib/modules/*/ | head -n1)")"
  [[ -n "$kver" ]] || die "no lib/modules/<version> in $kroot"
  [[ -f "$kroot/lib/modules/$kver/modules.dep" ]] || depmod -b "$kroot" "$kver"
  mkdir -p "$stage/etc"
  : >"$order"
  for m in "${modules[@]}"; do
    modprobe -d "$kroot" -S "$kver" --show-depends "$m" >"$stage/deps" || die "module $m not in $kver"
    while read -r line; do
      [[ "$line" == insmod* ]] || continue # "builtin <name>" needs nothing
      path="${line#insmod }"
      path="${path%% *}"
      path="${path#"$kroot"}"
      grep -qxF "$path" "$order" && continue
      install -D -m 0644 "$kroot$path" "$stage$path"
      echo "$path" >>"$order"
    done <"$stage/deps"
  done
  rm -f "$stage/deps"
}

add_scripts() {
  install -m 0755 "$here/init" "$stage/init"
  install -D -m 0644 "$here/guest-lib.sh" "$stage/lib/kubelink-qemu/guest-lib.sh"
  mkdir -p "$stage/scenarios"
  install -m 0755 "$here"/scenarios/*.sh "$stage/scenarios/"
  mkdir -p "$stage"/{proc,sys,dev,run,tmp,var,etc}
  ln -s ../run "$stage/var/run"
  echo "127.0.0.1 localhost" >"$stage/etc/hosts"
  # The Kubernetes client (rustls) refuses to start without system CA roots, even for plain HTTP.
  local ca=/etc/ssl/certs/ca-certificates.crt
  [[ -f "$ca" ]] || die "missing $ca (install: ca-certificates)"
  install -D -m 0644 "$ca" "$stage$ca"
}

add_tools
add_modules
add_scripts
add_control
(cd "$stage" && find . -print0 | sort -z | cpio --null -o -H newc --quiet) | gzip -1 >"$out.partial"
mv "$out.partial" "$out"
echo "build-initramfs: $(du -h "$out" | cut -f1) $out" >&2
