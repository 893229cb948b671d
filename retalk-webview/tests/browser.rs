//! The page in a real headless Chromium (see `retalk_testkit::browser`),
//! over a history in memory: the token, both sides of a thread, a group
//! thread with its senders, hostile text shown literally and never run,
//! and a message saved while the page is open. The same page over the
//! real `retalk` binary and relay: retalk-cli/tests/show_web.rs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use retalk_testkit::browser::Browser;
use retalk_webview::{Conversation, Direction, History, Kind, Message, Unreadable, WebView};

const BOB: &str = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0";
const TEAM: &str = "7ea37ea37ea37ea37ea37ea37ea37ea3";
const HOSTILE: &str =
    "<img src=x onerror=\"window.pwned=1\"></script><script>window.pwned=2</script>";

/// A text that reorders itself (U+202E ... U+202C), clears a terminal
/// and hides a zero-width space and a tab; then a typed (not real) escape.
const REORDERING: &str = "pay \u{202e}0001\u{202c} now\x1b[2J\u{200b}\t! \\x1b";

/// The rows, and how long a read of bob's thread takes (ms; 0: at once).
#[derive(Default)]
struct Saved(Mutex<Vec<(&'static str, Message)>>, AtomicU64);

impl Saved {
    fn save(&self, conv: &'static str, direction: Direction, name: &str, text: &str) {
        let mut rows = self.0.lock().unwrap();
        let rowid = rows.len() as i64 + 1;
        rows.push((
            conv,
            Message {
                rowid,
                direction,
                name: name.into(),
                text: text.into(),
                ts: 1_764_460_800.5 + rowid as f64 * 60.0,
            },
        ));
    }
}

impl History for Saved {
    fn conversations(&self) -> Result<Vec<Conversation>, Unreadable> {
        let rows = self.0.lock().unwrap();
        let mut list: Vec<Conversation> = [(BOB, "bob", Kind::Peer), (TEAM, "team", Kind::Group)]
            .into_iter()
            .map(|(id, name, kind)| {
                let mine: Vec<_> = rows.iter().filter(|(c, _)| *c == id).collect();
                Conversation {
                    id: id.into(),
                    name: name.into(),
                    kind,
                    count: mine.len() as u64,
                    last_ts: mine.last().map(|(_, m)| m.ts),
                }
            })
            .collect();
        list.sort_by(|a, b| {
            b.last_ts
                .unwrap_or(0.0)
                .total_cmp(&a.last_ts.unwrap_or(0.0))
        }); // newest first
        Ok(list)
    }

    /// Rows of `id` only when `kind` is its kind: the page must say which
    /// (a group id may equal a peer's).
    fn messages(&self, kind: Kind, id: &str, after: i64) -> Result<Vec<Message>, Unreadable> {
        let kind_of = |c: &str| if c == TEAM { Kind::Group } else { Kind::Peer };
        let slow = self.1.load(Ordering::SeqCst);
        if id == BOB && slow > 0 {
            // The rows are read after the wait: what was saved meanwhile
            // comes back too.
            std::thread::sleep(Duration::from_millis(slow));
        }
        Ok(self
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|(c, m)| *c == id && kind_of(c) == kind && m.rowid > after)
            .map(|(_, m)| m.clone())
            .collect())
    }
}

/// The texts of the thread's bubbles, as `direction|who|text`.
const BUBBLES: &str = "return [...document.querySelectorAll('#thread .msg')].map(b => \
    (b.classList.contains('out') ? 'out' : 'in') + '|' + \
    (b.querySelector('.who') ? b.querySelector('.who').textContent : '') + '|' + \
    b.querySelector('.text').textContent);";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_in_a_real_browser() {
    let saved = Arc::new(Saved::default());
    saved.save(BOB, Direction::Out, "alice", "hi bob");
    saved.save(BOB, Direction::In, "bob", "hi alice\nsecond line");
    saved.save(BOB, Direction::In, "bob", HOSTILE);
    saved.save(BOB, Direction::In, "bob", REORDERING);
    saved.save(TEAM, Direction::Out, "alice", "hello team");
    saved.save(TEAM, Direction::In, "bob", "bob here");
    saved.save(TEAM, Direction::In, "~carol", "carol here");
    let view = WebView::bind(0, "alice", saved.clone()).await.unwrap();
    let (url, base) = (view.url(), format!("http://{}", view.addr()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(view.serve(async move {
        let _ = stopped.await;
    }));
    let browser = Browser::start().await;
    let b = &browser;

    // Without the token: refused, and no page.
    b.client.goto(&format!("{base}/")).await.unwrap();
    let body = b.eval("return document.body.innerText;").await;
    assert!(
        body.as_str().unwrap().contains("missing or bad token"),
        "{body}"
    );
    assert_eq!(
        b.eval("return document.getElementById('convos');").await,
        serde_json::Value::Null
    );

    // With it: the list, newest conversation first, and its thread.
    b.client.goto(&url).await.unwrap();
    b.wait_until(
        "both conversations listed",
        "return document.querySelectorAll('.convo').length === 2;",
        Duration::from_secs(10),
    )
    .await;
    let list = b
        .eval("return [...document.querySelectorAll('.convo')].map(c => c.dataset.kind + ':' + c.querySelector('.nm').textContent);")
        .await;
    assert_eq!(list, serde_json::json!(["group:teamgroup", "peer:bob"]));
    assert_eq!(
        b.eval("return document.getElementById('me').textContent;")
            .await,
        "alice"
    );

    // The group thread (selected first: newest): every sender named.
    b.wait_until(
        "the group thread",
        "return document.querySelectorAll('#thread .msg').length === 3;",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        b.eval(BUBBLES).await,
        serde_json::json!([
            "out|alice|hello team",
            "in|bob|bob here",
            "in|~carol|carol here"
        ])
    );

    // The peer thread: both sides, the hostile text literal and inert.
    b.click(&format!(".convo[data-id='{BOB}']")).await;
    b.wait_until(
        "bob's thread",
        "return document.querySelectorAll('#thread .msg').length === 4 && document.getElementById('thread').dataset.id.startsWith('b0b0');",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        b.eval(BUBBLES).await,
        serde_json::json!([
            "out||hi bob",
            "in|bob|hi alice\nsecond line",
            format!("in|bob|{HOSTILE}"),
            // Shown as the terminal shows it: escaped, not reordered.
            // A typed backslash shows doubled: `\x1b` is the real ESC.
            "in|bob|pay \\u{202e}0001\\u{202c} now\\x1b[2J\\u{200b}\\t! \\\\x1b".to_owned(),
        ])
    );
    assert_eq!(
        b.eval("return document.querySelectorAll('#thread img, #thread script').length;")
            .await,
        0
    );
    assert_eq!(b.eval("return typeof window.pwned;").await, "undefined");
    // The policy holds even for markup that did reach the page: an inline
    // script and an inline handler are both refused.
    assert_eq!(
        b.eval(
            "const s = document.createElement('script'); s.textContent = 'window.inline = 1'; \
             document.body.appendChild(s); \
             const i = document.createElement('img'); i.setAttribute('onerror', 'window.inline = 2'); \
             i.src = 'x'; document.body.appendChild(i); \
             return typeof window.inline;"
        )
        .await,
        "undefined"
    );

    // A message saved while the page is open appears by itself.
    saved.save(BOB, Direction::In, "bob", "arrived while you watched");
    b.wait_until(
        "the new message",
        "return [...document.querySelectorAll('#thread .msg .text')].some(t => t.textContent === 'arrived while you watched');",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        b.eval("return document.querySelectorAll('#thread .msg').length;")
            .await,
        5
    );
    assert_eq!(b.eval("return typeof window.pwned;").await, "undefined");

    let shot = b
        .screenshot(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("webview-fake-history.png"))
        .await;
    println!("screenshot: {}", shot.display());

    // A poll answer for an earlier selection is dropped: with bob's reads
    // taking 1.5 s, one is under way (and will bring a new row) when the
    // user opens the team and comes back to bob. Appended to the new
    // thread, it would move its last row past bob's first five, which
    // would then never show.
    saved.1.store(1500, Ordering::SeqCst);
    saved.save(BOB, Direction::In, "bob", "during a slow read");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    b.click(&format!(".convo[data-id='{TEAM}']")).await;
    b.click(&format!(".convo[data-id='{BOB}']")).await;
    b.wait_until(
        "bob's whole thread again",
        "return document.querySelectorAll('#thread .msg').length === 6;",
        Duration::from_secs(10),
    )
    .await;
    saved.1.store(0, Ordering::SeqCst);
    let texts = b
        .eval(
            "return [...document.querySelectorAll('#thread .msg .text')].map(t => t.textContent);",
        )
        .await;
    assert_eq!(texts[0], "hi bob", "{texts}");
    assert_eq!(texts[5], "during a slow read", "{texts}");
    // The server stops: the page says so in words (not "Failed to fetch").
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    b.wait_until(
        "the stopped status",
        "return document.getElementById('status').textContent === 'the retalk show --web server stopped';",
        Duration::from_secs(10),
    )
    .await;
    browser.close().await;
}
