#!/usr/bin/env bash
# Run every check: formatting, lint, types, then the test suite. As root on
# Debian 12; installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
export PATH="$PWD/.venv/bin:$PATH"

echo "== ruff format"; ruff format --check engine desktop vmimage installers tests bench
echo "== ruff check"; ruff check engine desktop vmimage installers tests bench
echo "== mypy"; mypy
echo "== pytest"
pytest -ra "$@"
