//! Node-side verbs: each builds the node context once from its flags and
//! hands it to the node module.

use std::path::PathBuf;

use anyhow::Result;

use crate::node::commands::{self, ensure_root};
use crate::node::context::NodeCtx;

/// Where the node's world is: the sysroot, and overrides for the state
/// file and the configuration directories.
#[derive(clap::Args)]
pub struct NodeArgs {
    /// The sysroot (`/` on a node).
    #[arg(long, default_value = "/")]
    pub sysroot: PathBuf,
    /// keelson's state file (default: /var/lib/keelson/state.json of the
    /// sysroot's stateroot).
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Configuration fragment directory, lowest precedence first
    /// (repeatable; default: /usr/lib, /etc and /run keelson/config.d).
    #[arg(long = "config-dir", value_name = "DIR")]
    pub config_dirs: Vec<PathBuf>,
    /// Read the host name and machine id from DIR/etc (a node simulated in
    /// a directory).
    #[arg(long, value_name = "DIR", hide = true)]
    pub identity_root: Option<PathBuf>,
}

impl NodeArgs {
    fn ctx(&self) -> Result<NodeCtx> {
        let ctx = NodeCtx::for_sysroot(&self.sysroot)?
            .with_overrides(self.state.clone(), self.config_dirs.clone());
        Ok(match &self.identity_root {
            Some(r) => ctx.with_identity_root(r),
            None => ctx,
        })
    }
}

#[derive(clap::Subcommand)]
pub enum CoordinateVerb {
    /// Take a slot, cordon and drain this node (for maintenance by hand).
    Lock {
        /// Wait for a free slot instead of failing.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Uncordon (if keelson cordoned it) and give the slot back.
    Unlock {
        #[command(flatten)]
        node: NodeArgs,
    },
}

#[derive(clap::Args)]
pub struct CoordinateArgs {
    #[command(subcommand)]
    pub verb: CoordinateVerb,
}

pub fn coordinate(a: &CoordinateArgs) -> Result<()> {
    use crate::node::coord::flow;
    match &a.verb {
        CoordinateVerb::Lock { wait, node } => flow::lock(&node.ctx()?, *wait),
        CoordinateVerb::Unlock { node } => flow::unlock(&node.ctx()?),
    }
}

#[derive(clap::Args)]
pub struct StatusArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub node: NodeArgs,
}

#[derive(clap::Args)]
pub struct RebootArgs {
    /// Reboot into the result.
    #[arg(long)]
    pub reboot: bool,
    #[command(flatten)]
    pub node: NodeArgs,
}

#[derive(clap::Args)]
pub struct UpgradeArgs {
    /// Only say whether a newer commit exists (pulls just the commit object).
    #[arg(long)]
    pub check: bool,
    #[command(flatten)]
    pub common: RebootArgs,
}

#[derive(clap::Args)]
pub struct DeployArgs {
    /// A commit checksum, or a version on the followed ref.
    pub target: String,
    #[command(flatten)]
    pub common: RebootArgs,
}

#[derive(clap::Args)]
pub struct KubeletConfigArgs {
    /// Reservation profile (default: the configuration's, else gke).
    #[arg(long, value_enum)]
    pub profile: Option<crate::reserve::Profile>,
    /// Preview for this many CPUs instead of this machine's.
    #[arg(long, requires_all = ["memory", "storage"])]
    pub cpus: Option<u32>,
    /// Preview memory, e.g. 16Gi.
    #[arg(long, requires_all = ["cpus", "storage"])]
    pub memory: Option<String>,
    /// Preview size of the kubelet's filesystem, e.g. 100Gi.
    #[arg(long, requires_all = ["cpus", "memory"])]
    pub storage: Option<String>,
    /// maxPods to render and compute with (default: the configuration's, else 110).
    #[arg(long)]
    pub max_pods: Option<u32>,
    /// Write here (atomically) instead of standard output.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub node: NodeArgs,
}

pub fn status(a: &StatusArgs) -> Result<()> {
    let ctx = a.node.ctx()?;
    let mut st = crate::node::status::read(&ctx)?;
    if let Ok(cfg) = ctx.load_config() {
        st.coordination = crate::node::coord::flow::status(&ctx, &cfg);
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&st)?);
    } else {
        print!("{}", crate::node::status::render(&st));
    }
    Ok(())
}

pub fn upgrade(a: &UpgradeArgs) -> Result<()> {
    ensure_root()?;
    commands::upgrade(&a.common.node.ctx()?, a.check, a.common.reboot)
}

pub fn deploy(a: &DeployArgs) -> Result<()> {
    ensure_root()?;
    commands::deploy_target(&a.common.node.ctx()?, &a.target, a.common.reboot)
}

pub fn rollback(a: &RebootArgs) -> Result<()> {
    ensure_root()?;
    commands::rollback(&a.node.ctx()?, a.reboot)
}

pub fn health(a: &NodeArgs) -> Result<()> {
    ensure_root()?;
    if crate::node::health_flow::run(&a.ctx()?)? {
        Ok(())
    } else {
        anyhow::bail!("health checks failed")
    }
}

pub fn agent(a: &NodeArgs) -> Result<()> {
    ensure_root()?;
    commands::agent(&a.ctx()?)
}

pub fn kubelet_config(a: &KubeletConfigArgs) -> Result<()> {
    use crate::node::kubelet::{Preview, Request, render_request};
    let preview = match (a.cpus, &a.memory, &a.storage) {
        (Some(cpus), Some(memory), Some(storage)) => Some(Preview {
            cpus,
            memory: memory.clone(),
            storage: storage.clone(),
        }),
        _ => None,
    };
    let req = Request {
        profile: a.profile,
        max_pods: a.max_pods,
        preview,
    };
    let text = render_request(&a.node.ctx()?, &req)?;
    super::emit(a.output.as_deref(), &text)
}
