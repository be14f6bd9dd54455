//! The data plane's client side: HTTP/1.1 keep-alive connections to replicas, one
//! idle set per data-plane thread (`listener`), so a request never takes a lock or
//! wakes another thread to reach its replica. Built on hyper's connection-level
//! client (`hyper::client::conn::http1`), with the pooling a reverse proxy needs and
//! nothing else: no redirects, no added headers, no proxy or TLS settings.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{Either, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// What a replica is sent: a body read whole (translated, cached or empty), or the
/// client's own body streamed through under the size limit.
pub type UpstreamBody = Either<Full<Bytes>, Limited<Incoming>>;

/// Idle connections kept per replica and thread; more are closed when returned.
const IDLE_PER_REPLICA: usize = 256;

thread_local! {
    static IDLE: RefCell<HashMap<SocketAddr, Vec<SendRequest<UpstreamBody>>>> =
        RefCell::new(HashMap::new());
}

/// Why a request did not get an answer from its replica.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Http(#[from] hyper::Error),
}

/// One connection taken from the idle set (or new); `release` puts it back once the
/// answer has been read to its end, dropping it closes the connection.
pub struct Connection {
    addr: SocketAddr,
    sender: SendRequest<UpstreamBody>,
}

impl Connection {
    pub fn release(self) {
        if self.sender.is_closed() || !self.sender.is_ready() {
            return;
        }
        IDLE.with(|idle| {
            let mut idle = idle.borrow_mut();
            let set = idle.entry(self.addr).or_default();
            if set.len() < IDLE_PER_REPLICA {
                set.push(self.sender);
            }
        });
    }
}

fn take_idle(addr: SocketAddr) -> Option<SendRequest<UpstreamBody>> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let set = idle.get_mut(&addr)?;
        let found = loop {
            match set.pop() {
                // A replica that closed the connection while it sat idle: the
                // connection task has seen the FIN.
                Some(sender) if sender.is_closed() || !sender.is_ready() => continue,
                other => break other,
            }
        };
        if set.is_empty() {
            idle.remove(&addr);
        }
        found
    })
}

/// Drops this thread's idle connections that their replicas have closed (a replica
/// that exited leaves its whole set behind).
pub fn drop_closed() {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        idle.retain(|_, set| {
            set.retain(|sender| !sender.is_closed());
            !set.is_empty()
        });
    });
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<UpstreamBody>, UpstreamError> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| UpstreamError::Connect { addr, source })?;
    // Requests and answers are small and latency-bound: no Nagle delay.
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(%addr, error = %e, "replica connection ended");
        }
    });
    Ok(sender)
}

/// Sends `request` to the replica at `addr` on an idle connection when there is one.
/// A request that an idle connection could not take (the replica closed it just
/// then) is sent again on a new connection: it was never written.
pub async fn send(
    addr: SocketAddr,
    mut request: Request<UpstreamBody>,
) -> Result<(Response<Incoming>, Connection), UpstreamError> {
    while let Some(mut sender) = take_idle(addr) {
        match sender.try_send_request(request).await {
            Ok(response) => return Ok((response, Connection { addr, sender })),
            Err(mut e) => match e.take_message() {
                Some(unsent) => request = unsent,
                None => return Err(e.into_error().into()),
            },
        }
    }
    let mut sender = connect(addr).await?;
    let response = sender.send_request(request).await?;
    Ok((response, Connection { addr, sender }))
}
