//! Every user-facing text of the relay's edge, in one place: configuration
//! and start-up errors for the operator, HTTP refusals for clients. (The
//! protocol's own refusals live in `retalk_proto::relay::RelayError`.)
//!
//! The HTTP texts that the Python 0.3.0 relay also sends are kept word for
//! word: Python clients show them and tooling matches substrings of them.

use axum::http::StatusCode;

/// A bad setting, from a flag or an environment variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Usage errors and `--help`/`--version` (clap prints and exits).
    #[error(transparent)]
    Cli(#[from] clap::Error),
    #[error("{name}: {value:?} is not a valid {what}")]
    BadEnv {
        name: String,
        value: String,
        what: &'static str,
    },
    #[error("{setting} must be {rule} (got {value})")]
    OutOfRange {
        setting: &'static str,
        rule: &'static str,
        value: String,
    },
    #[error("no audience given: --audience needs at least one URL")]
    NoAudience,
    #[error(
        "--backend postgres needs --database-url (or RETALK_SERVER_DATABASE_URL), \
         e.g. postgres://USER:PASSWORD@HOST/DBNAME"
    )]
    NoDatabaseUrl,
    /// A URL with another backend: the operator meant PostgreSQL, and N
    /// nodes on N separate files would each work alone, silently.
    #[error("--database-url (or RETALK_SERVER_DATABASE_URL) is for --backend postgres, not --backend {0}")]
    DatabaseUrlWithoutPostgres(&'static str),
    #[error("RETALK_SERVER_BACKEND: {0:?} is not a backend (sqlite, sled, memory, postgres)")]
    BadBackend(String),
}

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("could not open the {backend} store at {path}: {detail}")]
    Store {
        backend: &'static str,
        path: String,
        detail: String,
    },
    #[error("could not open the postgres store at {url}: {source}")]
    Postgres {
        /// The URL without its password.
        url: String,
        #[source]
        source: retalk_store_postgres::PgError,
    },
    #[error("not a trusted proxy address or range: {0}")]
    BadTrustedProxy(String),
    #[error("could not set up metrics: {0}")]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error("could not listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("could not start the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// A refusal at the HTTP edge, before or around the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A declared length over the cap (the Python relay's text).
    #[error("request body too large: {len} bytes (max {max})")]
    TooLarge { len: u64, max: usize },
    /// A body that grew over the cap while being read (chunked, or lying).
    #[error("request body too large: more than {max} bytes (max {max})")]
    TooLargeStreamed { max: usize },
    #[error("timed out reading the request body")]
    BodyTimeout,
    #[error("could not read the request body")]
    BodyRead,
    #[error("valid API key required to use this relay")]
    ApiKeyRequired,
    #[error("rate limit exceeded; slow down and retry")]
    RateLimited,
    #[error("admin auth required")]
    AdminAuthRequired,
    #[error("bad request: body is not JSON ({0})")]
    NotJson(String),
    #[error("bad request: body must be a JSON object")]
    NotAnObject,
    #[error("unknown admin action: {0} (create|list|disable|enable|delete)")]
    UnknownAdminAction(String),
    /// A missing field, as Python's `KeyError` prints it.
    #[error("'{0}'")]
    MissingField(&'static str),
    #[error("'{0}' must be a string")]
    NotAString(&'static str),
    /// A request the HTTP parser refused before any handler ran (a garbage,
    /// negative or conflicting Content-Length, a bad request line).
    #[error("bad request: malformed HTTP request")]
    MalformedRequest,
    #[error("request URI too long")]
    UriTooLong,
    #[error("request headers too large")]
    HeadersTooLarge,
    #[error("relay storage unavailable; retry later")]
    Storage,
    /// Past a cap on reads held open (`wait`).
    #[error("{0}")]
    TooManyWaiting(#[from] crate::waiters::ParkError),
    #[error("internal error")]
    Internal,
}

impl HttpError {
    pub fn status(&self) -> StatusCode {
        match self {
            HttpError::NotFound => StatusCode::NOT_FOUND,
            HttpError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            HttpError::TooLarge { .. } | HttpError::TooLargeStreamed { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            HttpError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            HttpError::ApiKeyRequired | HttpError::AdminAuthRequired => StatusCode::UNAUTHORIZED,
            HttpError::RateLimited | HttpError::TooManyWaiting(_) => StatusCode::TOO_MANY_REQUESTS,
            HttpError::Storage => StatusCode::SERVICE_UNAVAILABLE,
            HttpError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            HttpError::UriTooLong => StatusCode::URI_TOO_LONG,
            HttpError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            HttpError::BodyRead
            | HttpError::MalformedRequest
            | HttpError::NotJson(_)
            | HttpError::NotAnObject
            | HttpError::UnknownAdminAction(_)
            | HttpError::MissingField(_)
            | HttpError::NotAString(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// Whether the connection should not be reused after this answer (its
    /// request body may be left unread on the wire).
    pub fn closes(&self) -> bool {
        matches!(
            self,
            HttpError::TooLarge { .. }
                | HttpError::TooLargeStreamed { .. }
                | HttpError::BodyTimeout
                | HttpError::BodyRead
                | HttpError::MalformedRequest
                | HttpError::UriTooLong
                | HttpError::HeadersTooLarge
        )
    }
}

/// The operator's start-up lines (stdout).
pub fn listening_line(addr: &std::net::SocketAddr) -> String {
    format!("retalk-relay listening on http://{addr}")
}

pub fn audiences_line(audiences: &[String]) -> String {
    format!("retalk-relay audiences: {}", audiences.join(", "))
}

pub fn backend_line(backend: &str, db: &std::path::Path, persistent: bool) -> String {
    if persistent {
        format!("retalk-relay backend: {backend} ({})", db.display())
    } else {
        format!("retalk-relay backend: {backend} (nothing is kept after exit)")
    }
}

pub const SHUTTING_DOWN: &str = "retalk-relay: shutting down (finishing requests in flight)";
pub const STOPPED: &str = "retalk-relay: stopped";
