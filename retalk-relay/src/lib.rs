//! The relay: an axum server over `retalk_proto::relay`, its configuration and binary.
