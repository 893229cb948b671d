//! The shared conformance suites on real directories, with drop-and-reopen.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod relay {
    use retalk_store_sled::SledRelayStore;
    use tempfile::TempDir;

    fn db(dir: &TempDir) -> std::path::PathBuf {
        dir.path().join("relay.sled")
    }

    retalk_proto::relay_store_tests!(
        || {
            let dir = tempfile::tempdir().unwrap();
            (SledRelayStore::open(db(&dir)).unwrap(), dir)
        },
        |dir: &TempDir| SledRelayStore::open(db(dir)).unwrap()
    );
}

mod client {
    use retalk_store_sled::SledStore;
    use tempfile::TempDir;

    retalk_proto::store_tests!(
        || {
            let dir = tempfile::tempdir().unwrap();
            (SledStore::open(dir.path().join("alice")).unwrap(), dir)
        },
        |dir: &TempDir| SledStore::open(dir.path().join("alice")).unwrap()
    );
}
