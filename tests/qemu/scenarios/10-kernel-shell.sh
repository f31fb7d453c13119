# Kernel WireGuard with nothing but ip and wg: two namespaces, handshake, ping. Proves the module, the
# tools and the guest plumbing before any kubelink scenario runs.
. /lib/kubelink-qemu/guest-lib.sh

two_namespaces a b
wg_keypair a
wg_keypair b
plain_wg a wg0 a 10.99.0.1/24 b 10.0.0.2:51820 10.99.0.2/32
plain_wg b wg0 b 10.99.0.2/24 a 10.0.0.1:51820 10.99.0.1/32

on a ping -c 3 -W 5 10.99.0.2 || fail "no ping across kernel WireGuard"
handshake_done a wg0 || fail "no handshake recorded in a"
handshake_done b wg0 || fail "no handshake recorded in b"
[ "$(on a wg show wg0 public-key)" = "$(cat /tmp/a.pub)" ] || fail "public key read back differs"
log "kernel handshake and ping ok"
