//! The owner-wide contact list shared by every identity of a user:
//! `$RETALK_HOME/contacts.db`, a `peers` table in Python retalk 0.3.0's
//! own layout (`store.py` `ensure_peers`: `fingerprint` primary key,
//! `name`, `identity_key`, `signing_key`), so the file is shared with
//! Python's CLI both ways. Each identity's own contacts overlay it (see
//! [`overlay`]).

use std::path::{Path, PathBuf};

use retalk_proto::client::{Contact, StoreError};
use retalk_proto::ids::UserId;
use rusqlite::{params, Connection, OptionalExtension};

use crate::conn::{self, db_err};

/// The file name under `$RETALK_HOME`.
pub const GLOBAL_CONTACTS_FILE: &str = "contacts.db";

/// The owner-wide contact list (see the module docs). Every call is one
/// SQLite statement or transaction on the file.
pub struct GlobalContacts {
    path: PathBuf,
    conn: Connection,
}

impl std::fmt::Debug for GlobalContacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlobalContacts")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl GlobalContacts {
    /// Opens (creating it and its folder if missing) the list at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(conn::io_err)?;
        }
        let conn = conn::open(&path)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS peers(fingerprint TEXT PRIMARY KEY, name TEXT, \
             identity_key TEXT, signing_key TEXT)",
        )
        .map_err(db_err)?;
        Ok(Self { path, conn })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every contact, by name. An unnamed one is named by its id (as in an
    /// identity's store); rows whose fingerprint is not a user id are
    /// skipped.
    pub fn contacts(&self) -> Result<Vec<Contact>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT fingerprint, name, identity_key, signing_key FROM peers")
            .map_err(db_err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                ))
            })
            .map_err(db_err)?;
        let mut out = Vec::new();
        for row in rows {
            let (fp, name, ik, sk) = row.map_err(db_err)?;
            let Ok(id) = UserId::parse(&fp) else {
                continue;
            };
            out.push(Contact {
                name: name.filter(|n| !n.is_empty()).unwrap_or_else(|| fp.clone()),
                id,
                pin: ik.filter(|k| !k.is_empty()),
                signing_key: sk.filter(|k| !k.is_empty()),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Saves `id` under `name` (None: unnamed) with `keys` (identity,
    /// signing; None: unverified), replacing what was saved for it, and
    /// takes `name` from any other fingerprint holding it (which is left
    /// unnamed): 0.3.0's `cmd_add` / `_save_card` (the caller decides
    /// whether a name clash is allowed).
    pub fn put(
        &self,
        id: &UserId,
        name: Option<&str>,
        keys: Option<(&str, &str)>,
    ) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction().map_err(db_err)?;
        if let Some(name) = name {
            tx.execute(
                "UPDATE peers SET name = NULL WHERE name = ?1 AND fingerprint != ?2",
                params![name, id.as_str()],
            )
            .map_err(db_err)?;
        }
        tx.execute(
            "INSERT INTO peers(fingerprint, name, identity_key, signing_key) VALUES(?1, ?2, ?3, ?4) \
             ON CONFLICT(fingerprint) DO UPDATE SET name = excluded.name, \
             identity_key = excluded.identity_key, signing_key = excluded.signing_key",
            params![id.as_str(), name, keys.map(|k| k.0), keys.map(|k| k.1)],
        )
        .map_err(db_err)?;
        tx.commit().map_err(db_err)
    }

    /// Records both keys of `id` (the caller checked they hash to it;
    /// 0.3.0 `record_peer_keys`).
    pub fn record_keys(
        &self,
        id: &UserId,
        identity_key: &str,
        signing_key: &str,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO peers(fingerprint, identity_key, signing_key) VALUES(?1, ?2, ?3) \
                 ON CONFLICT(fingerprint) DO UPDATE SET identity_key = excluded.identity_key, \
                 signing_key = excluded.signing_key",
                params![id.as_str(), identity_key, signing_key],
            )
            .map_err(db_err)?;
        Ok(())
    }

    /// Removes `id`; returns whether it was there.
    pub fn remove(&self, id: &UserId) -> Result<bool, StoreError> {
        let n = self
            .conn
            .execute("DELETE FROM peers WHERE fingerprint = ?1", [id.as_str()])
            .map_err(db_err)?;
        Ok(n > 0)
    }

    /// The saved entry for `id`, if any.
    pub fn get(&self, id: &UserId) -> Result<Option<Contact>, StoreError> {
        Ok(self.contacts()?.into_iter().find(|c| &c.id == id))
    }

    /// Whether `id` is saved (a point lookup).
    pub fn contains(&self, id: &UserId) -> Result<bool, StoreError> {
        self.conn
            .query_row(
                "SELECT 1 FROM peers WHERE fingerprint = ?1",
                [id.as_str()],
                |_| Ok(()),
            )
            .optional()
            .map(|o| o.is_some())
            .map_err(db_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid(n: u8) -> UserId {
        UserId::parse(&format!("{n:032x}")).unwrap()
    }

    #[test]
    fn upsert_names_keys_remove_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("home").join(GLOBAL_CONTACTS_FILE);
        let g = GlobalContacts::open(&path).unwrap();
        g.put(&uid(1), Some("bob"), None).unwrap();
        g.put(&uid(2), None, Some(("i", "s"))).unwrap();
        g.put(&uid(2), None, None).unwrap();
        g.record_keys(&uid(1), "ik", "sk").unwrap();
        drop(g);
        let g = GlobalContacts::open(&path).unwrap();
        let all = g.contacts().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].name, "bob");
        assert!(all[1].verified());
        assert_eq!(all[0].name, uid(2).as_str());
        assert!(!all[0].verified());
        // A name moves to the fingerprint that takes it.
        g.put(&uid(2), Some("bob"), None).unwrap();
        assert_eq!(g.get(&uid(1)).unwrap().unwrap().name, uid(1).as_str());
        assert!(g.remove(&uid(2)).unwrap());
        assert!(!g.remove(&uid(2)).unwrap());
        assert!(!g.contains(&uid(2)).unwrap());
    }
}
