"""Refresh the instance prices of a price table from the AWS Price List API.

Only the hourly on-demand prices of the instance types and RDS classes already in the
table are looked up (those drive the totals); the other rates keep their shipped values.
Needs AWS credentials allowed to call pricing:GetProducts.
"""

from __future__ import annotations

import datetime
import json

import boto3

from chatmrpt_cost.model import PRICE_DIR, load_prices

LOCATIONS = {"us-east-2": "US East (Ohio)", "us-east-1": "US East (N. Virginia)"}


def on_demand_hourly(product: dict) -> float:
    terms = product["terms"]["OnDemand"]
    dimension = next(iter(next(iter(terms.values()))["priceDimensions"].values()))
    return float(dimension["pricePerUnit"]["USD"])


def lookup(client, service: str, filters: dict[str, str]) -> float:
    response = client.get_products(
        ServiceCode=service, MaxResults=1,
        Filters=[{"Type": "TERM_MATCH", "Field": key, "Value": value} for key, value in filters.items()],
    )
    if not response["PriceList"]:
        raise LookupError(f"no {service} price for {filters}")
    return on_demand_hourly(json.loads(response["PriceList"][0]))


def refresh(region: str, client=None) -> str:
    table = load_prices(region)
    location = LOCATIONS[region]
    # The Price List API is served from us-east-1 whatever region is priced.
    client = client or boto3.client("pricing", region_name="us-east-1")
    for instance_type in table["ec2_instance_hourly"]:
        table["ec2_instance_hourly"][instance_type] = lookup(client, "AmazonEC2", {
            "location": location, "instanceType": instance_type, "operatingSystem": "Linux",
            "tenancy": "Shared", "preInstalledSw": "NA", "capacitystatus": "Used"})
    for db_class in table["rds_instance_hourly"]:
        table["rds_instance_hourly"][db_class] = lookup(client, "AmazonRDS", {
            "location": location, "instanceType": db_class, "databaseEngine": "PostgreSQL",
            "deploymentOption": "Single-AZ"})
    for node_type in table["elasticache_node_hourly"]:
        table["elasticache_node_hourly"][node_type] = lookup(client, "AmazonElastiCache", {
            "location": location, "instanceType": node_type, "cacheEngine": "Redis"})
    table["as_of"] = datetime.date.today().isoformat()
    table["source"] = "AWS Price List API (instance, RDS class and ElastiCache node hours); other rates as shipped"
    path = PRICE_DIR / f"prices-{region}.json"
    path.write_text(json.dumps(table, indent=2) + "\n")
    return str(path)
