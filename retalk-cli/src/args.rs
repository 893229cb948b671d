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
  1. -s DIR              an explicit 0.0.1 identity directory
  2. --dir DIR           an explicit 0.3.0 identity directory
  3. --user-level [NAME] a 0.0.1 user-level identity (~/.local/share/retalk/)
  4. -u NAME             ~/.retalk/NAME ($RETALK_HOME) if it holds an identity,
                         else ~/.local/share/retalk/NAME; -u alone = 3.
  5. RETALK_USER env     the 0.3.0 identity $RETALK_HOME/NAME
  6. STORE env var       same as -s
  7. the user-level identity called 'default', if you created one
  8. otherwise: error.   Only `retalk init` ever creates an identity, so a
                         mistyped path fails loudly instead of silently
                         creating a fresh one.

generations (one binary speaks the 0.0.1 and the 0.3.0 command line):
  HOW YOU SELECT AN IDENTITY DECIDES WHICH ONE IT SPEAKS. Selected by -s,
  --user-level, STORE or the default, it is a 0.0.1 identity: secret from
  PICKLE_SECRET (or -p / --passphrase-file) else a prompt, relay from
  --server / SERVER_URL, `receive` prints `name: text`, `send PEER TEXT`
  prints nothing on stdout. Selected by --dir, RETALK_USER or -u NAME under
  $RETALK_HOME, it is a 0.3.0 identity: passphrase from -p, --passphrase-file,
  RETALK_PASSPHRASE_FILE, RETALK_PASSPHRASE (never prompted), relay from -r,
  RETALK_RELAY, the saved one, then $RETALK_HOME/config.json; `receive
  --peer P | --all` prints JSON lines, `send TEXT --peer P` prints
  {\"id\", \"to\"}, `id --json` prints the contact card. `init -u NAME`
  makes a 0.3.0 identity when given a 0.3.0 passphrase source,
  --display-name or --no-register, else a 0.0.1 one. A Python 0.3.0 folder
  (~/.retalk/NAME/store.db) opens with its passphrase and is upgraded one
  way (Python retalk can no longer open it).

environment variables:
  PICKLE_SECRET   the secret that unlocks your keys; prompted interactively
                  when unset (use the env var for scripts and daemons)
  SERVER_URL      server to talk to (init can save one per identity instead)
  STORE           identity directory, like -s
  RETALK_HOME     where 0.3.0 identities live (default ~/.retalk)
  RETALK_USER     the 0.3.0 identity to act as, like -u NAME
  RETALK_PASSPHRASE, RETALK_PASSPHRASE_FILE   a 0.3.0 identity's passphrase
  RETALK_RELAY    relay for 0.3.0 identities (like SERVER_URL)
  RETALK_API_KEY  relay access key (Authorization: Bearer)
  RETALK_USER_AGENT  the User-Agent sent to the relay
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

/// Identity selection, shared by every command: the 0.0.1 flags and the
/// 0.3.0 ones (see the `generations` section of `retalk --help`).
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Identity selection (shared by every command)")]
pub struct Selection {
    /// Use the 0.0.1 identity in directory DIR (created earlier by
    /// `retalk init DIR`)
    #[arg(short = 's', long = "store", value_name = "DIR", global = true)]
    pub dir: Option<PathBuf>,
    /// Use the 0.3.0 identity in directory DIR
    #[arg(long = "dir", value_name = "DIR", global = true)]
    pub dir_030: Option<PathBuf>,
    /// -u NAME: the identity NAME, under $RETALK_HOME (~/.retalk/NAME, 0.3.0)
    /// when one is there, else under ~/.local/share/retalk/NAME (0.0.1);
    /// -u alone: the 0.0.1 user-level identity 'default'
    #[arg(short = 'u', long = "user", value_name = "NAME", num_args = 0..=1, default_missing_value = "", global = true)]
    pub user: Option<String>,
    /// Use the 0.0.1 user-level identity NAME, stored under
    /// ~/.local/share/retalk/NAME/ (NAME defaults to 'default')
    #[arg(long = "user-level", value_name = "NAME", num_args = 0..=1, default_missing_value = "default", global = true)]
    pub user_level: Option<String>,
    /// Relay URL for this invocation; overrides SERVER_URL / RETALK_RELAY
    /// and the URL saved at init
    #[arg(
        short = 'r',
        long = "relay",
        visible_alias = "server",
        value_name = "URL",
        global = true
    )]
    pub server: Option<String>,
    /// Relay access key, sent as `Authorization: Bearer KEY`; overrides
    /// RETALK_API_KEY and the key saved at init
    #[arg(long = "api-key", value_name = "KEY", global = true)]
    pub api_key: Option<String>,
    /// Passphrase that unlocks the identity (visible in the process list:
    /// prefer --passphrase-file or RETALK_PASSPHRASE)
    #[arg(short = 'p', long = "passphrase", value_name = "SECRET", global = true)]
    pub passphrase: Option<String>,
    /// Read the passphrase from the file at PATH (trailing newlines ignored)
    #[arg(
        long = "passphrase-file",
        visible_alias = "passphrase-path",
        value_name = "PATH",
        global = true
    )]
    pub passphrase_file: Option<PathBuf>,
    /// (-np) No passphrase: on 0.3.0 `init`, keys are stored under a public
    /// constant (protected by file permissions only)
    #[arg(long = "no-passphrase", global = true)]
    pub no_passphrase: bool,
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
        /// (0.3.0) Display name attached to your messages; defaults to the
        /// -u / RETALK_USER name
        #[arg(long = "display-name", value_name = "NAME")]
        display_name: Option<String>,
        /// (0.3.0) Do not publish keys to the relay after creating the
        /// identity (`retalk register` does it later)
        #[arg(long = "no-register")]
        no_register: bool,
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
        /// key), and name (0.3.0: the contact card, with `relay`)
        #[arg(long)]
        json: bool,
        /// (0.3.0) The contact card for people: name, fingerprint, relay,
        /// keys
        #[arg(long)]
        card: bool,
        /// (0.3.0) A copy-paste snippet that onboards a peer who is not on
        /// retalk yet and adds you
        #[arg(long = "invite-message")]
        invite_message: bool,
        /// (0.3.0) With --invite-message: redeem this invite code instead of
        /// a plain add (see `retalk invite new`); ignored otherwise, as in
        /// 0.3.0
        #[arg(long, value_name = "CODE")]
        code: Option<String>,
        /// (0.3.0) A copy-paste reply to someone's invite, so they add you
        /// back
        #[arg(long = "invite-reply")]
        invite_reply: bool,
        /// (0.3.0) The name to recommend for yourself in the card or
        /// snippet (default: your display name)
        #[arg(long = "as", value_name = "NAME")]
        as_name: Option<String>,
        /// (0.3.0) The identity created last (under $RETALK_HOME or the
        /// project's .retalk), instead of the selected one
        #[arg(long)]
        last: bool,
    },
    /// (0.3.0) Publish this identity's keys to the relay; prints the sync
    /// summary as JSON
    Register,
    /// (0.3.0) Publish keys that are missing and resend what is due; prints
    /// {"unclaimed", "republished", "replenished", "fallback_rotated",
    /// "resent"}
    Sync,
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
        /// NAME USER_ID (0.0.1), or FINGERPRINT with --peer NAME (0.3.0)
        #[arg(num_args = 1..=2, required = true, value_name = "NAME USER_ID | FINGERPRINT")]
        args: Vec<String>,
        /// (0.3.0) Local name for the peer
        #[arg(long, value_name = "NAME")]
        peer: Option<String>,
        /// (0.3.0) Verify the peer's keys on the relay right away
        #[arg(long)]
        verify: bool,
        /// (0.3.0) Take the name from another contact that has it (which is
        /// left unnamed) instead of refusing
        #[arg(long = "override")]
        override_name: bool,
        /// (0.3.0) Save to the owner-wide contacts ($RETALK_HOME/contacts.db,
        /// seen by every identity) — the default when no identity is
        /// selected
        #[arg(long = "global")]
        global: bool,
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

In the 0.0.1 form `send PEER -`, TEXT `-` reads the text from standard
input instead, exactly as it comes (a trailing newline included; use
`printf %s` rather than `echo` to send none) and as UTF-8: for texts past
the system's limit on command-line arguments (about 128 KiB), or from a
pipe. The secret must then come from PICKLE_SECRET. To send the
one-character text \"-\" itself: `printf %s - | retalk send bob -`.
With --peer or --group (0.3.0), `-` is the text \"-\" itself, as in
Python retalk 0.3.0.",
        after_help = "\
examples:
  retalk send bob \"hello\"
  retalk send f1041c25c87351d8550b31cc6b13ab04 \"hi, stranger\"
  retalk send bob \"psst\" -s ./alice --server http://127.0.0.1:8766
  retalk send bob - < report.txt       the text from a file (or a pipe)"
    )]
    Send {
        /// PEER TEXT (0.0.1), or TEXT with --peer PEER (0.3.0). PEER is a
        /// saved name or a 32-hex user id; `send PEER -` reads standard input
        #[arg(num_args = 1..=2, required = true, value_name = "PEER TEXT | TEXT")]
        args: Vec<String>,
        /// (0.3.0) The recipient: a saved name or a 32-hex user id (given
        /// twice, the last counts, as in 0.3.0's argparse)
        #[arg(long, value_name = "PEER", overrides_with = "peer")]
        peer: Option<String>,
        /// (0.3.0) Keep the text in this identity's history (sealed with its
        /// passphrase; see `retalk history`); also RETALK_SAVE_MESSAGE=1
        #[arg(long = "save")]
        save: bool,
        /// (0.3.0) Send to every member of a group (a pairwise copy each);
        /// prints {"id", "group", "group_id", "sent", "failed"} and exits 2
        /// when any copy failed
        #[arg(
            long,
            value_name = "NAME",
            conflicts_with = "peer",
            overrides_with = "group"
        )]
        group: Option<String>,
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
spaces) are shown escaped, as `\\n`, `\\r`, `\\t`, `\\x1b`, `\\u{202e}`, and a
typed backslash shows doubled (`\\\\x1b` is four typed characters, `\\x1b` a
real escape). So a line that starts with `alice: ` is from the peer you
saved as alice. With --json the text is exact, byte for byte.

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
        /// (0.3.0) Read only this sender's mail (repeatable)
        #[arg(long, value_name = "PEER")]
        peer: Vec<String>,
        /// (0.3.0) Read every sender's mail
        #[arg(long)]
        all: bool,
        /// (0.3.0) Seconds between polls with --follow
        #[arg(long, value_name = "S")]
        interval: Option<f64>,
        /// (0.3.0) No banner on stderr
        #[arg(short = 'q', long)]
        quiet: bool,
        /// (0.3.0) Refuse mail from senders that are not saved contacts,
        /// unopened, with a signed refusal (their resends stop)
        #[arg(long = "peers-only")]
        peers_only: bool,
        /// (0.3.0) Keep each message in this identity's history (sealed
        /// with its passphrase; see `retalk history`); also
        /// RETALK_SAVE_MESSAGE=1
        #[arg(long = "save")]
        save: bool,
        /// (0.3.0) Do not stage received contact cards for `retalk import
        /// --inbox` (they are still printed)
        #[arg(long = "no-save-contacts")]
        no_save_contacts: bool,
    },
    /// (0.3.0) Print saved messages (kept by `send --save`, `receive
    /// --save` or RETALK_SAVE_MESSAGE), oldest first, one JSON object per
    /// line: {"id", "from", "name", "direction", "text"}, plus "group" and
    /// "group_id" for group messages. Never contacts the relay
    History {
        /// Only the conversation with this peer (saved name or 32-hex id)
        #[arg(long, value_name = "PEER")]
        peer: Option<String>,
        /// Only this group's messages (its name or id)
        #[arg(long, value_name = "NAME")]
        group: Option<String>,
    },
    /// (0.3.0) Save a contact card (JSON, from `contacts --show --json`,
    /// `id --json` or a share) as a contact; its keys must hash to its
    /// fingerprint. --inbox: import the cards received by `receive`
    Import {
        /// The card as JSON, or `-` (or nothing) to read it from standard
        /// input; with --inbox: the staged contact (name or fingerprint) to
        /// import, else all
        #[arg(value_name = "CARD|-")]
        card: Option<String>,
        /// The name to save the contact under (default: the card's)
        #[arg(long = "as", value_name = "NAME")]
        as_name: Option<String>,
        /// Import from the cards received by `receive` (staged)
        #[arg(long)]
        inbox: bool,
        /// Take a name another contact holds (it becomes unnamed), or the
        /// card's name for a contact saved under another
        #[arg(long = "override")]
        override_name: bool,
        /// With --inbox: show the staged cards, import nothing
        #[arg(long)]
        list: bool,
        /// With --inbox --list: one JSON object per line
        #[arg(long)]
        json: bool,
    },
    /// (0.3.0) Check a saved contact's keys against its id and pin them:
    /// fetched from the relay, or given with --identity-key and
    /// --signing-key
    Verify {
        /// Saved name or 32-hex user id
        peer: String,
        /// The contact's identity key (base64), with --signing-key
        #[arg(long = "identity-key", value_name = "K")]
        identity_key: Option<String>,
        /// The contact's signing key (base64), with --identity-key
        #[arg(long = "signing-key", value_name = "S")]
        signing_key: Option<String>,
    },
    /// (0.3.0) Send a saved contact's card to a peer (a `contact` message);
    /// prints {"id", "to", "shared"}
    Share {
        /// The contact to share: saved name or 32-hex user id
        contact: String,
        /// The recipient: saved name or 32-hex user id
        #[arg(long, value_name = "RECIPIENT", required = true)]
        peer: String,
        /// The name to recommend for the contact (default: yours for it)
        #[arg(long = "as", value_name = "NAME")]
        as_name: Option<String>,
    },
    /// (0.3.0) Show the owner-wide settings ($RETALK_HOME/config.json);
    /// with -r URL set the default relay (-r "" clears it)
    Config,
    /// (0.3.0) List saved contacts, `name<TAB>id<TAB>verified|unverified`:
    /// without an identity selected the owner-wide ones, with one those
    /// overlaid with its own
    Contacts {
        /// One contact card per line as JSON
        #[arg(long)]
        json: bool,
        /// Show one contact (saved name or 32-hex id): a line, or with
        /// --json its card (what `share` sends and `import` reads)
        #[arg(long, value_name = "CONTACT")]
        show: Option<String>,
        /// With --show: the name the card recommends (ignored otherwise, as
        /// in 0.3.0)
        #[arg(long = "as", value_name = "NAME")]
        as_name: Option<String>,
        /// Delete a contact from the list that holds it
        #[arg(long, value_name = "CONTACT")]
        remove: Option<String>,
    },
    /// (0.3.0) Refuse a peer's mail unopened (a signed refusal tells their
    /// client to stop resending); local only
    Block {
        /// Saved name or 32-hex user id
        peer: Option<String>,
        /// Unblock instead
        #[arg(long)]
        remove: bool,
        /// Show the block list
        #[arg(long)]
        list: bool,
        /// With --list: one JSON object per line
        #[arg(long)]
        json: bool,
    },
    /// (0.3.0) Groups: create, list, members, add, remove, rename, leave,
    /// join, delete
    #[command(
        long_about = "\
Groups are client-side: each group message is one pairwise encrypted copy
per member, carrying the sender's roster.

Who may change a roster: the group's owner is its creator (for a group you
learn from an incoming copy, the owner that copy names unless it names
you, else its sender: trust on first use). Only the owner adds or removes others; any member may
leave (`group leave`, or a copy whose roster drops only its sender). A copy
from someone not in the roster you hold (a stranger, a former member) never
changes it: its text is shown marked \"member\": false. Every roster change
you adopt (group_joined, group_update) or refuse (group_update_refused,
with a reason: not-member, not-owner, over-cap) is a record in `receive`'s
output. Python 0.3.0 members interoperate: their copies arrive, and their
roster changes pass the same rule.",
        after_help = "\
examples:
  retalk group create team --members bob,carol
  retalk send \"plan: ship friday\" --group team
  retalk group add team dan          (owner only)
  retalk group members team
  retalk group leave team"
    )]
    Group {
        #[arg(value_enum)]
        action: crate::group::GroupAction,
        /// The group's local name (or its id)
        name: Option<String>,
        /// Members as a comma list of saved names or 32-hex ids (the new
        /// name for rename)
        members: Option<String>,
        /// Members as a comma list (same as MEMBERS)
        #[arg(long = "members", value_name = "LIST")]
        members_flag: Option<String>,
        /// list: one JSON object per line
        #[arg(long)]
        json: bool,
    },
    /// (0.3.0) Invite codes: new, list, revoke, watch
    Invite {
        #[arg(value_enum)]
        action: crate::invite::InviteAction,
        /// The code (revoke)
        code: Option<String>,
        /// new: the name to save the redeemer as
        #[arg(long, value_name = "NAME")]
        peer: Option<String>,
        /// new: multi-use and no expiry (until revoked)
        #[arg(long)]
        permanent: bool,
        /// new: days until the code expires (0 or less: never; default 7
        /// for a single-use code)
        #[arg(long, value_name = "DAYS", allow_negative_numbers = true)]
        expires: Option<f64>,
        /// list: one JSON object per line
        #[arg(long)]
        json: bool,
        /// watch: keep watching until Ctrl-C
        #[arg(long)]
        follow: bool,
        /// watch --follow: seconds between scans (default 2)
        #[arg(long, value_name = "S")]
        interval: Option<f64>,
        /// watch: no banner on stderr
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// (0.3.0) Redeem an invite code: save the inviter (keys checked
    /// against the id) and send it a contact request with your card
    Request {
        /// The inviter's 32-hex user id
        inviter: String,
        /// The invite code
        #[arg(long, value_name = "CODE")]
        code: Option<String>,
        /// The name to save the inviter as
        #[arg(long, value_name = "NAME")]
        peer: Option<String>,
    },
    /// Serve this identity to an AI agent over the Model Context Protocol
    /// (stdio): tools to send, receive, add and verify contacts
    #[command(
        long_about = "\
Serve this identity to an AI agent (Claude Code, Codex, Claude Desktop,
Cursor, ...) as a Model Context Protocol server on stdin/stdout. The host
starts it; stdout carries nothing but the protocol, logs go to stderr.

Tools (agent-talk's names and arguments): id, add, verify, contacts, send,
receive {peer?, wait?, limit?, include_strangers?}, check_inbox, sync,
block, unblock, share, and group_create, group_list, group_add,
group_remove, group_send, group_leave. receive with wait (seconds, at most
25) returns as soon as a message arrives. Mail from senders who are not
saved contacts is only read with include_strangers and is marked
untrusted. While it runs, keys are maintained and unacknowledged messages
resent in the background.

The identity and passphrase are chosen as for every command, and also by
agent-talk's variables: RETALK_DIR (like --dir), RETALK_USER, RETALK_HOME,
RETALK_PASSPHRASE or RETALK_PASSPHRASE_FILE, RETALK_RELAY, RETALK_API_KEY.
A wrong passphrase stops it before the handshake (exit 2).",
        after_help = "\
examples:
  retalk -u alice mcp                          serve ~/.retalk/alice
  RETALK_DIR=./agent RETALK_PASSPHRASE_FILE=./agent.pass retalk mcp
  retalk -u alice mcp --watch-peer bob         push bob's messages as they arrive
  claude mcp add retalk -e RETALK_USER=alice -- retalk mcp"
    )]
    Mcp(crate::mcp::McpArgs),
    /// (0.3.0) Show a saved conversation as a chat (USER [PEER], or PEER
    /// --dir DIR; --group NAME), live with --follow, or every saved
    /// conversation as a local web page with --web
    Show(crate::show::ShowArgs),
}
