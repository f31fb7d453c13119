# 1000 peers in one config: applied in one reconcile pass (they only fit across many netlink messages),
# read back equal by both the kernel's own tool and kubelink, and left alone by a restarted agent.
. /lib/kubelink-qemu/guest-lib.sh

peers=1000
ip netns add a || fail "netns add a"
ip -n a link set lo up
wg_keypair a

gen_peers "$peers" /tmp/peers.yaml /tmp/expected.unsorted
sort /tmp/expected.unsorted >/tmp/expected
{
  device_yaml kl0 a 51820 10.99.0.1/16
  cat /tmp/peers.yaml
} >/tmp/a.yaml

start="$(cut -d' ' -f1 /proc/uptime)"
kl_start a /tmp/a.yaml /tmp/a.log --wg-backend kernel --log info,kubelink=debug
wait_peers a kl0 "$peers" /tmp/a.log
log "measured: $peers peers applied $(awk -v s="$start" '{ printf "%.1f", $1 - s }' /proc/uptime) s after start"
wait_until 30 grep -q 'in sync' /tmp/a.log || fail "agent never reported in sync:$(echo; tail -5 /tmp/a.log)"

wg_peers a kl0 >/tmp/wg
kl_peers a kl0 >/tmp/kl
same_text "wg show vs config ($peers peers)" /tmp/expected /tmp/wg
same_text "kubelink status vs wg show ($peers peers)" /tmp/wg /tmp/kl
passes="$(grep -c 'reconciled' /tmp/a.log)"
[ "$passes" = 1 ] || fail "expected one applying pass, saw $passes:$(echo; grep -v 'in sync' /tmp/a.log | tail -5)"
! grep -q 'reconcile failed' /tmp/a.log || fail "$(grep 'reconcile failed' /tmp/a.log | head -3)"
kl_stop "$KL_PID" /tmp/a.log

# A restart reads the 1000 peers back and finds nothing to change: no peer is re-applied.
kl_start a /tmp/a.yaml /tmp/a2.log --wg-backend kernel --log info,kubelink=debug
wait_until 60 grep -q 'in sync' /tmp/a2.log || fail "restarted agent never in sync:$(echo; tail -5 /tmp/a2.log)"
! grep -q 'reconciled' /tmp/a2.log || fail "restart re-applied:$(echo; grep reconciled /tmp/a2.log)"
kl_stop "$KL_PID" /tmp/a2.log
log "$peers peers applied in one pass, read back equal ($(wc -l </tmp/wg) rows compared), restart changed nothing"
