//! The end-to-end harness: the whole stack of real binaries ([`Stack`]), the
//! one HTTP client of the REST API ([`api::Api`]) and the order-flow helpers
//! ([`flow`]). The tests themselves are one binary, `tests/e2e/`.

pub mod api;
pub mod flow;
pub mod stack;

pub use stack::{
    ADMIN_EMAIL, ADMIN_PASSWORD, ADMIN_USERNAME, INTERNAL_AUTH_TOKEN, JWT_ISSUER, JWT_SECRET,
    SERVICES, Stack, StackOptions,
};
pub use testkit::eventually;
