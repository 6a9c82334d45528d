# Managed by Ansible (role `backup`): local changes are overwritten.
"""AWS: the clients (S3, STS, CloudWatch), who this host is to AWS (its writer id, the
emulator's role assumption), uploads with checksums, downloads, the listing of a host's
backups and the BackupSuccess metric."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from .config import CHUNK, BackupError, Config, log, parse_timestamp, utc_now

PUT_OBJECT_LIMIT = 5 * 1024 ** 3


def aws_client(service: str, config: Config, endpoint_url: str):
    import boto3  # imported late: --help and configuration errors work without it
    from botocore.config import Config as BotoConfig

    return boto3.client(
        service,
        region_name=config.region,
        endpoint_url=endpoint_url or None,
        config=BotoConfig(connect_timeout=10, read_timeout=120, retries={"max_attempts": 3, "mode": "standard"}),
    )


def assume_emulator_role(config: Config) -> None:
    """Emulator only: assume the instance role with the host as session name (what EC2 does
    for an instance profile); the scripts then act as `<role id>:<host>`."""
    import boto3

    # A session of its own: boto3's default one would keep the dummy credentials for good.
    sts = boto3.session.Session().client("sts", region_name=config.region, endpoint_url=config.sts_endpoint_url)
    credentials = sts.assume_role(RoleArn=config.emulator_role_arn, RoleSessionName=config.host)["Credentials"]
    os.environ.update(AWS_ACCESS_KEY_ID=credentials["AccessKeyId"],
                      AWS_SECRET_ACCESS_KEY=credentials["SecretAccessKey"],
                      AWS_SESSION_TOKEN=credentials["SessionToken"])


def writer_id(config: Config) -> str:
    """This host's user id as AWS knows it: the segment of the S3 keys it may write."""
    writer = aws_client("sts", config, config.sts_endpoint_url).get_caller_identity()["UserId"]
    if not writer or "/" in writer:
        raise BackupError(f"unusable caller id {writer!r} for an S3 key segment")
    return writer


def written_for(segment: str, host: str) -> bool:
    """Whether a writer segment is the host's own: `<role id>:<host>` (an instance role's
    session, named after the instance) or `<host>`."""
    return segment == host or segment.endswith(":" + host)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def hex_to_b64(hexdigest: str) -> str:
    return base64.b64encode(bytes.fromhex(hexdigest)).decode("ascii")


def upload_and_verify(s3, config: Config, workdir: Path, prefix: str, entries: list[dict]) -> None:
    """put_object with a SHA-256 checksum; head_object's size and checksum must match the local file's."""
    for entry in entries:
        key = prefix + entry["path"]
        if entry["size"] > PUT_OBJECT_LIMIT:
            raise BackupError(f"{entry['path']} is {entry['size']} bytes, over the 5 GiB single-upload limit")
        checksum = hex_to_b64(entry["sha256"])
        with open(workdir / entry["path"], "rb") as body:
            s3.put_object(Bucket=config.bucket, Key=key, Body=body, ContentLength=entry["size"],
                          ChecksumAlgorithm="SHA256", Metadata={"sha256": entry["sha256"]})
        head = s3.head_object(Bucket=config.bucket, Key=key, ChecksumMode="ENABLED")
        if head.get("ContentLength") != entry["size"]:
            raise BackupError(f"s3://{config.bucket}/{key}: size {head.get('ContentLength')} != {entry['size']}")
        if head.get("ChecksumSHA256") != checksum:
            raise BackupError(f"s3://{config.bucket}/{key}: SHA-256 checksum {head.get('ChecksumSHA256')} != {checksum}")
        log.info("uploaded and verified s3://%s/%s (%d bytes)", config.bucket, key, entry["size"])


def list_backups(s3, config: Config, host: str) -> dict[str, str]:
    """The host's backups: {timestamp: key prefix}, under every writer segment of the host
    (one per instance role it had). The same timestamp under two writers is refused."""
    paginator = s3.get_paginator("list_objects_v2")
    writers = [common["Prefix"]
               for page in paginator.paginate(Bucket=config.bucket, Prefix=config.s3_prefix, Delimiter="/")
               for common in page.get("CommonPrefixes", [])
               if written_for(common["Prefix"][len(config.s3_prefix):].rstrip("/"), host)]
    backups: dict[str, str] = {}
    for writer in writers:
        for page in paginator.paginate(Bucket=config.bucket, Prefix=writer, Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                name = common["Prefix"][len(writer):].rstrip("/")
                if not parse_timestamp(name):
                    continue
                if name in backups:
                    raise BackupError(f"backup {name} of host {host} exists under two writers "
                                      f"({backups[name]}, {common['Prefix']}): restore it by hand")
                backups[name] = common["Prefix"]
    return dict(sorted(backups.items()))


def download(s3, config: Config, key: str, target: Path) -> tuple[int, str, str | None]:
    """Stream an object to a file: (size, sha256 hex, the object's stored SHA-256 checksum)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    response = s3.get_object(Bucket=config.bucket, Key=key, ChecksumMode="ENABLED")
    digest, size = hashlib.sha256(), 0
    with open(target, "wb") as handle:
        for block in response["Body"].iter_chunks(CHUNK):
            handle.write(block)
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest(), response.get("ChecksumSHA256")


def publish_metric(config: Config, success: bool) -> bool:
    if not config.metric_namespace:
        log.warning("metric: no metric_namespace configured, BackupSuccess not published")
        return False
    try:
        cloudwatch = aws_client("cloudwatch", config, config.cloudwatch_endpoint_url)
        cloudwatch.put_metric_data(Namespace=config.metric_namespace, MetricData=[{
            "MetricName": "BackupSuccess",
            "Dimensions": [{"Name": "Environment", "Value": config.environment},
                           {"Name": "Host", "Value": config.host}],
            "Timestamp": utc_now(),
            "Value": 1.0 if success else 0.0,
            "Unit": "Count",
        }])
    except Exception as exc:  # noqa: BLE001 - any failure to publish is logged, never fatal to the result
        log.error("metric: publishing BackupSuccess=%d to %s failed: %s", int(success), config.metric_namespace, exc)
        return False
    log.info("metric: BackupSuccess=%d published to %s (Environment=%s, Host=%s)",
             int(success), config.metric_namespace, config.environment, config.host)
    return True
