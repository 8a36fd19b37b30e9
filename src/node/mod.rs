//! The node side of keelson: what runs on the machines keelson builds.
//! Must not import build-side modules (treefile, backend, postprocess,
//! compose, commit, image).

pub mod bootcount;
pub mod commands;
pub mod config;
pub mod context;
pub mod coord;
pub mod deploy;
pub mod fetch;
pub mod grubenv;
pub mod health;
pub mod health_flow;
pub mod kubelet;
pub mod quantity;
pub mod state;
pub mod status;
