# Adoption: a ping runs across an agent restart. The kernel device lives on (same ifindex), the new agent
# finds nothing to change (no peer re-applied: the handshake time is untouched) and no packet is lost.
. /lib/kubelink-qemu/guest-lib.sh

two_namespaces a b
wg_keypair a
wg_keypair b
plain_wg b wg0 b 10.99.0.2/24 a 10.0.0.1:51820 10.99.0.1/32
{
  device_yaml kl0 a 51820 10.99.0.1/24
  peer_yaml b 10.0.0.2:51820 10.99.0.2/32 25
} >/tmp/a.yaml

kl_start a /tmp/a.yaml /tmp/a1.log --wg-backend auto
wait_peers a kl0 1 /tmp/a1.log
on a ping -c 2 -W 5 10.99.0.2 >/dev/null || fail "no ping before the restart"
index1="$(kl_field a kl0 .ifindex)"
shake1="$(on a wg show kl0 latest-handshakes)"

count=60
on a ping -i 0.2 -c "$count" -W 5 10.99.0.2 >/tmp/ping.log 2>&1 &
ping_pid=$!
sleep 2
kl_stop "$KL_PID" /tmp/a1.log
ip -n a link show kl0 >/dev/null 2>&1 || fail "kl0 vanished when the agent stopped (--on-exit keep)"
sleep 1
kl_start a /tmp/a.yaml /tmp/a2.log --wg-backend auto --log info,kubelink=debug
wait_until 30 grep -q 'in sync' /tmp/a2.log || fail "restarted agent never reported in sync:$(echo; cat /tmp/a2.log)"
wait "$ping_pid"
cat /tmp/ping.log | tail -n 2

grep -q "$count packets transmitted, $count packets received" /tmp/ping.log ||
  fail "packets lost across the restart: $(grep transmitted /tmp/ping.log)"
[ "$(kl_field a kl0 .ifindex)" = "$index1" ] || fail "kl0 re-created: ifindex $index1 -> $(kl_field a kl0 .ifindex)"
[ "$(on a wg show kl0 latest-handshakes)" = "$shake1" ] || fail "peer re-applied: handshake time changed"
! grep -q 'reconciled' /tmp/a2.log || fail "restarted agent changed something:$(echo; cat /tmp/a2.log)"
kl_stop "$KL_PID" /tmp/a2.log
log "adopted kl0 (ifindex $index1), $count/$count pings across the restart"
