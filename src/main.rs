//! `kdscope` command line: parses the arguments and runs the command ([`kdscope::cli`]).
use clap::Parser;

fn main() -> anyhow::Result<()> {
    // Before any thread allocates: threads that did keep their own malloc arena.
    kdscope::train::tune_allocator();
    kdscope::cli::run(kdscope::cli::Cli::parse())
}
