//! Helpers: relays on 127.0.0.1 with a free port (in process, or the
//! `retalk-relay` binary), raw HTTP/1.1 on a socket, signed request bodies,
//! Python library users.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use retalk_proto::auth::Dialect;
use retalk_proto::client::{Client, MemoryStore};
use retalk_proto::wire::{Args, SignedRequest};
use retalk_proto::{Clock, UserId};
use retalk_relay::{Config, RelayServer, SharedStore};
use retalk_transport_http::{HttpTransport, SystemClock, Transport, TransportError};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A relay on a memory store, configured by `f`.
pub async fn relay(f: impl FnOnce(&mut Config)) -> RelayServer {
    relay_on(
        std::sync::Arc::new(retalk_proto::relay::MemoryRelayStore::new()),
        f,
    )
    .await
}

pub async fn relay_on(store: SharedStore, f: impl FnOnce(&mut Config)) -> RelayServer {
    let mut c = Config::local();
    f(&mut c);
    RelayServer::start(&c, store).await.unwrap()
}

/// A relay on an SQLite file, configured by `f`.
pub async fn sqlite_relay(db: &Path, f: impl FnOnce(&mut Config)) -> RelayServer {
    let store = retalk_store_sqlite::SqliteRelayStore::open(db).unwrap();
    relay_on(std::sync::Arc::new(store), f).await
}

/// A client on a memory store, over HTTP.
pub type HttpAgent = Client<std::sync::Arc<MemoryStore>, HttpTransport, SystemClock>;

/// A new identity `name` (secret "secret") on `transport`.
pub fn http_agent(transport: HttpTransport, name: &str) -> HttpAgent {
    Client::create(
        std::sync::Arc::new(MemoryStore::new()),
        transport,
        SystemClock,
        "secret",
        name,
    )
    .unwrap()
}

/// A hand-driven identity.
pub struct Peer {
    pub account: vodozemac::olm::Account,
    pub id: UserId,
}

impl Peer {
    pub fn new() -> Self {
        let account = vodozemac::olm::Account::new();
        let id = UserId::from_keys(
            &account.curve25519_key().to_base64(),
            &account.ed25519_key().to_base64(),
        );
        Self { account, id }
    }

    pub fn request(&self, args: &Args, audience: &str) -> SignedRequest {
        SignedRequest::sign(&self.account, args, audience, SystemClock.now())
    }

    pub fn body(&self, args: &Args, audience: &str) -> Vec<u8> {
        self.request(args, audience).to_body(Dialect::V001)
    }

    /// Publish args with a fallback key.
    pub fn publish_args(&mut self) -> Args {
        self.account.generate_fallback_key();
        let fallback = self
            .account
            .fallback_key()
            .into_iter()
            .map(|(k, v)| (k.to_base64(), v.to_base64()))
            .next();
        Args::PublishKeys {
            identity_key: self.account.curve25519_key().to_base64(),
            signing_key: self.account.ed25519_key().to_base64(),
            one_time_keys: vec![],
            fallback_key: fallback,
        }
    }
}

/// An HTTP answer read off a raw socket.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {:?}", String::from_utf8_lossy(&self.body)))
    }
    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap().to_owned()
    }
}

/// A raw HTTP/1.1 connection.
pub struct Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        Raw {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Sends a request with a Content-Length body.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: relay\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut all = head.into_bytes();
        all.extend_from_slice(body);
        self.send(&all).await;
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Reads one answer; `None` when the server closed the connection first.
    pub async fn answer(&mut self) -> Option<Answer> {
        tokio::time::timeout(Duration::from_secs(10), self.answer_inner())
            .await
            .expect("no answer within 10 s")
    }

    async fn answer_inner(&mut self) -> Option<Answer> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
                let mut lines = head.split("\r\n");
                let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
                let headers: Vec<(String, String)> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                    .collect();
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .map_or(0, |(_, v)| v.parse().unwrap());
                while self.buf.len() < end + 4 + len {
                    if !self.fill().await {
                        return None;
                    }
                }
                let body = self.buf[end + 4..end + 4 + len].to_vec();
                self.buf.drain(..end + 4 + len);
                if status == 100 {
                    continue;
                }
                return Some(Answer {
                    status,
                    headers,
                    body,
                });
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// Whether the server closes the connection within `within` (reading
    /// and discarding anything it still sends).
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        tokio::time::timeout(within, async {
            let mut chunk = [0u8; 1024];
            loop {
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One request on a fresh connection.
pub async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let mut raw = Raw::connect(addr).await;
    raw.request(method, path, headers, body).await;
    raw.answer()
        .await
        .expect("connection closed without an answer")
}

/// The `retalk-relay` binary, without the caller's `RUST_LOG`.
pub fn relay_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_retalk-relay"));
    cmd.env_remove("RUST_LOG");
    cmd
}

/// A spawned relay binary; killed when dropped.
pub struct RelayProcess {
    pub child: Child,
    /// Where it listens, from its first line.
    pub addr: SocketAddr,
    /// Its three start-up lines (address, audiences, backend).
    pub lines: Vec<String>,
}

impl RelayProcess {
    /// Spawns `cmd` (stdin closed, stdout read) and reads its start-up
    /// lines; `None` when it exits before printing them. The rest of its
    /// stdout is drained on a thread, so that it never blocks on the pipe.
    pub fn spawn(cmd: &mut Command) -> Option<RelayProcess> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let lines: Vec<String> = (&mut out).take(3).map(Result::unwrap).collect();
        if lines.len() < 3 {
            let _ = child.wait();
            return None;
        }
        std::thread::spawn(move || out.for_each(drop));
        let addr = lines[0]
            .strip_prefix("retalk-relay listening on http://")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected start-up lines: {lines:?}"));
        Some(RelayProcess { child, addr, lines })
    }

    /// Spawns `cmd`; panics unless the relay starts.
    pub fn start(cmd: &mut Command) -> RelayProcess {
        Self::spawn(cmd).expect("the relay exited early")
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.addr.port())
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A user of a Python retalk library: one store file, pointed at one relay
/// URL. Each test file gives it the steps of its own script.
#[derive(Clone)]
pub struct PyUser {
    pub python: PathBuf,
    pub url: String,
    pub store: PathBuf,
    pub name: String,
}

impl PyUser {
    /// `NAME.db` in `dir`.
    pub fn new(python: &Path, url: &str, dir: &Path, name: &str) -> PyUser {
        PyUser {
            python: python.to_path_buf(),
            url: url.into(),
            store: dir.join(format!("{name}.db")),
            name: name.into(),
        }
    }

    /// The same identity (same store), configured with another relay URL.
    pub fn on(&self, url: &str) -> PyUser {
        PyUser {
            url: url.into(),
            ..self.clone()
        }
    }

    /// Runs `script URL STORE NAME ARGS...`; its stdout.
    pub fn script(&self, script: &str, args: &[&str]) -> String {
        let mut all: Vec<&Path> = vec![Path::new(&self.url), &self.store, Path::new(&self.name)];
        all.extend(args.iter().map(Path::new));
        retalk_testkit::python::run_python(&self.python, script, &all)
    }
}

/// A POST of `body` to `/` on a fresh connection.
pub async fn post(addr: SocketAddr, body: &[u8]) -> Answer {
    call(addr, "POST", "/", &[], body).await
}

/// `count_keys`, signed by `peer` for `url`, through `t`.
pub async fn count_keys(
    t: &HttpTransport,
    peer: &Peer,
    url: &str,
) -> Result<Value, TransportError> {
    t.call(peer.request(&Args::CountKeys, url)).await
}

/// `script DB QUERY PARAMS_JSON`: one statement on an SQLite file, as an
/// operator would run it (a second connection while the relay runs),
/// committed; prints the rows.
const SQL: &str = r#"
import json, sqlite3, sys
db, query, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
conn = sqlite3.connect(db, timeout=10)
with conn:
    rows = conn.execute(query, params).fetchall()
conn.close()
print(json.dumps([list(r) for r in rows]))
"#;

/// Runs `query` with `params` (a JSON array) on the SQLite file `db` with
/// the venv's Python, committing (so a DELETE sticks); the rows, as arrays.
pub fn sql(python: &Path, db: &Path, query: &str, params: Value) -> Value {
    let params = params.to_string();
    let args = [db, Path::new(query), Path::new(params.as_str())];
    let out = retalk_testkit::python::run_python(python, SQL, &args);
    serde_json::from_str(out.trim()).unwrap()
}
