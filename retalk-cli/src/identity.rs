//! Which identity a command acts as (the library's
//! [`locate`](retalk_proto::client::locate) over this machine's folders
//! and environment), its secret, relay and API key.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use retalk_proto::client::{locate, Generation, LocateError, Located, Places, Purpose, Selectors};
use retalk_store_sqlite::SqliteStore;

use crate::args::Selection;
use crate::error::CliError;

/// The file inside an identity folder.
pub const STORE_FILE: &str = "store.db";

/// The passphrase a `--no-passphrase` identity is pickled under: Python
/// retalk 0.3.0's public constant (`cli.py`, `NO_PASSPHRASE`), so such a
/// folder opens in both.
pub const NO_PASSPHRASE: &str = "\0retalk:disabled-passphrase";

fn home_dir() -> PathBuf {
    directories::BaseDirs::new()
        .map(|b| b.home_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `$XDG_DATA_HOME/retalk`, else `~/.local/share/retalk` (on every
/// platform, as the original does).
pub fn data_home() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| home_dir().join(".local").join("share"));
    base.join("retalk")
}

/// `$RETALK_HOME`, else `~/.retalk` (0.3.0's `_data_home`).
pub fn retalk_home() -> PathBuf {
    std::env::var_os("RETALK_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| home_dir().join(".retalk"))
}

/// An identity folder holds a non-empty store: an empty `store.db` (a
/// crash before the schema, a `touch`) is no identity, so a read command
/// says so instead of writing a schema into it; `init` may fill it.
pub fn has_identity(dir: &Path) -> bool {
    std::fs::metadata(dir.join(STORE_FILE)).is_ok_and(|m| m.is_file() && m.len() > 0)
}

/// The library's selectors from the command line (`-u` alone is 0.0.1's
/// `-u [NAME]` with its default).
fn selectors(sel: &Selection) -> Selectors {
    let (user, user_level) = match sel.user.as_deref() {
        Some("") => (None, Some("default".to_owned())),
        other => (other.map(str::to_owned), sel.user_level.clone()),
    };
    Selectors {
        store: sel.dir.clone(),
        dir: sel.dir_030.clone(),
        user,
        user_level,
    }
}

/// The generation of the identity this run acts as, once found: it picks
/// the exit statuses ([`CliError::exit_code_for`]).
pub static GENERATION: std::sync::OnceLock<Generation> = std::sync::OnceLock::new();

/// Finds the identity folder (see `retalk --help`, "how every command
/// finds your identity"); `creating` is `init`'s generation.
pub fn resolve(sel: &Selection, creating: Option<Generation>) -> Result<Located, CliError> {
    let places = Places {
        user_level_home: data_home(),
        retalk_home: checked_home()?,
        store_env: env_text("STORE")?.map(PathBuf::from),
        retalk_user: env_text("RETALK_USER")?,
    };
    if let Some(u) = sel.user.as_deref().filter(|u| !u.is_empty()) {
        check_identity_name(u, "-u")?;
    }
    if let Some(u) = sel.user_level.as_deref() {
        check_identity_name(u, "-u")?;
    }
    if let Some(u) = places.retalk_user.as_deref() {
        check_identity_name(u, "RETALK_USER")?;
    }
    let purpose = creating.map_or(Purpose::Open, Purpose::Create);
    let located = locate(&selectors(sel), &places, purpose, has_identity).map_err(|e| match e {
        LocateError::NoneSelected => CliError::NoIdentitySelected,
        LocateError::InitNeedsLocation => CliError::InitNeedsLocation,
        LocateError::NoIdentityAt(found) => no_identity_at(&found.dir, found.generation),
    })?;
    let _ = GENERATION.set(located.generation);
    Ok(located)
}

/// No identity at `dir`, with the `init` that makes one there: 0.0.1's
/// `retalk init DIR`, or for a 0.3.0 location (`-u NAME` under
/// `$RETALK_HOME`, `--dir DIR`) 0.3.0's form with a passphrase source.
pub fn no_identity_at(dir: &Path, generation: Generation) -> CliError {
    let shown = dir.display().to_string();
    let create = match generation {
        Generation::V001 => format!("retalk init {shown}"),
        Generation::V030 => {
            let place = match (dir.parent(), dir.file_name()) {
                (Some(parent), Some(name)) if parent == retalk_home() => {
                    format!("-u {}", name.to_string_lossy())
                }
                _ => format!("--dir {shown}"),
            };
            format!("retalk init {place} --passphrase-file /path/to/passphrase")
        }
    };
    CliError::NoIdentityAt { dir: shown, create }
}

/// Opens the store in `dir` (upgrading a Python retalk store unchecked;
/// a command that unlocks the identity uses [`open_unlocking`]).
pub fn open_store(dir: &Path) -> Result<SqliteStore, CliError> {
    open_store_checked(dir, |_| true)
}

/// Opens the identity's store; a Python retalk store is upgraded (one way)
/// only once `sel`'s secret unlocks its account pickle, so a wrong or
/// missing passphrase fails as unlocking does and leaves the file byte for
/// byte as it was (CLIENT-030.md: 0.3.0 keeps its account in `meta`).
pub fn open_unlocking(sel: &Selection, located: &Located) -> Result<SqliteStore, CliError> {
    let dir = &located.dir;
    let mut refused = None;
    let opened = open_store_checked(dir, |found| {
        let no_pass = found
            .settings
            .get(retalk_proto::client::setting::NO_PASSPHRASE)
            .is_some_and(|v| v == "1");
        let checked = secret(sel, located.generation, false, no_pass).and_then(|(s, _)| {
            let pickle = found
                .account_pickle
                .as_deref()
                .ok_or_else(|| no_identity_at(dir, located.generation))?;
            retalk_proto::olm::unpickle_account(
                pickle,
                &retalk_proto::olm::PickleKey::from_secret(&s),
            )
            .map(|_| ())
            .map_err(|_| CliError::WrongSecret(dir.display().to_string()))
        });
        let ok = checked.is_ok();
        refused = checked.err();
        ok
    });
    opened.map_err(|e| refused.take().unwrap_or(e))
}

/// The selected identity's store and secret, without its relay: for the
/// commands that only read it (`id`, `history`, `show`). The secret is
/// the one [`open_unlocking`] checked.
pub fn open_with_secret(sel: &Selection) -> Result<(Located, SqliteStore, String), CliError> {
    let located = resolve(sel, None)?;
    let store = open_unlocking(sel, &located)?;
    let no_pass =
        retalk_proto::client::Store::setting(&store, retalk_proto::client::setting::NO_PASSPHRASE)
            .map_err(retalk_proto::ClientError::from)?
            .as_deref()
            == Some("1");
    let (secret, _) = secret(sel, located.generation, false, no_pass)?;
    Ok((located, store, secret))
}

/// Opens the store in `dir`, upgrading a Python retalk store only when
/// `allow` accepts it, and says once on stderr when it upgraded one.
fn open_store_checked(
    dir: &Path,
    allow: impl FnOnce(&retalk_store_sqlite::PythonStore) -> bool,
) -> Result<SqliteStore, CliError> {
    let store = SqliteStore::open_checked(dir, allow).map_err(|source| {
        let path = dir.to_path_buf();
        if retalk_store_sqlite::is_damaged(&source) {
            CliError::Damaged {
                path: path.join(STORE_FILE),
                source,
            }
        } else {
            CliError::Store { path, source }
        }
    })?;
    if store.upgraded_python() {
        let which = match GENERATION.get() {
            Some(Generation::V001) => "0.0.1 ",
            Some(Generation::V030) => "0.3.0 ",
            None => "",
        };
        say!(
            "upgraded the Python retalk {which}folder {} to this retalk's store; Python retalk can no longer open it",
            dir.display()
        );
    }
    Ok(store)
}

/// The retalk home, refused when it is there but not a folder.
pub fn checked_home() -> Result<PathBuf, CliError> {
    let home = retalk_home();
    match std::fs::metadata(&home) {
        Ok(m) if !m.is_dir() => Err(CliError::HomeNotDir(home)),
        _ => Ok(home),
    }
}

/// Refuses an identity name (`-u NAME`, `RETALK_USER`) that is not one
/// folder name under the home: a separator, `..` or NUL would reach
/// outside it, a leading '-' reads as a flag and a leading '.' hides it.
/// 0.3.0 joins any name to its home (`cli.py` `_user_dir`); this is a
/// deliberate deviation.
fn check_identity_name(name: &str, given_as: &str) -> Result<(), CliError> {
    let bad =
        name.contains(['/', '\\', '\0']) || name.contains("..") || name.starts_with(['-', '.']);
    if bad {
        return Err(CliError::Usage(format!(
            "identity name {name:?} ({given_as}) cannot be used: it names a folder under the retalk home, so it may not contain '/', '\\', '..' or NUL, nor start with '-' or '.'"
        )));
    }
    Ok(())
}

/// A text setting from the environment: `None` when unset or empty, an
/// error when set to something that is not UTF-8 (never treated as unset,
/// which would quietly fall back to another secret or relay).
pub fn env_text(name: &'static str) -> Result<Option<String>, CliError> {
    match std::env::var(name) {
        Ok(v) => Ok(Some(v).filter(|v| !v.is_empty())),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(CliError::EnvNotUnicode(name)),
    }
}

/// The owner-wide default relay: `relay` in `$RETALK_HOME/config.json`
/// (0.3.0's `_default_relay`; a missing or malformed file is no relay).
fn config_relay() -> Option<String> {
    let text = std::fs::read_to_string(retalk_home().join("config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("relay")?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The relay URL. 0.0.1: `--server`, `SERVER_URL`, the saved one. 0.3.0:
/// `-r`, `RETALK_RELAY`, the saved one, `config.json` (`cli.py`,
/// `_open_user`).
pub fn server_url(
    sel: &Selection,
    generation: Generation,
    saved: Option<String>,
) -> Result<Option<String>, CliError> {
    if let Some(url) = sel.server.clone().filter(|s| !s.is_empty()) {
        return Ok(Some(url));
    }
    let env = match generation {
        Generation::V001 => env_text("SERVER_URL")?,
        Generation::V030 => env_text("RETALK_RELAY")?,
    };
    if let Some(url) = env {
        return Ok(Some(url));
    }
    if let Some(url) = saved.filter(|s| !s.is_empty()) {
        return Ok(Some(url));
    }
    Ok(match generation {
        Generation::V001 => None,
        Generation::V030 => config_relay(),
    })
}

/// The API key: `--api-key`, `RETALK_API_KEY`, the saved one.
pub fn api_key(sel: &Selection, saved: Option<String>) -> Result<Option<String>, CliError> {
    if let Some(k) = sel.api_key.clone().filter(|s| !s.is_empty()) {
        return Ok(Some(k));
    }
    Ok(env_text("RETALK_API_KEY")?.or(saved.filter(|s| !s.is_empty())))
}

/// The most a passphrase file may hold: a passphrase is a line, and a
/// file that never ends (`/dev/zero`) must not fill the memory.
const PASSPHRASE_FILE_LIMIT: u64 = 64 * 1024;

/// Reads a passphrase file as 0.3.0 does (`cli.py`, `_read_passphrase_file`):
/// trailing CR/LF stripped; missing, a directory, unreadable or empty is
/// an error; readable by others is a warning. Unlike 0.3.0, only a regular
/// file of at most [`PASSPHRASE_FILE_LIMIT`] bytes is read: a FIFO would
/// hang and a device (`/dev/urandom`) never ends.
fn read_passphrase_file(path: &Path) -> Result<String, CliError> {
    use std::io::Read;
    let shown = path.display().to_string();
    let cannot = |e: std::io::Error| {
        CliError::PassphraseFile(match e.kind() {
            std::io::ErrorKind::NotFound => format!(
                "no passphrase file at {shown}: check the path, or pass the passphrase with -p / RETALK_PASSPHRASE instead"
            ),
            _ => format!("cannot read the passphrase file {shown}: {e}"),
        })
    };
    let not_regular = |meta: &std::fs::Metadata| {
        CliError::PassphraseFile(if meta.is_dir() {
            format!("{shown} is a directory, not a passphrase file")
        } else {
            format!("{shown} is not a regular file (a pipe or a device?): give a file holding the passphrase")
        })
    };
    // Looked at before opening: opening a FIFO waits for a writer.
    let meta = std::fs::metadata(path).map_err(cannot)?;
    if !meta.is_file() {
        return Err(not_regular(&meta));
    }
    let file = std::fs::File::open(path).map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    if !meta.is_file() {
        return Err(not_regular(&meta));
    }
    let mut bytes = Vec::new();
    file.take(PASSPHRASE_FILE_LIMIT + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > PASSPHRASE_FILE_LIMIT {
        return Err(CliError::PassphraseFile(format!(
            "the passphrase file {shown} is longer than {} KiB: it must contain just the passphrase",
            PASSPHRASE_FILE_LIMIT / 1024
        )));
    }
    let raw = String::from_utf8(bytes).map_err(|_| {
        CliError::PassphraseFile(format!("the passphrase file {shown} is not UTF-8 text"))
    })?;
    let secret = raw.trim_end_matches(['\r', '\n']).to_owned();
    if secret.is_empty() {
        return Err(CliError::PassphraseFile(format!(
            "the passphrase file {shown} is empty: it must contain the passphrase on the first line"
        )));
    }
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        // Once a run, as 0.3.0 says it: `init` reads the file twice (to
        // create, then to register).
        static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if mode & 0o077 != 0 && !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            say!(
                "[retalk] warning: {shown} is readable by other users (mode {mode:o}); run: chmod 600 {shown}"
            );
        }
    }
    Ok(secret)
}

/// An explicit passphrase flag: `-p`, else `--passphrase-file`.
fn passphrase_flag(sel: &Selection) -> Result<Option<String>, CliError> {
    if let Some(p) = sel.passphrase.clone().filter(|p| !p.is_empty()) {
        return Ok(Some(p));
    }
    sel.passphrase_file
        .as_deref()
        .map(read_passphrase_file)
        .transpose()
}

/// Whether the command line or environment names a 0.3.0 passphrase source
/// (what makes `init -u NAME` create a 0.3.0 identity).
pub fn has_030_passphrase(sel: &Selection) -> Result<bool, CliError> {
    Ok(sel.passphrase.is_some()
        || sel.passphrase_file.is_some()
        || sel.no_passphrase
        || env_text("RETALK_PASSPHRASE")?.is_some()
        || env_text("RETALK_PASSPHRASE_FILE")?.is_some())
}

/// The secret that unlocks (or, `creating`, protects) an identity.
///
/// 0.3.0 (`cli.py`, `_resolve_passphrase`): an identity made with
/// `--no-passphrase` (`stored_no_passphrase`) needs none; otherwise `-p`,
/// `--passphrase-file`, `RETALK_PASSPHRASE_FILE`, `RETALK_PASSPHRASE`, in
/// that order, never a prompt. 0.0.1: `PICKLE_SECRET`, `-p`,
/// `--passphrase-file`, else a hidden prompt (twice when creating).
/// Returns the secret and whether it is the no-passphrase constant.
pub fn secret(
    sel: &Selection,
    generation: Generation,
    creating: bool,
    stored_no_passphrase: bool,
) -> Result<(String, bool), CliError> {
    match generation {
        Generation::V030 => {
            if stored_no_passphrase && !creating {
                return Ok((NO_PASSPHRASE.to_owned(), true));
            }
            if sel.no_passphrase {
                if creating {
                    return Ok((NO_PASSPHRASE.to_owned(), true));
                }
                return Err(CliError::HasPassphrase);
            }
            if let Some(s) = passphrase_flag(sel)? {
                return Ok((s, false));
            }
            if let Some(f) = env_text("RETALK_PASSPHRASE_FILE")? {
                return Ok((read_passphrase_file(Path::new(&f))?, false));
            }
            match env_text("RETALK_PASSPHRASE")? {
                Some(s) => Ok((s, false)),
                None => Err(CliError::NoPassphrase { creating }),
            }
        }
        Generation::V001 => {
            if let Some(s) = env_text("PICKLE_SECRET")? {
                return Ok((s, false));
            }
            if let Some(s) = passphrase_flag(sel)? {
                return Ok((s, false));
            }
            prompt(creating).map(|s| (s, false))
        }
    }
}

/// What to rerun when 0.0.1's prompt has no terminal: the command as
/// given with a passphrase source, in 0.3.0's words (`cli.py`,
/// `_resolve_passphrase`: a file, `-p`, and when `creating`
/// RETALK_PASSPHRASE or `--no-passphrase`, which make a 0.3.0 identity
/// of `init -u NAME`), and 0.0.1's PICKLE_SECRET.
fn no_secret(creating: bool) -> CliError {
    let ran = std::iter::once("retalk".to_owned())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let mut lines = vec![
        "# rerun naming a file that holds the passphrase -- the secret stays".to_owned(),
        "# out of the command line, the shell history, and the environment:".into(),
        format!("{ran} --passphrase-file /path/to/passphrase"),
        "# or pass it inline:".into(),
        format!("{ran} -p \"<YOUR-PASSPHRASE>\""),
    ];
    if creating {
        lines.extend([
            "# or set it once for this shell, then rerun:".to_owned(),
            "export RETALK_PASSPHRASE=\"<YOUR-PASSPHRASE>\"".into(),
            ran.clone(),
            "# or create it with no passphrase -- unsafe, keys stored unencrypted:".into(),
            format!("{ran} --no-passphrase"),
        ]);
    }
    lines.extend([
        "# or, for a 0.0.1 identity, the secret in PICKLE_SECRET:".to_owned(),
        format!("PICKLE_SECRET=\"<YOUR-SECRET>\" {ran}"),
    ]);
    CliError::NoSecret(crate::book::bash_block(&lines))
}

/// 0.0.1's hidden prompt (twice on `init`).
fn prompt(confirm: bool) -> Result<String, CliError> {
    if !std::io::stdin().is_terminal() {
        return Err(no_secret(confirm));
    }
    let s = rpassword::prompt_password("pickle secret (unlocks this identity): ")
        .map_err(|_| no_secret(confirm))?;
    if confirm
        && rpassword::prompt_password("repeat to confirm: ").map_err(|_| no_secret(confirm))? != s
    {
        return Err(CliError::SecretsDiffer);
    }
    Ok(s)
}
