//! The relay conformance suites on a real PostgreSQL, started by this test
//! binary (one private cluster, a fresh database per test): the
//! single-store checks with drop-and-reconnect, and the two-handle checks
//! (two stores on one database, as two relay nodes).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use retalk_store_postgres::PgRelayStore;
use retalk_testkit::postgres::Cluster;

fn fresh() -> String {
    Cluster::shared().create_database()
}

mod relay {
    use super::*;

    retalk_proto::relay_store_tests!(
        || {
            let url = fresh();
            (PgRelayStore::connect(&url).unwrap(), url)
        },
        |url: &String| PgRelayStore::connect(url).unwrap()
    );
}

mod shared {
    use super::*;

    retalk_proto::relay_store_shared_tests!(|| {
        let url = fresh();
        (
            PgRelayStore::connect(&url).unwrap(),
            PgRelayStore::connect(&url).unwrap(),
            url,
        )
    });
}
