//! `weft up`: the whole mesh on one machine in one command — the control plane on a directory
//! of documents, every `Workload` started (`replicas` times) with its own sidecar, and what a
//! person needs to see it work. `weft down` and `weft logs` find a running mesh through its run
//! directory.
//!
//! The default mode needs no root: every workload shares 127.0.0.1 and reaches its upstreams
//! through its sidecar's per-service ports, given to it as environment variables
//! (`REVIEWS_URL=http://127.0.0.1:PORT`, `HTTP_PROXY`), as a sidecar injector would.
//!
//! `weft up --netns` (root) runs each instance in a network namespace of its own with
//! transparent iptables capture, like a pod: the app is given only service names
//! (`REVIEWS_URL=http://reviews:9080`) and never learns the mesh is there.

pub mod netns;
pub mod orphans;
pub mod plan;
pub mod run;
pub mod rundir;

pub use run::{up, Entry, UpOptions};
pub use rundir::RunDir;
