#!/usr/bin/env bash
# The main job on the local default: start the local estate, converge site.yml on it,
# print what was built. Running it again changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python lab/lab.py up
eval "$(.venv/bin/python lab/lab.py env)"
.venv/bin/ansible-playbook -i inventories/local playbooks/site.yml "$@"
.venv/bin/python lab/summary.py
