"""Monthly cost of one environment, computed from the settings that create its resources.

The settings come from Ansible (`chatmrpt_cost_settings` in group_vars/all/cost.yml composes them
from the roles' own variables), so the report and the budget guard price exactly what
the playbooks build. Prices come from a shipped table (prices-<region>.json).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

PRICE_DIR = Path(__file__).resolve().parent


class PriceError(ValueError):
    """A setting names something the price table has no price for."""


def load_prices(region: str = "us-east-2", path: Path | None = None) -> dict:
    path = path or PRICE_DIR / f"prices-{region}.json"
    if not path.exists():
        raise PriceError(f"no price table for region {region} ({path}); add one or run `refresh`")
    return json.loads(path.read_text())


@dataclass
class Item:
    name: str        # what is billed, for people
    detail: str      # how the figure was computed
    monthly: float
    scales_with_asg: bool = False


@dataclass
class Estimate:
    environment: str
    items: list[Item] = field(default_factory=list)
    asg_instances: dict[str, int] = field(default_factory=dict)   # min / desired / max

    def monthly(self, asg: str = "desired") -> float:
        """Total per month with the ASG at `asg` (min, desired or max)."""
        return round(sum(self._amount(item, asg) for item in self.items), 2)

    def yearly(self, asg: str = "desired") -> float:
        return round(self.monthly(asg) * 12, 2)

    def _amount(self, item: Item, asg: str) -> float:
        if not item.scales_with_asg:
            return item.monthly
        per_instance = item.monthly  # scaled items carry the price of one ASG instance
        return per_instance * self.asg_instances[asg]

    def rows(self, asg: str = "desired") -> list[dict]:
        return [
            {"item": item.name, "detail": item.detail + (f" x {self.asg_instances[asg]} ({asg})" if item.scales_with_asg else ""),
             "monthly": round(self._amount(item, asg), 2)}
            for item in self.items
        ]

    def biggest(self, asg: str = "max", count: int = 3) -> list[dict]:
        return sorted(self.rows(asg), key=lambda row: row["monthly"], reverse=True)[:count]

    def to_dict(self, budget_yearly: float | None = None) -> dict:
        data = {
            "environment": self.environment,
            "items": {asg: self.rows(asg) for asg in ("min", "desired", "max")},
            "monthly": {asg: self.monthly(asg) for asg in ("min", "desired", "max")},
            "yearly": {asg: self.yearly(asg) for asg in ("min", "desired", "max")},
        }
        if budget_yearly:
            data["budget_yearly"] = budget_yearly
            data["budget_share_at_max"] = round(self.yearly("max") / budget_yearly, 4)
        return data


def _price(table: dict, key: str, name: str, what: str) -> float:
    try:
        return float(table[key][name])
    except KeyError:
        known = ", ".join(sorted(table.get(key, {})))
        raise PriceError(f"no price for {what} '{name}' in the price table (known: {known})") from None


def estimate(settings: dict, prices: dict) -> Estimate:
    """Price one environment. `settings` is the `chatmrpt_cost_settings` dict of the environment."""
    s = settings
    hours = prices["hours_per_month"]
    est = Estimate(s["environment"], asg_instances={
        "min": int(s["asg_min"]), "desired": int(s["asg_desired"]), "max": int(s["asg_max"])})
    instance_month = _price(prices, "ec2_instance_hourly", s["instance_type"], "instance type") * hours
    volume_month = _price(prices, "ebs_gb_month", s["root_volume_type"], "volume type") * int(s["root_volume_gb"])
    instances = int(s["instance_count"])

    if instances:
        est.items.append(Item("EC2 instances (hand-managed)",
                              f"{instances} x {s['instance_type']} x {hours} h", round(instances * instance_month, 2)))
        est.items.append(Item("EBS root volumes (hand-managed)",
                              f"{instances} x {s['root_volume_gb']} GB {s['root_volume_type']}", round(instances * volume_month, 2)))
    est.items.append(Item("EC2 instances (Auto Scaling Group)", f"{s['instance_type']} x {hours} h",
                          round(instance_month, 4), scales_with_asg=True))
    est.items.append(Item("EBS root volumes (Auto Scaling Group)", f"{s['root_volume_gb']} GB {s['root_volume_type']}",
                          round(volume_month, 4), scales_with_asg=True))

    if s["rds_enabled"]:
        rds_month = _price(prices, "rds_instance_hourly", s["rds_class"], "RDS class") * hours
        storage = _price(prices, "rds_storage_gb_month", s["rds_storage_type"], "RDS storage type") * int(s["rds_storage_gb"])
        est.items.append(Item("RDS PostgreSQL instance", f"{s['rds_class']} x {hours} h", round(rds_month, 2)))
        est.items.append(Item("RDS storage", f"{s['rds_storage_gb']} GB {s['rds_storage_type']}", round(storage, 2)))

    if s["cache_enabled"]:
        nodes = int(s["cache_nodes"])
        cache_month = _price(prices, "elasticache_node_hourly", s["cache_node_type"], "ElastiCache node type") * hours
        est.items.append(Item("ElastiCache for Redis", f"{nodes} x {s['cache_node_type']} x {hours} h",
                              round(nodes * cache_month, 2)))

    if s["alb_enabled"]:
        est.items.append(Item("Application Load Balancer", f"{hours} h", round(prices["alb_hourly"] * hours, 2)))
        est.items.append(Item("ALB capacity units (estimate)", f"{s['alb_lcu']} LCU x {hours} h",
                              round(prices["alb_lcu_hourly"] * float(s["alb_lcu"]) * hours, 2)))

    if s["cdn_enabled"]:
        est.items.append(Item("CloudFront transfer and requests (estimate)",
                              f"{s['cdn_gb_out']} GB out, {s['cdn_requests_10k']} x 10k HTTPS requests",
                              round(prices["cloudfront_gb_out"] * float(s["cdn_gb_out"])
                                    + prices["cloudfront_https_per_10k"] * float(s["cdn_requests_10k"]), 2)))

    # Custom metrics are billed per metric, alarms per alarm; both follow the instance count.
    metrics_fixed = instances * int(s["metrics_per_instance"])
    alarms_fixed = instances * int(s["alarms_per_instance"]) + int(s["alarms_fixed"])
    est.items.append(Item("CloudWatch agent metrics (hand-managed)", f"{metrics_fixed} metrics",
                          round(metrics_fixed * prices["cloudwatch_metric_month"], 2)))
    est.items.append(Item("CloudWatch agent metrics (Auto Scaling Group)", f"{s['metrics_per_instance']} metrics",
                          round(int(s["metrics_per_instance"]) * prices["cloudwatch_metric_month"], 4), scales_with_asg=True))
    est.items.append(Item("CloudWatch alarms", f"{alarms_fixed} alarms",
                          round(alarms_fixed * prices["cloudwatch_alarm_month"], 2)))
    logs_gb = float(s["logs_gb_month"])
    stored_gb = logs_gb * int(s["log_retention_days"]) / 30
    est.items.append(Item("CloudWatch Logs (estimate)", f"{logs_gb} GB ingested, {stored_gb:.2f} GB kept",
                          round(logs_gb * prices["cloudwatch_logs_ingest_gb"]
                                + stored_gb * prices["cloudwatch_logs_store_gb_month"], 2)))

    est.items.append(Item("S3 backups (estimate)", f"{s['s3_standard_gb']} GB Standard, {s['s3_ia_gb']} GB Standard-IA",
                          round(float(s["s3_standard_gb"]) * prices["s3_standard_gb_month"]
                                + float(s["s3_ia_gb"]) * prices["s3_standard_ia_gb_month"], 2)))
    est.items.append(Item("Data transfer out (estimate)", f"{s['transfer_gb_out']} GB",
                          round(float(s["transfer_gb_out"]) * prices["data_transfer_out_gb"], 2)))
    return est
