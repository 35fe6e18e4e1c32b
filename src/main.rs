//! `kdscope` command line: parses the arguments and runs the command ([`kdscope::cli`]).
use clap::Parser;

fn main() -> anyhow::Result<()> {
    // Before any other thread exists: a thread that allocates before this keeps a malloc arena of
    // its own, which maps its large buffers afresh each time.
    kdscope::train::tune_allocator();
    kdscope::cli::run(kdscope::cli::Cli::parse())
}
