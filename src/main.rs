//! `kdscope` command line: parses the arguments and runs the command ([`kdscope::cli`]).
use clap::Parser;

fn main() -> anyhow::Result<()> {
    kdscope::cli::run(kdscope::cli::Cli::parse())
}
