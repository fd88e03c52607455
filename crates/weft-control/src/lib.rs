//! Weft's control plane: store, registry, compile, push, identity.
//!
//! Nothing here yet: it is issue 3 (control plane) and issue 4 (identity). The crate exists so
//! the workspace has the shape of shared/ARCHITECTURE.md and the CLI's dependencies point the
//! way they will.
