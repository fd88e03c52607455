//! The `weft` subcommands, one module each.

pub mod init_iptables;
