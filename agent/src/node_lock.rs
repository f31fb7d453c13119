//! One agent per node: a name in the network namespace's abstract Unix socket space.
//!
//! Agents run with the host network, so an abstract socket name is per node (and per node namespace
//! in the test landscapes). The kernel frees the name when the holder exits, however it exits, so a
//! crashed agent never leaves a stale lock behind. A second agent that finds the name taken asks the
//! holder who it is and refuses to start, before it touches anything on the node.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The agent's name in the abstract socket namespace.
pub const AGENT_LOCK: &str = "kubelink/agent";

/// How long a second agent waits for the holder to say who it is.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another kubelink agent already runs on this node ({holder}); one agent per node: stop that one \
         first (it holds the abstract socket @{name} in this network namespace)"
    )]
    Held { name: String, holder: String },
    #[error("taking the node lock @{name}: {source}")]
    Io { name: String, source: std::io::Error },
}

/// Held while the agent runs; dropping it frees the name.
pub struct NodeLock {
    answer: tokio::task::JoinHandle<()>,
}

impl Drop for NodeLock {
    fn drop(&mut self) {
        self.answer.abort();
    }
}

/// Takes `name` for this process, or says who holds it. `identity` is what a later agent is told
/// (pid, pod, node: nothing secret).
pub async fn acquire(name: &str, identity: String) -> Result<NodeLock, LockError> {
    let io = |source| LockError::Io { name: name.into(), source };
    let addr = SocketAddr::from_abstract_name(name).map_err(io)?;
    match UnixListener::bind_addr(&addr) {
        Ok(listener) => {
            listener.set_nonblocking(true).map_err(io)?;
            let listener = tokio::net::UnixListener::from_std(listener).map_err(io)?;
            Ok(NodeLock { answer: tokio::spawn(answer(listener, identity)) })
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            Err(LockError::Held { name: name.into(), holder: ask(&addr).await })
        }
        Err(e) => Err(io(e)),
    }
}

/// Tells every caller who holds the lock.
async fn answer(listener: tokio::net::UnixListener, identity: String) {
    while let Ok((mut stream, _)) = listener.accept().await {
        let _ = stream.write_all(identity.as_bytes()).await;
    }
}

/// The holder's identity, or why it could not be read.
async fn ask(addr: &SocketAddr) -> String {
    let read = async {
        let stream = UnixStream::connect_addr(addr)?;
        stream.set_nonblocking(true)?;
        let mut stream = tokio::net::UnixStream::from_std(stream)?;
        let mut text = String::new();
        (&mut stream).take(512).read_to_string(&mut text).await?;
        Ok::<_, std::io::Error>(text)
    };
    match tokio::time::timeout(ASK_TIMEOUT, read).await {
        Ok(Ok(text)) if !text.trim().is_empty() => text.trim().to_string(),
        Ok(Ok(_)) => "the holder did not say who it is".into(),
        Ok(Err(e)) => format!("the holder did not answer: {e}"),
        Err(_) => format!("the holder did not answer within {ASK_TIMEOUT:?}"),
    }
}

/// What a second agent is told about this one.
pub fn identity(node: &str, pod: Option<&str>) -> String {
    let pod = pod.map(|p| format!(", pod {p}")).unwrap_or_default();
    format!("pid {}{pod}, node {node}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unique(test: &str) -> String {
        format!("kubelink-test/{}/{test}", std::process::id())
    }

    #[tokio::test]
    async fn a_second_holder_is_refused_and_told_who_holds_the_name() {
        let name = unique("second");
        let first = acquire(&name, identity("node-a", Some("kubelink-agent-x"))).await.unwrap();
        let err = acquire(&name, "someone else".into()).await.err().expect("the name is held");
        let text = err.to_string();
        assert!(matches!(err, LockError::Held { .. }), "{text}");
        assert!(text.contains(&format!("pid {}", std::process::id())), "{text}");
        assert!(text.contains("pod kubelink-agent-x") && text.contains("node node-a"), "{text}");
        assert!(text.contains("stop that one first"), "{text}");
        drop(first);
    }

    #[tokio::test]
    async fn the_name_is_free_again_once_the_holder_is_gone() {
        let name = unique("release");
        let first = acquire(&name, "first".into()).await.unwrap();
        drop(first);
        // The aborted task drops the listener on its next poll.
        let mut again = None;
        for _ in 0..50 {
            if let Ok(lock) = acquire(&name, "second".into()).await {
                again = Some(lock);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(again.is_some(), "the name stayed taken after its holder let go");
    }
}
