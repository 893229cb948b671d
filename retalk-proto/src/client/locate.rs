//! Which identity folder a command acts as, and which generation of the
//! command line it speaks there: the 0.0.1 one (PROTOCOL section 10) or
//! Python retalk 0.3.0's (`cli.py`, `_resolve_store`).
//!
//! **The rule: how an identity is selected decides its generation.**
//! `-s DIR`, `--user-level [NAME]` (`$XDG_DATA_HOME/retalk/NAME`), `STORE`
//! and the user-level `default` select a 0.0.1 identity; `--dir DIR`,
//! `-u NAME` under `$RETALK_HOME` (default `~/.retalk`) and `RETALK_USER`
//! a 0.3.0 one. `-u` is the one selector both spell alike: `-u` alone is
//! 0.0.1's `default`; `-u NAME` is `$RETALK_HOME/NAME` when an identity is
//! there, else the 0.0.1 `NAME` when one is there, else (for `init`) the
//! generation `init` was asked for.
//!
//! Finding the folder needs only "is there an identity here?", which the
//! caller answers (this module touches no file).

use std::path::{Path, PathBuf};

/// Which command line an identity speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// Python retalk 0.0.1 (PROTOCOL section 10).
    V001,
    /// Python retalk 0.3.0 (`cli.py`).
    V030,
}

/// What a command line said about the identity to act as.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selectors {
    /// `-s DIR` / `--store DIR` (0.0.1).
    pub store: Option<PathBuf>,
    /// `--dir DIR` (0.3.0).
    pub dir: Option<PathBuf>,
    /// `-u NAME` / `--user NAME` (either generation, see the module docs).
    pub user: Option<String>,
    /// `--user-level [NAME]`, or `-u` given without a name (0.0.1).
    pub user_level: Option<String>,
}

/// Where identities live, and the environment's selectors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Places {
    /// 0.0.1's user-level folder: `$XDG_DATA_HOME/retalk`, else
    /// `~/.local/share/retalk`.
    pub user_level_home: PathBuf,
    /// 0.3.0's: `$RETALK_HOME`, else `~/.retalk`.
    pub retalk_home: PathBuf,
    /// `STORE` (0.0.1), when set and not empty.
    pub store_env: Option<PathBuf>,
    /// `RETALK_USER` (0.3.0), when set and not empty.
    pub retalk_user: Option<String>,
}

/// The identity folder a command acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub dir: PathBuf,
    pub generation: Generation,
}

/// Why no folder was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocateError {
    #[error("no identity selected")]
    NoneSelected,
    /// Where the selectors point, and the generation an identity made
    /// there would be (what `init` to suggest).
    #[error("no identity at {}", .0.dir.display())]
    NoIdentityAt(Located),
    #[error("init needs a location")]
    InitNeedsLocation,
}

/// What the command does with the folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Act as an identity that must exist.
    Open,
    /// Create one (`init`) of this generation where the selectors leave
    /// it open (`-u NAME`).
    Create(Generation),
}

/// Finds the folder, first match wins: `-s DIR`, `--dir DIR`,
/// `--user-level [NAME]`, `-u NAME`, `RETALK_USER`, `STORE` (not for
/// `init`), the user-level `default` (not for `init`). `has_identity`
/// tells whether a folder holds an identity (its `store.db`).
pub fn locate(
    sel: &Selectors,
    places: &Places,
    purpose: Purpose,
    has_identity: impl Fn(&Path) -> bool,
) -> Result<Located, LocateError> {
    use Generation::{V001, V030};
    let creating = matches!(purpose, Purpose::Create(_));
    let at = |dir: PathBuf, generation| Located { dir, generation };
    let found = if let Some(d) = &sel.store {
        at(d.clone(), V001)
    } else if let Some(d) = &sel.dir {
        at(d.clone(), V030)
    } else if let Some(name) = &sel.user_level {
        at(places.user_level_home.join(name), V001)
    } else if let Some(name) = &sel.user {
        let new = places.retalk_home.join(name);
        let old = places.user_level_home.join(name);
        if has_identity(&new) {
            at(new, V030)
        } else if has_identity(&old) {
            at(old, V001)
        } else {
            match purpose {
                Purpose::Create(V001) => at(old, V001),
                _ => at(new, V030),
            }
        }
    } else if let Some(name) = &places.retalk_user {
        at(places.retalk_home.join(name), V030)
    } else if let (Some(d), false) = (&places.store_env, creating) {
        at(d.clone(), V001)
    } else if !creating && has_identity(&places.user_level_home.join("default")) {
        at(places.user_level_home.join("default"), V001)
    } else if creating {
        return Err(LocateError::InitNeedsLocation);
    } else {
        return Err(LocateError::NoneSelected);
    };
    if !creating && !has_identity(&found.dir) {
        return Err(LocateError::NoIdentityAt(found));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn places() -> Places {
        Places {
            user_level_home: "/x/share/retalk".into(),
            retalk_home: "/h/.retalk".into(),
            store_env: None,
            retalk_user: None,
        }
    }

    fn sel_user(name: &str) -> Selectors {
        Selectors {
            user: Some(name.into()),
            ..Selectors::default()
        }
    }

    #[test]
    fn selection_decides_the_generation() {
        let p = places();
        let any = |_: &Path| true;
        let s = Selectors {
            store: Some("/a".into()),
            dir: Some("/b".into()),
            ..Selectors::default()
        };
        assert_eq!(
            locate(&s, &p, Purpose::Open, any).unwrap(),
            Located {
                dir: "/a".into(),
                generation: Generation::V001
            }
        );
        let s = Selectors {
            dir: Some("/b".into()),
            ..Selectors::default()
        };
        assert_eq!(
            locate(&s, &p, Purpose::Open, any).unwrap().generation,
            Generation::V030
        );
        let p2 = Places {
            retalk_user: Some("carol".into()),
            store_env: Some("/s".into()),
            ..places()
        };
        let got = locate(&Selectors::default(), &p2, Purpose::Open, any).unwrap();
        assert_eq!(got.dir, PathBuf::from("/h/.retalk/carol"));
        assert_eq!(got.generation, Generation::V030);
    }

    #[test]
    fn dash_u_prefers_the_030_home_then_the_001_one() {
        let p = places();
        let only_old = |d: &Path| d == Path::new("/x/share/retalk/work");
        let got = locate(&sel_user("work"), &p, Purpose::Open, only_old).unwrap();
        assert_eq!(got.generation, Generation::V001);
        let both = |_: &Path| true;
        let got = locate(&sel_user("work"), &p, Purpose::Open, both).unwrap();
        assert_eq!(got.dir, PathBuf::from("/h/.retalk/work"));
        let none = |_: &Path| false;
        let got = locate(
            &sel_user("work"),
            &p,
            Purpose::Create(Generation::V001),
            none,
        )
        .unwrap();
        assert_eq!(got.dir, PathBuf::from("/x/share/retalk/work"));
        let got = locate(
            &sel_user("work"),
            &p,
            Purpose::Create(Generation::V030),
            none,
        )
        .unwrap();
        assert_eq!(got.dir, PathBuf::from("/h/.retalk/work"));
        assert_eq!(
            locate(&sel_user("work"), &p, Purpose::Open, none),
            Err(LocateError::NoIdentityAt(Located {
                dir: "/h/.retalk/work".into(),
                generation: Generation::V030
            }))
        );
    }

    #[test]
    fn nothing_selected_is_an_error_and_init_never_guesses() {
        let p = places();
        let none = |_: &Path| false;
        assert_eq!(
            locate(&Selectors::default(), &p, Purpose::Open, none),
            Err(LocateError::NoneSelected)
        );
        let p2 = Places {
            store_env: Some("/s".into()),
            ..places()
        };
        assert_eq!(
            locate(
                &Selectors::default(),
                &p2,
                Purpose::Create(Generation::V001),
                none
            ),
            Err(LocateError::InitNeedsLocation)
        );
        let default_only = |d: &Path| d == Path::new("/x/share/retalk/default");
        assert_eq!(
            locate(&Selectors::default(), &p, Purpose::Open, default_only)
                .unwrap()
                .dir,
            PathBuf::from("/x/share/retalk/default")
        );
    }
}
