//! The client `Store` and the relay `RelayStore` on sled.
