#!/usr/bin/env bash
# Builds the local base image (Debian 12 + systemd + python3 + cloud-init), the stand-in for the
# EC2 base AMI. The image tag carries a hash of its recipe, so it is rebuilt only when
# this script, the package list, the bytecode cache or the host's extra CA certificates
# change.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/../containers.conf}"
image="${LAB_BASE_IMAGE:-localhost/chatmrpt-base}"

# Extra CA certificates of this host (TLS-inspecting proxies): the image trusts them too.
shopt -s nullglob
ca_files=(/usr/local/share/ca-certificates/*.crt)
recipe_hash="$(cat "$0" "$here/packages.txt" "$here/chatmrpt_zip_bytecode.py" "$here/cloud-nocloud.cfg" "${ca_files[@]}" | sha256sum | cut -c1-12)"

if podman image exists "$image:$recipe_hash"; then
  podman tag "$image:$recipe_hash" "$image:latest"
  echo "base image $image:$recipe_hash is up to date"
  exit 0
fi

workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT
packages="$(grep -v '^#' "$here/packages.txt" | paste -sd, -)"

hooks=()
if ((${#ca_files[@]})); then
  hooks+=(--customize-hook="mkdir -p \"\$1/usr/local/share/ca-certificates\"")
  for ca in "${ca_files[@]}"; do
    hooks+=(--customize-hook="copy-in $ca /usr/local/share/ca-certificates")
  done
  hooks+=(--customize-hook="chroot \"\$1\" update-ca-certificates")
fi
# Not on an EC2 AMI: a bytecode cache for Ansible's module zips in the image's Python
# (chatmrpt_zip_bytecode.py says why); the modules run the same, only faster.
hooks+=(--customize-hook="copy-in $here/chatmrpt_zip_bytecode.py /usr/lib/python3/dist-packages")
hooks+=(--customize-hook="echo 'import chatmrpt_zip_bytecode' > \"\$1/usr/lib/python3/dist-packages/chatmrpt-zip-bytecode.pth\"")
# cloud-init reads the NoCloud seed the lab controller gives each instance (cloud-nocloud.cfg).
hooks+=(--customize-hook="copy-in $here/cloud-nocloud.cfg /etc/cloud/cloud.cfg.d")
hooks+=(--customize-hook="mv \"\$1/etc/cloud/cloud.cfg.d/cloud-nocloud.cfg\" \"\$1/etc/cloud/cloud.cfg.d/90-chatmrpt-lab.cfg\"")
# A machine-id is generated at first boot; clean apt lists keep the image small.
hooks+=(--customize-hook="rm -f \"\$1/etc/machine-id\"; touch \"\$1/etc/machine-id\"")
# As on an EC2 AMI: the login user `admin` with passwordless sudo, whose authorized key the
# instance gets at launch (the lab mounts the lab's public key, EC2 its key pair), and no SSH
# host keys in the image: each instance makes its own at first boot, before sshd starts.
hooks+=(--customize-hook="chroot \"\$1\" useradd --create-home --shell /bin/bash admin")
hooks+=(--customize-hook="install -d -m 0700 -o 1000 -g 1000 \"\$1/home/admin/.ssh\"")
hooks+=(--customize-hook="echo 'admin ALL=(ALL) NOPASSWD:ALL' > \"\$1/etc/sudoers.d/90-admin\"; chmod 0440 \"\$1/etc/sudoers.d/90-admin\"")
hooks+=(--customize-hook="rm -f \"\$1\"/etc/ssh/ssh_host_*")
hooks+=(--customize-hook="mkdir -p \"\$1/etc/systemd/system/ssh.service.d\"; printf '[Service]\\nExecStartPre=\\nExecStartPre=/usr/bin/ssh-keygen -A\\nExecStartPre=/usr/sbin/sshd -t\\n' > \"\$1/etc/systemd/system/ssh.service.d/host-keys.conf\"")

echo "building base image $image:$recipe_hash (mmdebstrap, about a minute)"
mmdebstrap --variant=minbase --include="$packages" "${hooks[@]}" \
  bookworm "$workdir/rootfs.tar" http://deb.debian.org/debian >"$workdir/mmdebstrap.log" 2>&1 \
  || { cat "$workdir/mmdebstrap.log" >&2; exit 1; }

podman import \
  --change 'CMD ["/sbin/init"]' \
  --change 'STOPSIGNAL SIGRTMIN+3' \
  --change "LABEL org.chatmrpt.recipe=$recipe_hash" \
  "$workdir/rootfs.tar" "$image:$recipe_hash" >/dev/null 2>&1
podman tag "$image:$recipe_hash" "$image:latest"
# Older recipes of the image are dangling now.
podman images --format '{{.Repository}}:{{.Tag}}' "$image" \
  | grep -v -e ":$recipe_hash\$" -e ':latest$' | xargs -r podman rmi >/dev/null 2>&1 || true
echo "built base image $image:$recipe_hash"
