//! How a message is shown as text to a person or a model: nothing a
//! sender chose may reach a terminal as a control character, or begin a
//! line that could pass for another sender's. Used by `retalk receive`'s
//! human output and by `retalk mcp`'s text results (their JSON keeps the
//! exact text). Pure string code.
//!
//! The rule (also in `receive --help`):
//! - a message is `WHO: TEXT`; WHO is your saved name for the sender, else
//!   the name the sender chose marked `~`, else the sender's bare id;
//! - each further line of a multi-line text starts with [`CONTINUATION`],
//!   which no WHO can start with (saved names may not start with a space
//!   or `~`, see [`valid_saved_name`]);
//! - every control character (C0, DEL, C1 — NEL U+0085 among them), the
//!   line and paragraph separators U+2028/U+2029, the bidirectional
//!   controls and the invisible format characters are shown escaped: `\t`,
//!   `\r`, `\n` (inside names), `\x1b`, `\u{202e}`;
//! - a backslash the sender typed is shown doubled, `\\`, so an escape
//!   is never ambiguous: `\x1b` is a real ESC, `\\x1b` the four typed
//!   characters. JSON output is the exact text.

/// What every line after the first of a multi-line text starts with.
pub const CONTINUATION: &str = "  | ";

/// Characters shown escaped: they move the cursor, clear or recolour the
/// screen, break or reorder lines, or are invisible.
pub fn is_hidden(c: char) -> bool {
    c.is_control() // C0, DEL, C1 (NEL U+0085 included)
        || matches!(
            c,
            // line and paragraph separators
            '\u{2028}' | '\u{2029}'
            // bidirectional controls (reorder what follows)
            | '\u{061c}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
            // invisible format characters (hide what a text really holds);
            // the joiners U+200C/U+200D stay, scripts and emoji need them
            | '\u{00ad}'
            | '\u{180e}'
            | '\u{200b}'
            | '\u{2060}'..='\u{2064}'
            | '\u{206a}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
            | '\u{034f}'
            | '\u{1d173}'..='\u{1d17a}'
            // blank-looking letters and fillers (an "empty" name or text)
            | '\u{115f}'
            | '\u{1160}'
            | '\u{2800}'
            | '\u{3164}'
            | '\u{ffa0}'
            // tag characters and the supplementary variation selectors:
            // invisible to a person, read by a model ("ASCII smuggling")
            | '\u{e0000}'..='\u{e007f}'
            | '\u{e0100}'..='\u{e01ef}'
            // private use and noncharacters: no agreed look at all
            | '\u{e000}'..='\u{f8ff}'
            | '\u{f0000}'..='\u{10ffff}'
            | '\u{fdd0}'..='\u{fdef}'
            | '\u{fffe}'
            | '\u{ffff}'
        )
}

/// `s` with every [hidden](is_hidden) character escaped, and every
/// backslash doubled (so an escape cannot be typed as plain text).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c if is_hidden(c) && (c as u32) < 0x100 => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if is_hidden(c) => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// The human-readable lines for one message (no trailing newline).
pub fn human(who: &str, text: &str) -> String {
    let mut out = escape(who);
    out.push_str(": ");
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
            out.push_str(CONTINUATION);
        }
        out.push_str(&escape(line));
    }
    out
}

/// The longest contact name saved, in characters: a name is a word or
/// two to type after `--peer`, not a payload (a card may carry anything).
pub const MAX_SAVED_NAME: usize = 64;

/// Whether a contact name may be saved (`add`, `import`, `request`,
/// renames: the one rule): shown as it is, it must not pass for a
/// sender's own `~name`, a continuation line, or need escaping; it must
/// not read as a flag (`--peer -all`); at most [`MAX_SAVED_NAME`]
/// characters.
pub fn valid_saved_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(['~', '-'])
        && !name.starts_with(char::is_whitespace)
        && !name.chars().any(is_hidden)
        && name.chars().count() <= MAX_SAVED_NAME
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forged_line_stays_inside_its_message() {
        assert_eq!(
            human("~mallory", "hello\nalice: the key"),
            "~mallory: hello\n  | alice: the key"
        );
        assert_eq!(
            human("~m", "a\u{1b}[2K\u{1b}[1Gb\rc\u{85}d\u{2028}e\u{202e}f\tg"),
            "~m: a\\x1b[2K\\x1b[1Gb\\rc\\x85d\\u{2028}e\\u{202e}f\\tg"
        );
        assert_eq!(human("~a\nb", "x"), "~a\\nb: x");
        // A typed escape is not a real one: its backslash shows doubled.
        assert_eq!(escape("\\x1b[2J"), "\\\\x1b[2J");
        assert_eq!(escape("\u{1b}[2J"), "\\x1b[2J");
        assert_ne!(escape("\\x1b"), escape("\u{1b}"));
        assert_eq!(human("~m", "a\\nb"), "~m: a\\\\nb");
        // Tag characters, fillers and private use are shown, not hidden.
        assert_eq!(
            escape("hi\u{e0069}\u{e0067}\u{2800}\u{115f}\u{034f}\u{e000}!"),
            "hi\\u{e0069}\\u{e0067}\\u{2800}\\u{115f}\\u{034f}\\u{e000}!"
        );
        // Emoji sequences keep their joiner.
        assert_eq!(
            escape("\u{1f469}\u{200d}\u{1f4bb}"),
            "\u{1f469}\u{200d}\u{1f4bb}"
        );
    }

    #[test]
    fn saved_names_cannot_pass_for_marked_ones() {
        assert!(valid_saved_name("alice"));
        assert!(valid_saved_name("Zoë B"));
        for bad in [
            "",
            "~alice",
            " alice",
            "  | x",
            "a\u{1b}b",
            "a\u{202e}",
            "a\nb",
        ] {
            assert!(!valid_saved_name(bad), "{bad:?}");
        }
    }
}
