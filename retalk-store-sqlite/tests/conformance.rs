//! The shared conformance suites on real files, with drop-and-reopen.

// Test helpers outside #[test] fns may unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod relay {
    use retalk_store_sqlite::SqliteRelayStore;
    use tempfile::TempDir;

    fn db(dir: &TempDir) -> std::path::PathBuf {
        dir.path().join("server.db")
    }

    retalk_proto::relay_store_tests!(
        || {
            let dir = tempfile::tempdir().unwrap();
            (SqliteRelayStore::open(db(&dir)).unwrap(), dir)
        },
        |dir: &TempDir| SqliteRelayStore::open(db(dir)).unwrap()
    );
}

mod relay_single_connection {
    use retalk_store_sqlite::SqliteRelayStore;
    use tempfile::TempDir;

    // The pool must not matter for correctness: one idle connection (every
    // concurrent caller beyond it opens its own).
    retalk_proto::relay_store_tests!(
        || {
            let dir = tempfile::tempdir().unwrap();
            let store = SqliteRelayStore::open_with_pool(dir.path().join("s.db"), 1).unwrap();
            (store, dir)
        },
        |dir: &TempDir| SqliteRelayStore::open_with_pool(dir.path().join("s.db"), 1).unwrap()
    );
}

mod client {
    use retalk_store_sqlite::SqliteStore;
    use tempfile::TempDir;

    retalk_proto::store_tests!(
        || {
            let dir = tempfile::tempdir().unwrap();
            (SqliteStore::open(dir.path().join("alice")).unwrap(), dir)
        },
        |dir: &TempDir| SqliteStore::open(dir.path().join("alice")).unwrap()
    );
}
