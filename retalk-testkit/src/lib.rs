//! Test support shared by the retalk crates (a dev-dependency only):
//! [`python`] builds and caches virtualenvs with the real `retalk` from PyPI
//! for interop tests against the original library, CLI and relay;
//! [`postgres`] starts a private PostgreSQL cluster for a test;
//! [`browser`] drives a real headless Chromium.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod bench;
pub mod browser;
pub mod postgres;
pub mod python;
