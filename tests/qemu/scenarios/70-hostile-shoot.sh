# The gateway's firewall on a kernel WireGuard device (`kubelink run --wg-backend kernel`, the table the
# agent writes for slot 0, with a VPN server per shoot), once with an IPv4 and once with an IPv6 tunnel
# CIDR (the underlay is IPv4 in both). Two shoots dial the gateway, each a kernel device set up with ip
# and wg only: a victim V (AllowedIPs the slot address) and a hostile M with its own key,
# AllowedIPs 0.0.0.0/0 and ::/0 and everything but its WireGuard packets routed into the tunnel. Behind
# the gateway: a seed pod, and each shoot's VPN server (vpn-seed-server) in a pod of its own, listening
# on TCP 1194.
#
# M reaches neither V nor a seed pod nor V's VPN server nor another port of its own server, nor a
# listener of the gateway node (8093, 10250, 30080 on the node and the slot address), and the table
# counts the drops (`measured:`). Before and after the attempts: both shoots' probes of the slot address,
# the gateway's probe of both shoots from the slot address, the pod's ping and TCP to both shoots, and
# each shoot's VPN connection (TCP to the slot address, port 1194) arriving at its own server and not at
# the other's. M dialling its own server's address directly on 1194 is refused too: the forward
# filter accepts only the translated connection (`ct status dnat`).
. /lib/kubelink-qemu/guest-lib.sh

NODE_PORTS="8093 10250 30080"

# addresses 4|6: the addresses of one run.
addresses() {
  if [ "$1" = 4 ]; then
    CIDR=192.168.128.0/22 PFX=22 HOST=32 SLOT=192.168.128.1 M=192.168.128.11 V=192.168.128.12
    SEED_PFX=24 POD=100.64.1.1 POD_GW=100.64.1.254 SRV_M=100.64.2.1 SRV_M_GW=100.64.2.254
    SRV_V=100.64.3.1 SRV_V_GW=100.64.3.254 NODE=10.0.0.1
  else
    CIDR=fd00:128::/64 PFX=64 HOST=128 SLOT=fd00:128::1 M=fd00:128::11 V=fd00:128::12
    SEED_PFX=64 POD=fd00:64:1::1 POD_GW=fd00:64:1::fe SRV_M=fd00:64:2::1 SRV_M_GW=fd00:64:2::fe
    SRV_V=fd00:64:3::1 SRV_V_GW=fd00:64:3::fe NODE=fd00:250::1
  fi
}

# new_ns NAME: a namespace with lo up and no duplicate address detection (an IPv6 address is usable at
# once).
new_ns() {
  ip netns add "$1" || fail "netns add $1"
  ip -n "$1" link set lo up
  on "$1" sh -c 'for c in default all; do echo 0 >/proc/sys/net/ipv6/conf/$c/accept_dad; done'
}

# veth NS1 DEV1 ADDR1/PFX NS2 DEV2 ADDR2/PFX
veth() {
  ip link add "$2" netns "$1" type veth peer name "$5" netns "$4" || fail "veth $1 $4"
  ip -n "$1" addr add "$3" dev "$2" || fail "$3 on $2 in $1"
  ip -n "$4" addr add "$6" dev "$5" || fail "$6 on $5 in $4"
  ip -n "$1" link set "$2" up
  ip -n "$4" link set "$5" up
}

# seed_host NS DEV ADDR GW_DEV GW_ADDR: a seed pod behind the gateway on a link of its own.
seed_host() {
  new_ns "$1"
  veth "$GW" "$4" "$5/$SEED_PFX" "$1" "$2" "$3/$SEED_PFX"
  ip -n "$1" route add default via "$5" || fail "default route in $1"
}

# listen NS PORT FILE: a TCP server in NS on PORT (any address), appending what each client sends to
# FILE.
listen() {
  /usr/local/sbin/ip netns exec "$1" nc -ll -p "$2" -e sh -c "cat >>$3" &
  LISTENERS="$LISTENERS $!"
}

# send NS TEXT HOST PORT [SECS]: a TCP connection from NS that sends TEXT; fails when it cannot connect
# within SECS (default 3).
send() {
  on "$1" sh -c 'echo "$1" | nc -w "$4" "$2" "$3"' send "$2" "$3" "$4" "${5:-3}" </dev/null
}

# arrived FILE TEXT: TEXT reaches FILE within 5 s.
arrived() { wait_until 5 grep -qF "$2" "$1"; }

# drops COMMENT: the packets counted by the drop rule with that comment.
drops() {
  on "$GW" nft -j list table inet kubelink |
    jq "[.nftables[].rule | select(.comment == \"$1\") | .expr[] | .counter.packets? // empty] | add"
}

# attempt WHAT CMD...: in the background; WHAT goes to $THROUGH if CMD succeeds.
attempt() {
  what="$1"
  shift
  "$@" >/dev/null 2>&1 </dev/null && echo "$what" >>"$THROUGH"
}

# seed_side PHASE: what must work, before and after M's attempts.
seed_side() {
  for s in "M $MS $M" "V $VS $V"; do
    set -- $s
    on "$2" ping -c 1 -W 5 -I "$3" "$SLOT" >/dev/null || fail "$FAM $1: the probe of the slot address ($PHASE)"
    on "$GW" ping -c 1 -W 5 -I "$SLOT" "$3" >/dev/null || fail "$FAM: the gateway's probe of $1 ($PHASE)"
    on "$POD_NS" ping -c 2 -W 5 "$3" >/dev/null || fail "$FAM: no ping from the pod to $1 ($PHASE)"
    send "$POD_NS" "pod to $1 $PHASE" "$3" 7000 || fail "$FAM: no TCP from the pod to $1 ($PHASE)"
    arrived "/tmp/$2.got" "pod to $1 $PHASE" || fail "$FAM: the pod's data did not arrive at $1 ($PHASE)"
    # The VPN connection: the slot address, TCP 1194, translated to the shoot's own server.
    send "$2" "$1's VPN $PHASE" "$SLOT" 1194 || fail "$FAM: $1's VPN connection ($PHASE)"
    arrived "/tmp/srv$2.got" "$1's VPN $PHASE" || fail "$FAM: $1's VPN data did not arrive at its server ($PHASE)"
  done
  for s in "M srv$VS" "V srv$MS"; do
    set -- $s
    grep -qF "$1's VPN" "/tmp/$2.got" && fail "$FAM: $1's VPN connection arrived at the other server"
  done
  return 0
}

# run 4|6: one run, in namespaces of its own.
run() {
  FAM="IPv$1"
  addresses "$1"
  GW="gw$1" MS="m$1" VS="v$1" POD_NS="pod$1" THROUGH="/tmp/through$1"
  LISTENERS=""
  for ns_ in "$GW" "$MS" "$VS"; do new_ns "$ns_"; done
  # The IPv4 underlay where the shoots dial the gateway, and (IPv6 run) the node's IPv6 address.
  veth "$GW" veth-a 10.0.0.1/24 "$MS" veth-b 10.0.0.2/24
  veth "$GW" veth-c 10.0.1.1/24 "$VS" veth-d 10.0.1.2/24
  [ "$1" = 6 ] && ip -n "$GW" addr add "$NODE/64" dev veth-a
  seed_host "$POD_NS" veth-q "$POD" veth-p "$POD_GW"
  seed_host "srv$MS" veth-q "$SRV_M" veth-m "$SRV_M_GW"
  seed_host "srv$VS" veth-q "$SRV_V" veth-v "$SRV_V_GW"
  on "$GW" sh -c 'echo 1 >/proc/sys/net/ipv4/ip_forward; echo 1 >/proc/sys/net/ipv6/conf/all/forwarding'

  for k in "$GW" "$MS" "$VS"; do wg_keypair "$k"; done
  {
    printf 'snat:\n  cidr: %s\n  to: %s\n  vpnServers:\n' "$CIDR" "$SLOT"
    printf '    "%s": "%s"\n' "$M" "$SRV_M" "$V" "$SRV_V"
    device_yaml kl0 "$GW" 51820 "$SLOT/$PFX"
    peer_yaml "$MS" - "$M/$HOST"
    peer_yaml "$VS" - "$V/$HOST"
  } >"/tmp/$GW.yaml"
  kl_start "$GW" "/tmp/$GW.yaml" "/tmp/$GW.log" --wg-backend kernel
  pid=$KL_PID
  wait_peers "$GW" kl0 2 "/tmp/$GW.log"
  on "$GW" nft list chain inet kubelink shoot_dnat >/dev/null || fail "no table:$(echo; cat "/tmp/$GW.log")"

  # The victim, an ordinary shoot: the slot address is all it routes into the tunnel.
  plain_wg "$VS" kv "$VS" "$V/$PFX" "$GW" 10.0.1.1:51820 "$SLOT/$HOST"
  # The hostile shoot, a full-tunnel client for AllowedIPs 0.0.0.0/0 and ::/0.
  plain_wg "$MS" km "$MS" "$M/$PFX" "$GW" 10.0.0.1:51820 0.0.0.0/0,::/0
  on "$MS" wg set km fwmark 51820
  for fam in -4 -6; do
    ip -n "$MS" "$fam" route add default dev km table 51820 || fail "M's $fam route into the tunnel"
    ip -n "$MS" "$fam" rule add not fwmark 51820 table 51820 priority 10 || fail "M's $fam rule"
  done

  for p in $NODE_PORTS; do listen "$GW" "$p" "/tmp/$GW.got"; done
  listen "$POD_NS" 7000 "/tmp/$POD_NS.got"
  listen "$MS" 7000 "/tmp/$MS.got"
  listen "$VS" 7000 "/tmp/$VS.got"
  listen "srv$MS" 1194 "/tmp/srv$MS.got"
  listen "srv$MS" 7000 "/tmp/srv$MS.got"
  listen "srv$VS" 1194 "/tmp/srv$VS.got"
  sleep 0.3

  PHASE=before
  seed_side

  # M's attempts, all at once: V (ping, TCP), the seed pod (ping, TCP), V's VPN server, another port of
  # its own server, the gateway node (ping of its address; TCP to each port on its address and on the
  # slot address). Each dropped attempt fails within about 1 s.
  : >"$THROUGH"
  s2s0="$(drops 'drop: shoot to shoot')" s2p0="$(drops 'drop: shoot to seed')"
  s2n0="$(drops 'drop: shoot to gateway node')"
  pids=""
  for a in "ping V:$V" "ping the seed pod:$POD" "ping the node address:$NODE"; do
    attempt "${a%%:*}" on "$MS" ping -c 2 -W 1 "${a#*:}" &
    pids="$pids $!"
  done
  n=3
  for a in "V:$V 7000" "the seed pod:$POD 7000" "V's VPN server:$SRV_V 1194" "its own server, port 7000:$SRV_M 7000"; do
    attempt "TCP to ${a%%:*}" send "$MS" "from M" ${a#*:} 1 &
    pids="$pids $!"
    n=$((n + 1))
  done
  for p in $NODE_PORTS; do
    for a in "the node address:$NODE" "the slot address:$SLOT"; do
      attempt "TCP to ${a%%:*} $p" send "$MS" "from M" "${a#*:}" "$p" 1 &
      pids="$pids $!"
      n=$((n + 1))
    done
  done
  wait $pids
  s2s="$(($(drops 'drop: shoot to shoot') - s2s0))" s2p="$(($(drops 'drop: shoot to seed') - s2p0))"
  s2n="$(($(drops 'drop: shoot to gateway node') - s2n0))"
  [ -s "$THROUGH" ] && fail "$FAM: the hostile shoot got through: $(cat "$THROUGH")"
  for f in "$POD_NS" "$VS" "srv$MS" "srv$VS" "$GW"; do
    grep -qF "from M" "/tmp/$f.got" 2>/dev/null && fail "$FAM: M's data arrived in $f"
  done
  log "measured: $FAM: $n attempts of M failed; drops during them: shoot to shoot $s2s, shoot to seed $s2p, shoot to gateway node $s2n (table totals $((s2s0 + s2s)), $((s2p0 + s2p)), $((s2n0 + s2n)))"
  # 2 echoes and 1 SYN to V; 2 echoes and 3 SYNs to the seed side; 2 echoes and 6 SYNs to the node.
  [ "$s2s" -ge 3 ] || fail "$FAM: shoot to shoot: $s2s drops"
  [ "$s2p" -ge 5 ] || fail "$FAM: shoot to seed: $s2p drops"
  [ "$s2n" -ge 8 ] || fail "$FAM: shoot to gateway node: $s2n drops"

  direct=refused
  if send "$MS" "M direct to its own server" "$SRV_M" 1194 1 >/dev/null 2>&1; then
    direct=connected
    arrived "/tmp/srv$MS.got" "M direct to its own server" && direct="connected, data arrived"
  fi
  log "measured: $FAM: VPN: M and V each reach their own server through the slot address, TCP 1194, not the other's; M dialling its own server's address $SRV_M directly, TCP 1194: $direct"
  [ "$direct" = refused ] || fail "$FAM: M dialling its own server's address directly: $direct"

  PHASE=after
  seed_side
  kl_stop "$pid" "/tmp/$GW.log"
  kill $LISTENERS 2>/dev/null
  for ns_ in "$GW" "$MS" "$VS" "$POD_NS" "srv$MS" "srv$VS"; do ip netns delete "$ns_"; done
  log "hostile shoot on a kernel gateway, $FAM: $s2s + $s2p + $s2n packets dropped; probes, the pod's traffic and both VPN connections pass"
}

run 4
run 6
