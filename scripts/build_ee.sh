#!/usr/bin/env bash
# Builds the execution environment image localhost/chatmrpt-ee:latest from
# execution-environment.yml with ansible-builder, unless the image on this machine was built
# from the same recipe (its label chatmrpt.recipe: the hash of every input and of the base
# image). Needs `make setup` first (the virtualenv, the base image, the collections' wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/lab/containers.conf}"
image=localhost/chatmrpt-ee:latest
base_id="$(podman image inspect --format '{{.Id}}' localhost/chatmrpt-base:latest)"
recipe="$( (cat execution-environment.yml bindep.txt requirements/runtime.txt requirements.yml \
               requirements/collections-bundle.txt scripts/install_collections.py "$0"; echo "$base_id") \
           | sha256sum | cut -d' ' -f1)"
if [ "$(podman image inspect --format '{{index .Labels "chatmrpt.recipe"}}' "$image" 2>/dev/null)" = "$recipe" ]; then
  echo "build_ee: $image is up to date"
  exit 0
fi
rm -rf .cache/ee
.venv/bin/python scripts/install_collections.py .cache/collections-bundle/ansible-*.whl .cache/ee/collections >/dev/null
.venv/bin/ansible-builder build --file execution-environment.yml --context .cache/ee/context \
  --container-runtime podman --tag "$image" --extra-build-cli-args "--label chatmrpt.recipe=$recipe" -v 1
echo "build_ee: built $image"
