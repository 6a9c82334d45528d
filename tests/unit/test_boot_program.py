"""The app role's first-boot program (roles/app/files/chatmrpt_boot.py) without AWS: the
.env it writes is what env.j2 renders (quoting, order), a missing parameter or another
release is refused by name and never by value. The whole unit runs in molecule/app
(tests/test_first_boot.py) against an emulator."""

from __future__ import annotations

import ast
import importlib.util

import jinja2
import pytest

from helpers import ROOT

PROGRAM = ROOT / "roles/app/files/chatmrpt_boot.py"
spec_ = importlib.util.spec_from_file_location("chatmrpt_boot", PROGRAM)
boot = importlib.util.module_from_spec(spec_)
spec_.loader.exec_module(boot)

TRICKY = {"SECRET_KEY": 'a"b\\c$d e', "admin_key": "x=y#z", "OPENAI_API_KEY": "sk-'1'"}  # pragma: allowlist secret


def render_env_j2(secrets: dict) -> str:
    """env.j2 as the template module renders it (trim_blocks, a stand-in ansible_managed)."""
    env = jinja2.Environment(trim_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    env.filters["comment"] = lambda text: f"#\n# {text}\n#"
    source = (ROOT / "roles/app/templates/env.j2").read_text()
    return env.from_string(source).render(ansible_managed="Ansible managed", app_log_level="INFO", __app_workers=3,
                                          app_env={"FLASK_ENV": "production", "AWS_REGION": "us-east-2"},
                                          __app_secrets=secrets)


def spec(**extra) -> dict:
    return {"service": "chatmrpt", "env_head": render_env_j2({}), "required": ["SECRET_KEY"],
            "secrets": {"SECRET_KEY": "/p/app/SECRET_KEY"}, "optional_secrets": {"DATABASE_URL": "/p/app/DATABASE_URL"},
            "parameters": {"REDIS_HOST": "/p/cache/endpoint"}, **extra}


def test_the_program_runs_on_python_3_9_and_is_marked_managed():
    text = PROGRAM.read_text()
    assert text.startswith("# Managed by Ansible (role `app`)")
    ast.parse(text, feature_version=(3, 9))


def test_env_is_what_env_j2_renders():
    assert boot.render_env(spec(), TRICKY) == render_env_j2(TRICKY)


def test_secrets_merge_as_the_role_merges_them():
    values = {"/p/app/SECRET_KEY": "s", "/p/cache/endpoint": "redis", "/p/app/DATABASE_URL": ""}
    # an empty optional value is left out, as the role's selectattr('value') does
    assert boot.collect_secrets(spec(), values) == {"SECRET_KEY": "s", "REDIS_HOST": "redis"}


def test_a_missing_parameter_is_named_and_no_value_is_shown():
    with pytest.raises(boot.BootError) as caught:
        boot.collect_secrets(spec(), {"/p/cache/endpoint": "a-value-that-must-not-show"})
    assert "SSM parameter /p/app/SECRET_KEY is missing" in str(caught.value)
    assert "a-value-that-must-not-show" not in str(caught.value)


def test_a_release_other_than_the_recorded_one_is_refused(tmp_path):
    (tmp_path / "releases" / "abc123").mkdir(parents=True)
    (tmp_path / "app").symlink_to(tmp_path / "releases" / "abc123")
    checked = spec(release_parameter="/p/release", app_path=str(tmp_path / "app"))
    boot.check_release(checked, {"/p/release": "abc123"})
    with pytest.raises(boot.BootError, match="release mismatch: the image has release abc123, the environment records def456"):
        boot.check_release(checked, {"/p/release": "def456"})
    with pytest.raises(boot.BootError, match="no release recorded in SSM parameter /p/release"):
        boot.check_release(checked, {})
    boot.check_release(spec(release_parameter=""), {})  # no parameter: no check


def test_other_roles_per_host_files_get_the_instance_id(tmp_path):
    import grp
    import os
    import pwd

    user, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    target = tmp_path / "backup.ini"
    boot.write_host_files({"files": [{"path": str(target), "content": "host = @INSTANCE_ID@\n", "owner": user,
                                      "group": group, "mode": "0640"}]}, "i-0abc")
    assert target.read_text() == "host = i-0abc\n"
    assert oct(target.stat().st_mode & 0o777) == "0o640"
