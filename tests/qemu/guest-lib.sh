# Helpers for the guest scenario scripts (POSIX sh, busybox). Source it: `. /lib/kubelink-qemu/guest-lib.sh`.
# A scenario passes when it exits 0; `fail` prints why and exits 1.

set -u

# iproute2's ip (netns, wireguard links), never busybox's applet of the same name.
ip() { /usr/local/sbin/ip "$@"; }

log() { echo "[$(cut -d' ' -f1 /proc/uptime)] $*"; }

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# on NS CMD...: run CMD in network namespace NS.
on() {
  ns="$1"
  shift
  ip netns exec "$ns" "$@"
}

# wait_until SECS CMD...: poll CMD every 0.2 s until it succeeds; fail after SECS seconds.
wait_until() {
  limit=$(($1 * 5))
  shift
  i=0
  until "$@" >/dev/null 2>&1; do
    i=$((i + 1))
    [ "$i" -ge "$limit" ] && return 1
    sleep 0.2
  done
}

# two_namespaces A B: namespaces A and B joined by veth, 10.0.0.1/24 in A, 10.0.0.2/24 in B.
two_namespaces() {
  ip netns add "$1" || fail "netns add $1"
  ip netns add "$2" || fail "netns add $2"
  ip link add veth-a netns "$1" type veth peer name veth-b netns "$2" || fail "veth"
  ip -n "$1" addr add 10.0.0.1/24 dev veth-a
  ip -n "$2" addr add 10.0.0.2/24 dev veth-b
  for ns in "$1" "$2"; do
    ip -n "$ns" link set lo up
  done
  ip -n "$1" link set veth-a up
  ip -n "$2" link set veth-b up
}

# wg_keypair NAME: writes /tmp/NAME.key and /tmp/NAME.pub.
wg_keypair() {
  umask 077
  wg genkey >"/tmp/$1.key" || fail "wg genkey"
  wg pubkey <"/tmp/$1.key" >"/tmp/$1.pub" || fail "wg pubkey"
}

# handshake_done NS DEV: true when DEV in NS has completed a handshake with any peer.
handshake_done() {
  on "$1" wg show "$2" latest-handshakes | awk '$2 > 0 { ok = 1 } END { exit !ok }'
}
