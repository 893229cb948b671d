//! Which identity a command acts as, and unlocking it.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use retalk_store_sqlite::SqliteStore;

use crate::args::Selection;
use crate::error::CliError;

/// The file inside an identity folder.
pub const STORE_FILE: &str = "store.db";

/// `$XDG_DATA_HOME/retalk`, else `~/.local/share/retalk` (on every
/// platform, as the original does).
pub fn data_home() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            directories::BaseDirs::new()
                .map(|b| b.home_dir().to_path_buf())
                .unwrap_or_else(|| PathBuf::from("."))
                .join(".local")
                .join("share")
        });
    base.join("retalk")
}

/// Resolves the identity folder: `-s DIR` > `-u [NAME]` > `STORE` >
/// the user-level `default` if it exists > error. Only `init` creates.
pub fn resolve(sel: &Selection, creating: bool) -> Result<PathBuf, CliError> {
    let dir = if let Some(d) = &sel.dir {
        d.clone()
    } else if let Some(name) = &sel.user_level {
        data_home().join(name)
    } else if let Some(store) = std::env::var_os("STORE").filter(|v| !v.is_empty() && !creating) {
        PathBuf::from(store)
    } else if !creating && data_home().join("default").join(STORE_FILE).exists() {
        data_home().join("default")
    } else if creating {
        return Err(CliError::InitNeedsLocation);
    } else {
        return Err(CliError::NoIdentitySelected);
    };
    if !creating && !dir.join(STORE_FILE).exists() {
        return Err(CliError::NoIdentityAt(dir.display().to_string()));
    }
    Ok(dir)
}

pub fn open_store(dir: &Path) -> Result<SqliteStore, CliError> {
    SqliteStore::open(dir).map_err(|source| CliError::Store {
        path: dir.to_path_buf(),
        source,
    })
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

/// The relay URL: `--server`, else `SERVER_URL`, else `saved` (from init).
pub fn server_url(sel: &Selection, saved: Option<String>) -> Result<Option<String>, CliError> {
    if let Some(url) = sel.server.clone().filter(|s| !s.is_empty()) {
        return Ok(Some(url));
    }
    if let Some(url) = env_text("SERVER_URL")? {
        return Ok(Some(url));
    }
    Ok(saved.filter(|s| !s.is_empty()))
}

/// The secret: `PICKLE_SECRET`, else a hidden prompt (twice on `init`).
pub fn secret(confirm: bool) -> Result<String, CliError> {
    if let Some(s) = env_text("PICKLE_SECRET")? {
        return Ok(s);
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::NoSecret);
    }
    let s = rpassword::prompt_password("pickle secret (unlocks this identity): ")
        .map_err(|_| CliError::NoSecret)?;
    if confirm
        && rpassword::prompt_password("repeat to confirm: ").map_err(|_| CliError::NoSecret)? != s
    {
        return Err(CliError::SecretsDiffer);
    }
    Ok(s)
}
