//! What the relay benchmarks share: starting a `retalk-relay` binary,
//! pre-signed raw HTTP requests, reading answers, and `/proc` figures.
//! Each bench uses part of it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use retalk_proto::auth::Dialect;
use retalk_proto::wire::{Args, SignedRequest};
use retalk_proto::UserId;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The audience the benchmarks' relays are started with and sign for.
pub const AUDIENCE: &str = "http://relay.bench.invalid";

pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The `retalk-relay` built from this checkout.
pub fn this_relay() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_retalk-relay"))
}

/// Starts `binary` with `args` and waits for its "listening" line.
pub fn start_relay(binary: &Path, args: &[&str]) -> (Child, SocketAddr) {
    let mut child = Command::new(binary)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
    let line = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    let addr = line
        .strip_prefix("retalk-relay listening on http://")
        .expect(&line)
        .parse()
        .unwrap();
    (child, addr)
}

/// Sends SIGTERM and waits for the process to exit.
pub fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// An identity that signs requests itself (no client, no store).
pub struct User {
    pub account: vodozemac::olm::Account,
    pub id: UserId,
}

impl User {
    pub fn new() -> Self {
        let account = vodozemac::olm::Account::new();
        let id = UserId::from_keys(
            &account.curve25519_key().to_base64(),
            &account.ed25519_key().to_base64(),
        );
        Self { account, id }
    }

    /// A complete HTTP request, signed now for [`AUDIENCE`].
    pub fn http(&self, args: &Args) -> Vec<u8> {
        let body = SignedRequest::sign(&self.account, args, AUDIENCE, now()).to_body(Dialect::V001);
        let mut req = format!(
            "POST / HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(&body);
        req
    }

    /// A signed `publish_keys` with a fallback key, so others may send to
    /// this user.
    pub fn publish(&mut self) -> Vec<u8> {
        self.account.generate_fallback_key();
        let fallback = self
            .account
            .fallback_key()
            .into_iter()
            .map(|(k, v)| (k.to_base64(), v.to_base64()))
            .next();
        self.http(&Args::PublishKeys {
            identity_key: self.account.curve25519_key().to_base64(),
            signing_key: self.account.ed25519_key().to_base64(),
            one_time_keys: vec![],
            fallback_key: fallback,
        })
    }
}

/// A memory figure of `/proc/<pid>/status`, in KiB.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The load average, as `/proc/loadavg` shows it.
pub fn load_average() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Reads one response; returns its status and body.
pub async fn read_answer(stream: &mut TcpStream, buf: &mut Vec<u8>) -> (u16, Vec<u8>) {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).unwrap();
            let status: u16 = head[9..12].parse().unwrap();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                read_more(stream, buf).await;
            }
            let body = buf[end + 4..end + 4 + len].to_vec();
            buf.drain(..end + 4 + len);
            return (status, body);
        }
        read_more(stream, buf).await;
    }
}

/// Reads what has arrived into `buf`; the buffer grows only once there is
/// something to read, so an idle connection holds no buffer.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) {
    stream.readable().await.unwrap();
    buf.reserve(16 * 1024);
    let n = stream.read_buf(buf).await.unwrap();
    assert!(n > 0, "the relay closed a connection");
}
