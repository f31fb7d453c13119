#!/usr/bin/env bash
# Fetch Debian's stock amd64 kernel (it ships wireguard.ko) and unpack it under target/qemu/kernel/.
# Prints the unpacked root on stdout; everything else goes to stderr.
#
# The package is fetched by its exact name: `apt-get download` with a glob would fetch every kernel.
# The name comes from the meta package's dependency (`linux-image-amd64` -> `linux-image-<abi>-amd64`)
# unless KUBELINK_QEMU_KERNEL_PKG names one. A package already unpacked is reused without network.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${CARGO_TARGET_DIR:-$repo/target}/qemu/kernel"

die() { echo "fetch-kernel: $*" >&2; exit 1; }

resolve_name() {
  if [[ -n "${KUBELINK_QEMU_KERNEL_PKG:-}" ]]; then
    echo "$KUBELINK_QEMU_KERNEL_PKG"
    return
  fi
  command -v apt-cache >/dev/null || die "apt-cache not found: set KUBELINK_QEMU_KERNEL_PKG or run on Debian"
  apt-cache depends linux-image-amd64 2>/dev/null |
    awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9].*-amd64$/ { print $2; exit }'
}

# A cached kernel stands in when the package lists cannot name one (offline, no `apt-get update`).
cached_fallback() {
  local found
  found="$(find "$cache" -mindepth 2 -maxdepth 2 -name root -type d 2>/dev/null | sort | tail -n1)"
  [[ -n "$found" ]] || die "cannot learn the kernel package name from 'apt-cache depends linux-image-amd64' \
(run 'apt-get update' first) and no kernel is cached in $cache"
  echo "fetch-kernel: package name unknown, using cached $(basename "$(dirname "$found")")" >&2
  echo "$found"
}

main() {
  local name dir
  name="$(resolve_name)"
  if [[ -z "$name" && "$(id -u)" == 0 ]]; then
    echo "fetch-kernel: no package lists yet, running apt-get update" >&2
    apt-get update -qq >&2 || true
    name="$(resolve_name)"
  fi
  if [[ -z "$name" ]]; then
    cached_fallback
    return
  fi
  [[ "$name" =~ ^linux-image-[A-Za-z0-9.+~-]+$ ]] || die "refusing odd package name '$name'"
  dir="$cache/$name"
  if [[ ! -d "$dir/root" ]]; then
    mkdir -p "$dir"
    rm -f "$dir"/*.deb
    echo "fetch-kernel: downloading $name" >&2
    (cd "$dir" && apt-get download -q "$name" >&2) || die "apt-get download $name failed"
    dpkg-deb -x "$dir"/"$name"_*.deb "$dir/root.partial" || die "dpkg-deb -x failed"
    mv "$dir/root.partial" "$dir/root"
    rm -f "$dir"/*.deb
    # An unpacked kernel is about 400 MB: keep only the current one.
    find "$cache" -mindepth 1 -maxdepth 1 -type d ! -name "$name" -exec rm -rf {} +
  fi
  ls "$dir"/root/boot/vmlinuz-* >/dev/null 2>&1 || die "no boot/vmlinuz-* in $name"
  echo "$dir/root"
}

main "$@"
