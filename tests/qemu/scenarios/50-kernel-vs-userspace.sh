# Kernel WireGuard (kubelink, kernel backend) against kubelink's userspace device (gotatun, with its
# default fast path: tun offload and UDP GSO) in the other namespace: handshake, ping both ways, a
# 2 MiB TCP transfer each way that arrives intact.
. /lib/kubelink-qemu/guest-lib.sh

two_namespaces a b
wg_keypair a
wg_keypair b
{
  device_yaml kla a 51820 10.99.0.1/24
  peer_yaml b 10.0.0.2:51820 10.99.0.2/32 25
} >/tmp/a.yaml
{
  device_yaml klb b 51820 10.99.0.2/24
  peer_yaml a 10.0.0.1:51820 10.99.0.1/32
} >/tmp/b.yaml

kl_start a /tmp/a.yaml /tmp/a.log --wg-backend kernel
pid_a=$KL_PID
kl_start b /tmp/b.yaml /tmp/b.log --wg-backend userspace
pid_b=$KL_PID
wait_peers a kla 1 /tmp/a.log
wait_peers b klb 1 /tmp/b.log
[ "$(kl_field a kla .backend)" = kernel ] || fail "a is not kernel"
[ "$(kl_field b klb .backend)" = userspace ] || fail "b is not userspace"
ip -n b -d link show klb | grep -q tun || fail "klb is not a tun device"
grep -q "tun transport ready.*offload=true" /tmp/b.log || fail "tun offload is off:$(echo; cat /tmp/b.log)"
grep -q "UDP socket bound.*gso=true" /tmp/b.log || fail "UDP GSO is off:$(echo; cat /tmp/b.log)"

on a ping -c 3 -W 5 10.99.0.2 || fail "no ping kernel -> userspace"
on b ping -c 3 -W 5 10.99.0.1 || fail "no ping userspace -> kernel"
handshake_done a kla || fail "kernel side recorded no handshake"
[ "$(kl_field b klb '.peers[0].lastHandshakeSecs')" != null ] || fail "userspace side recorded no handshake"

# transfer FROM TO ADDR PORT: /tmp/payload over TCP from namespace FROM to TO (at ADDR), intact.
transfer() {
  out="/tmp/received-$4"
  on "$2" nc -l -p "$4" >"$out" &
  nc_pid=$!
  sleep 0.5
  on "$1" nc "$3" "$4" -e cat /tmp/payload || fail "nc send $1 -> $2 failed"
  wait_until 30 size_is "$out" 2097152 || fail "$2 received $(wc -c <"$out") of 2097152 bytes"
  wait "$nc_pid" 2>/dev/null
  [ "$(sha256sum </tmp/payload)" = "$(sha256sum <"$out")" ] || fail "payload corrupted ($1 -> $2)"
}

head -c 2097152 /dev/urandom >/tmp/payload
transfer a b 10.99.0.2 5001
rx="$(kl_field b klb '.peers[0].rxBytes')"
[ "$rx" -gt 2097152 ] || fail "userspace rx counter $rx does not account for the transfer"
# The other way: the userspace side sends the bulk (large tun reads, GSO runs to the kernel peer).
transfer b a 10.99.0.1 5002

kl_stop "$pid_a" /tmp/a.log
kl_stop "$pid_b" /tmp/b.log
log "kernel <-> userspace (fast path on): handshake, pings, 2 MiB over TCP intact each way (rx $rx bytes)"
