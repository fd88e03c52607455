//! Weft's data plane: the sidecar proxy.
//!
//! Read [`app`] first: it wires the whole process top to bottom. Then [`outbound`] (what
//! happens to a request the app sends) and [`inbound`] (what happens to one it receives); both
//! turn each request into its canonical form first ([`http::canonical`]) and reach their
//! upstream through [`forward`].

pub mod admin;
pub mod app;
pub mod authn;
pub mod balance;
pub mod capture;
pub mod config;
pub mod control_tls;
pub mod detect;
pub mod discovery;
pub mod forward;
pub mod http;
pub mod identity;
pub mod inbound;
pub mod io;
pub mod listen;
pub mod outbound;
pub mod pool;
pub mod rate_limit;
pub mod tcp;
pub mod telemetry;
pub mod tls;
