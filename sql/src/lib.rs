//! SQL: Strata's own statements and the PostgreSQL wire protocol.
//!
//! Owns: recognising the statements DataFusion does not know (CREATE TABLE
//! with `TIMESTAMP(col) PARTITION BY`, DROP/TRUNCATE, DROP PARTITION, COPY
//! FROM STDIN), running them on the engine, authentication, TLS, looking like
//! PostgreSQL 16 to clients that check the version (`compat.rs`), and mapping every
//! error to a PostgreSQL SQLSTATE (in `error.rs`, nowhere else).
//! Must not know: how tables are stored (it goes through `engine::Database`).
//!
//! Main entry points: [`serve`], [`statements::split_and_parse`].

mod auth;
mod catalog_subqueries;
mod compat;
pub mod error;
mod execute;
mod handlers;
mod pg_functions;
mod readonly;
mod server;
pub mod statements;
#[cfg(test)]
mod statements_fuzz_tests;
pub mod tls;

pub use error::SqlError;
pub use server::serve;
