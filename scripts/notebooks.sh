#!/usr/bin/env bash
# Installs what the notebooks need (once) and executes every notebook in notebooks/ with a real Jupyter
# client and the evcxr `rust` kernel, checking their outputs (scripts/run_notebooks.py).
#   scripts/notebooks.sh                 # all notebooks
#   scripts/notebooks.sh notebooks/01_quickstart.ipynb
#   scripts/notebooks.sh --setup-only    # install the kernel and the Jupyter client, run nothing
# Installs: the rust-src component, evcxr_jupyter (skipped when this version is already installed),
# a Python venv .venv-nb with the Jupyter client packages, and the `rust` kernel spec.
set -euo pipefail
cd "$(dirname "$0")/.."

EVCXR_VERSION=0.22.0
export PATH="$HOME/.cargo/bin:$PATH"

if ! rustup component list --installed 2>/dev/null | grep -q '^rust-src'; then
    echo "== rustup component add rust-src (evcxr needs it to infer the types of notebook variables)"
    rustup component add rust-src
fi
if ! cargo install --list 2>/dev/null | grep -q "^evcxr_jupyter v$EVCXR_VERSION:"; then
    echo "== cargo install evcxr_jupyter $EVCXR_VERSION (about 9 minutes on 2 cores, once per machine)"
    cargo install evcxr_jupyter --version "$EVCXR_VERSION" --locked
fi
if [ ! -x .venv-nb/bin/python ] || ! .venv-nb/bin/python -c 'import nbclient, nbformat, nbconvert, jupyter_client' 2>/dev/null; then
    echo "== Python venv .venv-nb with the Jupyter client"
    python3 -m venv .venv-nb
    .venv-nb/bin/pip install --quiet --disable-pip-version-check \
        'jupyter_client>=8,<9' 'nbclient>=0.10,<0.12' 'nbconvert>=7,<8' 'nbformat>=5,<6'
fi
export PATH="$PWD/.venv-nb/bin:$PATH"
if ! jupyter kernelspec list 2>/dev/null | grep -q '^ *rust '; then
    echo "== registering the evcxr kernel"
    evcxr_jupyter --install
fi
if [ "${1:-}" = "--setup-only" ]; then
    echo "notebook kernel ready: jupyter lab notebooks/ (or jupyter notebook) and pick the Rust kernel"
    exit 0
fi
echo "== executing notebooks (executed copies in notebooks/executed/)"
python scripts/run_notebooks.py "$@"
