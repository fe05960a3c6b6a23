#!/usr/bin/env bash
# Test the Python client (clients/python) against real devnets: builds the
# `idlegrid` binary, makes a virtual environment with the client and pytest
# installed, and runs the client's tests, which start `idlegrid devnet`
# processes on loopback.
#
# usage: scripts/test-python.sh [pytest arguments]
#
# The virtual environment is $IDLEGRID_VENV, by default python-venv next to
# the cargo target directory; it is reused between runs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
VENV="${IDLEGRID_VENV:-$TARGET/python-venv}"

cargo build -p idlegrid
export IDLEGRID_BIN="$TARGET/debug/idlegrid"

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e "$ROOT/clients/python[test]"
"$VENV/bin/python" -m pytest "$ROOT/clients/python/tests" "$@"
