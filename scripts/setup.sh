#!/usr/bin/env bash
# Installs everything the project needs on a Debian/Ubuntu machine, and nothing twice:
# system packages, the pinned virtualenv and collections, their check, the local base image and
# the SSH key of the Molecule instances.
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# 1. System packages: podman with runc (crun fails on hosts without CAP_SYS_RESOURCE),
#    mmdebstrap for the base image, PostgreSQL (RDS stand-in and migration tests),
#    HAProxy (the local load balancer), pgloader (migration benchmark baseline), the CNI
#    dnsname plugin (containers on one podman network find each other by name; without it,
#    as on a machine where apt picked CNI without recommends, they cannot) and the SSH client
#    that reaches the lab's instances, Redis (the lab's stand-in for ElastiCache), iproute2
#    (the lab makes its bridge before its services listen on it), and what the migration
#    tool's compiled modules are built with (a C compiler, SQLite's and Python's headers).
packages=(podman runc mmdebstrap uidmap slirp4netns fuse-overlayfs golang-github-containernetworking-plugin-dnsname
          postgresql postgresql-client sqlite3 haproxy pgloader git python3-venv curl openssh-client redis-server iproute2
          gcc libc6-dev libsqlite3-dev python3-dev)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  say "installing ${missing[*]}"
  # Only the binaries: the lab and the tests run their own PostgreSQL clusters.
  as_root mkdir -p /etc/postgresql-common/createcluster.d
  echo "create_main_cluster = false" | as_root tee /etc/postgresql-common/createcluster.d/chatmrpt.conf >/dev/null
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. The virtualenv with exactly the pinned, hashed Python packages (requirements/README.md) and
#    exactly the pinned collections, taken from the hashed `ansible` wheel (Galaxy is
#    unreachable here); made again from scratch only when one of those files changes.
python="${PYTHON:-python3}"
"$python" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' \
  || { echo "setup: Python 3.11 or newer is needed (set PYTHON=...)" >&2; exit 1; }
lock_hash="$(cat requirements/test.txt requirements/collections-bundle.txt requirements.yml \
             scripts/install_collections.py | sha256sum | cut -d' ' -f1)"
if [ "$(cat .venv/.lock-hash 2>/dev/null)" != "$lock_hash" ]; then
  say "creating .venv from requirements/test.txt and requirements.yml"
  "$python" -m venv --clear .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q --require-hashes -r requirements/test.txt
  rm -rf .cache/collections-bundle
  .venv/bin/pip download -q --no-deps --only-binary=:all: --require-hashes -d .cache/collections-bundle \
    -r requirements/collections-bundle.txt
  .venv/bin/python scripts/install_collections.py .cache/collections-bundle/ansible-*.whl \
    "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null
  echo "$lock_hash" > .venv/.lock-hash
fi

# 2a. Checkov, the lint gate's security scanner, in a virtualenv of its own from its own hashed
#     lock (requirements/checkov.in says why it cannot share .venv).
checkov_hash="$(sha256sum requirements/checkov.txt | cut -d' ' -f1)"
if [ "$(cat .venv-checkov/.lock-hash 2>/dev/null)" != "$checkov_hash" ]; then
  say "creating .venv-checkov from requirements/checkov.txt"
  "$python" -m venv --clear .venv-checkov
  .venv-checkov/bin/pip install -q --upgrade pip
  .venv-checkov/bin/pip install -q --require-hashes -r requirements/checkov.txt
  echo "$checkov_hash" > .venv-checkov/.lock-hash
fi

# 2b. Into .venv's site-packages, replaced whenever a file changes (each file says why):
#     forked children (Ansible's per-task workers) do not garbage-collect what they inherit;
#     modules run on the controller load their module_utils from the installed, compiled
#     copy where it is identical to the one in the AnsiballZ zip, and run in a fork of a
#     server that has imported boto3 once; the zips of the virtualenv's modules are built once,
#     not once per run.
site_packages="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
for file in chatmrpt-fork-gc.pth chatmrpt_ansiballz_bytecode.py chatmrpt-ansiballz-bytecode.pth \
            chatmrpt_ansiballz_cache.py chatmrpt-ansiballz-cache.pth \
            chatmrpt_module_forkserver.py chatmrpt-module-forkserver.pth; do
  cmp -s "scripts/$file" "$site_packages/$file" || install -m 0644 "scripts/$file" "$site_packages/$file"
done

# 2c. The migration tool's compiled modules (tools/chatmrpt_migrate/build.py), built again
#     when they do not load or are older than their sources.
if ! PYTHONPATH=tools .venv/bin/python -m chatmrpt_migrate.build --check; then
  say "building the migration tool's compiled modules"
  PYTHONPATH=tools .venv/bin/python -m chatmrpt_migrate.build >/dev/null
fi

# 3. What Ansible finds is exactly requirements.yml (a collection installed by hand fails here).
.venv/bin/python scripts/check_collections.py >/dev/null

# 4. The local base image (Debian 12 + systemd), rebuilt only when its recipe changes.
CONTAINERS_CONF="$PWD/lab/containers.conf" lab/image/build.sh >/dev/null

# 5. The key pair Molecule's instances authorize for `admin`, as the lab's do with its own
#    (.config/molecule/config.yml: Ansible and testinfra reach them over SSH).
if [ ! -f .cache/molecule/ssh/id_ed25519 ]; then
  install -d -m 0700 .cache/molecule/ssh
  ssh-keygen -q -t ed25519 -N "" -C "chatmrpt-molecule" -f .cache/molecule/ssh/id_ed25519
  # sshd accepts an authorized_keys file owned by root and not writable by others.
  chmod 0644 .cache/molecule/ssh/id_ed25519.pub
fi
install -d -m 0700 "$HOME/.ansible/cp"

# 6. ansible-navigator (the execution environment, docs/awx.md) refuses to run podman
#    without a POSIX message queue directory, which some container hosts lack.
[ -d /dev/mqueue ] || as_root mkdir -p /dev/mqueue
say "ready"
