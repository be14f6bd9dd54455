//! The data plane's server side: `workers` threads, each a single-threaded tokio
//! runtime accepting from the one bound socket and serving HTTP/1.1 with hyper.
//! A request is handled start to end on the thread that accepted its connection,
//! with that thread's replica connections (`upstream`), so nothing on the hot path
//! crosses threads. (The actix server it replaced ran its workers on `LocalSet`s, whose
//! wake-ups from the I/O driver cost an eventfd write per request, and its client and
//! server layers roughly doubled the proxy's CPU per request against nginx.)

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::watch;

use super::dataplane::{self, DataPlane};
use super::upstream;

/// Slow clients get this long to send a request's headers (actix-web's default, which
/// the data plane had before).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Shorter than every per-request timer (see `serve`).
const HOUSEKEEPING_TICK: Duration = Duration::from_secs(1);

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
        let mut threads = Vec::new();
        for _ in 0..workers.max(1) {
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
                        runtime.block_on(serve(listener, plane, max_body, grace, stopped));
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

async fn serve(
    listener: std::net::TcpListener,
    plane: Arc<DataPlane>,
    max_body: usize,
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
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors or the like: the next accept may succeed.
                    tracing::warn!(error = %e, "data plane: accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = stopped.wait_for(|s| *s) => break,
        };
        let _ = stream.set_nodelay(true);
        let plane = Arc::clone(&plane);
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let plane = Arc::clone(&plane);
            async move { Ok::<_, Infallible>(dataplane::handle(&plane, request, peer, max_body).await) }
        });
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
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
