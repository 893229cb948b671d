//! The listener: accepts connections within the caps, serves HTTP/1.1
//! keep-alive on each with deadlines, and shuts down gracefully.
//!
//! Deadlines (all the configured `timeout`): a request's headers must
//! arrive within it, and so must the wait for the next request on an idle
//! keep-alive connection (hyper's header-read timer runs in both cases); a
//! request body must arrive within it (see `http::read_body`); a write
//! stalled by a client that does not read must move within it. A slowloris
//! client therefore holds a connection for at most about one timeout, and
//! the connection caps bound how many it can hold.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use retalk_proto::relay::{Relay, RelayConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Sleep;

use crate::config::Config;
use crate::errors::StartError;
use crate::http::{handle, App, JsonParseErrors};
use crate::limit::{ConnectionCounter, FailureLimiter, IpRateLimiter};
use crate::metrics::Metrics;
use crate::proxy::TrustedProxies;
use crate::store::{SharedStore, Storage};
use crate::waiters::{WaitCaps, Waiters};
use crate::watched::Watched;

/// Longest a shutdown waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Largest request head (request line and headers) accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// A running relay. Dropping it without [`shutdown`](Self::shutdown) stops
/// it too (abruptly for requests in flight).
pub struct RelayServer {
    local_addr: SocketAddr,
    audiences: Vec<String>,
    app: Arc<App>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    /// Wake-ups from other processes on the same storage, if it has any.
    wakeups: Option<JoinHandle<()>>,
}

impl RelayServer {
    /// Binds the configured address and starts serving `storage` (a
    /// [`SharedStore`], or a [`Storage`] with wake-ups from other
    /// processes, as [`open_storage`](crate::store::open_storage) gives).
    pub async fn start(
        config: &Config,
        storage: impl Into<Storage>,
    ) -> Result<RelayServer, StartError> {
        let Storage { store, wakeups } = storage.into();
        let metrics = Metrics::new()?;
        // Checked when the config was parsed; a Config built in code gets
        // the same check here.
        let proxies =
            TrustedProxies::parse(&config.trusted_proxies).map_err(StartError::BadTrustedProxy)?;
        let host = config.host.trim_start_matches('[').trim_end_matches(']');
        let bind_text = format!("{}:{}", config.host, config.port);
        let listener = TcpListener::bind((host, config.port))
            .await
            .map_err(|source| StartError::Bind {
                addr: bind_text.clone(),
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: bind_text,
            source,
        })?;
        let audiences = config.audiences_for(local_addr);
        // Every store call, from tools, the admin page and the health probe,
        // is watched, so the operator sees storage failures in the log.
        let store: SharedStore = Arc::new(Watched::new(store, metrics.clone()));
        let relay = Relay::new(
            store,
            RelayConfig {
                audiences: audiences.clone(),
                max_mailbox: config.max_mailbox,
                max_mailbox_per_sender: config.max_mailbox_per_sender,
                max_refused: config.max_refused,
                refused_ttl: config.refused_ttl,
                rate_limit: config.rate_limit,
                max_wait: config.max_wait,
                ..RelayConfig::default()
            },
        );
        let (stop, stopped) = watch::channel(false);
        let app = Arc::new(App {
            relay,
            max_body: config.max_body,
            body_timeout: config.timeout,
            require_api_key: config.require_api_key,
            admin_password: config.admin_password.clone(),
            max_group_size: config.max_group_size,
            ip_limiter: IpRateLimiter::new(config.ip_rate_limit, config.limit_loopback),
            waiters: Waiters::new(WaitCaps {
                total: config.max_connections / 2,
                per_user: config.max_waiting_per_user,
                per_address: config.max_waiting_per_ip,
                limit_loopback: config.limit_loopback,
            }),
            stopping: stopped.clone(),
            metrics,
            proxies: proxies.clone(),
            admin_failures: FailureLimiter::new(config.admin_login_limit),
        });
        let limits = Limits {
            timeout: config.timeout,
            max_connections: config.max_connections,
            per_ip: ConnectionCounter::new(config.max_connections_per_ip, config.limit_loopback),
            proxies,
        };
        // The wake-up feed ends with the server (its stop signal, or the
        // server dropped).
        let wakeups = wakeups.map(|source| {
            let feed = source.feed(app.waiters.clone());
            let mut stop = stopped.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = feed => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
            })
        });
        let task = tokio::spawn(serve(listener, app.clone(), limits, stopped));
        Ok(RelayServer {
            local_addr,
            audiences,
            app,
            stop,
            task,
            wakeups,
        })
    }

    /// The bound address (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The URLs requests may be signed for; the first is the one to give
    /// clients.
    pub fn audiences(&self) -> &[String] {
        &self.audiences
    }

    /// The URL clients should use: the first audience.
    pub fn url(&self) -> &str {
        self.audiences.first().map_or("", String::as_str)
    }

    /// The relay behind the server (its store and config).
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Stops accepting, lets requests in flight finish (for up to one
    /// timeout), closes idle connections, and returns when all are done.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        if let Some(feed) = self.wakeups {
            let _ = feed.await;
        }
    }
}

struct Limits {
    timeout: Duration,
    max_connections: usize,
    per_ip: ConnectionCounter,
    /// Connections from a trusted proxy carry many clients: not counted
    /// per address (their requests are, by the client they name).
    proxies: TrustedProxies,
}

async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    limits: Limits,
    mut stopped: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.timeout)
        .keep_alive(true)
        .max_buf_size(MAX_HEAD_BYTES);
    loop {
        while connections.try_join_next().is_some() {}
        // Wait for room before accepting: past the cap, new connections
        // queue in the kernel's backlog.
        let permit = tokio::select! {
            biased;
            _ = stopped.changed() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            _ = stopped.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly
                    // rather than spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let slot = if limits.proxies.trusts(peer.ip()) {
            None
        } else {
            match limits.per_ip.admit(peer.ip()) {
                Some(slot) => Some(slot),
                None => {
                    drop(stream);
                    continue;
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(JsonParseErrors::new(StallTimeout::new(
            stream,
            limits.timeout,
        )));
        let app = app.clone();
        let service = service_fn(move |req: hyper::Request<Incoming>| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(handle(app, Some(peer), req.map(Body::new)).await) }
        });
        let connection = graceful.watch(http.serve_connection(io, service));
        connections.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("connection ended: {e}");
            }
            drop(slot);
            drop(permit);
        });
    }
    drop(listener);
    // Idle connections close now, held reads answer `[]`, busy ones close
    // after their current answer; a request still arriving (a slow or
    // hostile client) does not hold the shutdown past the grace.
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(limits.timeout.min(SHUTDOWN_GRACE)) => {
            tracing::warn!("connections still open after the grace period; closing them");
        }
    }
    connections.shutdown().await;
}

/// A TCP stream whose writes fail once they have been stalled (the client
/// not reading) for longer than the timeout.
struct StallTimeout {
    inner: TcpStream,
    timeout: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl StallTimeout {
    fn new(inner: TcpStream, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// After a write returned `Pending`: keep waiting, or give up.
    fn pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let timeout = self.timeout;
        let deadline = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client stopped reading",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for StallTimeout {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for StallTimeout {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => self.pending(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.pending(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.pending(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
