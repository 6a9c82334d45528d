"""Bad input to the AWS roles is refused by playbooks/validate.yml (the first play of every
entry playbook) with a message naming the variable, before any AWS call.

The runs point at an endpoint where nothing listens, so an AWS call would fail with a
connection error instead of the message: a refusal here is a refusal before AWS was asked
anything. The dynamic inventory cannot be read either; it only warns (localhost is all the
play needs; the inventory directory's group_vars still load). That a refused run leaves a
converged account as it was is proven on the emulator's accounts by
tests/aws/test_core.py::test_bad_input_changes_nothing_on_the_emulator.
"""

from __future__ import annotations

import json

import pytest

from helpers import run_playbooks

# (inventory, extra vars, what the one failure message must say)
BAD_INPUTS = [
    ("production", {"aws_network_admin_ssh_cidrs": ["10.0.0.300/24"]}, "aws_network_admin_ssh_cidrs"),
    ("production", {"aws_network_admin_ssh_cidrs": ["not-a-cidr"]}, "aws_network_admin_ssh_cidrs"),
    ("production", {"aws_network_admin_ssh_cidrs": ["0.0.0.0/0"]}, "never 0.0.0.0/0"),
    # the whole internet in other spellings: too wide, or host bits AWS would drop (/0)
    ("production", {"aws_network_admin_ssh_cidrs": ["0.0.0.0/1"]}, "0.0.0.0/1"),
    ("production", {"aws_network_admin_ssh_cidrs": ["203.0.113.0/24", "10.0.0.0/0"]}, "10.0.0.0/0"),
    ("production", {"aws_network_admin_ssh_cidrs": ["10.0.0.0/8"]}, "10.0.0.0/8"),
    ("production", {"aws_network_admin_ssh_cidrs": ["198.51.100.9/24"]}, "198.51.100.9/24"),
    ("production", {"aws_network_admin_ssh_min_prefix": 4}, "aws_network_admin_ssh_min_prefix, 8-32"),
    ("production", {"aws_network_vpc_mode": "create", "aws_network_subnet_cidrs": ["10.30.1.0/24"]},
     "aws_network_subnet_cidrs"),
    ("production", {"aws_network_vpc_mode": "shared"}, "aws_network_vpc_mode"),
    ("production", {"aws_iam_ssm_prefix": "/"}, "aws_iam_ssm_prefix"),
    ("production", {"aws_iam_managed_policies": ["arn:aws:iam::aws:policy/AdministratorAccess"]},
     "aws_iam_managed_policies"),
    ("staging", {"aws_iam_managed_policies": ["arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"]},
     "reads every SSM parameter"),
    ("production", {"aws_storage_bucket_name": "Bad_Bucket"}, "aws_storage_bucket_name"),
    ("production", {"aws_storage_bucket_name": "ab"}, "aws_storage_bucket_name"),
    ("production", {"aws_storage_bucket_name": "192.168.1.10"}, "aws_storage_bucket_name"),
    ("production", {"aws_storage_transition_days": 10}, "aws_storage_transition_days"),
    ("production", {"aws_storage_transfer_bucket_name": "chatmrpt-production-backups"},
     "other than the backups bucket"),
    ("production", {"aws_secrets_generated_parameters": [{"name": "app/SECRET_KEY", "length": 8,
                                                          "description": "short"}]},
     "aws_secrets_generated_parameters"),
    ("production", {"aws_database_instance_class": "db.r6g.4xlarge"}, "aws_database_instance_class"),
    ("production", {"aws_database_backup_retention_days": 0}, "aws_database_backup_retention_days"),
    ("production", {"aws_database_backup_retention_days": -3}, "aws_database_backup_retention_days"),
    ("production", {"aws_monitoring_cpu_threshold": 150}, "aws_monitoring_cpu_threshold"),
    ("production", {"aws_monitoring_disk_used_threshold": 0}, "aws_monitoring_disk_used_threshold"),
    ("production", {"aws_monitoring_response_time_threshold": 0}, "aws_monitoring_response_time_threshold"),
    ("production", {"aws_monitoring_alarm_emails": []}, "aws_monitoring_alarm_emails"),
    ("production", {"aws_monitoring_alarm_emails": ["not-an-address"]}, "aws_monitoring_alarm_emails"),
    ("production", {"aws_monitoring_log_retention_days": -1}, "aws_monitoring_log_retention_days"),
    ("production", {"aws_monitoring_log_retention_days": 10}, "aws_monitoring_log_retention_days"),
    ("production", {"aws_monitoring_period": 90}, "aws_monitoring_period"),
    ("staging", {"aws_compute_instance_type": "m5.24xlarge"},
     "aws_compute_instance_type 'm5.24xlarge' is not in aws_compute_allowed_instance_types"),
    ("staging", {"aws_compute_asg_min_size": 2, "aws_compute_asg_max_size": 1}, "aws_compute_asg_min_size"),
    ("staging", {"aws_compute_asg_desired_capacity": 3}, "aws_compute_asg_desired_capacity"),
    ("staging", {"aws_compute_asg_max_size": 40}, "aws_compute_asg_max_size_cap"),
    ("staging", {"aws_compute_root_volume_size": 4}, "aws_compute_root_volume_size 8-1024 GiB (got 4)"),
    ("staging", {"aws_compute_ami_name": "ami-0123456789abcdef0"}, "never an AMI id"),  # pragma: allowlist secret
    ("staging", {"aws_loadbalancer_health_check_timeout": 40},
     "aws_loadbalancer_health_check_timeout 2-120 s and below the interval"),
    ("staging", {"aws_loadbalancer_certificate_arn": "not-an-arn"}, "aws_loadbalancer_certificate_arn must be empty"),
    ("staging", {"aws_loadbalancer_domain_name": "Staging.Example"}, "aws_loadbalancer_domain_name and"),
    ("staging", {"aws_loadbalancer_domain_name": "", "aws_loadbalancer_subject_alternative_names": ["www.example.org"]},
     "the alternative names only with a domain name"),
    ("staging", {"aws_loadbalancer_name": "ChatMRPT-Staging-Load-Balancer-Too-Long"}, "aws_loadbalancer_name"),
    ("staging", {"aws_cdn_enabled": True, "aws_loadbalancer_enabled": False}, "aws_cdn_origin_load_balancer_enabled"),
    ("staging", {"aws_cdn_price_class": "PriceClass_1"}, "aws_cdn_price_class"),
]


# Each inventory as it is: every role's defaults and every group_vars value pass the argument
# specs and the cross-variable rules (a broken role default fails here, in `make check`).
INVENTORIES = ("production", "staging", "local")
# The inventories that must serve HTTPS (aws_loadbalancer_https_required); local serves HTTP.
HTTPS_INVENTORIES = ("production", "staging")


@pytest.fixture(scope="module")
def bad_input_runs(aws_env):
    """Every case's run and each inventory's run without extra input, four at a time
    (independent runs; each is its own test below)."""
    dead = {**aws_env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "ANSIBLE_INVENTORY_UNPARSED_FAILED": "false"}
    calls = [("validate.yml", inventory, "-e", json.dumps(extra)) for inventory, extra, _ in BAD_INPUTS]
    calls += [("validate.yml", inventory) for inventory in INVENTORIES]
    runs = run_playbooks(calls, env=dead)
    # staging and production as shipped, before the operator gave them a certificate
    bare = run_playbooks([("validate.yml", inventory) for inventory in HTTPS_INVENTORIES], env=dead, operator=False)
    return {"bad": runs[:len(BAD_INPUTS)], "good": dict(zip(INVENTORIES, runs[len(BAD_INPUTS):])),
            "no certificate": dict(zip(HTTPS_INVENTORIES, bare))}


@pytest.mark.parametrize("inventory", HTTPS_INVENTORIES)
def test_https_without_a_certificate_is_refused_before_any_aws_call(bad_input_runs, inventory):
    run = bad_input_runs["no certificate"][inventory]
    assert run.returncode != 0
    failures = [" ".join(line.split()) for line in run.failures()]
    assert len(failures) == 1, run.output[-3000:]
    assert "[aws_loadbalancer: HTTPS has a certificate]" in failures[0], failures[0]
    assert "aws_loadbalancer_certificate_arn" in failures[0] and "aws_loadbalancer_domain_name" in failures[0]
    assert "Could not connect" not in failures[0]


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_every_inventory_as_it_is_passes_validation(bad_input_runs, inventory):
    run = bad_input_runs["good"][inventory]
    assert run.returncode == 0, "\n".join(run.failures()) or run.output[-3000:]
    assert run.recap.get("localhost", {}).get("failed") == 0, run.output[-3000:]


@pytest.mark.parametrize(("index", "message"), [(i, m) for i, (_, _, m) in enumerate(BAD_INPUTS)],
                         ids=[f"{inv}-{'-'.join(f'{k}={v}' for k, v in e.items())}-{i}"
                              for i, (inv, e, _) in enumerate(BAD_INPUTS)])
def test_bad_input_is_refused_before_any_aws_call(bad_input_runs, index, message):
    run = bad_input_runs["bad"][index]
    assert run.returncode != 0
    failures = [" ".join(line.split()) for line in run.failures()]
    assert len(failures) == 1, run.output[-3000:]
    assert " ".join(message.split()) in failures[0], failures[0]
    assert "Could not connect" not in failures[0]
