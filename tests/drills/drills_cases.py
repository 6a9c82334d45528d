"""The malformed or dangerous inputs the drills feed the entry playbooks.

Each case: an id, the inventory (directory under inventories/), the entry playbook, the
extra arguments, and the words the refusal must contain: the variable's name and the
accepted values (or the rule). Extra variables are given as JSON so types are exact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass(frozen=True)
class BadInput:
    id: str
    playbook: str
    extra_vars: dict
    must_say: tuple[str, ...]
    inventory: str = "local"
    args: tuple[str, ...] = field(default=())

    @property
    def check(self) -> str | None:
        return CHECKS.get(self.id)

    def argv(self) -> list[str]:
        return [f"playbooks/{self.playbook}", "-e", json.dumps(self.extra_vars), *self.args]


CASES = [
    # -- the project and its environments ------------------------------------------------
    BadInput("unknown-environment", "site.yml", {"chatmrpt_environment": "qa"},
             ("chatmrpt_environment", "local, staging, production", "'qa'")),
    BadInput("production-teardown-unconfirmed", "teardown.yml", {}, ("teardown_confirm_production=true", "production"),
             inventory="production"),
    # -- network -----------------------------------------------------------------------------
    BadInput("malformed-vpc-cidr", "infrastructure.yml", {"aws_network_vpc_cidr": "10.0.0.0/33"},
             ("aws_network_vpc_cidr", "IPv4 CIDR", "10.0.0.0/33")),
    BadInput("malformed-subnet-cidr", "site.yml", {"aws_network_subnet_cidrs": ["10.225.1.0/24", "10.225.256.0/24"]},
             ("aws_network_subnet_cidrs", "two distinct IPv4 CIDRs", "10.225.256.0/24")),
    BadInput("ssh-from-anywhere", "infrastructure.yml", {"aws_network_admin_ssh_cidrs": ["203.0.113.0/24", "0.0.0.0/0"]},
             ("aws_network_admin_ssh_cidrs", "0.0.0.0/0", "IPv4 networks")),
    BadInput("app-port-clashes-with-database-port", "site.yml", {"chatmrpt_app_port": 5432},
             ("aws_network_app_port", "aws_network_db_port", "5432")),
    BadInput("app-port-differs-from-target-group-port", "site.yml", {"app_port": 8080},
             ("app_port", "aws_loadbalancer_target_port", "aws_network_app_port", "8080", "8000")),
    # -- compute -----------------------------------------------------------------------------
    BadInput("asg-min-above-max", "infrastructure.yml", {"aws_compute_asg_min_size": 4, "aws_compute_asg_max_size": 2},
             ("aws_compute_asg_min_size", "aws_compute_asg_max_size", "min 4", "max 2")),
    BadInput("asg-desired-above-max", "site.yml", {"aws_compute_asg_desired_capacity": 5},
             ("aws_compute_asg_desired_capacity", "aws_compute_asg_max_size", "desired 5")),
    BadInput("instance-type-not-allowed", "infrastructure.yml", {"aws_compute_instance_type": "p4d.24xlarge"},
             ("aws_compute_instance_type", "p4d.24xlarge", "aws_compute_allowed_instance_types", "t3.medium")),
    BadInput("ami-id-instead-of-name-pattern", "infrastructure.yml", {"aws_compute_ami_name": "ami-0123456789abcdef0"},
             ("aws_compute_ami_name", "chatmrpt-golden-*", "ami-0123456789abcdef0")),
    # -- monitoring --------------------------------------------------------------------------
    BadInput("alarm-threshold-above-100-percent", "infrastructure.yml", {"aws_monitoring_cpu_threshold": 150},
             ("aws_monitoring_cpu_threshold", "1 to 100", "150")),
    BadInput("negative-log-retention", "infrastructure.yml", {"aws_monitoring_log_retention_days": -7},
             ("aws_monitoring_log_retention_days", "1, 3, 5, 7", "-7")),
    BadInput("notifications-without-emails", "infrastructure.yml",
             {"aws_monitoring_notifications_enabled": True, "aws_monitoring_alarm_emails": []},
             ("aws_monitoring_alarm_emails", "aws_monitoring_notifications_enabled")),
    # -- storage, database, IAM, load balancer -------------------------------------------------
    BadInput("bucket-name-aws-rejects", "infrastructure.yml", {"aws_storage_bucket_name": "ChatMRPT_Backups"},
             ("aws_storage_bucket_name", "ChatMRPT_Backups", "lower-case letters, digits, dots and hyphens")),
    BadInput("database-backups-off", "infrastructure.yml", {"aws_database_backup_retention_days": 0},
             ("aws_database_backup_retention_days", "1-35", "got 0")),
    BadInput("database-reserved-master-user", "infrastructure.yml", {"aws_database_master_username": "postgres"},
             ("aws_database_master_username", "'postgres'", "postgres/rdsadmin/admin/root")),
    BadInput("iam-administrator-policy", "infrastructure.yml",
             {"aws_iam_managed_policies": ["arn:aws:iam::aws:policy/AdministratorAccess"]},
             ("aws_iam_managed_policies", "AdministratorAccess", "least privilege")),
    BadInput("health-check-path-not-absolute", "infrastructure.yml", {"aws_loadbalancer_health_check_path": "health"},
             ("aws_loadbalancer_health_check_path", "start with '/'", "'health'")),
    # -- host roles ----------------------------------------------------------------------------
    BadInput("backup-invalid-cron-hour", "hosts.yml", {"backup_cron_hour": 25},
             ("backup_cron_hour", "0-23", "got 25")),
    BadInput("backup-negative-local-retention", "hosts.yml", {"backup_local_retention_days": -1},
             ("backup_local_retention_days", "1 or more", "-1")),
    BadInput("backup-bucket-name-aws-rejects", "hosts.yml", {"backup_bucket": "Backups_Of_ChatMRPT"},
             ("backup_bucket", "Backups_Of_ChatMRPT", "lower-case letters")),
    BadInput("sshd-lockout", "hosts.yml",
             {"base_ssh_pubkey_authentication": False, "base_ssh_password_authentication": False},
             ("base_ssh_pubkey_authentication", "base_ssh_password_authentication", "must be true")),
    BadInput("cloudwatch-reserved-namespace", "hosts.yml", {"cloudwatch_agent_namespace": "AWS/EC2"},
             ("cloudwatch_agent_namespace", "AWS/", "'AWS/EC2'")),
    BadInput("postgres-port-out-of-range", "site.yml", {"postgres_client_port": 70000},
             ("postgres_client_port", "1-65535", "70000")),
    BadInput("empty-release-version", "site.yml",
             {"app_release_archive": "", "app_version": ""},
             ("app_version", "app_release_archive")),
    # -- IAM -------------------------------------------------------------------------------
    BadInput("iam-backups-prefix-escapes-its-environment", "infrastructure.yml", {"aws_iam_backups_prefix": "../"},
             ("aws_iam_backups_prefix", "'../'")),
    BadInput("iam-agent-log-group-not-a-path", "infrastructure.yml", {"aws_iam_log_group_name": "chatmrpt-logs"},
             ("aws_iam_log_group_name", "chatmrpt-logs")),
    # -- KMS ---------------------------------------------------------------------------------
    BadInput("parameters-key-shared-with-every-role", "infrastructure.yml",
             {"aws_iam_parameters_key_operators": ["arn:aws:iam::*:role/*"]},
             ("aws_iam_parameters_key_operators", "arn:aws:iam::*:role/*", "instance role")),
    BadInput("secrets-kms-key-of-another-service", "infrastructure.yml", {"aws_secrets_kms_key_id": "alias/aws/s3"},
             ("aws_secrets_kms_key_id", "'alias/aws/s3'", "another service's AWS managed key")),
    BadInput("root-volume-kms-key-malformed", "infrastructure.yml", {"aws_compute_root_volume_kms_key_id": "my-key"},
             ("aws_compute_root_volume_kms_key_id", "'my-key'", "key ARN")),
    BadInput("bucket-kms-key-without-kms-encryption", "infrastructure.yml",
             {"aws_storage_kms_key_id": "alias/chatmrpt-backups", "aws_storage_encryption": "AES256"},
             ("aws_storage_kms_key_id", "aws_storage_encryption", "'AES256'")),
    # -- network ports, load balancer, CDN -----------------------------------------------------
    BadInput("alb-port-zero", "infrastructure.yml", {"aws_network_alb_ports": [0, 443]},
             ("aws_network_alb_ports", "1-65535")),
    BadInput("certificate-not-an-arn", "infrastructure.yml", {"aws_loadbalancer_certificate_arn": "chatmrpt.example.org"},
             ("aws_loadbalancer_certificate_arn", "chatmrpt.example.org")),
    BadInput("idle-timeout-above-the-alb-limit", "infrastructure.yml", {"aws_loadbalancer_idle_timeout": 5000},
             ("aws_loadbalancer_idle_timeout", "5000")),
    BadInput("cdn-without-a-load-balancer", "infrastructure.yml",
             {"aws_cdn_enabled": True, "aws_cdn_origin_load_balancer_enabled": False},
             ("aws_cdn_enabled", "aws_cdn_origin_load_balancer_enabled")),
    BadInput("cache-node-type-not-allowed", "infrastructure.yml", {"aws_cache_node_type": "cache.r6g.4xlarge"},
             ("aws_cache_node_type", "cache.r6g.4xlarge")),
    BadInput("domain-name-not-a-dns-name", "infrastructure.yml", {"aws_loadbalancer_domain_name": "Staging_App"},
             ("aws_loadbalancer_domain_name", "Staging_App")),
    BadInput("origin-header-not-a-header-name", "infrastructure.yml",
             {"aws_loadbalancer_origin_verify_header": "X Origin"}, ("aws_loadbalancer_origin_verify_header", "X Origin")),
    BadInput("asg-cpu-target-above-95-percent", "infrastructure.yml", {"aws_compute_asg_cpu_target": 99},
             ("aws_compute_asg_cpu_target", "10-95", "99")),
    BadInput("backup-alarm-period-not-whole-minutes", "infrastructure.yml", {"aws_monitoring_backup_period": 90},
             ("aws_monitoring_backup_period", "multiple of 60", "90")),
    # -- paths ---------------------------------------------------------------------------------
    BadInput("app-path-relative", "hosts.yml", {"app_path": "ChatMRPT"}, ("app_path", "absolute", "ChatMRPT")),
    BadInput("backup-local-dir-relative", "hosts.yml", {"backup_local_dir": "backups"},
             ("backup_local_dir", "absolute", "backups")),
    BadInput("agent-log-file-relative", "hosts.yml",
             {"cloudwatch_agent_log_files": [{"file_path": "logs/gunicorn.log", "log_stream_name": "{instance_id}/x"}]},
             ("cloudwatch_agent_log_files", "absolute file_path")),
    BadInput("secrets-prefix-not-a-path", "infrastructure.yml",
             {"aws_secrets_ssm_prefix": "chatmrpt/staging"},  # pragma: allowlist secret
             ("aws_secrets_ssm_prefix", "'chatmrpt/staging'")),
    BadInput("storage-transition-before-30-days", "infrastructure.yml", {"aws_storage_transition_days": 10},
             ("aws_storage_transition_days", "at least 30", "got 10")),
    # -- hosts ---------------------------------------------------------------------------------
    BadInput("keep-one-release-only", "hosts.yml", {"app_keep_releases": 1}, ("app_keep_releases", "1")),
    BadInput("backup-endpoint-not-a-url", "hosts.yml", {"backup_aws_endpoint_url": "localhost:4566"},
             ("backup_aws_endpoint_url", "localhost:4566")),
    BadInput("journald-size-unparseable", "hosts.yml", {"base_journald_system_max_use": "lots"},
             ("base_journald_system_max_use", "lots")),
    BadInput("app-user-name-invalid", "hosts.yml", {"base_app_user": "Chat User"}, ("base_app_user", "Chat User")),
    BadInput("app-runs-as-root", "hosts.yml", {"app_user": "root"}, ("app_user", "must not be root", "'root'")),
    BadInput("database-check-without-a-password", "hosts.yml",
             {"postgres_client_check_connection": True, "postgres_client_host": "db.internal",
              "postgres_client_password": "", "postgres_client_password_ssm_parameter": ""},
             ("postgres_client_password", "postgres_client_password_ssm_parameter")),
]

# The one check that must refuse each case (test_drill_bad_inputs.fired_check): a role's rule
# as `<role>: <rule name>` (its message is tagged so), an argument spec as
# `argument specs: <variable>`, or an assert task by its name (`<role> : <task>` in a
# role). No two cases share a check.
CHECKS = {
    "unknown-environment": "validate : Check the inventory names a known environment",
    "production-teardown-unconfirmed": "teardown : Refuse to tear down production without confirmation",
    "malformed-vpc-cidr": "aws_network: the VPC CIDR of mode create",
    "malformed-subnet-cidr": "aws_network: the subnets and zones of mode create",
    "ssh-from-anywhere": "aws_network: the admin SSH CIDRs are exact IPv4 networks, never the whole internet",
    "app-port-clashes-with-database-port": "aws_network: the app port clashes with no other port of the app's security groups",
    "app-port-differs-from-target-group-port": "validate : Check the app, its security group and the target group use one port",
    "asg-min-above-max": "aws_compute: the Auto Scaling bounds",
    "asg-desired-above-max": "aws_compute: the desired capacity lies within the bounds",
    "instance-type-not-allowed": "aws_compute: the instance type is allowed",
    "ami-id-instead-of-name-pattern": "aws_compute: the AMI name patterns",
    "alarm-threshold-above-100-percent": "aws_monitoring: the CPU threshold is a percentage",
    "negative-log-retention": "aws_monitoring: the alarm period and the log retention",
    "notifications-without-emails": "aws_monitoring: the e-mail list when notifications are on",
    "bucket-name-aws-rejects": "aws_storage: the bucket name is one AWS accepts",
    "database-backups-off": "aws_database: the storage and backup figures",
    "database-reserved-master-user": "aws_database: the master user and database names",
    "iam-administrator-policy": "aws_iam: the managed policies are policy ARNs",
    "health-check-path-not-absolute": "aws_loadbalancer: the health check settings are within the target group's limits",
    "backup-invalid-cron-hour": "backup: the backup schedule",
    "backup-negative-local-retention": "backup: the local retention",
    "backup-bucket-name-aws-rejects": "backup: the S3 destination",
    "sshd-lockout": "base: SSH keeps a way in",
    "cloudwatch-reserved-namespace": "cloudwatch_agent: the metrics settings",
    "postgres-port-out-of-range": "postgres_client: the port and the connect timeout",
    "empty-release-version": "app: the release source",
    "iam-backups-prefix-escapes-its-environment": "aws_iam: the backups prefix and the SSM path are scoped to one environment",
    "iam-agent-log-group-not-a-path": "aws_iam: the agent's log group and namespaces name one environment's own",
    "secrets-kms-key-of-another-service": "aws_secrets: the KMS key of the SecureStrings",
    "root-volume-kms-key-malformed": "aws_compute: the root volume's KMS key",
    "bucket-kms-key-without-kms-encryption": "aws_storage: the bucket's KMS key",
    "alb-port-zero": "aws_network: the ports are valid TCP ports",
    "certificate-not-an-arn": "aws_loadbalancer: the certificate is an ACM or IAM certificate ARN",
    "idle-timeout-above-the-alb-limit": "aws_loadbalancer: stickiness, deregistration delay and idle timeout",
    "cdn-without-a-load-balancer": "aws_cdn: the CDN has a load balancer to sit in front of",
    "cache-node-type-not-allowed": "aws_cache: the node type is an allowed one",
    "domain-name-not-a-dns-name": "aws_loadbalancer: the domain names are DNS names",
    "origin-header-not-a-header-name": "aws_loadbalancer: CloudFront's secret header",
    "asg-cpu-target-above-95-percent": "aws_compute: the ASG's health check, cooldown and CPU target",
    "backup-alarm-period-not-whole-minutes": "aws_monitoring: the backup alarm and the dashboard",
    "app-path-relative": "app: the paths are absolute and distinct",
    "backup-local-dir-relative": "backup: the paths",
    "agent-log-file-relative": "cloudwatch_agent: the log settings",
    "secrets-prefix-not-a-path": "aws_secrets: the parameter path and names",
    "storage-transition-before-30-days": "aws_storage: the lifecycle figures",
    "keep-one-release-only": "app: the release retention",
    "backup-endpoint-not-a-url": "backup: the AWS endpoint and the emulator credentials",
    "journald-size-unparseable": "base: the journald limits",
    "app-user-name-invalid": "base: the application user",
    "app-runs-as-root": "app: the application user",
    "parameters-key-shared-with-every-role": "aws_iam: the parameters key is the environment's own and only operators share it",
    "database-check-without-a-password": "postgres_client: a password source is given",  # pragma: allowlist secret
    "unknown-os-family": "base : Check the OS is supported",
}
