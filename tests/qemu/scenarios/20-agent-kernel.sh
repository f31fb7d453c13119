# `kubelink run --wg-backend auto` in a kernel that has WireGuard: it picks the kernel, creates the
# device, sets key, port and peers, and `wg show` agrees with `kubelink status` and with the config.
. /lib/kubelink-qemu/guest-lib.sh

two_namespaces a b
for k in a b c d; do wg_keypair "$k"; done
plain_wg b wg0 b 10.99.0.2/24 a 10.0.0.1:51820 10.99.0.1/32

{
  device_yaml kl0 a 51820 10.99.0.1/24
  peer_yaml b 10.0.0.2:51820 10.99.0.2/32 25
  peer_yaml c - 10.99.1.0/24,10.99.2.0/24
  peer_yaml d 10.0.0.9:51999 10.99.3.4/32,fd00:99::4/128
} >/tmp/a.yaml
kl_start a /tmp/a.yaml /tmp/a.log --wg-backend auto
wait_peers a kl0 3 /tmp/a.log

grep -q 'kernel WireGuard is available' /tmp/a.log || fail "auto did not pick kernel:$(echo; cat /tmp/a.log)"
ip -n a -d link show kl0 | grep -q wireguard || fail "kl0 is not a kernel wireguard link"
[ "$(kl_field a kl0 .backend)" = kernel ] || fail "status backend is $(kl_field a kl0 .backend)"

# Device fields: config, kernel (wg) and kubelink's read-back agree.
[ "$(on a wg show kl0 private-key)" = "$(cat /tmp/a.key)" ] || fail "private key not the configured one"
[ "$(on a wg show kl0 public-key)" = "$(cat /tmp/a.pub)" ] || fail "wg public key differs"
[ "$(kl_field a kl0 .publicKey)" = "$(cat /tmp/a.pub)" ] || fail "kubelink public key differs"
[ "$(on a wg show kl0 listen-port)" = 51820 ] || fail "wg listen port $(on a wg show kl0 listen-port)"
[ "$(kl_field a kl0 .listenPort)" = 51820 ] || fail "kubelink listen port differs"
[ "$(kl_field a kl0 .ifindex)" = "$(on a cat /sys/class/net/kl0/ifindex)" ] || fail "ifindex differs"
[ "$(on a wg show kl0 fwmark)" = off ] && [ "$(kl_field a kl0 .fwmark)" = null ] || fail "fwmark differs"

tab="$(printf '\t')"
{
  echo "$(cat /tmp/b.pub)${tab}10.0.0.2:51820${tab}10.99.0.2/32${tab}25"
  echo "$(cat /tmp/c.pub)${tab}(none)${tab}10.99.1.0/24,10.99.2.0/24${tab}off"
  echo "$(cat /tmp/d.pub)${tab}10.0.0.9:51999${tab}10.99.3.4/32,fd00:99::4/128${tab}off"
} | sort >/tmp/expected
wg_peers a kl0 >/tmp/wg
kl_peers a kl0 >/tmp/kl
same_text "wg show peers vs config" /tmp/expected /tmp/wg
same_text "kubelink status peers vs wg show" /tmp/wg /tmp/kl

on a ping -c 3 -W 5 10.99.0.2 || fail "no ping from kubelink's kernel device to the wg-configured one"
[ "$(kl_field a kl0 '.peers[] | select(.endpoint == "10.0.0.2:51820") | .lastHandshakeSecs')" != null ] ||
  fail "kubelink status shows no handshake with b"
kl_stop "$KL_PID" /tmp/a.log
log "agent picked kernel; wg show and kubelink status agree on 3 peers; ping ok"
