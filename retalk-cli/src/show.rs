//! `retalk show`: a saved conversation rendered as a chat in the terminal
//! (0.3.0 `cli.py` `cmd_show`), live with `--follow`, or every saved
//! conversation as a local web page with `--web` (the `retalk_webview`
//! crate; 0.3.0 `cli.py` `_show_web`, `webview.py`).
//!
//! Both read only the saved history (`send --save`, `receive --save`,
//! `RETALK_SAVE_MESSAGE`): a plain `show` and `show --web` never contact
//! the relay; `show --follow` receives from the conversation's peers,
//! saves what arrives and renders every new saved row, another process's
//! included.
//!
//! What a sender writes cannot reach the terminal as a control character
//! or pass for another line: names and texts go through
//! [`display::escape`] (the rule of `receive`'s human output), a sender's
//! self-chosen name is marked `~` as there, and a received text's lines
//! start three columns in with no leading space, so they can pass neither
//! for a header (column 0) nor for one of ours (right-aligned).
//!
//! Differences from 0.3.0, on purpose: a text's own line breaks are kept
//! (0.3.0's `textwrap.wrap` joins them into one paragraph; each line is
//! wrapped as it wraps one, greedily, to the same bubble width); padding
//! counts display columns (an emoji takes two; 0.3.0 counts characters);
//! a peer's thread holds only the two of you (0.3.0's `peer_fp = ?` also
//! showed that peer's group messages); a group's line counts every member,
//! us included (0.3.0 counted its roster as stored, which lists itself
//! only in rosters adopted from a copy).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Arc;

use chrono::{DateTime, Local, TimeZone, Utc};
use clap::Args;
use retalk_proto::client::{self, Conversation, Direction, History, HistoryEntry};
use retalk_proto::UserId;
use retalk_store_sqlite::SqliteStore;
use unicode_width::UnicodeWidthStr;

use crate::args::Selection;
use crate::display;
use crate::error::CliError;

/// `retalk show`'s arguments (0.3.0 `cli.py` `show` subparser).
#[derive(Args, Debug)]
pub struct ShowArgs {
    /// The identity to read: a name under $RETALK_HOME, as -u NAME. Leave it
    /// out when -u NAME, --dir DIR or -s DIR gives the identity (the one
    /// positional is then the PEER), or when RETALK_USER does (a lone
    /// positional is then the PEER, except with --web or --group)
    // Its own id: under the id "user" clap filled the global -u with it.
    #[arg(id = "show_user", value_name = "USER")]
    pub user: Option<String>,
    /// The peer whose conversation to show: a saved name or a user id
    #[arg(value_name = "PEER")]
    pub peer: Option<String>,
    /// Show a group's conversation (its name or id) instead of a peer's
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,
    /// Keep going: receive from the conversation's peers (saving what
    /// arrives, like `receive --save`) and show each new saved message,
    /// another terminal's included, until Ctrl-C
    #[arg(long)]
    pub follow: bool,
    /// Serve every saved conversation as a web page on 127.0.0.1 (it
    /// prints the address to open, with its access token, on stderr; a
    /// new token each run). Contacts with no saved messages are listed
    /// too, with a count of 0. It never
    /// contacts the relay; messages saved meanwhile appear by themselves
    #[arg(long)]
    pub web: bool,
    /// (with --web) The port to listen on (default 8765, as Python 0.3.0);
    /// 0 picks a free one (when 8765 is taken)
    #[arg(long, value_name = "N", requires = "web")]
    pub port: Option<u16>,
}

/// `retalk show`.
pub async fn run(sel: &Selection, args: ShowArgs) -> Result<(), CliError> {
    let needs_peer = !args.web && args.group.is_none();
    let (sel, peer) = select(sel, args.user, args.peer, needs_peer)?;
    if args.web {
        if args.group.is_some() || peer.is_some() {
            return Err(CliError::Usage(
                "--web lists every conversation; give it alone (no PEER or --group)".into(),
            ));
        }
        if args.follow {
            return Err(CliError::Usage(
                "--web updates by itself; --follow is for the terminal view".into(),
            ));
        }
        return web(&sel, args.port.unwrap_or(retalk_webview::DEFAULT_PORT)).await;
    }
    let what = match (peer, args.group) {
        (Some(_), Some(_)) => return Err(CliError::Usage("give PEER or --group, not both".into())),
        (None, None) => {
            return Err(CliError::Usage(
                "show needs a conversation: a PEER, --group NAME, or --web".into(),
            ))
        }
        (Some(p), None) => Wanted::Peer(p),
        (None, Some(g)) => Wanted::Group(g),
    };
    terminal(&sel, what, args.follow).await
}

/// The identity selection and the peer. `show USER [PEER]` selects USER as
/// `-u USER` would (0.3.0 `cmd_show`); when the identity is given otherwise
/// (`-u NAME`, `--dir DIR`, `-s DIR`) the one positional is the PEER; with
/// only `RETALK_USER` set, a lone positional is the PEER unless `--web` or
/// `--group` is given (`show alice --web` still names the identity).
fn select(
    sel: &Selection,
    user: Option<String>,
    peer: Option<String>,
    needs_peer: bool,
) -> Result<(Selection, Option<String>), CliError> {
    let mut sel = sel.clone();
    let given = if sel.dir_030.is_some() {
        Some("--dir DIR")
    } else if sel.dir.is_some() {
        Some("-s/--store DIR")
    } else if sel.user.is_some() {
        Some("-u NAME")
    } else if sel.user_level.is_some() {
        Some("--user-level NAME")
    } else {
        None
    };
    if let Some(given) = given {
        if peer.is_some() {
            return Err(CliError::Usage(format!(
                "the identity is given by {given}: give just the PEER, e.g. retalk show PEER {given}"
            )));
        }
        return Ok((sel, user));
    }
    let env_user = crate::identity::env_text("RETALK_USER")?.is_some();
    match user {
        Some(one) if peer.is_none() && needs_peer && env_user => Ok((sel, Some(one))),
        Some(user) => {
            sel.user = Some(user);
            Ok((sel, peer))
        }
        None if env_user => Ok((sel, None)),
        None => Err(CliError::Usage(
            "show needs an identity: a USER positional, -u NAME, --dir DIR or RETALK_USER".into(),
        )),
    }
}

/// The selected identity's store and the secret that opens it, without
/// its relay, and the name our side is shown under.
struct Opened {
    store: SqliteStore,
    secret: String,
    /// Our display name, else the USER given, else "me" (0.3.0 `cmd_show`).
    me: String,
}

impl Opened {
    fn open(sel: &Selection) -> Result<Opened, CliError> {
        let (store, secret) = crate::history::open_reader(sel)?;
        let name = History::open(&store, &secret)?.my_name().to_owned();
        let me = match (name.is_empty(), &sel.user) {
            (false, _) => name,
            (true, Some(user)) if !user.is_empty() => user.clone(),
            (true, _) => "me".to_owned(),
        };
        Ok(Opened { store, secret, me })
    }

    /// The history, naming peers from the contacts this identity sees
    /// (the owner-wide list overlaid with its own).
    fn history(&self) -> Result<History<'_, SqliteStore>, CliError> {
        Ok(History::open(&self.store, &self.secret)?
            .with_contacts(crate::book::effective(&self.store)?))
    }

    /// The saved rows of `conversation` after row `after`, oldest first.
    /// A peer's conversation is the two of you only: the library's peer
    /// filter (0.3.0's `peer_fp = ?`) also matches that peer's group
    /// messages, which belong to their group's thread.
    fn entries(
        &self,
        conversation: &Conversation,
        after: i64,
    ) -> Result<Vec<HistoryEntry>, CliError> {
        let mut rows = self.history()?.entries(Some(conversation), after)?;
        rows.retain(|e| e.conversation.is(conversation));
        Ok(rows)
    }
}

/// The name a sender is shown under: the saved name, else the name they
/// chose marked `~` (as `receive` shows it), else the start of their id;
/// escaped.
fn sender_label(saved: &HashMap<UserId, String>, from: &UserId, claimed: &str) -> String {
    display::escape(&match saved.get(from) {
        Some(name) => name.clone(),
        None if claimed.starts_with('~') => claimed.to_owned(),
        None if !claimed.is_empty() => format!("~{claimed}"),
        None => short(from.as_str()),
    })
}

/// The start of an id, as 0.3.0 shortens one (`fp[:12] + "…"`).
fn short(id: &str) -> String {
    format!("{}…", id.get(..12).unwrap_or(id))
}

/// Saved names by id, of the contacts this identity sees (a contact
/// saved under its own id has no name).
fn saved_names(store: &SqliteStore) -> Result<HashMap<UserId, String>, CliError> {
    Ok(crate::book::effective(store)?
        .into_iter()
        .filter(|c| c.name != c.id.as_str())
        .map(|c| (c.id, c.name))
        .collect())
}

// ---------------------------------------------------------------- web ----

/// `show --web`: serves until Ctrl-C or SIGTERM.
async fn web(sel: &Selection, port: u16) -> Result<(), CliError> {
    let opened = Opened::open(sel)?;
    let me = display::escape(&opened.me);
    let view = retalk_webview::WebView::bind(port, me.clone(), Arc::new(opened)).await?;
    say!("retalk web view for {me} — open:\n  {}", view.url());
    say!("127.0.0.1 only; the token in the URL is required. ctrl-c to stop.");
    // The first Ctrl-C (or SIGTERM) stops it, giving requests under way
    // a moment (retalk_webview::SHUTDOWN_GRACE); a second ends it at once.
    let (first, firsts) = tokio::sync::oneshot::channel::<()>();
    let stop = async move {
        crate::receive::interrupted().await;
        let _ = first.send(());
    };
    let second = async move {
        if firsts.await.is_ok() {
            crate::receive::interrupted().await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        served = view.serve(stop) => served?,
        () = second => {}
    }
    Ok(())
}

impl retalk_webview::History for Opened {
    fn conversations(
        &self,
    ) -> Result<Vec<retalk_webview::Conversation>, retalk_webview::Unreadable> {
        let read = || -> Result<_, CliError> {
            Ok(self
                .history()?
                .conversations()?
                .into_iter()
                .map(|c| retalk_webview::Conversation {
                    id: c.conversation.key().to_owned(),
                    // A saved name, a group's name, else the start of the id.
                    name: display::escape(&c.name),
                    kind: match c.conversation {
                        Conversation::Peer(_) => retalk_webview::Kind::Peer,
                        Conversation::Group { .. } => retalk_webview::Kind::Group,
                    },
                    count: c.count as u64,
                    last_ts: c.last_at,
                })
                .collect())
        };
        read().map_err(|e| retalk_webview::Unreadable(e.to_string()))
    }

    fn messages(
        &self,
        kind: retalk_webview::Kind,
        id: &str,
        after: i64,
    ) -> Result<Vec<retalk_webview::Message>, retalk_webview::Unreadable> {
        let read = || -> Result<_, CliError> {
            let saved = saved_names(&self.store)?;
            let me = display::escape(&self.me);
            // Only this conversation's rows are read and unsealed (by kind
            // and id: an id alone does not say whether it is a peer's or a
            // group's).
            let conversation = match kind {
                retalk_webview::Kind::Peer => match UserId::parse(id) {
                    Ok(p) => Conversation::Peer(p),
                    Err(_) => return Ok(Vec::new()),
                },
                retalk_webview::Kind::Group => Conversation::Group {
                    id: id.to_owned(),
                    name: String::new(),
                },
            };
            Ok(self
                .entries(&conversation, after)?
                .into_iter()
                .map(|e| retalk_webview::Message {
                    rowid: e.rowid,
                    direction: match e.direction {
                        Direction::In => retalk_webview::Direction::In,
                        Direction::Out => retalk_webview::Direction::Out,
                    },
                    name: match e.direction {
                        Direction::Out => me.clone(),
                        Direction::In => sender_label(&saved, &e.from, &e.from_name),
                    },
                    text: e.text,
                    ts: e.at,
                })
                .collect())
        };
        read().map_err(|e| retalk_webview::Unreadable(e.to_string()))
    }
}

// ----------------------------------------------------------- terminal ----

/// What `show` was asked to render.
enum Wanted {
    Peer(String),
    Group(String),
}

async fn terminal(sel: &Selection, what: Wanted, follow: bool) -> Result<(), CliError> {
    let opened = Opened::open(sel)?;
    let saved = saved_names(&opened.store)?;
    let (conversation, other, sub, peers) = match &what {
        Wanted::Peer(p) => {
            let id = crate::book::peer_to_id(&crate::book::effective(&opened.store)?, p).map_err(
                |e| match client::find_group(&opened.store, p) {
                    // A group's name (or id) where a peer was expected.
                    Ok(g) => CliError::Usage(format!(
                        "{} is a group, not a contact: show its conversation with --group {}",
                        display::escape(p),
                        display::escape(&g.name)
                    )),
                    Err(_) => e,
                },
            )?;
            let other = match saved.get(&id) {
                Some(name) => name.clone(),
                None if UserId::parse(p).is_err() => p.clone(),
                None => short(id.as_str()),
            };
            (
                Conversation::Peer(id.clone()),
                other,
                id.to_string(),
                vec![id],
            )
        }
        Wanted::Group(g) => find_group(&opened, g)?,
    };
    let tty = std::io::stdout().is_terminal();
    let width = draw_width();
    let mut chat = Chat::new(&opened.me, &other, &sub, width, tty, Clock::Local, saved);
    chat.group = matches!(conversation, Conversation::Group { .. });
    emit(&chat.header())?;
    let entries = opened.entries(&conversation, 0)?;
    emit(&chat.entries(&entries))?;
    if !follow {
        if entries.is_empty() {
            emit(&chat.nothing_saved())?;
        }
        return Ok(());
    }
    follow_saving(sel, &peers, width, || {
        let entries = opened.entries(&conversation, chat.rowid)?;
        emit(&chat.entries(&entries))
    })
    .await
}

/// The columns `show` draws in: `COLUMNS` when it is a positive number
/// (piped output too), else the terminal's width, else 80; at most 100.
/// 0.3.0 `cli.py`:1622, `min(shutil.get_terminal_size((80, 24)).columns,
/// 100)`.
fn draw_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&c| c > 0)
        .or_else(|| terminal_size::terminal_size().map(|(w, _)| usize::from(w.0)))
        .unwrap_or(80)
        .min(100)
}

/// Writes rendered lines (each ending in a newline) to stdout, as
/// [`crate::print_stdout`] writes a line.
fn emit(lines: &str) -> Result<(), CliError> {
    match lines.strip_suffix('\n') {
        Some(lines) => crate::print_stdout(lines),
        None if lines.is_empty() => Ok(()),
        None => crate::print_stdout(lines),
    }
}

/// `show --follow`'s loop (0.3.0 `cmd_show`): every 2 s, receives from
/// `peers` (a group's members in one fetch, so their messages keep the
/// relay's order across members; only `peers`' messages are taken, the
/// rest of the inbox stays for `receive`) and saves what arrives as
/// `receive --save` does; key upkeep every 60 s without resending, until
/// Ctrl-C or SIGTERM, which ends it at once, relay call under way or not.
/// `render` (which shows every new saved row, another process's included)
/// runs every second on its own, so rows saved elsewhere show while the
/// relay is slow or hangs. A relay that cannot be reached is said once,
/// and again once it answers.
async fn follow_saving(
    sel: &Selection,
    peers: &[UserId],
    width: usize,
    mut render: impl FnMut() -> Result<(), CliError>,
) -> Result<(), CliError> {
    let (agent, _) = crate::open_agent(sel, false)?;
    // Kept as `receive --save` keeps them: messages in the history (this
    // is what --follow is for), cards staged for `import --inbox`.
    let keep = crate::receive::Keep {
        messages: true,
        contacts: true,
    };
    say!(
        "\n{}",
        center("· listening for new messages — ctrl-c to stop ·", width)
    );
    let mut stop = std::pin::pin!(crate::receive::interrupted());
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Runs `work` while rendering every tick; None: interrupted first.
    macro_rules! rendering {
        ($work:expr) => {{
            let mut work = std::pin::pin!($work);
            loop {
                tokio::select! {
                    _ = &mut stop => break None,
                    done = &mut work => break Some(done),
                    _ = tick.tick() => render()?,
                }
            }
        }};
    }
    let mut last_sync = std::time::Instant::now();
    // The kind of relay error last said, by exit status (1: unreachable,
    // 2: refused); None: the relay answered last time.
    let mut failing: Option<u8> = None;
    loop {
        // A group's members in one fetch: the inbox then holds their mail
        // in the relay's arrival order, which the take below keeps (one
        // fetch per member would save each member's messages as a block).
        // Others' mail waits, decrypted, in the local inbox for `receive`.
        let fetched = rendering!(async {
            match peers {
                [peer] => agent.fetch_from(peer).await,
                _ => agent.fetch().await,
            }
        });
        match fetched {
            None => return Ok(()),
            Some(Ok(inbox)) => {
                if failing.take().is_some() {
                    say!("retalk: relay reachable again");
                }
                crate::receive::report(&inbox);
            }
            Some(Err(e)) => {
                // Said once, not every 2 s; another kind of failure is said.
                let e = CliError::from(e);
                if failing != Some(e.exit_code()) {
                    say!("retalk: {e} (retrying every 2 s; said again once it answers)");
                    failing = Some(e.exit_code());
                }
            }
        }
        agent.take_messages_from(Some(peers), usize::MAX, |m| {
            crate::receive::kept(&agent, m, keep).map(drop)
        })?;
        render()?;
        if failing.is_none() && last_sync.elapsed().as_secs() >= 60 {
            match rendering!(agent.sync(false)) {
                None => return Ok(()),
                Some(Err(e)) => say!("retalk: key maintenance failed: {e} (will retry)"),
                Some(Ok(_)) => {}
            }
            last_sync = std::time::Instant::now();
        }
        if rendering!(tokio::time::sleep(std::time::Duration::from_secs(2))).is_none() {
            return Ok(());
        }
    }
}

/// A group held by this identity, by its name or id (`client::find_group`):
/// its conversation, its name, the line under the title (0.3.0: `N
/// member(s) · GID`), and the other members (whose mail `--follow` reads).
fn find_group(
    opened: &Opened,
    reference: &str,
) -> Result<(Conversation, String, String, Vec<UserId>), CliError> {
    let g = client::find_group(&opened.store, reference)?;
    let me = opened.history()?.me().clone();
    let sub = format!("{} member(s) · {}", g.members.len(), g.id.as_str());
    let others = g.members.into_iter().filter(|m| *m != me).collect();
    let conversation = Conversation::Group {
        id: g.id.as_str().to_owned(),
        name: g.name.clone(),
    };
    Ok((conversation, g.name, sub, others))
}

/// How times are shown: local time (the command; `TZ` applies) or UTC
/// (unit tests, which may not set `TZ`).
#[derive(Clone, Copy)]
pub enum Clock {
    Local,
    #[cfg(test)]
    Utc,
}

impl Clock {
    /// `(YYYY-MM-DD, HH:MM)` of Unix time `at`.
    fn day_and_time(self, at: f64) -> (String, String) {
        fn fmt<Tz: TimeZone>(t: DateTime<Tz>) -> (String, String)
        where
            Tz::Offset: std::fmt::Display,
        {
            (
                t.format("%Y-%m-%d").to_string(),
                t.format("%H:%M").to_string(),
            )
        }
        let utc = DateTime::<Utc>::from_timestamp(at as i64, 0).unwrap_or_default();
        match self {
            Clock::Local => fmt(utc.with_timezone(&Local)),
            #[cfg(test)]
            Clock::Utc => fmt(utc),
        }
    }
}

/// Per-sender marker and colour in a group, by first appearance (0.3.0's
/// palette).
const PALETTE: [(&str, &str); 6] = [
    ("🔵", "1;33"),
    ("🟣", "1;35"),
    ("🟡", "1;32"),
    ("🟠", "1;34"),
    ("🔴", "1;31"),
    ("🟤", "1;36"),
];

/// The terminal chat of one conversation: 0.3.0's layout (the peer's
/// messages on the left, ours right-aligned, a line per new day), colours
/// only on a terminal.
pub struct Chat {
    me: String,
    other: String,
    sub: String,
    width: usize,
    bubble: usize,
    tty: bool,
    clock: Clock,
    saved: HashMap<UserId, String>,
    /// A group's conversation: each sender named, with a look of its own.
    pub group: bool,
    looks: HashMap<UserId, usize>,
    /// The last row shown: a follow asks for rows after it.
    pub rowid: i64,
    day: Option<String>,
}

impl Chat {
    /// `me`, `other`: names as shown (escaped here); `width`: the
    /// terminal's columns (0.3.0 caps them at 100).
    pub fn new(
        me: &str,
        other: &str,
        sub: &str,
        width: usize,
        tty: bool,
        clock: Clock,
        saved: HashMap<UserId, String>,
    ) -> Chat {
        Chat {
            me: display::escape(me),
            other: display::escape(other),
            sub: display::escape(sub),
            width,
            // 0.3.0: max(24, min(56, width - 16))
            bubble: width.saturating_sub(16).clamp(24, 56),
            tty,
            clock,
            saved,
            group: false,
            looks: HashMap::new(),
            rowid: 0,
            day: None,
        }
    }

    /// `text` in SGR style `code` on a terminal, plain otherwise.
    fn st(&self, text: &str, code: &str) -> String {
        if self.tty {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    /// The title rule and the line under it (the peer's id, or the
    /// group's size and id).
    pub fn header(&self) -> String {
        let bare = format!(" 💬 {} ⇄ {} ", self.me, self.other);
        // 0.3.0: max(2, (width - len(bare) - 1) // 2), its -1 for the
        // emoji's second column, which display width already counts.
        let side = (self.width.saturating_sub(bare.width()) / 2).max(2);
        let rule = self.st(&"─".repeat(side), "2");
        format!(
            "{rule} 💬 {} ⇄ {} {rule}\n{}\n",
            self.st(&self.me, "1;36"),
            self.st(&self.other, "1;33"),
            self.st(&center(&self.sub, self.width), "2"),
        )
    }

    /// 0.3.0's note for a conversation with nothing saved.
    pub fn nothing_saved(&self) -> String {
        format!(
            "{}\n",
            self.st(
                "\n(no saved messages — save them with `--save` on send/receive, or RETALK_SAVE_MESSAGE=1)",
                "2"
            )
        )
    }

    /// The lines of `entries` (oldest first) not shown yet.
    pub fn entries(&mut self, entries: &[HistoryEntry]) -> String {
        let mut out = String::new();
        let shown = self.rowid;
        for e in entries.iter().filter(|e| e.rowid > shown) {
            self.rowid = e.rowid;
            let (day, hhmm) = self.clock.day_and_time(e.at);
            if self.day.as_deref() != Some(&day) {
                out.push('\n');
                out.push_str(&self.st(&center(&format!("·· 📅 {day} ··"), self.width), "2"));
                out.push('\n');
                self.day = Some(day);
            }
            out.push('\n');
            let lines = self.wrap(&e.text);
            match e.direction {
                Direction::Out => {
                    // Ends in the last column, as the text lines under it.
                    let head = format!("{hhmm} · {} 🟢", self.me);
                    let pad = self.width.saturating_sub(head.width());
                    out.push_str(&" ".repeat(pad));
                    out.push_str(&self.st(&hhmm, "2;3"));
                    out.push_str(&self.st(" · ", "2"));
                    out.push_str(&self.st(&self.me, "1;36"));
                    out.push_str(" 🟢\n");
                    for line in lines {
                        out.push_str(&" ".repeat(self.width.saturating_sub(line.width())));
                        out.push_str(&self.st(&line, "36"));
                        out.push('\n');
                    }
                }
                Direction::In => {
                    let (mark, colour, who) = if self.group {
                        let next = self.looks.len();
                        let look = *self.looks.entry(e.from.clone()).or_insert(next);
                        let (mark, colour) = PALETTE[look % PALETTE.len()];
                        (
                            mark,
                            colour,
                            sender_label(&self.saved, &e.from, &e.from_name),
                        )
                    } else {
                        ("🔵", "1;33", self.other.clone())
                    };
                    out.push_str(&format!(
                        "{mark} {}{}{}\n",
                        self.st(&who, colour),
                        self.st(" · ", "2"),
                        self.st(&hhmm, "2;3")
                    ));
                    for line in lines {
                        out.push_str("   ");
                        out.push_str(&line);
                        out.push('\n');
                    }
                }
            }
        }
        out
    }

    /// A text as bubble lines: each of its lines escaped, then wrapped to
    /// the bubble's width with no leading or trailing spaces (0.3.0's
    /// `textwrap.wrap`, which also drops them); an empty text is one
    /// empty line.
    fn wrap(&self, text: &str) -> Vec<String> {
        let mut lines = Vec::new();
        for line in text.split('\n') {
            let escaped = display::escape(line);
            // Greedy, as Python's textwrap (the crate's default is optimal fit).
            let options = textwrap::Options::new(self.bubble)
                .break_words(true)
                .wrap_algorithm(textwrap::WrapAlgorithm::FirstFit);
            lines.extend(
                textwrap::wrap(escaped.trim(), options)
                    .into_iter()
                    .map(|l| l.trim().to_owned()),
            );
        }
        if lines.is_empty() {
            lines.push(String::new());
        }
        lines
    }
}

/// `text` centred in `width` columns, as Python's `str.center` does it
/// (the odd space goes right unless both widths are odd).
fn center(text: &str, width: usize) -> String {
    let len = text.width();
    if len >= width {
        return text.to_owned();
    }
    let margin = width - len;
    let left = margin / 2 + (margin & width & 1);
    format!("{}{text}{}", " ".repeat(left), " ".repeat(margin - left))
}

#[cfg(test)]
mod tests;
