#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Mutex;

use super::*;

/// A history in memory; `fail` makes every read fail.
#[derive(Default)]
struct Fake {
    rows: Mutex<Vec<(Kind, String, Message)>>,
    fail: bool,
}

impl History for Fake {
    fn conversations(&self) -> Result<Vec<Conversation>, Unreadable> {
        if self.fail {
            return Err(Unreadable("store.db is locked".into()));
        }
        Ok(vec![
            Conversation {
                id: "ab".repeat(16),
                name: "bob".into(),
                kind: Kind::Peer,
                count: self
                    .rows
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|r| r.0 == Kind::Peer)
                    .count() as u64,
                last_ts: Some(1_700_000_000.5),
            },
            Conversation {
                id: "cd".repeat(16),
                name: "team".into(),
                kind: Kind::Group,
                count: 0,
                last_ts: None,
            },
        ])
    }

    fn messages(&self, kind: Kind, id: &str, after: i64) -> Result<Vec<Message>, Unreadable> {
        if self.fail {
            return Err(Unreadable("store.db is locked".into()));
        }
        Ok(self
            .rows
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, c, m)| *k == kind && c == id && m.rowid > after)
            .map(|(_, _, m)| m.clone())
            .collect())
    }
}

fn msg(rowid: i64, direction: Direction, text: &str) -> Message {
    Message {
        rowid,
        direction,
        name: if direction == Direction::Out {
            "alice"
        } else {
            "bob"
        }
        .into(),
        text: text.into(),
        ts: 1_700_000_000.25 + rowid as f64,
    }
}

struct Running {
    base: String,
    token: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), WebError>>,
}

async fn start(history: Fake) -> Running {
    let view = WebView::bind(0, "alice", Arc::new(history)).await.unwrap();
    assert!(view.addr().ip().is_loopback(), "{}", view.addr());
    assert_eq!(
        view.url(),
        format!("http://{}/?t={}", view.addr(), view.token())
    );
    let base = format!("http://{}", view.addr());
    let token = view.token().to_owned();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(view.serve(async move {
        let _ = stopped.await;
    }));
    Running {
        base,
        token,
        stop: Some(stop),
        task,
    }
}

impl Running {
    async fn get(&self, path: &str, header: Option<&[u8]>) -> reqwest::Response {
        let mut req = reqwest::Client::new().get(format!("{}{path}", self.base));
        if let Some(h) = header {
            req = req.header(
                TOKEN_HEADER,
                reqwest::header::HeaderValue::from_bytes(h).unwrap(),
            );
        }
        req.send().await.unwrap()
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

fn assert_guarded(r: &reqwest::Response) {
    assert_eq!(r.headers()["content-security-policy"], CSP);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn every_route_needs_the_token_and_no_token_crashes_it() {
    let run = start(Fake::default()).await;
    let wrong = format!("{}x", run.token);
    for path in [
        "/",
        "/app.js",
        "/app.css",
        "/api/conversations",
        "/api/messages",
        "/nope",
    ] {
        for (query, header) in [
            ("", None),
            ("?t=", None),
            ("?t=nope", None),
            ("?t=%C3%A9t%C3%A9", None),
            ("?t=%ZZ%", None),
            ("?t=\u{e9}", None),
            ("", Some(wrong.as_bytes())),
            ("", Some("caf\u{e9}".as_bytes())),
            ("", Some(b"\xff\xfe".as_slice())),
            // the header is the one that counts when both are given
            (&*format!("?t={}", run.token), Some(b"wrong".as_slice())),
        ] {
            let r = run.get(&format!("{path}{query}"), header).await;
            assert_eq!(r.status(), 403, "{path}{query} {header:?}");
            assert_guarded(&r);
            if path == "/" {
                // The page a person lands on: why, not a bare JSON 403.
                assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
                let body = r.text().await.unwrap();
                assert!(body.contains("from an earlier run"), "{body}");
                continue;
            }
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body, serde_json::json!({"error": "missing or bad token"}));
        }
    }
    // Still serving after all that.
    let r = run
        .get("/api/conversations", Some(run.token.as_bytes()))
        .await;
    assert_eq!(r.status(), 200);
    run.stop().await;
}

#[tokio::test]
async fn the_page_loads_its_script_and_style_as_routes_with_the_token() {
    let run = start(Fake::default()).await;
    let r = run.get(&format!("/?t={}", run.token), None).await;
    assert_eq!(r.status(), 200);
    assert_guarded(&r);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    let html = r.text().await.unwrap();
    assert!(html.contains(&format!(
        "<script src=\"/app.js?t={}\" defer></script>",
        run.token
    )));
    assert!(html.contains(&format!("href=\"/app.css?t={}\"", run.token)));
    // No inline script or style for the policy to have to allow.
    assert_eq!(html.matches("<script").count(), 1);
    assert!(!html.contains("<style") && !html.contains(" on") && !html.contains("style="));
    assert!(!CSP.contains("unsafe-inline"));

    let js = run.get(&format!("/app.js?t={}", run.token), None).await;
    assert_eq!(js.status(), 200);
    assert_eq!(
        js.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    let js = js.text().await.unwrap();
    assert!(!js.contains("innerHTML") && !js.contains("insertAdjacentHTML"));
    assert!(js.contains("textContent"));
    let css = run.get(&format!("/app.css?t={}", run.token), None).await;
    assert_eq!(css.status(), 200);
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");

    let missing = run.get("/favicon.ico", Some(run.token.as_bytes())).await;
    assert_eq!(missing.status(), 404);
    assert_guarded(&missing);
    run.stop().await;
}

#[tokio::test]
async fn the_json_routes_keep_the_030_shapes() {
    let fake = Fake::default();
    {
        let mut rows = fake.rows.lock().unwrap();
        rows.push((
            Kind::Peer,
            "ab".repeat(16),
            msg(1, Direction::Out, "hi bob"),
        ));
        rows.push((
            Kind::Peer,
            "ab".repeat(16),
            msg(2, Direction::In, "<b>hi</b>"),
        ));
        rows.push((
            Kind::Peer,
            "ef".repeat(16),
            msg(3, Direction::In, "elsewhere"),
        ));
        // A stranger's group whose id is bob's: a thread of its own.
        rows.push((
            Kind::Group,
            "ab".repeat(16),
            msg(4, Direction::In, "not bob"),
        ));
    }
    let run = start(fake).await;
    let t = Some(run.token.as_bytes());
    let c: serde_json::Value = run.get("/api/conversations", t).await.json().await.unwrap();
    assert_eq!(
        c,
        serde_json::json!({"me": "alice", "conversations": [
            {"fingerprint": "ab".repeat(16), "name": "bob", "kind": "peer", "count": 3, "last_ts": 1_700_000_000.5},
            {"fingerprint": "cd".repeat(16), "name": "team", "kind": "group", "count": 0, "last_ts": null},
        ]})
    );
    let m: serde_json::Value = run
        .get(
            &format!("/api/messages?peer={}&after=0", "ab".repeat(16)),
            t,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        m,
        serde_json::json!({"messages": [
            {"rowid": 1, "direction": "out", "name": "alice", "text": "hi bob", "ts": 1_700_000_001.25},
            {"rowid": 2, "direction": "in", "name": "bob", "text": "<b>hi</b>", "ts": 1_700_000_002.25},
        ]})
    );
    let after: serde_json::Value = run
        .get(
            &format!("/api/messages?peer={}&after=1", "ab".repeat(16)),
            t,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(after["messages"].as_array().unwrap().len(), 1);
    assert_eq!(after["messages"][0]["rowid"], 2);
    // A stranger's group whose id is bob's (rowid 4) is a thread of its
    // own: `kind` picks it; `peer` is the default (0.3.0 knows no other).
    for (kind, rowids) in [("&kind=peer", vec![1, 2]), ("&kind=group", vec![4])] {
        let m: serde_json::Value = run
            .get(
                &format!("/api/messages?peer={}&after=0{kind}", "ab".repeat(16)),
                t,
            )
            .await
            .json()
            .await
            .unwrap();
        let got: Vec<i64> = m["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["rowid"].as_i64().unwrap())
            .collect();
        assert_eq!(got, rowids, "{kind}");
    }
    // A repeated parameter is read as its first value; an empty `after`
    // is a JSON 400 like any other bad one.
    let twice: serde_json::Value = run
        .get(
            &format!(
                "/api/messages?peer={}&peer=x&after=1&after=zz&kind=peer&kind=group",
                "ab".repeat(16)
            ),
            t,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(twice["messages"][0]["rowid"], 2, "{twice}");
    let empty = run.get("/api/messages?peer=x&after=", t).await;
    assert_eq!(empty.status(), 400);
    assert!(empty.json::<serde_json::Value>().await.unwrap()["error"].is_string());
    let bad = run.get("/api/messages?peer=x&kind=both", t).await;
    assert_eq!(bad.status(), 400);
    assert_guarded(&bad);
    let none: serde_json::Value = run.get("/api/messages", t).await.json().await.unwrap();
    assert_eq!(none, serde_json::json!({"messages": []}));

    let bad = run.get("/api/messages?peer=x&after=two", t).await;
    assert_eq!(bad.status(), 400);
    assert_guarded(&bad);
    run.stop().await;
}

#[tokio::test]
async fn an_unreadable_history_is_a_500_and_the_server_goes_on() {
    let run = start(Fake {
        fail: true,
        ..Fake::default()
    })
    .await;
    for path in ["/api/conversations", "/api/messages?peer=x&after=0"] {
        let r = run.get(path, Some(run.token.as_bytes())).await;
        assert_eq!(r.status(), 500);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body, serde_json::json!({"error": "store.db is locked"}));
    }
    run.stop().await;
}

#[tokio::test]
async fn a_taken_port_is_a_clear_error() {
    let view = WebView::bind(0, "alice", Arc::new(Fake::default()))
        .await
        .unwrap();
    let port = view.addr().port();
    match WebView::bind(port, "alice", Arc::new(Fake::default())).await {
        Err(e @ WebError::Bind { .. }) => {
            assert!(e
                .to_string()
                .starts_with(&format!("cannot listen on 127.0.0.1:{port}: ")))
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("bound a taken port"),
    }
}

#[test]
fn two_views_draw_different_tokens() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let a = WebView::bind(0, "a", Arc::new(Fake::default()))
            .await
            .unwrap();
        let b = WebView::bind(0, "a", Arc::new(Fake::default()))
            .await
            .unwrap();
        assert_ne!(a.token(), b.token());
        assert_eq!(a.token().len(), 22); // 16 bytes, URL-safe base64 unpadded
        assert!(a
            .token()
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    });
}

/// A local process holding a half-sent request (headers never finished)
/// does not keep the web view from stopping: it stops within the grace.
#[tokio::test]
async fn a_half_sent_request_does_not_hold_the_shutdown() {
    use tokio::io::AsyncWriteExt as _;
    let run = start(Fake::default()).await;
    let addr = run.base.trim_start_matches("http://").to_owned();
    let mut half = tokio::net::TcpStream::connect(&addr).await.unwrap();
    half.write_all(b"GET /api/conversations HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // And one that finished a request and keeps its connection open.
    let idle = reqwest::Client::new();
    let r = idle
        .get(format!("{}/api/conversations", run.base))
        .header(TOKEN_HEADER, run.token.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::timeout(SHUTDOWN_GRACE * 3, run.stop())
        .await
        .expect("the web view stops although a request is half sent");
    drop(half);
}
