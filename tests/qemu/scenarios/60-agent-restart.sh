# The seed agent on a kernel-mode gateway: `kubelink agent` against the host's real control plane
# (kube-apiserver with the chart installed, the extension controller, gardenlet's stand-in with the
# seed's Extension, one slot at 10.0.0.1:51820, and one shoot; tests/src/landscape/control.rs), reached
# over qemu's user network with a token bound to the agent's Pod; the shoot's sidecar dials it with the
# Secret the controller wrote, as a kubelet mounts it. A ping runs while the agent is SIGKILLed and
# restarted: the kernel device lives on with the same ifindex, the new agent adopts it unchanged and no
# packet is lost. Then a peer removed by hand comes back, and the kernel shoot side restarts its stale
# session.
. /lib/kubelink-qemu/guest-lib.sh

# Written on the host before the boot (tests/qemu/build-initramfs.sh copies them in).
control=/etc/kubelink-control
shoot_dir="$control/shoot-00000"
[ -s "$control/agent.kubeconfig" ] && [ -s "$shoot_dir/gateway-0-endpoint" ] ||
  fail "no control-plane files in $control: run the kernel_qemu test, or set KUBELINK_QEMU_CONTROL_DIR"

two_namespaces node shoot
host_uplink node

# agent_start LOG: the gateway agent in `node` as Pod kubelink-agent-n0 of node n0, kernel WireGuard;
# its pid is in $AGENT_PID.
agent_start() {
  /usr/local/sbin/ip netns exec node kubelink agent --node-name n0 --node-ip 10.0.0.1 \
    --pod-name kubelink-agent-n0 --namespace kubelink --seed local --seed-kubeconfig "$control/agent.kubeconfig" \
    --wg-backend kernel --device kl0 --health-listen 127.0.0.1:8080 >"$1" 2>&1 &
  AGENT_PID=$!
}

agent_start /tmp/agent1.log
/usr/local/sbin/ip netns exec shoot kubelink shoot --config-dir "$shoot_dir" --device ks0 \
  --health-listen 127.0.0.1:8093 >/tmp/shoot.log 2>&1 &
addr="$(cut -d/ -f1 "$shoot_dir/address")"
wait_until 60 handshake_done node kl0 || fail "no handshake; agent:$(echo; cat /tmp/agent1.log; echo shoot:; cat /tmp/shoot.log)"
on node ping -c 2 -W 5 "$addr" >/dev/null || fail "no ping to the shoot $addr before the restart"
on node nft list table inet kubelink >/dev/null || fail "the gateway has no nftables table"
index1="$(ip -n node -o link show kl0 | cut -d: -f1)"
shake1="$(on node wg show kl0 latest-handshakes)"

count=60
on node ping -i 0.2 -c "$count" -W 5 "$addr" >/tmp/ping.log 2>&1 &
ping_pid=$!
sleep 2
kill -KILL "$AGENT_PID"
wait "$AGENT_PID" 2>/dev/null
ip -n node link show kl0 >/dev/null 2>&1 || fail "kl0 vanished with the agent"
sleep 1
agent_start /tmp/agent2.log
wait_until 30 grep -q 'to=Some(0)' /tmp/agent2.log || fail "restarted agent did not resume slot 0:$(echo; cat /tmp/agent2.log)"
wait "$ping_pid"
tail -n 2 /tmp/ping.log
grep -v DEBUG /tmp/agent2.log | cut -c 28- | head -n 8

grep -q "$count packets transmitted, $count packets received" /tmp/ping.log ||
  fail "packets lost across the agent restart: $(grep transmitted /tmp/ping.log)"
[ "$(ip -n node -o link show kl0 | cut -d: -f1)" = "$index1" ] || fail "kl0 re-created across the restart"
[ "$(on node wg show kl0 latest-handshakes)" = "$shake1" ] || fail "peer re-applied: handshake time changed"
! grep -q 'gateway reconciled' /tmp/agent2.log || fail "restarted agent changed the gateway:$(echo; cat /tmp/agent2.log)"
log "kernel gateway agent SIGKILLed and restarted: $count/$count pings, kl0 kept (ifindex $index1)"

# The shoot's peer removed by hand on the gateway: the agent's resync puts it back, but without the
# session, which the shoot's kernel device still believes in. The sidecar restarts the session after
# two unanswered probes (remove and re-add the peer: the kernel sends a handshake at once), well before
# WireGuard's own rule re-keys after 15 s of unanswered data.
key="$(on shoot wg show ks0 public-key)"
gateway_has_peer() { on node wg show kl0 peers | grep -q "$key"; }
reaches_shoot() { on node ping -c 1 -W 1 "$addr" >/dev/null 2>&1; }
on node wg set kl0 peer "$key" remove || fail "wg set remove"
t0="$(cut -d. -f1 /proc/uptime)"
wait_until 5 gateway_has_peer || fail "the agent did not put the removed peer back:$(echo; cat /tmp/agent2.log)"
wait_until 30 reaches_shoot || fail "no traffic after the peer came back:$(echo; tail -n 20 /tmp/shoot.log)"
secs=$(($(cut -d. -f1 /proc/uptime) - t0))
grep -q 'restarting the session' /tmp/shoot.log || fail "the sidecar did not restart the session"
[ "$secs" -lt 13 ] || fail "traffic back only after ${secs}s: slower than WireGuard's own 15 s rule"
kill -TERM "$AGENT_PID"
log "peer removed by hand on the gateway: back, and traffic again after ${secs}s (the kernel shoot's session restarted)"
