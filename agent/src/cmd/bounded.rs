//! Bounded answers for the operator commands that read a few answers and exit (`seed-status`,
//! `kubelink ipam list`): what they read from a server is capped, and what reaches stderr of it is
//! short. A server answering 30 MB once made `seed-status` write all of it to stderr.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Bytes;
use hyper::{Request, Response};
use kubelink_contract::shorten;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The most the operator commands read of one Kubernetes API answer. The largest they ask for is
/// the list of agent Pods (about 10 KB a Pod, so some 1,600 nodes) or of ShootPeers (under 1 KB a
/// shoot).
pub const MAX_API_ANSWER: usize = 16 << 20;

/// How long an error message of an operator command may get on stderr (it can quote an answer).
pub const MAX_ERROR_CHARS: usize = 1000;

/// `n` bytes as the limits are written: in MiB when whole, else in bytes.
pub fn size_text(n: usize) -> String {
    if n.is_multiple_of(1 << 20) { format!("{} MiB", n >> 20) } else { format!("{n} bytes") }
}

/// The error of an answer cut off at `limit` bytes.
#[derive(Debug, thiserror::Error)]
#[error("the answer of {url} is larger than {}, the most kubelink reads of it", size_text(*limit))]
pub struct TooLarge {
    pub url: String,
    pub limit: usize,
}

/// `body`, failing with [`TooLarge`] once more than `limit` bytes have come.
pub fn limited<B>(body: B, url: String, limit: usize) -> UnsyncBoxBody<Bytes, BoxError>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    http_body_util::Limited::new(body, limit)
        .map_err(move |e| -> BoxError {
            if e.is::<http_body_util::LengthLimitError>() { Box::new(TooLarge { url: url.clone(), limit }) } else { e }
        })
        .boxed_unsync()
}

/// A kube client whose every answer is read at most [`MAX_API_ANSWER`] bytes far.
pub fn query_client(config: kube::Config) -> anyhow::Result<kube::Client> {
    let builder = kube::client::ClientBuilder::try_from(config)?;
    Ok(builder.with_layer(&tower::layer::layer_fn(|inner| Bounded { inner, limit: MAX_API_ANSWER })).build())
}

/// The layer of [`query_client`].
#[derive(Clone)]
pub struct Bounded<S> {
    inner: S,
    limit: usize,
}

impl<S, B> tower::Service<Request<kube::client::Body>> for Bounded<S>
where
    S: tower::Service<Request<kube::client::Body>, Response = Response<B>>,
    S::Future: Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<UnsyncBoxBody<Bytes, BoxError>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<kube::client::Body>) -> Self::Future {
        let url = format!("{} {}", request.method(), request.uri());
        let limit = self.limit;
        let answer = self.inner.call(request);
        Box::pin(async move { Ok(answer.await?.map(|body| limited(body, url, limit))) })
    }
}

/// An operator command's error as stderr gets it: the whole chain, at most [`MAX_ERROR_CHARS`]
/// characters (beginning and end kept). Quoting an answer is the server's words, not ours to print whole.
pub fn error_text(error: &anyhow::Error) -> String {
    shorten(&format!("{error:#}"), MAX_ERROR_CHARS)
}

#[cfg(test)]
pub mod test_server {
    //! A local HTTP server that gives every request the same answer (status and body), for the tests
    //! of what the commands make of a huge or bad answer.

    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves `status` with `body` (as `application/json`) to every connection until the test ends.
    pub async fn answering(status: &'static str, body: Vec<u8>) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let body = std::sync::Arc::new(body);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let body = body.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let header = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    // The client hangs up at its limit: a write error then is expected.
                    if stream.write_all(header.as_bytes()).await.is_ok() {
                        let _ = stream.write_all(&body).await;
                    }
                });
            }
        });
        addr
    }

    /// 30 MiB of `x`, the answer that once reached stderr whole; `quoted` makes it a JSON string.
    pub fn thirty_mib(quoted: bool) -> Vec<u8> {
        let mut body = vec![b'x'; 30 << 20];
        if quoted {
            body[0] = b'"';
            *body.last_mut().unwrap() = b'"';
        }
        body
    }
}
