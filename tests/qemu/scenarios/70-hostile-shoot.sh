# The gateway's firewall on a kernel WireGuard device (`kubelink run --wg-backend kernel`, the table the
# agent writes for slot 0): a hostile shoot with its own key, AllowedIPs 0.0.0.0/0 and everything but
# its WireGuard packets routed into the tunnel, reaches neither a seed pod nor a listener of the gateway
# node, and the table counts the drops; the pod's ping of the shoot and the shoot's probe of the slot
# address get through.
. /lib/kubelink-qemu/guest-lib.sh

two_namespaces gw shoot
ip netns add pod || fail "netns add pod"
ip link add veth-p netns gw type veth peer name veth-q netns pod || fail "veth to the pod"
ip -n gw addr add 100.64.1.254/24 dev veth-p
ip -n pod addr add 100.64.1.1/24 dev veth-q
for l in "gw veth-p" "pod veth-q" "pod lo"; do ip -n ${l% *} link set ${l#* } up; done
ip -n pod route add default via 100.64.1.254
on gw sh -c 'echo 1 >/proc/sys/net/ipv4/ip_forward'

wg_keypair gw
wg_keypair m
{
  printf 'snat:\n  cidr: 192.168.128.0/22\n  to: 192.168.128.1\n'
  device_yaml kl0 gw 51820 192.168.128.1/22
  peer_yaml m - 192.168.128.11/32
} >/tmp/gw.yaml
kl_start gw /tmp/gw.yaml /tmp/gw.log --wg-backend kernel
pid=$KL_PID
wait_peers gw kl0 1 /tmp/gw.log
on gw nft list table inet kubelink >/dev/null || fail "no table:$(echo; cat /tmp/gw.log)"

# The hostile shoot, set up with ip and wg only as a full-tunnel client for AllowedIPs 0.0.0.0/0.
plain_wg shoot km m 192.168.128.11/22 gw 10.0.0.1:51820 0.0.0.0/0
on shoot wg set km fwmark 51820
ip -n shoot route add default dev km table 51820
ip -n shoot rule add not fwmark 51820 table 51820 priority 10

on shoot ping -c 1 -W 5 -I 192.168.128.11 192.168.128.1 >/dev/null || fail "the probe of the slot address"
on pod ping -c 2 -W 5 192.168.128.11 >/dev/null || fail "no ping from the pod to the shoot"

on pod nc -l -p 7000 >/tmp/pod.got &
on gw nc -l -p 8093 >/tmp/node.got &
sleep 0.3
# drops COMMENT: the packets counted by the drop rule with that comment.
drops() {
  on gw nft -j list table inet kubelink |
    jq "[.nftables[].rule | select(.comment == \"$1\") | .expr[] | .counter.packets? // empty] | add"
}
# attempt WHAT CMD...: in the background; WHAT goes to /tmp/through if CMD succeeds.
attempt() {
  what="$1"
  shift
  "$@" >/dev/null 2>&1 </dev/null && echo "$what" >>/tmp/through
}
attempt "ping the seed pod" on shoot ping -c 2 -W 1 100.64.1.1 &
pids="$!"
attempt "ping the node address" on shoot ping -c 2 -W 1 10.0.0.1 &
pids="$pids $!"
for dst in "seed pod:100.64.1.1 7000" "node address:10.0.0.1 8093" "slot address:192.168.128.1 8093"; do
  attempt "TCP to the ${dst%%:*}" on shoot nc -w 1 ${dst#*:} &
  pids="$pids $!"
done
wait $pids
[ -s /tmp/through ] && fail "the hostile shoot got through: $(cat /tmp/through)"
[ -s /tmp/pod.got ] && fail "the pod's listener got data"
[ -s /tmp/node.got ] && fail "the node's listener got data"
seed="$(drops 'drop: shoot to seed')"
node="$(drops 'drop: shoot to gateway node')"
log "measured: drops shoot to seed $seed, shoot to gateway node $node"
[ "$seed" -ge 3 ] || fail "shoot to seed: $seed drops"
[ "$node" -ge 4 ] || fail "shoot to gateway node: $node drops"
on shoot ping -c 1 -W 5 -I 192.168.128.11 192.168.128.1 >/dev/null || fail "the probe after the attempts"
kl_stop "$pid" /tmp/gw.log
log "hostile shoot on a kernel gateway: seed $seed and node $node packets dropped, probe and seed ping pass"
