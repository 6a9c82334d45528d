"""The cost model against figures worked out by hand from the shipped price table
(tools/chatmrpt_cost/prices-us-east-2.json: t3.medium $0.0416/h, gp3 $0.08/GB-month,
db.t3.micro $0.018/h, RDS gp2 $0.115/GB-month, ALB $0.0225/h + $0.008/LCU-h,
CloudWatch $0.30/metric and $0.10/alarm, logs $0.50/GB in + $0.03/GB kept,
S3 $0.023 and IA $0.0125 per GB, transfer $0.09/GB, CloudFront $0.085/GB + $0.01/10k)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from chatmrpt_cost.model import PriceError, estimate, load_prices
from helpers import ROOT

STAGING = {
    "environment": "staging", "instance_type": "t3.medium", "instance_count": 1,
    "asg_min": 0, "asg_desired": 0, "asg_max": 3, "root_volume_gb": 40, "root_volume_type": "gp3",
    "rds_enabled": True, "rds_class": "db.t3.micro", "rds_storage_gb": 20, "rds_storage_type": "gp2",
    "alb_enabled": False, "alb_lcu": 1, "cdn_enabled": False, "cdn_gb_out": 50, "cdn_requests_10k": 100,
    "logs_gb_month": 1, "log_retention_days": 7, "s3_standard_gb": 10, "s3_ia_gb": 20,
    "transfer_gb_out": 20, "metrics_per_instance": 6, "alarms_per_instance": 4, "alarms_fixed": 4,
    "cache_enabled": False, "cache_node_type": "cache.t4g.micro", "cache_nodes": 1,
}
PRODUCTION = {**STAGING, "environment": "production", "rds_enabled": False, "alb_enabled": True,
              "cdn_enabled": True, "alarms_fixed": 8}


@pytest.fixture(scope="module")
def prices():
    return load_prices("us-east-2")


def test_staging_by_hand(prices):
    est = estimate(STAGING, prices)
    # 730 h x 0.0416 = 30.368 -> 30.37; 40 GB x 0.08 = 3.20; 730 x 0.018 = 13.14; 20 x 0.115 = 2.30;
    # 6 metrics x 0.30 = 1.80; (4 + 4) alarms x 0.10 = 0.80; logs 0.50 + (7/30 GB x 0.03 = 0.007) = 0.51;
    # S3 10 x 0.023 + 20 x 0.0125 = 0.48; transfer 20 x 0.09 = 1.80. Sum: 54.40.
    assert est.monthly("desired") == 54.40
    # At ASG max: 3 x (30.368 + 3.20 + 6 x 0.30) = 3 x 35.368 = 106.10 more.
    assert est.monthly("max") == 160.50
    assert est.yearly("max") == 1926.00


def test_production_by_hand(prices):
    est = estimate(PRODUCTION, prices)
    # EC2 30.37 + EBS 3.20 + ALB 16.43 (730 x 0.0225 = 16.425) + LCU 5.84 (730 x 0.008)
    # + CloudFront 50 x 0.085 + 100 x 0.01 = 5.25 + metrics 1.80 + (4 + 8) alarms 1.20 + logs 0.51
    # + S3 0.48 + transfer 1.80. Sum: 66.88; at ASG max 3 x 35.368 = 106.10 more.
    assert est.monthly("desired") == 66.88
    assert est.monthly("max") == 172.98


def test_the_cache_is_priced_per_node_hour(prices):
    rows = {row.name: row for row in estimate({**STAGING, "cache_enabled": True, "cache_nodes": 2}, prices).items}
    assert rows["ElastiCache for Redis"].monthly == round(2 * 0.016 * 730, 2)  # cache.t4g.micro, us-east-2
    assert "ElastiCache for Redis" not in {row.name for row in estimate(STAGING, prices).items}


def test_rows_add_up_to_the_total(prices):
    est = estimate(PRODUCTION, prices)
    for asg in ("min", "desired", "max"):
        assert round(sum(row["monthly"] for row in est.rows(asg)), 2) == pytest.approx(est.monthly(asg), abs=0.011)


def test_unknown_instance_type_is_named(prices):
    with pytest.raises(PriceError, match="instance type 't3.mega'"):
        estimate({**STAGING, "instance_type": "t3.mega"}, prices)


def test_biggest_items_at_max(prices):
    biggest = estimate({**PRODUCTION, "asg_max": 10}, prices).biggest("max")
    assert biggest[0]["item"] == "EC2 instances (Auto Scaling Group)"
    assert biggest[0]["monthly"] == pytest.approx(303.68, abs=0.01)  # 10 x 30.368


def test_estimate_command_reads_stdin():
    proc = subprocess.run([sys.executable, "-m", "chatmrpt_cost", "estimate"],
                          input=json.dumps({"settings": STAGING, "budget": 3000}),
                          capture_output=True, text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT / "tools")})
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["yearly"]["max"] == 1926.00
    assert data["budget_share_at_max"] == round(1926.00 / 3000, 4)
    assert data["biggest_at_max"][0]["item"] == "EC2 instances (Auto Scaling Group)"
