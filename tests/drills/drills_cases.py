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

    def argv(self) -> list[str]:
        return [f"playbooks/{self.playbook}", "-e", json.dumps(self.extra_vars), *self.args]


CASES = [
    # -- the project and its environments ------------------------------------------------
    BadInput("unknown-environment", "site.yml", {"chatmrpt_environment": "qa"},
             ("chatmrpt_environment", "local, staging, production", "'qa'")),
    BadInput("teardown-unknown-environment", "teardown.yml", {"chatmrpt_environment": "prod"},
             ("chatmrpt_environment", "local, staging, production", "'prod'")),
    BadInput("production-teardown-unconfirmed", "teardown.yml", {}, ("teardown_confirm_production=true", "production"),
             inventory="production"),
    BadInput("production-teardown-confirm-not-boolean", "teardown.yml", {"teardown_confirm_production": "maybe"},
             ("teardown_confirm_production accepts true or false", "got 'maybe'"), inventory="production"),
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
    BadInput("asg-desired-below-min", "infrastructure.yml",
             {"aws_compute_asg_min_size": 2, "aws_compute_asg_desired_capacity": 1},
             ("aws_compute_asg_desired_capacity", "aws_compute_asg_min_size", "desired 1")),
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
]
