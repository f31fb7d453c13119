//! Wakes the reconcile loop when links, addresses or routes change, so drift is repaired at once;
//! the periodic resync covers what netlink does not announce (WireGuard peers).

use std::sync::Arc;

use futures::StreamExt;
use rtnetlink::MulticastGroup;
use tokio::sync::Notify;

/// Starts a netlink listener that notifies `wake` on every link, address or route event.
pub fn spawn(wake: Arc<Notify>) -> std::io::Result<()> {
    let groups = [
        MulticastGroup::Link,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
        MulticastGroup::Ipv4Route,
        MulticastGroup::Ipv6Route,
    ];
    let (conn, _handle, mut messages) = rtnetlink::new_multicast_connection(&groups)?;
    tokio::spawn(conn);
    tokio::spawn(async move {
        while messages.next().await.is_some() {
            wake.notify_one();
        }
        tracing::warn!("netlink monitor stopped; drift is repaired by the periodic resync only");
    });
    Ok(())
}
