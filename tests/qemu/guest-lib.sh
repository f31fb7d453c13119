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

# wait_until SECS CMD...: poll CMD every 0.2 s until it succeeds; false after SECS seconds. CMD's
# arguments are expanded once, by the caller: put a `$(...)` that must be re-read into a function.
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

# host_uplink NS: the guest's NIC (qemu's user network) moved into NS as 10.0.2.15/24, so that NS
# reaches the host's loopback at 10.0.2.2 (where the host's API server listens for the seed agent).
# Moved rather than routed: NS needs no forwarding or NAT in the guest, and every other namespace stays
# without a way out. No default route: the host is all NS reaches. When NS is deleted the kernel
# moves the NIC back to the initial namespace, down and without addresses.
host_uplink() {
  wait_until 10 test -e /sys/class/net/eth0 || fail "no NIC eth0 (qemu's user network, tests/qemu/run.sh)"
  ip link set eth0 netns "$1" || fail "moving eth0 into $1"
  ip -n "$1" addr add 10.0.2.15/24 dev eth0 || fail "addressing eth0 in $1"
  ip -n "$1" link set eth0 up || fail "eth0 up in $1"
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

# plain_wg NS DEV KEYNAME ADDR PEERNAME PEER_ENDPOINT PEER_ALLOWED: a kernel WireGuard device set up with
# ip and wg only, listening on 51820: the reference side that kubelink did not configure.
plain_wg() {
  ip -n "$1" link add "$2" type wireguard || fail "ip link add $2 type wireguard in $1"
  on "$1" wg set "$2" private-key "/tmp/$3.key" listen-port 51820 \
    peer "$(cat "/tmp/$5.pub")" endpoint "$6" allowed-ips "$7" || fail "wg set $2 in $1"
  ip -n "$1" addr add "$4" dev "$2"
  ip -n "$1" link set "$2" up
}

# device_yaml DEV KEYNAME PORT ADDR: the device part of a kubelink config; peers follow via peer_yaml.
device_yaml() {
  printf 'device:\n  name: %s\n  privateKeyFile: /tmp/%s.key\n  listenPort: %s\n' "$1" "$2" "$3"
  printf '  addresses: ["%s"]\n  peers:\n' "$4"
}

# peer_yaml PEERNAME ENDPOINT|- ALLOWED[,ALLOWED] [KEEPALIVE]
peer_yaml() {
  printf '  - publicKey: "%s"\n' "$(cat "/tmp/$1.pub")"
  [ "$2" = - ] || printf '    endpoint: "%s"\n' "$2"
  printf '    allowedIPs: ["%s"]\n' "$(echo "$3" | sed 's/,/", "/g')"
  [ -z "${4:-}" ] || printf '    persistentKeepalive: %s\n' "$4"
}

# kl_start NS CONFIG LOG [ARGS...]: start `kubelink run` in NS; its pid is in $KL_PID.
kl_start() {
  ns="$1" config="$2" logfile="$3"
  shift 3
  # The binary itself, not the `on`/`ip` functions: a backgrounded function is a subshell, and $! would
  # be that shell instead of the agent. `ip netns exec` execs kubelink under the same pid.
  /usr/local/sbin/ip netns exec "$ns" kubelink run --config "$config" "$@" >"$logfile" 2>&1 &
  KL_PID=$!
}

# kl_stop PID LOG: SIGTERM, and the agent must exit 0 within 10 s.
kl_stop() {
  kill -TERM "$1" 2>/dev/null || fail "agent $1 is not running; log:$(echo; cat "$2")"
  i=0
  while kill -0 "$1" 2>/dev/null; do
    i=$((i + 1))
    [ "$i" -ge 50 ] && fail "agent $1 ignored SIGTERM"
    sleep 0.2
  done
  wait "$1" || fail "agent exited non-zero; log:$(echo; cat "$2")"
}

# peer_count NS DEV
peer_count() { on "$1" wg show "$2" peers | wc -l; }

# has_peers NS DEV N
has_peers() { [ "$(peer_count "$1" "$2" 2>/dev/null)" = "$3" ]; }

# wait_peers NS DEV N LOG: wait up to 60 s until DEV exists in NS with N peers.
wait_peers() {
  wait_until 60 has_peers "$1" "$2" "$3" ||
    fail "$2 in $1 never got $3 peers (has $(peer_count "$1" "$2" 2>&1)); log:$(echo; cat "$4")"
}

# Peers normalised to `key<TAB>endpoint<TAB>allowed,sorted<TAB>keepalive|off`, sorted, from two readers.
wg_peers() {
  on "$1" wg show "$2" dump | tail -n +2 |
    jq -R -r 'split("\t") | [.[0], .[2], (.[3] | split(",") | sort | join(",")), .[7]] | @tsv' | sort
}

kl_peers() {
  on "$1" kubelink status --device "$2" --json | jq -r '.peers[] | [.publicKey, (.endpoint // "(none)"),
    (.allowedIPs | sort | join(",") | if . == "" then "(none)" else . end),
    (if (.persistentKeepalive // 0) == 0 then "off" else (.persistentKeepalive | tostring) end)] | @tsv' | sort
}

# kl_field NS DEV JQ: one field of `kubelink status --json`.
kl_field() { on "$1" kubelink status --device "$2" --json | jq -r "$3"; }

# size_is FILE BYTES
size_is() { [ "$(wc -c <"$1")" = "$2" ]; }

# same_text WHAT EXPECTED_FILE ACTUAL_FILE: fail with a diff when they differ.
same_text() {
  cmp -s "$2" "$3" || fail "$1 differs:$(echo; diff "$2" "$3" | head -20)"
}

# gen_peers N YAML ROWS: N peers with random public keys (any 32 bytes work as a peer key), distinct allowed
# IPs and endpoints; every 10th peer also routes an IPv6 address, every 3rd has a keepalive. Writes the YAML
# peers (for after device_yaml) to YAML and the expected `wg_peers` rows, unsorted, to ROWS.
gen_peers() {
  awk -v n="$1" -v seed="$$" -v yaml="$2" -v rows="$3" '
  function key(   s, i, b0, b1, b2) {
    s = ""
    for (i = 0; i < 30; i += 3) {
      b0 = int(rand() * 256); b1 = int(rand() * 256); b2 = int(rand() * 256)
      s = s substr(A, int(b0 / 4) + 1, 1) substr(A, (b0 % 4) * 16 + int(b1 / 16) + 1, 1)
      s = s substr(A, (b1 % 16) * 4 + int(b2 / 64) + 1, 1) substr(A, b2 % 64 + 1, 1)
    }
    b0 = int(rand() * 256); b1 = int(rand() * 256)
    return s substr(A, int(b0 / 4) + 1, 1) substr(A, (b0 % 4) * 16 + int(b1 / 16) + 1, 1) \
      substr(A, (b1 % 16) * 4 + 1, 1) "="
  }
  BEGIN {
    A = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    srand(seed)
    for (i = 0; i < n; i++) {
      k = key()
      if (k in seen) { i--; continue }
      seen[k] = 1
      ep = sprintf("10.1.%d.%d:%d", int(i / 256), i % 256, 20000 + i)
      ips = sprintf("10.200.%d.%d/32", int(i / 256), i % 256)
      if (i % 10 == 0) ips = ips "," sprintf("fd00:200::%x/128", i + 1)
      ka = (i % 3 == 0) ? 25 : "off"
      yips = ips
      gsub(/,/, "\", \"", yips)
      printf "  - publicKey: \"%s\"\n    endpoint: \"%s\"\n    allowedIPs: [\"%s\"]\n", k, ep, yips > yaml
      if (ka != "off") printf "    persistentKeepalive: %d\n", ka > yaml
      printf "%s\t%s\t%s\t%s\n", k, ep, ips, ka > rows
    }
  }' || fail "generating peers"
}
