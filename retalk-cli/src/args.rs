//! The command line, as the original has it (retalk 0.0.1).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const ABOUT: &str = "\
End-to-end-encrypted messages between users, relayed by a server that is
never trusted: it stores only public keys and ciphertext, and every
request to it is signed with your key (no accounts, no tokens, no
registration). A \"user\" is anything with a keypair and a mailbox — an AI
agent, a service, or you.

Your USER ID is a 32-hex fingerprint of your public keys. It is both your
address and your peers' proof of your keys: share it over any channel the
server does not control (chat, email, in person).";

const AFTER: &str = "\
how every command finds your identity (first match wins):
  1. -s DIR              an explicit identity directory
  2. -u [NAME]           a named user-level identity (~/.local/share/retalk/)
  3. STORE env var       same as -s
  4. the user-level identity called 'default', if you created one
  5. otherwise: error.   Only `retalk init` ever creates an identity, so a
                         mistyped path fails loudly instead of silently
                         creating a fresh one.

environment variables:
  PICKLE_SECRET   the secret that unlocks your keys; prompted interactively
                  when unset (use the env var for scripts and daemons)
  SERVER_URL      server to talk to (init can save one per identity instead)
  STORE           identity directory, like -s
  XDG_DATA_HOME   where user-level identities live (default ~/.local/share)

output conventions:
  stdout carries results (ids, messages, --json lines); everything else —
  banners, progress, errors — goes to stderr, so pipes stay clean. Every
  command that acts prints `using <name> (<id>) from <dir>` to stderr
  so you always know which identity acted. Exit codes: 0 ok (also when
  the reader of stdout closed it early, as `| head -1` does: retalk then
  stops quietly), 1 the relay could not be reached or a local write
  failed (try again later), 2 usage or refusal (no identity, wrong secret,
  unknown peer, PIN MISMATCH, an error or refusal from the relay, such as
  a full mailbox).

quickstart:
  retalk init -u --name alice-1 --server https://server.example.com
  retalk add bob <bob's user id>
  retalk send bob \"hello\"
  retalk receive --follow

run `retalk <command> --help` for the full story of each command.";

#[derive(Parser, Debug)]
#[command(name = "retalk", version, about = "End-to-end-encrypted messages between users, agents and services", long_about = ABOUT, after_long_help = AFTER, after_help = AFTER)]
pub struct Cli {
    #[command(flatten)]
    pub select: Selection,
    #[command(subcommand)]
    pub command: Command,
}

/// Identity selection, shared by every command.
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Identity selection (shared by every command)")]
pub struct Selection {
    /// Use the identity in directory DIR (created earlier by `retalk init DIR`)
    #[arg(short = 's', long = "store", value_name = "DIR", global = true)]
    pub dir: Option<PathBuf>,
    /// Use the user-level identity NAME, stored under
    /// ~/.local/share/retalk/NAME/ (NAME defaults to 'default')
    #[arg(short = 'u', long = "user-level", value_name = "NAME", num_args = 0..=1, default_missing_value = "default", global = true)]
    pub user_level: Option<String>,
    /// Server URL for this invocation; overrides the SERVER_URL env var and
    /// the URL saved at init
    #[arg(long, value_name = "URL", global = true)]
    pub server: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new identity (the only command that ever does)
    #[command(
        long_about = "\
Create a new identity: generate an encryption keypair, encrypt it with a
secret you choose, and store it in a folder of your choosing. Prints the
new USER ID on stdout — share it with peers out-of-band; it is both your
address and the fingerprint they verify you by.

The location is mandatory: either a directory argument (project-local) or
-u [NAME] (user-level, under ~/.local/share/retalk/). The folder will
contain store.db — keys (encrypted), sessions, saved peers, and the
outbox of not-yet-acknowledged messages. Back it up to keep the identity;
delete it to destroy the identity.

The secret is prompted twice (or taken from PICKLE_SECRET). It encrypts
your private keys at rest and is required by every later command. It
cannot be recovered: losing it means losing this identity and all its
conversations.

init is offline — it does not contact the server. Keys are published
automatically the first time you send or receive.",
        after_help = "\
examples:
  retalk init ./alice                          identity in ./alice/
  retalk init -u                               user-level 'default' identity
  retalk init -u work --name work-bot \\
              --server https://srv.example.com  named identity, server saved"
    )]
    Init {
        /// Folder to hold the identity (alternative to -u)
        directory: Option<PathBuf>,
        /// Display name attached to your messages; peers see it marked
        /// '~NAME' because it is not verified — only their locally saved
        /// peer name for you is
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
    },
    /// Print my user id
    #[command(
        long_about = "\
Print this identity's USER ID (32 hex chars) on stdout.

The ID is the sha256 fingerprint of your public keys, which makes it
self-verifying: a peer who knows your ID can detect any attempt by the
server to hand out substitute keys for you. Sharing it is therefore
sharing your address and your key fingerprint in one string. It contains
no secret — it is safe to post publicly.

Needs your secret (to open the store) but never contacts the server.",
        after_help = "\
examples:
  retalk id                    id of the default identity
  retalk id -s ./alice         id of a project-local identity
  retalk id --json             {\"user_id\", \"identity_key\", \"name\"}"
    )]
    Id {
        /// Emit JSON with user_id, identity_key (base64 Curve25519 public
        /// key), and name
        #[arg(long)]
        json: bool,
    },
    /// Save a peer's user id under a local name
    #[command(
        long_about = "\
Save a peer's USER ID under a short local name, so `send bob ...` works
and incoming messages from that ID display as 'bob' instead of an
unverified '~name'. The name is yours alone — it never travels over
the network and the peer never learns it.

Get the peer's ID out-of-band (they run `retalk id`). Adding an existing
name overwrites it, and says so on stderr when the id changes (`replaced
bob: was <old id>, now <new id>`). A name may not start with '~' (the
mark `receive` puts on names senders choose for themselves) or a space,
nor contain control or invisible characters, so a saved name never looks
like something a stranger sent. No secret needed and no server contact —
this only writes your local peers table.",
        after_help = "\
examples:
  retalk add bob f1041c25c87351d8550b31cc6b13ab04
  retalk add bob <id> --pin \"vGY3...\"     also pin bob's full identity key

The fingerprint ID already pins the peer's keys; --pin adds an explicit
second check of the full identity key for belt-and-braces."
    )]
    Add {
        /// Local name for this peer (e.g. 'bob')
        name: String,
        /// The peer's 32-hex user id
        user_id: String,
        /// Peer's full base64 identity key, verified against everything the
        /// server serves for this peer
        #[arg(long, value_name = "KEY")]
        pin: Option<String>,
    },
    /// Encrypt and send one message
    #[command(
        long_about = "\
Encrypt TEXT for one peer and hand the ciphertext to the server, then
exit. The server (and anyone watching it) sees only the ciphertext and
the metadata sender/recipient/time/size — never the content.

PEER is a name saved with `retalk add`, or a raw 32-hex user id. The
first message to a new peer performs the key handshake automatically
(claiming one of the peer's one-time keys from the server); if the
server's served keys do not match the peer's ID fingerprint or your
saved --pin, the send refuses with PIN MISMATCH instead of encrypting to
an impostor key.

Delivery is tracked: the message stays in your local outbox until the
peer's client acknowledges decrypting it (acks arrive during your next
`receive`). Unacknowledged messages are re-sent automatically by
`receive --follow`, so nothing is lost if the server dies or is swapped.
If the server cannot be reached, the message waits in the outbox and
`send` exits with status 1. If the server answers with a refusal (the
peer's mailbox is full), the message waits in the outbox too, is re-sent
later, and `send` exits with status 2. On first contact with a
server your public keys are published automatically.

TEXT `-` reads the text from standard input instead, exactly as it comes
(a trailing newline included; use `printf %s` rather than `echo` to send
none) and as UTF-8: for texts past the system's limit on command-line
arguments (about 128 KiB), or from a pipe. The secret must then come from
PICKLE_SECRET. To send the one-character text \"-\" itself:
`printf %s - | retalk send bob -`.",
        after_help = "\
examples:
  retalk send bob \"hello\"
  retalk send f1041c25c87351d8550b31cc6b13ab04 \"hi, stranger\"
  retalk send bob \"psst\" -s ./alice --server http://127.0.0.1:8766
  retalk send bob - < report.txt       the text from a file (or a pipe)"
    )]
    Send {
        /// Saved peer name, or a raw 32-hex user id
        peer: String,
        /// The message plaintext (quote it), or `-` to read it from stdin
        text: String,
    },
    /// Decrypt pending messages
    #[command(
        long_about = "\
Fetch this identity's mailbox from the server, decrypt each message, and
print it — `name: text`, where name is your saved peer name for the
sender, or their unverified self-chosen name marked '~', or the bare
sender id. Each successfully decrypted message is acknowledged back to
its sender (encrypted, like everything else). A message is saved locally
before it is acknowledged and removed from there only once its line is
written, so a crash or a closed pipe never loses one. Several `receive`s
on one identity at once (a cron drain beside a --follow) print each
message once in all: they take turns, and while one writes a message the
others, and `send` from this identity, wait for it.

What sender-chosen text cannot do in the human-readable output: every
line after the first of a multi-line text starts with `  | `, which no
name starts with; control characters (escape sequences, carriage
returns, tabs, NEL), the line separators U+2028/U+2029 and invisible or
text-reordering characters (bidi controls such as U+202E, zero-width
spaces) are shown escaped, as `\\n`, `\\r`, `\\t`, `\\x1b`, `\\u{202e}`. So a
line that starts with `alice: ` is from the peer you saved as alice. With
--json the text is exact, byte for byte.

Pipes: a line counts as printed once the system took it, which for a pipe
means its buffer, not its reader. When the reader stops early (`| head
-1`), retalk stops quietly with status 0 and keeps every message whose
line it could not write for the next call; but lines already sitting in
the pipe's buffer when the reader left are gone with it, and a pipe
cannot tell which those were. To take an exact number, ask for it:
`retalk receive --json --limit 1 | head -1` loses nothing.

Without --follow: drain the mailbox once and exit (good for cron and
scripts). With --follow: keep receiving until interrupted (Ctrl-C or
SIGTERM stops cleanly); on a relay that holds reads open (retalk-relay)
each message shows as it is sent, a Python relay is polled every 2
seconds; ride out relay restarts, and at the start and once a minute run
key maintenance — replenish one-time keys on the server, rotate the fallback
key daily, and re-send any of your own messages that have gone
unacknowledged for 2 minutes.

Messages the server already handed over are never served again, so pipe
--json output somewhere durable if you need a log.",
        after_help = "\
examples:
  retalk receive                       drain once, human-readable
  retalk receive --follow              live tail + key maintenance
  retalk receive --json | jq .text     script-friendly, one object per line
  retalk receive --json --limit 1      exactly one message; the rest stay

json fields per message: \"from\" (sender id), \"name\" (your peer name,
'~name', or ''), \"text\" (the plaintext)."
    )]
    Receive {
        /// Keep receiving until Ctrl-C: on a relay that holds reads open
        /// (retalk-relay) each message shows as it is sent; a Python relay
        /// is polled every 2s. Keys are maintained every 60s
        #[arg(long)]
        follow: bool,
        /// One JSON object per message on stdout (banners stay on stderr)
        #[arg(long)]
        json: bool,
        /// Print at most N messages, then exit (with --follow: once N have
        /// been printed); the rest stay in the local inbox for the next call
        #[arg(long, value_name = "N", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
        limit: Option<usize>,
    },
}
