//! The `keelson` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "keelson",
    version,
    about = "Immutable-OS image builder and node agent for Kubernetes nodes",
    long_about = "keelson composes rpm-ostree-format treefiles into ostree commits on a \
                  Debian base (build side) and runs on the nodes it builds (node side)."
)]
struct Cli {
    /// Log more (repeat for debug output). Also RUST_LOG=keelson=debug.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compose a treefile into an ostree commit.
    Compose(ComposeArgs),
    /// Commit an already ostree-shaped directory (the commit step of
    /// compose on its own; what bench/commit.sh times against `ostree commit`).
    Commit(CommitArgs),
}

#[derive(clap::Args)]
struct CommitArgs {
    /// The directory to commit.
    dir: PathBuf,
    /// The ostree repo to commit into (an archive repo is created if missing).
    #[arg(long)]
    repo: PathBuf,
    /// The ref (branch) to point at the new commit.
    #[arg(long, short = 'b')]
    branch: String,
    /// Commit subject line.
    #[arg(long, short = 's', default_value = "keelson commit")]
    subject: String,
    /// Threads hashing and compressing objects (default: the number of CPUs).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Commit timestamp in seconds since the epoch (default:
    /// SOURCE_DATE_EPOCH, else now).
    #[arg(long, value_name = "SECONDS")]
    timestamp: Option<u64>,
}

#[derive(clap::Args)]
struct ComposeArgs {
    /// The treefile (rpm-ostree JSON format) to compose.
    treefile: PathBuf,
    /// The ostree repo to commit into (an archive repo is created if missing).
    #[arg(long)]
    repo: PathBuf,
    /// Directory for downloaded packages and the work tree; a recompose with
    /// the same cache downloads nothing again.
    #[arg(long)]
    cachedir: Option<PathBuf>,
    /// Print the flattened treefile (includes merged) as JSON and exit.
    #[arg(long)]
    print_only: bool,
    /// Resolve packages and compute the inputhash, but write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Compose even when the inputhash matches the ref's last commit.
    #[arg(long)]
    force_nocache: bool,
    /// Create or update the mtime of FILE when a new commit is written.
    #[arg(long, value_name = "FILE")]
    touch_if_changed: Option<PathBuf>,
    /// Write the result (ref, commit, version, inputhash, ...) as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    write_composejson_to: Option<PathBuf>,
    /// Threads hashing and compressing objects during the commit
    /// (default: the number of CPUs).
    #[arg(long, value_name = "N")]
    commit_threads: Option<usize>,
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "keelson=info",
        1 => "keelson=debug",
        _ => "keelson=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn source_date_epoch() -> anyhow::Result<Option<i64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| anyhow::anyhow!("SOURCE_DATE_EPOCH: {v:?} is not a number of seconds")),
        _ => Ok(None),
    }
}

fn threads(n: Option<usize>) -> usize {
    n.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    })
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Commit(a) => {
            let ts = match (a.timestamp, source_date_epoch()?) {
                (Some(t), _) => t,
                (None, Some(sde)) => sde.max(0) as u64,
                (None, None) => std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_secs(),
            };
            let repo = keelson::commit::open_or_create(&a.repo)?;
            let parent = keelson::commit::previous(&repo, &a.branch)?.map(|p| p.checksum);
            let meta = ostree::glib::VariantDict::new(None).end();
            let checksum = keelson::commit::write(
                &repo,
                &keelson::commit::Request {
                    ref_: &a.branch,
                    parent: parent.as_deref(),
                    rootfs: &a.dir,
                    metadata: &meta,
                    subject: &a.subject,
                    timestamp: ts,
                    threads: threads(a.threads),
                },
            )?;
            println!("{checksum}");
            Ok(())
        }
        Command::Compose(a) => {
            let threads = threads(a.commit_threads);
            keelson::compose::run(&keelson::compose::Options {
                treefile: a.treefile,
                repo: a.repo,
                cachedir: a.cachedir,
                print_only: a.print_only,
                dry_run: a.dry_run,
                force_nocache: a.force_nocache,
                touch_if_changed: a.touch_if_changed,
                write_composejson_to: a.write_composejson_to,
                threads,
                source_date_epoch: source_date_epoch()?,
            })?;
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
