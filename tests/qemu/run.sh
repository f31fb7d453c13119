#!/usr/bin/env bash
# Boot Debian's kernel under qemu (TCG) with a test initramfs and run the guest scenarios.
# The serial console goes to stdout and to target/qemu/console.log; the caller reads the @@KLQ markers.
#
# usage: tests/qemu/run.sh [SCENARIO[,SCENARIO...]]
# env:   KUBELINK_BIN            kubelink binary for the guest (default target/release/kubelink if built)
#        KUBELINK_QEMU_CONTROL_DIR  files of the host's control plane for the guest's seed agent (its
#                                kubeconfig, the shoot's Secret), copied to /etc/kubelink-control; the
#                                kernel_qemu test starts the control plane and sets it
#        KUBELINK_QEMU_TIMEOUT   seconds for the whole boot (default 900)
#        KUBELINK_QEMU_SCENARIO_TIMEOUT  seconds per scenario inside the guest (default 240)
#        KUBELINK_QEMU_KERNEL_PKG exact kernel package name (default: what linux-image-amd64 depends on)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
work="${CARGO_TARGET_DIR:-$repo/target}/qemu"
die() { echo "qemu-run: $*" >&2; exit 1; }

command -v qemu-system-x86_64 >/dev/null || die "missing qemu-system-x86_64 (install: qemu-system-x86)"
only="${1:-}"
mkdir -p "$work"

kroot="$("$here/fetch-kernel.sh")"
vmlinuz="$(ls "$kroot"/boot/vmlinuz-* | head -n1)"

kubelink="${KUBELINK_BIN:-}"
if [[ -z "$kubelink" && -x "${CARGO_TARGET_DIR:-$repo/target}/release/kubelink" ]]; then
  kubelink="${CARGO_TARGET_DIR:-$repo/target}/release/kubelink"
fi
[[ -n "$kubelink" ]] || echo "qemu-run: no kubelink binary; kubelink scenarios will fail" >&2
control="${KUBELINK_QEMU_CONTROL_DIR:-}"
[[ -n "$control" ]] || echo "qemu-run: no KUBELINK_QEMU_CONTROL_DIR; the agent-restart scenario will fail" >&2

"$here/build-initramfs.sh" "$kroot" "$work/initrd.gz" "$kubelink" "$control"

append="console=ttyS0 quiet panic=-1 klq.timeout=${KUBELINK_QEMU_SCENARIO_TIMEOUT:-240}"
[[ -z "$only" ]] || append+=" klq.only=$only"

# One NIC on qemu's user network, where 10.0.2.2 is this host's loopback: the seed agent's way to the
# host's API server. It stays down outside the scenario that moves it into its node namespace (no
# default route there either: only the host is reached). TCG, because KVM hung at boot here.
set +e
timeout -k 5 "${KUBELINK_QEMU_TIMEOUT:-900}" qemu-system-x86_64 \
  -accel tcg -cpu max -smp "${KUBELINK_QEMU_SMP:-1}" -m 1024 \
  -display none -monitor none -serial stdio -nic user,model=virtio-net-pci -no-reboot \
  -kernel "$vmlinuz" -initrd "$work/initrd.gz" -append "$append" </dev/null |
  tee "$work/console.log"
rc="${PIPESTATUS[0]}"
set -e
[[ "$rc" == 0 ]] || echo "qemu-run: qemu exited with $rc (124: timed out)" >&2
exit "$rc"
