//! The data plane's server side: `workers` threads, each a single-threaded tokio
//! runtime accepting from the one bound socket and serving HTTP/1.1 with hyper.
//! A connection is served start to end on one thread, with that thread's replica
//! connections (`upstream`), so nothing on the hot path crosses threads. The thread
//! that accepts a connection hands it to the thread with the fewest open connections
//! when that is another one: a client opening many connections at once would
//! otherwise have them all on whichever thread woke first. (The actix server this
//! replaced ran its workers on `LocalSet`s, whose wake-ups from the I/O driver cost an
//! eventfd write per request, and its client and server layers roughly doubled the
//! proxy's CPU per request against nginx.)

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{mpsc, watch};

use super::dataplane::{self, DataPlane};
use super::upstream;

/// Slow clients get this long to send a request's headers (actix-web's default, which
/// the data plane had before).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Shorter than every per-request timer (see `serve`).
const HOUSEKEEPING_TICK: Duration = Duration::from_secs(1);

/// A connection accepted by one thread for another to serve.
type Handoff = (std::net::TcpStream, SocketAddr);

/// What the threads know of each other: how many connections each serves, and the
/// way to hand one a connection. A client that opens many connections at once (wrk,
/// a load balancer's pool) would otherwise land them all on whichever thread woke
/// first, since that thread accepts until the backlog is empty.
struct Threads {
    open: Vec<AtomicUsize>,
    handoff: Vec<mpsc::UnboundedSender<Handoff>>,
}

impl Threads {
    /// The thread with the fewest connections, when it has fewer than `index`.
    fn less_loaded_than(&self, index: usize) -> Option<usize> {
        let mine = self.open[index].load(Ordering::Relaxed);
        let (least, count) = self
            .open
            .iter()
            .enumerate()
            .map(|(i, n)| (i, n.load(Ordering::Relaxed)))
            .min_by_key(|(_, n)| *n)?;
        (count < mine).then_some(least)
    }
}

/// Counts a connection as its thread's while it lives.
struct Open(Arc<Threads>, usize);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open[self.1].fetch_sub(1, Ordering::Relaxed);
    }
}

/// The running data-plane server.
pub struct DataPlaneServer {
    stop: watch::Sender<bool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl DataPlaneServer {
    /// Serves `listener` on `workers` threads (at least one).
    ///
    /// Errors: the listener cannot be cloned or made non-blocking, or a thread or its
    /// runtime cannot be made (start-up: the daemon refuses to start).
    pub fn start(
        listener: std::net::TcpListener,
        plane: Arc<DataPlane>,
        workers: usize,
        max_body: usize,
        grace: Duration,
    ) -> std::io::Result<DataPlaneServer> {
        listener.set_nonblocking(true)?;
        let (stop, _) = watch::channel(false);
        let workers = workers.max(1);
        let (senders, mut receivers): (Vec<_>, Vec<_>) =
            (0..workers).map(|_| mpsc::unbounded_channel()).unzip();
        let shared = Arc::new(Threads {
            open: (0..workers).map(|_| AtomicUsize::new(0)).collect(),
            handoff: senders,
        });
        let mut threads = Vec::new();
        for index in (0..workers).rev() {
            let handed = receivers
                .pop()
                .ok_or_else(|| std::io::Error::other("no hand-off channel"))?;
            let shared = Arc::clone(&shared);
            let listener = listener.try_clone()?;
            let plane = Arc::clone(&plane);
            let stopped = stop.subscribe();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            threads.push(
                std::thread::Builder::new()
                    .name("hearth-serving".into())
                    .spawn(move || {
                        let thread = Thread {
                            index,
                            shared,
                            plane,
                            max_body,
                        };
                        runtime.block_on(serve(listener, thread, handed, grace, stopped));
                    })?,
            );
        }
        Ok(DataPlaneServer { stop, threads })
    }

    /// Stops accepting, lets requests in progress finish (up to the grace period given
    /// at start), and returns when every thread has ended.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

/// One data-plane thread's part.
struct Thread {
    index: usize,
    shared: Arc<Threads>,
    plane: Arc<DataPlane>,
    max_body: usize,
}

async fn serve(
    listener: std::net::TcpListener,
    thread: Thread,
    mut handed: mpsc::UnboundedReceiver<Handoff>,
    grace: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "data plane: cannot register the listener");
            return;
        }
    };
    // Every request arms timers (the header read timeout, the replica's timeout), and
    // tokio wakes its driver through an eventfd write for a timer due before the
    // driver's next planned wake-up: a tick due sooner than any of them keeps that
    // from happening on every request (one write a second instead of one a request).
    // The tick also drops idle replica connections that their replica has closed.
    let housekeeping = tokio::spawn(async {
        let mut tick = tokio::time::interval(HOUSEKEEPING_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            upstream::drop_closed();
        }
    });
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    loop {
        // (stream, peer, whether it was handed over: counted already, never handed on)
        let (stream, peer, handed_over) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => (stream, peer, false),
                Err(e) => {
                    // Out of descriptors or the like: the next accept may succeed.
                    tracing::warn!(error = %e, "data plane: accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            Some((stream, peer)) = handed.recv() => match tokio::net::TcpStream::from_std(stream) {
                Ok(stream) => (stream, peer, true),
                Err(e) => {
                    thread.shared.open[thread.index].fetch_sub(1, Ordering::Relaxed);
                    tracing::warn!(%peer, error = %e, "data plane: cannot register a handed-over connection");
                    continue;
                }
            },
            _ = stopped.wait_for(|s| *s) => break,
        };
        if !handed_over {
            match thread.shared.less_loaded_than(thread.index) {
                // Served start to end by the thread it is handed to, which then owns
                // the connections to replicas its requests use: no request crosses
                // threads. Counted there at once, so that the next accept sees it.
                Some(other) => {
                    match stream.into_std() {
                        Ok(stream) => {
                            thread.shared.open[other].fetch_add(1, Ordering::Relaxed);
                            if thread.shared.handoff[other].send((stream, peer)).is_err() {
                                thread.shared.open[other].fetch_sub(1, Ordering::Relaxed);
                            }
                        }
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "data plane: connection lost while handed over")
                        }
                    }
                    continue;
                }
                None => {
                    thread.shared.open[thread.index].fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let _ = stream.set_nodelay(true);
        let open = Open(Arc::clone(&thread.shared), thread.index);
        let plane = Arc::clone(&thread.plane);
        let max_body = thread.max_body;
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let plane = Arc::clone(&plane);
            async move { Ok::<_, Infallible>(dataplane::handle(&plane, request, peer, max_body).await) }
        });
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _open = open;
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "data plane connection ended");
            }
        });
    }
    drop(listener);
    housekeeping.abort();
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(
            ?grace,
            "data plane: requests still running at the end of the grace period"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn threads(open: &[usize]) -> Threads {
        Threads {
            open: open.iter().map(|n| AtomicUsize::new(*n)).collect(),
            handoff: open.iter().map(|_| mpsc::unbounded_channel().0).collect(),
        }
    }

    #[test]
    fn a_connection_goes_to_the_thread_with_the_fewest_when_it_is_another() {
        assert_eq!(threads(&[3, 1, 2]).less_loaded_than(0), Some(1));
        assert_eq!(threads(&[3, 1, 2]).less_loaded_than(2), Some(1));
        // Ties stay where they were accepted: no hand-off for nothing.
        assert_eq!(threads(&[1, 1]).less_loaded_than(0), None);
        assert_eq!(threads(&[0, 2, 0]).less_loaded_than(2), None);
        assert_eq!(threads(&[5]).less_loaded_than(0), None);
    }
}
