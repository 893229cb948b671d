//! The client `Transport` over HTTP (reqwest): the client side of the wire.
