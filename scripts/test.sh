#!/usr/bin/env bash
# The whole test suite: the Rust tests, then every notebook executed in Jupyter (evcxr kernel).
# This is the README's test command and what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release
scripts/notebooks.sh
