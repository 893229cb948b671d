//! The relay's settings: flags over environment variables over defaults.
//!
//! Both generations of the Python relay's variables are honoured
//! (`SERVER_*` from 0.0.1, `RETALK_SERVER_*` from 0.3.0; the 0.3.0 name wins
//! when both are set), and every flag overrides both. Parsing is a pure
//! function of the arguments and an environment map.

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::errors::ConfigError;

/// Where the relay keeps its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// SQLite (the default): drop-in with the Python relay's database file.
    Sqlite,
    /// sled, an embedded Rust key-value store.
    Sled,
    /// In memory: nothing is kept after exit (tests and demos).
    Memory,
    /// PostgreSQL at --database-url: several relay processes may share it.
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Sled => "sled",
            Backend::Memory => "memory",
            Backend::Postgres => "postgres",
        }
    }
}

/// Everything the relay needs to run.
#[derive(Clone, PartialEq)]
pub struct Config {
    pub backend: Backend,
    pub db: PathBuf,
    /// The PostgreSQL URL (`--backend postgres` only; may hold a password,
    /// so `Debug` hides it).
    pub database_url: Option<String>,
    /// Addresses (or CIDR ranges) of proxies whose `X-Forwarded-For` /
    /// `Forwarded` header names the real client; empty: nobody's.
    pub trusted_proxies: Vec<String>,
    /// Failed `/admin` logins per client address per minute, then 429
    /// until the minute is over (loopback included); 0 = off.
    pub admin_login_limit: usize,
    pub host: String,
    /// 0 picks a free port.
    pub port: u16,
    /// Audiences requests may be signed for; `None` derives
    /// `http://HOST:PORT` from the bound address.
    pub audiences: Option<Vec<String>>,
    /// Largest request body, in bytes.
    pub max_body: usize,
    /// Verified requests per user id per minute; 0 = off.
    pub rate_limit: usize,
    /// Slow or idle clients are dropped after this (headers, body, idle
    /// keep-alive, stalled writes).
    pub timeout: Duration,
    pub max_mailbox: u64,
    pub max_mailbox_per_sender: u64,
    /// `None` disables `/admin`.
    pub admin_password: Option<String>,
    pub require_api_key: bool,
    pub max_refused: u64,
    /// Seconds; 0 = refusals never expire.
    pub refused_ttl: f64,
    pub max_group_size: u64,
    /// Requests per source address per minute, before any verification;
    /// 0 = off.
    pub ip_rate_limit: usize,
    /// Apply the per-address limits to loopback peers too (off by default:
    /// behind a local TLS proxy every client comes from loopback).
    pub limit_loopback: bool,
    /// Open connections at once.
    pub max_connections: usize,
    /// Open connections at once from one source address.
    pub max_connections_per_ip: usize,
    /// Longest a `read_messages` with `wait` is held, in seconds (longer
    /// waits are shortened to it); 0 answers every read at once.
    pub max_wait: f64,
    /// Reads parked at once per user id, else HTTP 429.
    pub max_waiting_per_user: usize,
    /// Reads parked at once per source address (loopback exempt unless
    /// `limit_loopback`), else HTTP 429.
    pub max_waiting_per_ip: usize,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("backend", &self.backend)
            .field("db", &self.db)
            .field(
                "database_url",
                &self.database_url.as_ref().map(|_| "<redacted>"),
            )
            .field("trusted_proxies", &self.trusted_proxies)
            .field("admin_login_limit", &self.admin_login_limit)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("audiences", &self.audiences)
            .field("max_body", &self.max_body)
            .field("rate_limit", &self.rate_limit)
            .field("timeout", &self.timeout)
            .field("max_mailbox", &self.max_mailbox)
            .field("max_mailbox_per_sender", &self.max_mailbox_per_sender)
            .field(
                "admin_password",
                &self.admin_password.as_ref().map(|_| "<redacted>"),
            )
            .field("require_api_key", &self.require_api_key)
            .field("max_refused", &self.max_refused)
            .field("refused_ttl", &self.refused_ttl)
            .field("max_group_size", &self.max_group_size)
            .field("ip_rate_limit", &self.ip_rate_limit)
            .field("limit_loopback", &self.limit_loopback)
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("max_wait", &self.max_wait)
            .field("max_waiting_per_user", &self.max_waiting_per_user)
            .field("max_waiting_per_ip", &self.max_waiting_per_ip)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            backend: Backend::Sqlite,
            db: PathBuf::from("server.db"),
            database_url: None,
            trusted_proxies: Vec::new(),
            admin_login_limit: 10,
            host: "0.0.0.0".into(),
            port: 8766,
            audiences: None,
            max_body: 1024 * 1024,
            rate_limit: 0,
            timeout: Duration::from_secs(30),
            max_mailbox: 0,
            max_mailbox_per_sender: 0,
            admin_password: None,
            require_api_key: false,
            max_refused: 1000,
            refused_ttl: 604_800.0,
            max_group_size: 100,
            ip_rate_limit: 6000,
            limit_loopback: false,
            max_connections: 4096,
            max_connections_per_ip: 256,
            max_wait: 25.0,
            max_waiting_per_user: 8,
            max_waiting_per_ip: 128,
        }
    }
}

impl Config {
    /// A config for tests and embedding: memory backend on 127.0.0.1, a
    /// free port, everything else default.
    pub fn local() -> Self {
        Self {
            backend: Backend::Memory,
            host: "127.0.0.1".into(),
            port: 0,
            ..Self::default()
        }
    }

    /// Reads the command line and the environment (flags win).
    pub fn from_args_env<I, T>(
        args: I,
        env: &HashMap<String, String>,
    ) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let cli = Cli::try_parse_from(args)?;
        let env = Env(env);
        let d = Config::default();
        let port = pick(
            cli.port,
            env.parse(&["RETALK_SERVER_PORT", "SERVER_PORT"], "port number")?,
            d.port,
        );
        let audiences = match cli
            .audience
            .or(env.text(&["RETALK_SERVER_AUDIENCE", "SERVER_AUDIENCE"]))
        {
            Some(raw) => {
                let list = split_audiences(&raw);
                if list.is_empty() {
                    return Err(ConfigError::NoAudience);
                }
                Some(list)
            }
            None => None,
        };
        let timeout: f64 = pick(
            cli.timeout,
            env.parse(&["RETALK_SERVER_TIMEOUT"], "number of seconds")?,
            30.0,
        );
        if !(timeout.is_finite() && timeout > 0.0 && timeout <= 86_400.0) {
            return Err(ConfigError::OutOfRange {
                setting: "timeout",
                rule: "a number of seconds above 0 and at most 86400",
                value: timeout.to_string(),
            });
        }
        let refused_ttl: f64 = pick(
            cli.refused_ttl,
            env.parse(&["RETALK_SERVER_REFUSED_TTL"], "number of seconds")?,
            d.refused_ttl,
        );
        if !(refused_ttl.is_finite() && refused_ttl >= 0.0) {
            return Err(ConfigError::OutOfRange {
                setting: "refused-ttl",
                rule: "a number of seconds, 0 or more",
                value: refused_ttl.to_string(),
            });
        }
        let max_body = pick(
            cli.max_body,
            env.parse(&["RETALK_SERVER_MAX_BODY"], "byte count")?,
            d.max_body,
        );
        if max_body == 0 {
            return Err(ConfigError::OutOfRange {
                setting: "max-body",
                rule: "at least 1",
                value: "0".into(),
            });
        }
        let max_connections = pick(
            cli.max_connections,
            env.parse(&["RETALK_SERVER_MAX_CONNECTIONS"], "count")?,
            d.max_connections,
        );
        let max_connections_per_ip = pick(
            cli.max_connections_per_ip,
            env.parse(&["RETALK_SERVER_MAX_CONNECTIONS_PER_IP"], "count")?,
            d.max_connections_per_ip,
        );
        for (setting, v) in [
            ("max-connections", max_connections),
            ("max-connections-per-ip", max_connections_per_ip),
        ] {
            if v == 0 {
                return Err(ConfigError::OutOfRange {
                    setting,
                    rule: "at least 1",
                    value: "0".into(),
                });
            }
        }
        let max_wait: f64 = pick(
            cli.max_wait,
            env.parse(&["RETALK_SERVER_MAX_WAIT"], "number of seconds")?,
            d.max_wait,
        );
        if !(max_wait.is_finite() && (0.0..=3600.0).contains(&max_wait)) {
            return Err(ConfigError::OutOfRange {
                setting: "max-wait",
                rule: "a number of seconds from 0 to 3600",
                value: max_wait.to_string(),
            });
        }
        let max_mailbox = pick(
            cli.max_mailbox,
            env.parse(&["RETALK_SERVER_MAX_MAILBOX"], "count")?,
            d.max_mailbox,
        );
        let max_mailbox_per_sender = pick(
            cli.max_mailbox_per_sender,
            env.parse(&["RETALK_SERVER_MAX_MAILBOX_PER_SENDER"], "count")?,
            d.max_mailbox_per_sender,
        );
        if max_mailbox_per_sender > 0 && max_mailbox == 0 {
            return Err(ConfigError::OutOfRange {
                setting: "max-mailbox-per-sender",
                rule: "0 unless --max-mailbox is set too (it applies within a mailbox cap)",
                value: max_mailbox_per_sender.to_string(),
            });
        }
        let max_waiting_per_user = pick(
            cli.max_waiting_per_user,
            env.parse(&["RETALK_SERVER_MAX_WAITING_PER_USER"], "count")?,
            d.max_waiting_per_user,
        );
        let max_waiting_per_ip = pick(
            cli.max_waiting_per_ip,
            env.parse(&["RETALK_SERVER_MAX_WAITING_PER_IP"], "count")?,
            d.max_waiting_per_ip,
        );
        let database_url = cli
            .database_url
            .or(env.text(&["RETALK_SERVER_DATABASE_URL"]));
        let env_backend = match env.text(&["RETALK_SERVER_BACKEND"]) {
            Some(name) => Some(
                Backend::from_str(name.trim(), true).map_err(|_| ConfigError::BadBackend(name))?,
            ),
            None => None,
        };
        // A database URL alone means PostgreSQL; with another backend it
        // is a mistake, not something to ignore.
        let backend = cli
            .backend
            .or(env_backend)
            .unwrap_or(if database_url.is_some() {
                Backend::Postgres
            } else {
                d.backend
            });
        if backend == Backend::Postgres && database_url.is_none() {
            return Err(ConfigError::NoDatabaseUrl);
        }
        if backend != Backend::Postgres && database_url.is_some() {
            return Err(ConfigError::DatabaseUrlWithoutPostgres(backend.name()));
        }
        let trusted_proxies = cli
            .trusted_proxies
            .or(env.text(&["RETALK_SERVER_TRUSTED_PROXIES"]))
            .map(|raw| split_audiences(&raw))
            .unwrap_or_default();
        if let Err(bad) = crate::proxy::TrustedProxies::parse(&trusted_proxies) {
            return Err(ConfigError::OutOfRange {
                setting: "trusted-proxies",
                rule: "a comma-separated list of IP addresses or CIDR ranges",
                value: bad,
            });
        }
        let admin_login_limit = pick(
            cli.admin_login_limit,
            env.parse(&["RETALK_SERVER_ADMIN_LOGIN_LIMIT"], "count")?,
            d.admin_login_limit,
        );
        let admin_password = cli
            .admin_password
            .or(env.text(&["RETALK_SERVER_ADMIN_PASSWORD"]))
            .filter(|p| !p.is_empty());
        Ok(Config {
            backend,
            database_url,
            trusted_proxies,
            admin_login_limit,
            db: cli
                .db
                .or(env
                    .text(&["RETALK_SERVER_DB", "SERVER_DB"])
                    .map(PathBuf::from))
                .unwrap_or(d.db),
            host: cli
                .host
                .or(env.text(&["RETALK_SERVER_HOST", "SERVER_HOST"]))
                .unwrap_or(d.host),
            port,
            audiences,
            max_body,
            rate_limit: pick(
                cli.rate_limit,
                env.parse(&["RETALK_SERVER_RATE_LIMIT"], "count")?,
                d.rate_limit,
            ),
            timeout: Duration::from_secs_f64(timeout),
            max_mailbox,
            max_mailbox_per_sender,
            admin_password,
            require_api_key: cli.require_api_key
                || env
                    .text(&["RETALK_SERVER_REQUIRE_API_KEY"])
                    .is_some_and(|v| truthy(&v)),
            max_refused: pick(
                cli.max_refused,
                env.parse(&["RETALK_SERVER_MAX_REFUSED"], "count")?,
                d.max_refused,
            ),
            refused_ttl,
            max_group_size: pick(
                cli.max_group_size,
                env.parse(&["RETALK_SERVER_MAX_GROUP_SIZE"], "count")?,
                d.max_group_size,
            ),
            ip_rate_limit: pick(
                cli.ip_rate_limit,
                env.parse(&["RETALK_SERVER_IP_RATE_LIMIT"], "count")?,
                d.ip_rate_limit,
            ),
            limit_loopback: cli.limit_loopback
                || env
                    .text(&["RETALK_SERVER_LIMIT_LOOPBACK"])
                    .is_some_and(|v| truthy(&v)),
            max_connections,
            max_connections_per_ip,
            max_wait,
            max_waiting_per_user,
            max_waiting_per_ip,
        })
    }

    /// The audiences for a relay bound at `bound`: the configured ones, else
    /// `http://HOST:PORT` with the real port (a wildcard host shown as
    /// 127.0.0.1, as the Python relay does).
    pub fn audiences_for(&self, bound: SocketAddr) -> Vec<String> {
        if let Some(list) = &self.audiences {
            return list.clone();
        }
        let host = match self.host.as_str() {
            "" | "0.0.0.0" | "::" | "[::]" => "127.0.0.1".to_owned(),
            h if h.contains(':') && !h.starts_with('[') => format!("[{h}]"),
            h => h.to_owned(),
        };
        vec![format!("http://{host}:{}", bound.port())]
    }
}

/// The 0.3.0 audience list: comma-separated, blanks dropped.
pub fn split_audiences(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The Python relay's reading of a boolean variable.
fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

fn pick<T>(flag: Option<T>, env: Option<T>, default: T) -> T {
    flag.or(env).unwrap_or(default)
}

/// Environment lookups; an empty value counts as unset.
struct Env<'a>(&'a HashMap<String, String>);

impl Env<'_> {
    fn text(&self, names: &[&str]) -> Option<String> {
        names
            .iter()
            .find_map(|n| self.0.get(*n).filter(|v| !v.trim().is_empty()).cloned())
    }

    fn parse<T: FromStr>(
        &self,
        names: &[&str],
        what: &'static str,
    ) -> Result<Option<T>, ConfigError> {
        for name in names {
            if let Some(v) = self.0.get(*name).filter(|v| !v.trim().is_empty()) {
                return v.trim().parse().map(Some).map_err(|_| ConfigError::BadEnv {
                    name: (*name).to_owned(),
                    value: v.clone(),
                    what,
                });
            }
        }
        Ok(None)
    }
}

const AFTER_HELP: &str = "\
--host/--port and --audience differ on purpose:
  --host/--port  where this process listens (the socket it binds)
  --audience     the public URL clients connect to; request signatures are
                 bound to it, so it must equal each client's relay URL
                 exactly (a comma-separated list accepts several URLs).
Locally they coincide. Behind a TLS proxy, --host/--port stay local (e.g.
127.0.0.1:8766) while --audience is the public https:// address.

Every flag overrides its environment variable; where two names are listed,
the RETALK_SERVER_* one (retalk 0.3.0) wins over the SERVER_* one (0.0.1).
Set RUST_LOG=info (or debug) for logs; by default the relay logs no
per-request metadata.";

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "retalk-relay",
    version,
    about = "Untrusted relay for retalk: stores only public keys and ciphertext \
             and forwards sealed messages between mailboxes. It never sees \
             plaintext or private keys.",
    after_help = AFTER_HELP
)]
struct Cli {
    /// Storage backend [env: RETALK_SERVER_BACKEND]
    /// [default: sqlite; postgres when a database URL is given]
    #[arg(long, value_enum, value_name = "BACKEND")]
    backend: Option<Backend>,

    /// PostgreSQL URL for --backend postgres, e.g.
    /// postgres://retalk:PASSWORD@db.internal/retalk; every relay process
    /// given the same URL shares users, keys and mail
    /// [env: RETALK_SERVER_DATABASE_URL]
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,

    /// Proxies whose X-Forwarded-For (else Forwarded) header is believed,
    /// comma-separated IP addresses or CIDR ranges (e.g. 127.0.0.1 for a
    /// local Caddy): per-address limits then apply to the client address
    /// they report. Nobody's by default
    /// [env: RETALK_SERVER_TRUSTED_PROXIES]
    #[arg(long, value_name = "IP[/BITS][,...]")]
    trusted_proxies: Option<String>,

    /// Failed /admin logins per client address per minute before it gets
    /// HTTP 429 until the minute is over (loopback included); 0 = off
    /// [env: RETALK_SERVER_ADMIN_LOGIN_LIMIT] [default: 10]
    #[arg(long, value_name = "N")]
    admin_login_limit: Option<usize>,

    /// Database path (a SQLite file, or a sled directory)
    /// [env: RETALK_SERVER_DB, SERVER_DB] [default: server.db]
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,

    /// Interface to bind: 0.0.0.0 for every interface, 127.0.0.1 for this
    /// machine only [env: RETALK_SERVER_HOST, SERVER_HOST] [default: 0.0.0.0]
    #[arg(long, value_name = "HOST")]
    host: Option<String>,

    /// TCP port to bind; 0 picks a free one (printed at start)
    /// [env: RETALK_SERVER_PORT, SERVER_PORT] [default: 8766]
    #[arg(long, value_name = "PORT")]
    port: Option<u16>,

    /// Public URL(s) clients sign their requests for, comma-separated
    /// [env: RETALK_SERVER_AUDIENCE, SERVER_AUDIENCE]
    /// [default: http://HOST:PORT, 0.0.0.0 shown as 127.0.0.1]
    #[arg(long, value_name = "URL[,URL...]")]
    audience: Option<String>,

    /// Reject request bodies larger than this with HTTP 413. The rest of a
    /// body refused unread (413, 401, 429) is read and discarded, up to 8
    /// times this within --timeout while it keeps coming, so that clients
    /// that send it all before reading still get the answer
    /// [env: RETALK_SERVER_MAX_BODY] [default: 1048576]
    #[arg(long, value_name = "BYTES")]
    max_body: Option<usize>,

    /// Max verified requests per user id per minute, else HTTP 429; 0 = off
    /// [env: RETALK_SERVER_RATE_LIMIT] [default: 0]
    #[arg(long, value_name = "N")]
    rate_limit: Option<usize>,

    /// Drop clients that are this slow sending a request, reading an answer,
    /// or idle between requests [env: RETALK_SERVER_TIMEOUT] [default: 30]
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,

    /// Max undelivered messages per recipient; a full mailbox rejects (never
    /// evicts) and the sender resends later; 0 = unlimited
    /// [env: RETALK_SERVER_MAX_MAILBOX] [default: 0]
    #[arg(long, value_name = "N")]
    max_mailbox: Option<u64>,

    /// Max undelivered messages one sender may hold in one mailbox; only
    /// with --max-mailbox; 0 = unlimited
    /// [env: RETALK_SERVER_MAX_MAILBOX_PER_SENDER] [default: 0]
    #[arg(long, value_name = "N")]
    max_mailbox_per_sender: Option<u64>,

    /// Password for the /admin API-key endpoint (HTTP Basic); unset
    /// disables /admin [env: RETALK_SERVER_ADMIN_PASSWORD]
    #[arg(long, value_name = "PW")]
    admin_password: Option<String>,

    /// Require a valid API key (Authorization: Bearer <key>, or
    /// X-Retalk-Key) on every tool request; mint keys at /admin
    /// [env: RETALK_SERVER_REQUIRE_API_KEY=1|true|yes|on]
    #[arg(long)]
    require_api_key: bool,

    /// Negative-acks kept per recipient, oldest evicted; 0 = unlimited
    /// [env: RETALK_SERVER_MAX_REFUSED] [default: 1000]
    #[arg(long, value_name = "N")]
    max_refused: Option<u64>,

    /// Seconds a negative-ack lives; 0 = no expiry
    /// [env: RETALK_SERVER_REFUSED_TTL] [default: 604800]
    #[arg(long, value_name = "SECONDS")]
    refused_ttl: Option<f64>,

    /// Advisory group roster cap served at GET /info
    /// [env: RETALK_SERVER_MAX_GROUP_SIZE] [default: 100]
    #[arg(long, value_name = "N")]
    max_group_size: Option<u64>,

    /// Max requests per source address per minute, checked before any
    /// signature work; 0 = off [env: RETALK_SERVER_IP_RATE_LIMIT]
    /// [default: 6000]
    #[arg(long, value_name = "N")]
    ip_rate_limit: Option<usize>,

    /// Longest a read with `wait` (long-poll) is held open before it is
    /// answered `[]`; longer waits are shortened to it; 0 answers every
    /// read at once. Neither --timeout nor the idle rule cuts a held read
    /// [env: RETALK_SERVER_MAX_WAIT] [default: 25]
    #[arg(long, value_name = "SECONDS")]
    max_wait: Option<f64>,

    /// Reads held open at once per user id; more get HTTP 429
    /// [env: RETALK_SERVER_MAX_WAITING_PER_USER] [default: 8]
    #[arg(long, value_name = "N")]
    max_waiting_per_user: Option<usize>,

    /// Reads held open at once per source address (loopback exempt unless
    /// --limit-loopback); more get HTTP 429
    /// [env: RETALK_SERVER_MAX_WAITING_PER_IP] [default: 128]
    #[arg(long, value_name = "N")]
    max_waiting_per_ip: Option<usize>,

    /// Apply the per-address limits to loopback clients too (by default
    /// they are exempt: behind a local TLS proxy every client is loopback)
    /// [env: RETALK_SERVER_LIMIT_LOOPBACK=1]
    #[arg(long)]
    limit_loopback: bool,

    /// Max open connections [env: RETALK_SERVER_MAX_CONNECTIONS]
    /// [default: 4096]
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,

    /// Max open connections from one source address
    /// [env: RETALK_SERVER_MAX_CONNECTIONS_PER_IP] [default: 256]
    #[arg(long, value_name = "N")]
    max_connections_per_ip: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_args_env(
            std::iter::once("retalk-relay").chain(args.iter().copied()),
            &env,
        )
    }

    #[test]
    fn defaults_are_the_python_relays() {
        let c = parse(&[], &[]).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.backend, Backend::Sqlite);
        assert_eq!(c.db, PathBuf::from("server.db"));
        assert_eq!((c.host.as_str(), c.port), ("0.0.0.0", 8766));
        assert_eq!(c.max_body, 1 << 20);
        assert_eq!(c.timeout, Duration::from_secs(30));
        assert_eq!(
            (c.max_refused, c.refused_ttl, c.max_group_size),
            (1000, 604_800.0, 100)
        );
        assert_eq!(c.admin_password, None);
        assert!(!c.require_api_key);
        assert_eq!(
            c.audiences_for("0.0.0.0:8766".parse().unwrap()),
            ["http://127.0.0.1:8766"]
        );
    }

    #[test]
    fn both_env_generations_are_read() {
        let c = parse(
            &[],
            &[
                ("SERVER_DB", "/a.db"),
                ("SERVER_HOST", "127.0.0.2"),
                ("SERVER_PORT", "9000"),
                ("SERVER_AUDIENCE", "http://x"),
            ],
        )
        .unwrap();
        assert_eq!(c.db, PathBuf::from("/a.db"));
        assert_eq!(c.host, "127.0.0.2");
        assert_eq!(c.port, 9000);
        assert_eq!(c.audiences, Some(vec!["http://x".to_owned()]));

        // 0.3.0 names win over 0.0.1 ones.
        let c = parse(
            &[],
            &[
                ("SERVER_PORT", "9000"),
                ("RETALK_SERVER_PORT", "9001"),
                ("SERVER_DB", "a"),
                ("RETALK_SERVER_DB", "b"),
            ],
        )
        .unwrap();
        assert_eq!(c.port, 9001);
        assert_eq!(c.db, PathBuf::from("b"));

        let c = parse(
            &[],
            &[
                ("RETALK_SERVER_MAX_BODY", "2048"),
                ("RETALK_SERVER_RATE_LIMIT", "60"),
                ("RETALK_SERVER_TIMEOUT", "2.5"),
                ("RETALK_SERVER_MAX_MAILBOX", "10"),
                ("RETALK_SERVER_MAX_MAILBOX_PER_SENDER", "3"),
                ("RETALK_SERVER_ADMIN_PASSWORD", "pw"),
                ("RETALK_SERVER_REQUIRE_API_KEY", "Yes"),
                ("RETALK_SERVER_MAX_REFUSED", "5"),
                ("RETALK_SERVER_REFUSED_TTL", "0"),
                ("RETALK_SERVER_MAX_GROUP_SIZE", "7"),
                (
                    "RETALK_SERVER_AUDIENCE",
                    " https://a.example , ,https://b.example/relay ",
                ),
            ],
        )
        .unwrap();
        assert_eq!(c.max_body, 2048);
        assert_eq!(c.rate_limit, 60);
        assert_eq!(c.timeout, Duration::from_millis(2500));
        assert_eq!((c.max_mailbox, c.max_mailbox_per_sender), (10, 3));
        assert_eq!(c.admin_password.as_deref(), Some("pw"));
        assert!(c.require_api_key);
        assert_eq!(
            (c.max_refused, c.refused_ttl, c.max_group_size),
            (5, 0.0, 7)
        );
        assert_eq!(
            c.audiences_for("0.0.0.0:1".parse().unwrap()),
            ["https://a.example", "https://b.example/relay"]
        );
    }

    #[test]
    fn flags_win_over_env() {
        let c = parse(
            &[
                "--backend",
                "sled",
                "--db",
                "f.db",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--audience",
                "http://a,http://b",
                "--max-body",
                "10",
                "--rate-limit",
                "1",
                "--timeout",
                "1",
                "--max-mailbox",
                "2",
                "--max-mailbox-per-sender",
                "1",
                "--admin-password",
                "flagpw",
                "--require-api-key",
                "--max-refused",
                "0",
                "--refused-ttl",
                "60",
                "--max-group-size",
                "3",
                "--ip-rate-limit",
                "0",
                "--limit-loopback",
                "--max-connections",
                "8",
                "--max-connections-per-ip",
                "2",
            ],
            &[
                ("RETALK_SERVER_DB", "env.db"),
                ("RETALK_SERVER_PORT", "1234"),
                ("RETALK_SERVER_AUDIENCE", "http://env"),
                ("RETALK_SERVER_ADMIN_PASSWORD", "envpw"),
                ("RETALK_SERVER_MAX_BODY", "99"),
            ],
        )
        .unwrap();
        assert_eq!(c.backend, Backend::Sled);
        assert_eq!(c.db, PathBuf::from("f.db"));
        assert_eq!(c.port, 0);
        assert_eq!(
            c.audiences,
            Some(vec!["http://a".to_owned(), "http://b".to_owned()])
        );
        assert_eq!(c.max_body, 10);
        assert_eq!(c.admin_password.as_deref(), Some("flagpw"));
        assert!(c.require_api_key && c.limit_loopback);
        assert_eq!(
            (c.ip_rate_limit, c.max_connections, c.max_connections_per_ip),
            (0, 8, 2)
        );
        assert_eq!(
            (c.max_refused, c.refused_ttl, c.max_group_size),
            (0, 60.0, 3)
        );
    }

    #[test]
    fn default_audience_follows_host_and_real_port() {
        let c = parse(&["--host", "127.0.0.1", "--port", "0"], &[]).unwrap();
        assert_eq!(
            c.audiences_for("127.0.0.1:40000".parse().unwrap()),
            ["http://127.0.0.1:40000"]
        );
        let c = parse(&["--host", "relay.lan"], &[]).unwrap();
        assert_eq!(
            c.audiences_for("10.0.0.1:8766".parse().unwrap()),
            ["http://relay.lan:8766"]
        );
        let c = parse(&["--host", "::1"], &[]).unwrap();
        assert_eq!(
            c.audiences_for("[::1]:8766".parse().unwrap()),
            ["http://[::1]:8766"]
        );
    }

    #[test]
    fn empty_env_values_count_as_unset() {
        let c = parse(
            &[],
            &[
                ("RETALK_SERVER_ADMIN_PASSWORD", ""),
                ("RETALK_SERVER_PORT", " "),
                ("RETALK_SERVER_AUDIENCE", ""),
            ],
        )
        .unwrap();
        assert_eq!(c.admin_password, None);
        assert_eq!(c.port, 8766);
        assert_eq!(c.audiences, None);
        assert!(
            !parse(&[], &[("RETALK_SERVER_REQUIRE_API_KEY", "0")])
                .unwrap()
                .require_api_key
        );
        // An empty --admin-password disables /admin, like Python.
        assert_eq!(
            parse(&["--admin-password", ""], &[])
                .unwrap()
                .admin_password,
            None
        );
    }

    #[test]
    fn bad_values_are_reported() {
        let e = parse(&[], &[("RETALK_SERVER_PORT", "eighty")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "RETALK_SERVER_PORT: \"eighty\" is not a valid port number"
        );
        assert!(matches!(
            parse(&[], &[("SERVER_PORT", "70000")]),
            Err(ConfigError::BadEnv { .. })
        ));
        assert!(matches!(
            parse(&["--port", "x"], &[]),
            Err(ConfigError::Cli(_))
        ));
        assert!(matches!(
            parse(&["--backend", "postgres"], &[]),
            Err(ConfigError::NoDatabaseUrl)
        ));
        assert!(matches!(
            parse(&["--backend", "mysql"], &[]),
            Err(ConfigError::Cli(_))
        ));
        assert!(matches!(
            parse(&["--trusted-proxies", "127.0.0.1,not-an-ip"], &[]),
            Err(ConfigError::OutOfRange { .. })
        ));
        assert!(matches!(
            parse(&["--timeout", "0"], &[]),
            Err(ConfigError::OutOfRange { .. })
        ));
        assert!(matches!(
            parse(&["--timeout", "nan"], &[]),
            Err(ConfigError::OutOfRange { .. })
        ));
        assert!(matches!(
            parse(&["--refused-ttl=-1"], &[]),
            Err(ConfigError::OutOfRange { .. })
        ));
        assert!(matches!(
            parse(&["--max-body", "0"], &[]),
            Err(ConfigError::OutOfRange { .. })
        ));
        assert!(matches!(
            parse(&["--audience", " , "], &[]),
            Err(ConfigError::NoAudience)
        ));
        // A database URL is PostgreSQL, never silently ignored.
        let url = "postgres://u@127.0.0.1/d";
        assert_eq!(
            parse(&["--database-url", url], &[]).unwrap().backend,
            Backend::Postgres
        );
        assert_eq!(
            parse(&[], &[("RETALK_SERVER_DATABASE_URL", url)])
                .unwrap()
                .backend,
            Backend::Postgres
        );
        assert!(matches!(
            parse(&["--database-url", url, "--backend", "sqlite"], &[]),
            Err(ConfigError::DatabaseUrlWithoutPostgres("sqlite"))
        ));
        assert_eq!(
            parse(&[], &[("RETALK_SERVER_BACKEND", "sled")])
                .unwrap()
                .backend,
            Backend::Sled
        );
        assert!(matches!(
            parse(&[], &[("RETALK_SERVER_BACKEND", "mysql")]),
            Err(ConfigError::BadBackend(_))
        ));
        // A per-sender cap only means something within a mailbox cap.
        let e = parse(&["--max-mailbox-per-sender", "3"], &[]).unwrap_err();
        assert!(e.to_string().contains("--max-mailbox"), "{e}");
        assert!(parse(
            &["--max-mailbox-per-sender", "3", "--max-mailbox", "9"],
            &[]
        )
        .is_ok());
        for bad in ["--max-wait=-1", "--max-wait=nan", "--max-wait=3601"] {
            assert!(
                matches!(parse(&[bad], &[]), Err(ConfigError::OutOfRange { .. })),
                "{bad}"
            );
        }
        assert!(matches!(parse(&["--nope"], &[]), Err(ConfigError::Cli(_))));
    }

    #[test]
    fn help_names_every_setting() {
        let Err(ConfigError::Cli(e)) = parse(&["--help"], &[]) else {
            panic!("help is an early exit")
        };
        let help = e.to_string();
        for flag in [
            "--backend",
            "--db",
            "--host",
            "--port",
            "--audience",
            "--max-body",
            "--rate-limit",
            "--timeout",
            "--max-mailbox",
            "--max-mailbox-per-sender",
            "--admin-password",
            "--require-api-key",
            "--max-refused",
            "--refused-ttl",
            "--max-group-size",
            "--ip-rate-limit",
            "--max-connections",
            "--database-url",
            "--trusted-proxies",
            "--admin-login-limit",
        ] {
            assert!(help.contains(flag), "{flag} missing from --help");
        }
        assert!(help.contains("RETALK_SERVER_AUDIENCE, SERVER_AUDIENCE"));
    }

    #[test]
    fn postgres_proxies_and_admin_limits() {
        let url = "postgres://retalk:s3cret@db/retalk";
        let c = parse(&["--backend", "postgres", "--database-url", url], &[]).unwrap();
        assert_eq!(c.backend, Backend::Postgres);
        assert_eq!(c.database_url.as_deref(), Some(url));
        assert!(!format!("{c:?}").contains("s3cret"));
        let c = parse(
            &["--backend", "postgres"],
            &[
                ("RETALK_SERVER_DATABASE_URL", url),
                ("RETALK_SERVER_TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8,::1"),
                ("RETALK_SERVER_ADMIN_LOGIN_LIMIT", "3"),
            ],
        )
        .unwrap();
        assert_eq!(c.database_url.as_deref(), Some(url));
        assert_eq!(c.trusted_proxies, ["127.0.0.1", "10.0.0.0/8", "::1"]);
        assert_eq!(c.admin_login_limit, 3);
        let d = parse(&[], &[]).unwrap();
        assert!(d.trusted_proxies.is_empty());
        assert_eq!(d.admin_login_limit, 10);
    }

    #[test]
    fn debug_hides_the_admin_password() {
        let c = parse(&["--admin-password", "hunter2"], &[]).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
