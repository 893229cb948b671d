use super::*;

const BOB: &str = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0";
const CAROL: &str = "c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0";
const ME: &str = "a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0";
/// 2025-11-30 09:05 UTC.
const T: f64 = 1_764_493_500.0;

fn id(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

fn entry(
    rowid: i64,
    direction: Direction,
    from: &str,
    from_name: &str,
    text: &str,
    at: f64,
) -> HistoryEntry {
    HistoryEntry {
        rowid,
        id: format!("m{rowid}"),
        from: id(from),
        from_name: from_name.into(),
        name: from_name.into(),
        direction,
        text: text.into(),
        at,
        conversation: Conversation::Peer(id(BOB)),
    }
}

fn chat(width: usize, tty: bool) -> Chat {
    let saved = HashMap::from([(id(BOB), "bob".to_owned())]);
    Chat::new("alice", "bob", BOB, width, tty, Clock::Utc, saved)
}

#[test]
fn the_030_layout_both_sides_and_day_lines() {
    let mut c = chat(80, false);
    let header = c.header();
    let lines: Vec<&str> = header.lines().collect();
    // ` 💬 alice ⇄ bob ` is 16 columns: (80 - 16) / 2 = 32 dashes a side.
    assert_eq!(
        lines[0],
        format!("{} 💬 alice ⇄ bob {}", "─".repeat(32), "─".repeat(32))
    );
    assert_eq!(
        lines[1],
        format!("{}{BOB}{}", " ".repeat(24), " ".repeat(24))
    );
    let text = c.entries(&[
        entry(1, Direction::Out, ME, "alice", "hi bob", T),
        entry(2, Direction::In, BOB, "bobby", "hi alice", T + 60.0),
        entry(3, Direction::In, BOB, "bobby", "next day", T + 86_400.0),
    ]);
    // 19 columns (the emoji takes two): 30 spaces left, 31 right.
    let day = |d: &str| format!("{}·· 📅 {d} ··{}", " ".repeat(30), " ".repeat(31));
    let expected = [
        String::new(),
        day("2025-11-30"),
        String::new(),
        format!(
            "{}09:05 · alice 🟢",
            " ".repeat(80 - "09:05 · alice 🟢".width())
        ),
        format!("{}hi bob", " ".repeat(74)),
        String::new(),
        "🔵 bob · 09:06".to_owned(),
        "   hi alice".to_owned(),
        String::new(),
        day("2025-12-01"),
        String::new(),
        "🔵 bob · 09:05".to_owned(),
        "   next day".to_owned(),
    ];
    assert_eq!(text.lines().collect::<Vec<_>>(), expected);
    assert_eq!(c.rowid, 3);
    // Rows already shown are not shown again; a new one is, with no new
    // day line on the same day.
    let more = c.entries(&[
        entry(3, Direction::In, BOB, "bobby", "next day", T + 86_400.0),
        entry(4, Direction::Out, ME, "alice", "ok", T + 86_460.0),
    ]);
    assert_eq!(more.lines().count(), 3, "{more}");
    assert!(more.ends_with("ok\n"));
    assert!(c.nothing_saved().contains("(no saved messages"));
}

#[test]
fn sender_text_cannot_forge_lines_or_reach_the_terminal_as_control_characters() {
    let mut c = chat(80, true);
    let hostile = "fine\n\u{1b}[2J\u{1b}[1;1H🔵 carol · 09:00\r\n                                                          09:06 · alice 🟢\u{202e}evil\u{7}";
    let text = c.entries(&[entry(1, Direction::In, BOB, "bob", hostile, T)]);
    // Our own SGR codes are the only escapes; the sender's are shown.
    let ours = text.matches("\u{1b}[").count();
    assert_eq!(ours, text.matches("\u{1b}[0m").count() * 2, "{text:?}");
    assert!(text.contains("\\x1b[2J\\x1b[1;1H🔵 carol · 09:00\\r"));
    assert!(text.contains("\\u{202e}evil\\x07"));
    assert!(!text.contains('\r') && !text.contains('\u{7}') && !text.contains('\u{202e}'));
    // Every line of the text starts three columns in, with no space after.
    let body: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("🔵"))
        .skip(1)
        .collect();
    assert_eq!(body.len(), 3, "{body:?}");
    for line in &body {
        assert!(
            line.starts_with("   ") && !line[3..].starts_with(' '),
            "{line:?}"
        );
    }
    assert_eq!(body[2], "   09:06 · alice 🟢\\u{202e}evil\\x07");
}

#[test]
fn long_texts_wrap_at_the_bubble_width() {
    for (width, bubble) in [(80, 56), (60, 44), (30, 24), (100, 56)] {
        let mut c = chat(width, false);
        let text = c.entries(&[
            entry(1, Direction::In, BOB, "bob", &"word ".repeat(40), T),
            entry(2, Direction::Out, ME, "alice", &"x".repeat(130), T),
        ]);
        let body: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("word") || l.contains("xx"))
            .collect();
        for line in &body {
            let content = line.trim();
            assert!(content.width() <= bubble, "{width}: {line:?}");
            assert!(line.width() <= width, "{width}: {line:?}");
        }
        // Ours end at the right edge.
        assert!(body
            .iter()
            .filter(|l| l.contains("xx"))
            .all(|l| l.width() == width));
    }
}

#[test]
fn a_group_names_each_sender_as_receive_does() {
    let mut c = Chat::new(
        "alice",
        "team",
        "group · 7ea3",
        80,
        false,
        Clock::Utc,
        HashMap::from([(id(BOB), "bob".to_owned())]),
    );
    c.group = true;
    let text = c.entries(&[
        entry(1, Direction::In, BOB, "bob-claims", "a", T),
        entry(2, Direction::In, CAROL, "carol\u{1b}[31m", "b", T),
        entry(3, Direction::In, ME.replace('a', "d").as_str(), "", "c", T),
        entry(4, Direction::In, BOB, "x", "d", T),
        entry(5, Direction::Out, ME, "alice", "e", T),
    ]);
    let heads: Vec<&str> = text.lines().filter(|l| l.contains("09:05")).collect();
    assert_eq!(
        heads,
        [
            "🔵 bob · 09:05",
            "🟣 ~carol\\x1b[31m · 09:05",
            "🟡 d0d0d0d0d0d0… · 09:05",
            "🔵 bob · 09:05",
            &format!(
                "{}09:05 · alice 🟢",
                " ".repeat(80 - "09:05 · alice 🟢".width())
            ),
        ]
    );
}

#[test]
fn center_is_pythons() {
    assert_eq!(center("ab", 5), "  ab ");
    assert_eq!(center("abc", 6), " abc  ");
    assert_eq!(center("abcdef", 4), "abcdef");
}
