"""What the CloudWatch agent publishes, derived apart from the roles that name it.

* :func:`render` renders the cloudwatch_agent role's template with an environment's
  inventory variables, the way Ansible loads them for a host.
* :func:`published_dimension_sets` reads such a rendered configuration the way the agent's
  documentation says the agent does (Amazon CloudWatch User Guide, "Manually create or edit
  the CloudWatch agent configuration file"): each plugin's metrics carry the plugin's own
  dimensions plus ``append_dimensions`` (and then no ``host``), and the agent also publishes
  every ``aggregation_dimensions`` set whose names a metric carries. It knows nothing of the
  alarms; :func:`unpublished` then checks alarms (as ``describe_alarms`` returns them) against
  it, and against the dimension sets AWS's own namespaces publish (from their metric pages).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import ROOT, VENV_BIN, base_env

ROLE = ROOT / "roles" / "cloudwatch_agent"

# The dimensions each plugin of the agent adds itself (the agent's metric tables: disk
# metrics carry path, device and fstype; cpu metrics the cpu, `cpu-total` with totalcpu).
PLUGIN_DIMENSIONS = {"cpu": {"cpu"}, "disk": {"path", "device", "fstype"}, "mem": set(),
                     "swap": set(), "diskio": {"name"}, "net": {"interface"}, "processes": set()}

# Metrics other programs publish in an environment's namespace: the backup program
# (roles/backup/files/chatmrpt_backup/storage.py, publish_metric) names its host and environment.
OTHER_PUBLISHERS = {"BackupSuccess": {frozenset({"Environment", "Host"})}}

_ELB_REQUEST = {frozenset(s) for s in ({"LoadBalancer"}, {"LoadBalancer", "AvailabilityZone"},
                                       {"TargetGroup"}, {"TargetGroup", "LoadBalancer"},
                                       {"TargetGroup", "LoadBalancer", "AvailabilityZone"})}
_ELB_HOSTS = {frozenset(s) for s in ({"TargetGroup", "LoadBalancer"},
                                     {"TargetGroup", "LoadBalancer", "AvailabilityZone"})}
# (namespace, metric) -> the dimension sets AWS publishes it with ("*": every metric of the
# namespace); from the EC2 and Application Load Balancer CloudWatch metric pages.
AWS_DIMENSION_SETS = {
    ("AWS/EC2", "*"): {frozenset(s) for s in (set(), {"InstanceId"}, {"AutoScalingGroupName"},
                                              {"ImageId"}, {"InstanceType"})},
    ("AWS/ApplicationELB", "RequestCount"): _ELB_REQUEST,
    ("AWS/ApplicationELB", "TargetResponseTime"): _ELB_REQUEST,
    ("AWS/ApplicationELB", "HTTPCode_Target_5XX_Count"): _ELB_REQUEST,
    ("AWS/ApplicationELB", "HTTPCode_Target_4XX_Count"): _ELB_REQUEST,
    ("AWS/ApplicationELB", "HealthyHostCount"): _ELB_HOSTS,
    ("AWS/ApplicationELB", "UnHealthyHostCount"): _ELB_HOSTS,
}

# Loads the role (its defaults, the argument specs of its validate entry point and its
# cross-variable asserts), then renders its template to the path given in -e.
RENDER_PLAYBOOK = """\
- name: Render the CloudWatch agent configuration
  hosts: chatmrpt-render
  gather_facts: false
  tasks:
    - name: Validate the inputs and load the role's defaults
      ansible.builtin.include_role:
        name: cloudwatch_agent
        tasks_from: validate
        public: true
    - name: Render the template
      ansible.builtin.template:
        src: "{{ __render_template }}"
        dest: "{{ __render_dest }}"
        mode: "0600"
      delegate_to: localhost
"""


def render(inventory_env: str, workdir: Path, *extra: str) -> subprocess.CompletedProcess:
    """Render the role's template with inventories/<env>/group_vars (a host in group all)
    to ``workdir/<env>.json``."""
    inventory = workdir / inventory_env
    inventory.mkdir(parents=True, exist_ok=True)
    # The environment's group_vars directory next to a static one-host inventory: Ansible
    # loads it exactly as for the dynamic inventory (000_shared first, then the overrides).
    (inventory / "hosts.yml").write_text(
        "all:\n  hosts:\n    chatmrpt-render:\n      ansible_connection: local\n"
        f"      ansible_python_interpreter: {sys.executable}\n")
    link = inventory / "group_vars"
    if not link.exists():
        link.symlink_to(ROOT / "inventories" / inventory_env / "group_vars")
    playbook = workdir / "render.yml"
    playbook.write_text(RENDER_PLAYBOOK)
    out = workdir / f"{inventory_env}.json"
    return subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory / "hosts.yml"), str(playbook),
         "-e", f"__render_template={ROLE / 'templates' / 'amazon-cloudwatch-agent.json.j2'}",
         "-e", f"__render_dest={out}", *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env=base_env(ANSIBLE_ROLES_PATH=str(ROOT / "roles"),
                     ANSIBLE_CACHE_PLUGIN="memory"),
    )


def _metric_name(plugin: str, measurement) -> str:
    """The published name: measurements may be given with or without the plugin's prefix
    (`used_percent` and `disk_used_percent` are the same metric), or renamed."""
    if isinstance(measurement, dict):
        if measurement.get("rename"):
            return measurement["rename"]
        measurement = measurement["name"]
    return measurement if measurement.startswith(plugin + "_") else f"{plugin}_{measurement}"


def published_dimension_sets(config: dict, *, in_asg: bool) -> dict[str, set[frozenset]]:
    """{metric name: the dimension-name sets the agent publishes it with} for one instance,
    in an Auto Scaling group or not (outside one, ``${aws:AutoScalingGroupName}`` has no
    value and the agent leaves the dimension out)."""
    metrics = config["metrics"]
    appended = set(metrics.get("append_dimensions", {}))
    if not in_asg:
        appended.discard("AutoScalingGroupName")
    host = set() if metrics.get("append_dimensions") else {"host"}
    published: dict[str, set[frozenset]] = {}
    for plugin, section in metrics["metrics_collected"].items():
        own = set(PLUGIN_DIMENSIONS[plugin])
        if plugin == "disk" and section.get("drop_device"):
            own.discard("device")
        full = frozenset(own | appended | set(section.get("append_dimensions", {})) | host)
        sets = {full} | {frozenset(a) for a in metrics.get("aggregation_dimensions", []) if set(a) <= full}
        for measurement in section["measurement"]:
            published[_metric_name(plugin, measurement)] = sets
    return published


def unpublished(alarms: list[dict], config: dict) -> list[str]:
    """The alarms (or dashboard lines, as ``{"AlarmName", "Namespace", "MetricName",
    "Dimensions"}``) whose metric and dimension names nothing publishes: in the agent's
    namespace, neither an instance in the group nor one outside it, nor another program
    there; in AWS's namespaces, not a set that AWS publishes."""
    agent_namespace = config["metrics"]["namespace"]
    agent: dict[str, set[frozenset]] = {}
    for in_asg in (True, False):
        for metric, sets in published_dimension_sets(config, in_asg=in_asg).items():
            agent.setdefault(metric, set()).update(sets)
    problems = []
    for alarm in alarms:
        namespace, metric = alarm["Namespace"], alarm["MetricName"]
        names = frozenset(d["Name"] for d in alarm["Dimensions"])
        if namespace == agent_namespace:
            sets = agent.get(metric) or OTHER_PUBLISHERS.get(metric, set())
        else:
            sets = AWS_DIMENSION_SETS.get((namespace, metric)) or AWS_DIMENSION_SETS.get((namespace, "*"), set())
        if names not in sets:
            problems.append(f"{alarm['AlarmName']}: {namespace} {metric} {sorted(names)} is not published "
                            f"(published: {sorted(sorted(s) for s in sets) or 'nothing'})")
    return problems
