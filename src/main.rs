//! The `keelson` binary: the command line lives in `keelson::cli`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // ostree's grub2 backend runs `grub-mkconfig -o …/grub.cfg`; on nodes
    // /usr/sbin/grub-mkconfig is a link to this binary.
    let mut args = std::env::args();
    let argv0 = args.next().unwrap_or_default();
    if std::path::Path::new(&argv0)
        .file_name()
        .is_some_and(|n| n == "grub-mkconfig")
    {
        let rest: Vec<String> = args.collect();
        return match keelson::boot::grubcfg::mkconfig(&rest) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("grub-mkconfig (keelson): {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let cli = keelson::cli::Cli::parse();
    keelson::cli::init_logging(cli.verbose);
    match keelson::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
