# Managed by Ansible (role `app`): local changes are overwritten.
"""chatmrpt-boot: the first boot of an instance of the golden image, with nothing but its
instance role. Reads the environment's parameters from SSM Parameter Store, renders .env
as the role's env.j2 does, creates instance/ and the directories the role creates, checks
the other roles' settings are there and starts their services. On any failure it logs one
line naming what is missing (never a value), publishes the metric and exits non-zero:
chatmrpt.service requires this unit, so the app does not start.

Usage: chatmrpt_boot.py SPEC.json (the non-secret spec the role writes). Python 3.9+ and
boto3 (the OS package); the endpoint is passed to boto3 explicitly (Debian 12's boto3
ignores AWS_ENDPOINT_URL).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import socket
import subprocess
import sys
import tempfile
import urllib.request

PROGRAM = "chatmrpt-boot"
METRIC = "BootConfigurationFailed"
IMDS = "http://169.254.169.254/latest"
# Replaced by the instance's id in the contents of the spec's `files`.
INSTANCE_ID_MARK = "@INSTANCE_ID@"


class BootError(Exception):
    """A failure whose message names what is missing (never a secret value)."""


def log(message: str) -> None:
    # stdout of a systemd unit goes to the journal, tagged with SyslogIdentifier=.
    print(f"{PROGRAM}: {message}", flush=True)


def instance_id(spec: dict) -> str:
    """The EC2 instance id (IMDSv2) on AWS; the host name with an emulator (no IMDS)."""
    if not spec.get("endpoint_url"):
        try:
            token_req = urllib.request.Request(f"{IMDS}/api/token", method="PUT",
                                               headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
            with urllib.request.urlopen(token_req, timeout=2) as resp:  # noqa: S310 - fixed IMDS URL
                token = resp.read().decode()
            id_req = urllib.request.Request(f"{IMDS}/meta-data/instance-id",
                                            headers={"X-aws-ec2-metadata-token": token})
            with urllib.request.urlopen(id_req, timeout=2) as resp:  # noqa: S310 - fixed IMDS URL
                return resp.read().decode().strip()
        except OSError:
            pass
    return socket.gethostname()


def session(spec: dict, host: str):
    """A boto3 session: the instance profile's credentials on EC2; with an emulator, the
    dummy credentials of the unit's environment and, when set, the instance role assumed
    with the host as session name (what EC2 does)."""
    import boto3  # late: a spec error is reported without it

    base = boto3.session.Session(region_name=spec["region"])
    if not spec.get("emulator_role_arn"):
        return base
    sts = base.client("sts", endpoint_url=spec["endpoint_url"])
    creds = sts.assume_role(RoleArn=spec["emulator_role_arn"], RoleSessionName=host)["Credentials"]
    return boto3.session.Session(region_name=spec["region"], aws_access_key_id=creds["AccessKeyId"],
                                 aws_secret_access_key=creds["SecretAccessKey"],
                                 aws_session_token=creds["SessionToken"])


def read_parameters(ssm, names: list[str]) -> dict[str, str]:
    """Values of the parameters that exist (decrypted), by name; the missing ones are absent."""
    values: dict[str, str] = {}
    unique = sorted(set(names))
    for start in range(0, len(unique), 10):  # GetParameters takes 10 names at most
        answer = ssm.get_parameters(Names=unique[start:start + 10], WithDecryption=True)
        values.update({p["Name"]: p["Value"] for p in answer["Parameters"]})
    return values


def collect_secrets(spec: dict, values: dict[str, str]) -> dict[str, str]:
    """The .env secrets, merged as configure-environment.yml merges them: the required SSM
    secrets, then the optional ones and the full-name parameters when they have a value."""
    secrets: dict[str, str] = {}
    for name, path in sorted(spec["secrets"].items()):
        if path not in values:
            raise BootError(f"SSM parameter {path} is missing (the .env setting {name}); "
                            f"create it, then run `systemctl start {spec['service']}`")
        secrets[name] = values[path]
    for group in ("optional_secrets", "parameters"):
        secrets.update({name: values[path] for name, path in spec[group].items() if values.get(path)})
    empty = [name for name in spec["required"] if not secrets.get(name)]
    if empty:
        raise BootError(f"no value for {', '.join(empty)} (required settings): an empty or missing SSM "
                        f"parameter, or a value given only in app_secret_env, which never enters the image")
    return secrets


def check_release(spec: dict, values: dict[str, str]) -> None:
    """One release, recorded: the release baked in the image (what app_path links to) must be
    the one the environment's last finished deploy recorded; this instance refuses another."""
    parameter = spec.get("release_parameter")
    if not parameter:
        return
    app_path = spec["app_path"]
    baked = os.path.basename(os.path.realpath(app_path)) if os.path.islink(app_path) else ""
    recorded = values.get(parameter, "").strip()
    if not recorded:
        raise BootError(f"no release recorded in SSM parameter {parameter} (a finished deploy records it): "
                        f"this instance, of release {baked or 'none'}, serves no unrecorded release")
    if recorded != baked:
        raise BootError(f"release mismatch: the image has release {baked or 'none'}, the environment records "
                        f"{recorded} (SSM parameter {parameter}); build a golden image of {recorded}")
    log(f"release {baked} is the one recorded in {parameter}")


def quote(value: str) -> str:
    """env.j2's quote macro."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_env(spec: dict, secrets: dict[str, str]) -> str:
    """env.j2's output: its non-secret part as the role rendered it, then the secrets sorted
    as Jinja's dictsort sorts them (case-insensitively)."""
    lines = [f"{name}={quote(value)}\n" for name, value in sorted(secrets.items(), key=lambda kv: kv[0].lower())]
    return spec["env_head"] + "".join(lines)


def write_file(path: str, content: str, owner: str, group: str, mode: int) -> None:
    """Atomically, with its owner and mode set before the content is visible."""
    uid, gid = pwd.getpwnam(owner).pw_uid, grp.getgrnam(group).gr_gid
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".chatmrpt-boot-")
    try:
        os.fchmod(fd, mode)
        os.fchown(fd, uid, gid)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
        os.replace(tmp, path)
    except BaseException:
        with_suppressed(os.unlink, tmp)
        raise


def with_suppressed(func, *args) -> None:
    try:
        func(*args)
    except OSError:
        pass


def write_host_files(spec: dict, host: str) -> None:
    """Other roles' per-host settings the image's clean removed (the backup configuration),
    as the roles render them, with this instance's id for INSTANCE_ID_MARK."""
    for item in spec.get("files", []):
        write_file(item["path"], item["content"].replace(INSTANCE_ID_MARK, host), item["owner"], item["group"],
                   int(str(item["mode"]), 8))
        log(f"wrote {item['path']}")


def make_directories(spec: dict) -> None:
    uid, gid = pwd.getpwnam(spec["owner"]).pw_uid, grp.getgrnam(spec["group"]).gr_gid
    for path in spec["directories"]:
        os.makedirs(path, mode=0o750, exist_ok=True)
        os.chown(path, uid, gid)
        os.chmod(path, 0o750)


def check_files(spec: dict) -> None:
    missing = [path for path in spec["required_files"] if not os.path.exists(path)]
    if missing:
        raise BootError(f"missing {', '.join(missing)} (settings the image must carry: app_boot_required_files)")


def start_services(spec: dict) -> None:
    for name in spec["services"]:
        result = subprocess.run(["systemctl", "start", "--no-block", name], capture_output=True, text=True,
                                check=False)
        if result.returncode != 0:
            raise BootError(f"cannot start {name}: {result.stderr.strip()}")


def publish(aws, spec: dict, host: str, failed: bool) -> None:
    """The metric: 1 when the boot configuration failed, 0 when it succeeded."""
    try:
        aws.client("cloudwatch", endpoint_url=spec.get("endpoint_url") or None).put_metric_data(
            Namespace=spec["metric_namespace"],
            MetricData=[{"MetricName": METRIC, "Value": 1.0 if failed else 0.0, "Unit": "Count",
                         "Dimensions": [{"Name": "Environment", "Value": spec["environment"] or "unknown"},
                                        {"Name": "InstanceId", "Value": host}]}])
    except Exception as exc:  # noqa: BLE001 - the metric must not hide the real outcome
        log(f"could not publish the {METRIC} metric: {type(exc).__name__}: {exc}")


def configure(spec: dict, aws, host: str) -> None:
    endpoint = spec.get("endpoint_url") or None
    values = read_parameters(aws.client("ssm", endpoint_url=endpoint),
                             [*spec["secrets"].values(), *spec["optional_secrets"].values(),
                              *spec["parameters"].values(), *filter(None, [spec.get("release_parameter")])])
    check_release(spec, values)
    secrets = collect_secrets(spec, values)
    write_host_files(spec, host)
    check_files(spec)
    make_directories(spec)
    write_file(spec["env_file"], render_env(spec, secrets), spec["owner"], spec["group"], 0o600)
    log(f"wrote {spec['env_file']} ({len(secrets)} settings from SSM Parameter Store)")
    start_services(spec)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {PROGRAM} SPEC.json", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as handle:
        spec = json.load(handle)
    os.umask(0o027)
    host = instance_id(spec)
    aws = None
    try:
        aws = session(spec, host)
        configure(spec, aws, host)
    except BootError as exc:
        log(f"FAILED: {exc}; {spec['service']} is not started")
        if aws is not None:
            publish(aws, spec, host, failed=True)
        return 1
    except Exception as exc:  # noqa: BLE001 - reported by type (an AWS error names no secret)
        log(f"FAILED: {type(exc).__name__}: {exc}; {spec['service']} is not started")
        if aws is not None:
            publish(aws, spec, host, failed=True)
        return 1
    publish(aws, spec, host, failed=False)
    log(f"configured {host} for {spec['environment'] or 'unknown'}; {spec['service']} may start")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
