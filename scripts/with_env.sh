#!/usr/bin/env bash
# Runs a command for an environment: `local` points AWS clients at the lab's emulator,
# any other environment keeps the normal AWS credential chain untouched.
set -euo pipefail
env_name="$1"; shift
if [ "$env_name" = local ]; then
  eval "$("$(dirname "$0")/../.venv/bin/python" "$(dirname "$0")/../lab/lab.py" env)"
fi
exec "$@"
