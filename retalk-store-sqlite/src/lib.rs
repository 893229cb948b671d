//! The client `Store` and the relay `RelayStore` on SQLite (rusqlite, bundled): the default backend.
