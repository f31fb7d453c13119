//! The programs the `kubelink` binary starts at run time. The container image must carry exactly
//! these (the Dockerfile's runtime stage is checked against this list by a test).

/// nftables: the gateway's `inet kubelink` table (the tunnel filter, SNAT into the tunnel, MSS clamping).
pub const NFT: &str = "nft";
/// conntrack-tools: flows towards the tunnel CIDR are forgotten when the node's forwarding changes.
pub const CONNTRACK: &str = "conntrack";

/// Every program above.
pub const RUNTIME_TOOLS: &[&str] = &[NFT, CONNTRACK];
