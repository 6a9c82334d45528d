"""Staging and production built once on the session's emulator, for every test in tests/aws
(fixture `accounts`, tests/aws/conftest.py): the whole of infrastructure.yml, every tag.

Each environment goes, in this order, every run kept for the tests:
  check-empty  --check --diff on an empty account (must report, must create nothing)
  no-key       --tags iam,secrets (the secrets need the environment's key, which aws_iam
               makes) before the operator stored the OpenAI key (must refuse)
  apply        the operator's key stored first, as an operator does
  reapply      zero changed (but the named emulator exception below)
  check        the drift check (scripts/drift_check.py, --show-output): infrastructure.yml
               in --check --diff on the converged account, zero changed, "matches the code"

Both share the emulator, as two environments may share an AWS account, and are built at
the same time (one thread each). Before either starts, production gets a golden AMI (root
device /dev/sda1, as moto's register_image always gives) and an ACM certificate; staging
has no golden AMI of its own, so its launch template falls back to Amazon Linux 2023
(root device /dev/xvda) although production's image is there: a mapping that ignored the
AMI's root device fails one of them, and an environment that picked another's image fails
the staging fallback. Both load balancers serve HTTPS and redirect HTTP to it: production
with an imported certificate, staging with one the role requests for its domain (ACM in the
emulator issues it a second after the request: MOTO_ACM_VALIDATION_WAIT, tests/conftest.py).
Production's CloudFront is on (its inventory's choice); staging's is off.

Emulator settings and exceptions, named here and nowhere else excused:
- MOTO_EXTRA_VARS: moto answers a gp3 RDS instance without StorageThroughput, and
  rds_instance crashes on its second run (KeyError 'StorageThroughput'); the roles keep
  gp3 for AWS, every run here passes gp2.
- EXCUSED_ON_REAPPLY: community.aws.cloudfront_distribution reports changed on every run
  against moto (moto echoes defaults such as ForwardedValues next to a cache policy, so the
  module's comparison never matches); lab-notes lists it. --check is not affected (the
  module has no check mode and is skipped).
"""

from __future__ import annotations

import datetime
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from emulator import client, reset_moto, run_ok
from helpers import ROOT, PlaybookRun, operator_settings, run_playbook

ENVIRONMENTS = ("staging", "production")
PREFIX = {"staging": "ChatMRPT-Staging", "production": "ChatMRPT-Production"}
LOWER = {"staging": "chatmrpt-staging", "production": "chatmrpt-production"}
MOTO_EXTRA_VARS = ("-e", "aws_database_storage_type=gp2")
GOLDEN_NAME = "chatmrpt-golden-production-20260101T000000Z"
SECRET_NAMES = ("app/SECRET_KEY", "app/ADMIN_KEY", "database/master-password", "database/app-password", "cdn/origin-verify",
                "cache/auth-token", "app/OPENAI_API_KEY")
EXCUSED_ON_REAPPLY = {
    "aws_cdn : Manage the CloudFront distribution":
        "moto echoes defaults, the module reports changed on every run (lab-notes)",
}


@dataclass
class Accounts:
    """What building the two environments left for the tests to read."""

    env: dict[str, str]
    runs: dict[str, dict[str, PlaybookRun]] = field(default_factory=dict)
    created_by_check: dict[str, dict[str, list]] = field(default_factory=dict)
    params_after_refusal: dict[str, list[str]] = field(default_factory=dict)
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    amis: dict[str, dict] = field(default_factory=dict)
    cert_arn: str = ""

    def extra_vars(self, env: str) -> tuple[str, ...]:
        """The operator's settings (staging's certificate is requested for its domain), the
        emulator setting of every run, and production's imported certificate."""
        https = ("-e", f"aws_loadbalancer_certificate_arn={self.cert_arn}") if env == "production" else ()
        return (*operator_settings(env), *MOTO_EXTRA_VARS, *https)

    def playbook(self, env: str, *args: str, playbook: str = "infrastructure.yml") -> PlaybookRun:
        return run_playbook(playbook, env, *args, *self.extra_vars(env), env=self.env, operator=False)

    def drift_check(self, env: str, *args: str) -> subprocess.CompletedProcess:
        """`scripts/drift_check.py <env> [args]`, with the emulator settings after `--`."""
        return subprocess.run([sys.executable, "scripts/drift_check.py", env, *args, "--", *self.extra_vars(env)],
                              cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=1800)


def ssm_names(aws_env, path):
    pages = client(aws_env, "ssm").get_paginator("get_parameters_by_path").paginate(Path=path, Recursive=True)
    return {p["Name"] for page in pages for p in page["Parameters"]}


def live_instances(aws_env, env):
    pages = client(aws_env, "ec2").get_paginator("describe_instances").paginate(Filters=[
        {"Name": "tag:Environment", "Values": [env]}, {"Name": "tag:Role", "Values": ["app"]},
        {"Name": "instance-state-name", "Values": ["pending", "running"]}])
    return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]


def distributions(aws_env):
    """The account's CloudFront distributions by comment (the estate's is <prefix>-CDN)."""
    items = client(aws_env, "cloudfront").list_distributions()["DistributionList"].get("Items", [])
    return {d["Comment"]: d for d in items}


def newest_base_ami(aws_env):
    images = client(aws_env, "ec2").describe_images(Owners=["amazon"], Filters=[
        {"Name": "name", "Values": ["al2023-ami-2023.*-kernel-6.1-x86_64"]},
        {"Name": "architecture", "Values": ["x86_64"]}])["Images"]
    assert images, "the emulator has no Amazon Linux 2023 image"
    return max(images, key=lambda i: i["CreationDate"])


def register_golden_ami(aws_env, env, name, root="/dev/sda1", project="chatmrpt"):
    """A golden AMI as golden_ami.yml names and tags it; on moto its root device is /dev/sda1."""
    ec2 = client(aws_env, "ec2")
    image = ec2.register_image(
        Name=name, Architecture="x86_64", RootDeviceName=root, VirtualizationType="hvm",
        BlockDeviceMappings=[{"DeviceName": root, "Ebs": {"VolumeSize": 20, "VolumeType": "gp3"}}],
    )["ImageId"]
    ec2.create_tags(Resources=[image], Tags=[{"Key": "Project", "Value": project}, {"Key": "Environment", "Value": env}])
    return ec2.describe_images(ImageIds=[image])["Images"][0]


def self_signed_certificate():
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chatmrpt.example.org")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=30)).sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption()))


def _what_check_created(aws_env, env):
    iam, s3, ec2, elb = (client(aws_env, s) for s in ("iam", "s3", "ec2", "elbv2"))
    return {
        "role": [r["RoleName"] for r in iam.list_roles()["Roles"] if r["RoleName"].startswith(PREFIX[env])],
        "bucket": [b["Name"] for b in s3.list_buckets()["Buckets"] if b["Name"].startswith(LOWER[env])],
        "parameters": sorted(ssm_names(aws_env, f"/chatmrpt/{env}")),
        "groups": [g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]
                   if g["GroupName"].startswith(PREFIX[env])],
        "instances": [i["InstanceId"] for i in live_instances(aws_env, env)],
        "target groups": [t["TargetGroupName"] for t in elb.describe_target_groups()["TargetGroups"]
                          if t["TargetGroupName"].startswith(PREFIX[env])],
    }


def _build(accounts: Accounts, env: str) -> None:
    aws_env, ssm = accounts.env, client(accounts.env, "ssm")
    runs = accounts.runs[env] = {}
    runs["check-empty"] = run_ok(accounts.playbook(env, "--check", "--diff"))
    accounts.created_by_check[env] = _what_check_created(aws_env, env)
    runs["no-key"] = accounts.playbook(env, "--tags", "iam,secrets")
    accounts.params_after_refusal[env] = sorted(ssm_names(aws_env, f"/chatmrpt/{env}"))
    # The operator's step: store the OpenAI key once.
    ssm.put_parameter(Name=f"/chatmrpt/{env}/app/OPENAI_API_KEY", Value=f"sk-test-{env}-operator",
                      Type="SecureString")
    runs["apply"] = run_ok(accounts.playbook(env))
    accounts.secrets[env] = {
        name: ssm.get_parameter(Name=f"/chatmrpt/{env}/{name}", WithDecryption=True)["Parameter"]["Value"]
        for name in SECRET_NAMES}
    runs["reapply"] = run_ok(accounts.playbook(env))
    # The converged check is the drift check's own run (exit 0: no drift); --show-output keeps
    # the whole ansible-playbook output for the tests.
    drift = accounts.drift_check(env, "--show-output")
    runs["check"] = PlaybookRun(drift.returncode, drift.stdout + drift.stderr)


def build(aws_env) -> Accounts:
    """Both environments from an empty emulator (reset first: AWS managed policies and the
    default VPC come back with it), at the same time."""
    reset_moto(aws_env)
    accounts = Accounts(env=aws_env)
    accounts.amis["production"] = register_golden_ami(aws_env, "production", GOLDEN_NAME)
    # Images that neither environment may choose: a newer one of another project, and one
    # named for staging but tagged for production.
    register_golden_ami(aws_env, "production", "chatmrpt-golden-production-20990101T000000Z", "/dev/sdb",
                        project="someone-else")
    register_golden_ami(aws_env, "production", "chatmrpt-golden-staging-20990101T000000Z", "/dev/sdb")
    accounts.amis["staging"] = newest_base_ami(aws_env)
    cert, key = self_signed_certificate()
    accounts.cert_arn = client(aws_env, "acm").import_certificate(Certificate=cert, PrivateKey=key)["CertificateArn"]
    with ThreadPoolExecutor(max_workers=len(ENVIRONMENTS)) as pool:
        for done in [pool.submit(_build, accounts, env) for env in ENVIRONMENTS]:
            done.result()
    return accounts
