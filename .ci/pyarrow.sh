#!/usr/bin/env bash
# pyarrow on the other side of mware's Arrow IPC files (feature `arrow`):
# pyarrow writes a gateway-8 log that mware replays to the test vector, and
# reads the processed file mware writes. Installs pyarrow from PyPI into a
# virtual environment; prints `pyarrow …: N passed, M failed`.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${PYARROW_VENV:-${TMPDIR:-/tmp}/mware-pyarrow-venv}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check pyarrow numpy

# The test profile: shares its dependencies with `cargo test --features arrow`.
cargo build --quiet --profile test --features arrow --example replay
target_dir="${CARGO_TARGET_DIR:-target}"
"$venv/bin/python" tests/pyarrow/test_gateway.py "$target_dir/debug/examples/replay"
