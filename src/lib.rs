//! keelson: immutable-OS image builder (build side) and node agent (node side).
//!
//! Flow is one way: treefile → backend → postprocess → commit. The node-side
//! modules (added later) must not import the build-side ones.

pub mod backend;
pub mod boot;
pub mod build;
pub mod cli;
pub mod commit;
pub mod compose;
pub mod diff;
pub mod image;
pub mod inputhash;
pub mod node;
pub mod postprocess;
pub mod provision;
pub mod publish;
pub mod reserve;
pub mod treefile;
pub mod util;
pub mod vm;
pub mod workdir;
