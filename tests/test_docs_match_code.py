"""Every role input is written three times (defaults/main.yml, meta/argument_specs.yml and the
README's variable table): they must agree. And what README.md and docs/ name (paths, make
targets, variables) must exist."""

from __future__ import annotations

import re
import shutil

import pytest
import yaml

from helpers import ROOT

ROLES = sorted(p for p in (ROOT / "roles").iterdir() if (p / "meta" / "argument_specs.yml").is_file())
NAME = re.compile(r"`([a-z][a-z0-9_]*)`")
TYPES = {"str": str, "int": int, "bool": bool, "list": list, "dict": dict, "float": (int, float), "path": str}


def spec_options(role) -> dict[str, dict]:
    """Every option of every entry point (the first spelling wins; test_entry_points_agree checks the rest)."""
    options: dict[str, dict] = {}
    for spec in yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"].values():
        for name, option in (spec.get("options") or {}).items():
            options.setdefault(name, option)
    return options


def defaults(role) -> tuple[dict, set[str]]:
    """(defaults/main.yml's values, the required inputs it documents in a `# name:` comment)."""
    text = (role / "defaults" / "main.yml").read_text()
    values = yaml.safe_load(text) or {}
    commented = set(re.findall(rf"^# ({re.escape(role.name)}_[a-z0-9_]+):", text, re.M))
    return values, commented


def readme_table(role) -> dict[str, str]:
    """{variable: its default cell} from the README's variable table(s); a row may name
    several variables (`a` / `b`) with their defaults in the same order."""
    rows: dict[str, str] = {}
    header: list[str] | None = None
    for line in (role / "README.md").read_text().splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if header is None:
            header = [c.lower() for c in cells]
            continue
        if set("".join(cells)) <= set("-: ") or "variable" not in header:
            continue
        names = [n for n in NAME.findall(cells[header.index("variable")]) if n.startswith(role.name + "_")]
        default = cells[header.index("default")] if "default" in header else ""
        parts = default.split(" / ") if len(names) > 1 else [default]
        for name, part in zip(names, parts + [""] * len(names)):
            rows[name] = part
    return rows


def readme_value(cell: str):
    """The value a README default cell shows: `x` parsed as YAML (its text where YAML cannot
    parse it, such as `{{ prefix }}-ALB`)."""
    text = re.fullmatch(r"`(.*)`", cell.replace("\\|", "|")).group(1)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def input_problems(role) -> list[str]:
    values, commented = defaults(role)
    specs = set(spec_options(role))
    table = readme_table(role)
    return ([f"{n}: in defaults/main.yml, not in meta/argument_specs.yml" for n in sorted(set(values) - specs)]
            + [f"{n}: in meta/argument_specs.yml, neither set nor described (`# {n}:`) in defaults/main.yml"
               for n in sorted(specs - set(values) - commented)]
            + [f"{n}: in meta/argument_specs.yml, not in the README's variable table" for n in sorted(specs - set(table))]
            + [f"{n}: in the README's variable table, not in meta/argument_specs.yml" for n in sorted(set(table) - specs)])


def default_problems(role) -> list[str]:
    values, _ = defaults(role)
    table = readme_table(role)
    wrong = []
    for name, option in spec_options(role).items():
        if name not in values:
            continue
        value = values[name]
        if "default" in option and option["default"] != value:
            wrong.append(f"{name}: argument_specs default {option['default']!r}, defaults/main.yml {value!r}")
        templated = isinstance(value, str) and "{{" in value
        expected = TYPES.get(option.get("type", "str"))
        if not templated and expected and not isinstance(value, expected):
            wrong.append(f"{name}: argument_specs type {option.get('type', 'str')}, defaults/main.yml {value!r}")
        shown = table.get(name, "")
        # a literal default; `(list, see defaults/main.yml)` points to the file instead
        literal = shown.startswith("`") and shown.endswith("`") and not shown.startswith("`(")
        # a string shows as its text: `200` is the matcher "200", `` the empty string
        if literal and readme_value(shown) != value and not (isinstance(value, str) and shown[1:-1] == value):
            wrong.append(f"{name}: README default {shown}, defaults/main.yml {value!r}")
    return wrong


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
def test_defaults_specs_and_readme_name_the_same_inputs(role):
    assert input_problems(role) == []


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
def test_defaults_specs_and_readme_give_the_same_default_and_type(role):
    assert default_problems(role) == []


def test_a_drifted_copy_of_a_role_is_found(tmp_path):
    role = tmp_path / "aws_storage"
    shutil.copytree(ROOT / "roles" / "aws_storage", role)
    defaults_file = role / "defaults" / "main.yml"
    defaults_file.write_text(defaults_file.read_text().replace("aws_storage_transition_days: 30",
                                                               "aws_storage_transition_days: 31")
                             + "aws_storage_undocumented: true\n")
    readme = role / "README.md"
    readme.write_text("\n".join(line for line in readme.read_text().splitlines()
                                if not line.startswith("| `aws_storage_tags`")) + "\n")
    assert input_problems(role) == [
        "aws_storage_undocumented: in defaults/main.yml, not in meta/argument_specs.yml",
        "aws_storage_tags: in meta/argument_specs.yml, not in the README's variable table"]
    assert "aws_storage_transition_days: argument_specs default 30, defaults/main.yml 31" in default_problems(role)
    assert "aws_storage_transition_days: README default `30`, defaults/main.yml 31" in default_problems(role)


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
def test_entry_points_agree(role):
    """An input that several entry points take has one type, one default and one choice list."""
    seen: dict[str, dict] = {}
    wrong = []
    for entry, spec in yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"].items():
        for name, option in (spec.get("options") or {}).items():
            key = {k: option.get(k) for k in ("type", "default", "choices", "elements")}
            if seen.setdefault(name, key) != key:
                wrong.append(f"{name} in {entry}: {key} != {seen[name]}")
    assert wrong == []


# --- README.md and docs/ ---------------------------------------------------------------

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "requirements" / "README.md"]
PATH = re.compile(r"(?:`|\()((?:\.\./)?(?:roles|playbooks|inventories|group_vars|molecule|tests|lab|tools|scripts|"
                  r"benchmarks|docs|requirements)/[A-Za-z0-9_./<>*-]*[A-Za-z0-9_/*-])")
MAKE = re.compile(r"`make ([a-z-]+)")
PREFIXES = ("app_", "aws_", "backup_", "base_", "cloudwatch_agent_", "postgres_client_", "chatmrpt_", "deploy_",
            "golden_ami_", "recovery_", "restore_", "migration_", "asg_move_", "teardown_", "drift_check_", "outputs_")


def defined_names() -> str:
    """Everything that can define or read a variable, as one text to search."""
    files = [*ROOT.glob("roles/*/*/*.yml"), *ROOT.glob("group_vars/**/*.yml"), *ROOT.glob("inventories/**/*.yml"),
             *ROOT.glob("playbooks/**/*.yml"), *ROOT.glob("roles/*/templates/*"), *ROOT.glob("playbooks/templates/*")]
    return "\n".join(p.read_text() for p in files if p.is_file())


def doc_problems(doc) -> list[str]:
    text = doc.read_text()
    missing = []
    for path in sorted(set(PATH.findall(text))):
        if "<" in path:        # a pattern such as inventories/<env>/: its fixed part must exist
            path = path.split("<")[0]
        candidates = [ROOT / path, doc.parent / path]
        if not any(c.exists() or list(c.parent.glob(c.name)) for c in candidates):
            missing.append(path)
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.M))
    missing += [f"make {t}" for t in sorted(set(MAKE.findall(text)) - targets)]
    names = defined_names()
    missing += [n for n in sorted({n for n in NAME.findall(text) if n.startswith(PREFIXES)})
                if not re.search(rf"\b{n}\b", names)]
    return missing


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_what_the_docs_name_exists(doc):
    assert doc_problems(doc) == []


def test_a_doc_naming_what_does_not_exist_is_found(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("Run `make demo` and `make dmeo`, read `playbooks/site.yml` and `playbooks/sight.yml`,\n"
                   "set `aws_monitoring_period` and `aws_monitoring_perod`.\n")
    assert doc_problems(doc) == ["playbooks/sight.yml", "make dmeo", "aws_monitoring_perod"]
