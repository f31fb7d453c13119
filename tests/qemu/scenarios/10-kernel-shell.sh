# Kernel WireGuard with nothing but ip and wg: two namespaces, handshake, ping. Proves the module, the
# tools and the guest plumbing before any kubelink scenario runs.
. /lib/kubelink-qemu/guest-lib.sh

two_namespaces a b
wg_keypair a
wg_keypair b

for side in a:b:10.99.0.1:10.99.0.2:10.0.0.2 b:a:10.99.0.2:10.99.0.1:10.0.0.1; do
  IFS=: read -r me peer my_ip peer_ip peer_underlay <<END
$side
END
  ip -n "$me" link add wg0 type wireguard || fail "ip link add type wireguard in $me"
  on "$me" wg set wg0 private-key "/tmp/$me.key" listen-port 51820 \
    peer "$(cat "/tmp/$peer.pub")" endpoint "$peer_underlay:51820" allowed-ips "$peer_ip/32" ||
    fail "wg set in $me"
  ip -n "$me" addr add "$my_ip/24" dev wg0
  ip -n "$me" link set wg0 up
done

on a ping -c 3 -W 5 10.99.0.2 || fail "no ping across kernel WireGuard"
handshake_done a wg0 || fail "no handshake recorded in a"
handshake_done b wg0 || fail "no handshake recorded in b"
[ "$(on a wg show wg0 public-key)" = "$(cat /tmp/a.pub)" ] || fail "public key read back differs"
log "kernel handshake and ping ok"
