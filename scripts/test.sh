#!/usr/bin/env bash
# The whole test suite: the Rust tests, then every notebook executed in Jupyter (evcxr kernel).
# This is the README's test command and what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
# The report's browser test (tests/report_browser.rs) needs Chromium.
if [ -z "${KDSCOPE_CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1; then
    echo "== installing Chromium (Debian package) for the report browser test"
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
# The grid's Slurm test (tests/slurm.rs) runs a one-node Slurm cluster.
if ! command -v sbatch >/dev/null 2>&1 || [ ! -x /usr/sbin/slurmctld ] || [ ! -x /usr/sbin/munged ]; then
    echo "== installing Slurm and munge (Debian packages) for the grid's Slurm test"
    scripts/slurm_cluster.sh install
fi
cargo test --release
scripts/notebooks.sh
