"""The drift check reads structured results, not text: scripts/drift_check.py's reader over the
JSON lines that scripts/callback_plugins/chatmrpt_results.py writes, on a real check-mode run
of a small playbook: a change, a change in one loop item (named by its label), a task skipped
by its condition, a probe that never changes, an ignored failure, and a module without check
mode, which must come out as unknown, not as in sync."""

from __future__ import annotations

import importlib.util
import subprocess
import textwrap

from helpers import ROOT, VENV_BIN

spec = importlib.util.spec_from_file_location("drift_check", ROOT / "scripts" / "drift_check.py")
drift_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(drift_check)

PLAYBOOK = """\
- name: Drift fixture
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: A file that is not there yet
      ansible.builtin.copy: {content: "x", dest: "{{ tmp }}/new", mode: "0644"}
    - name: Files, one of them there already
      ansible.builtin.copy: {content: "x", dest: "{{ tmp }}/{{ item }}", mode: "0644"}
      loop: [present, absent]
      loop_control: {label: "file {{ item }}"}
    - name: Not for this host
      ansible.builtin.debug: {msg: never}
      when: false
    - name: A probe
      ansible.builtin.command: "true"
      changed_when: false
      check_mode: false
    - name: A failure that is ignored
      ansible.builtin.command: "false"
      check_mode: false
      changed_when: false
      ignore_errors: true
    - name: A module without check mode
      nocheck:
"""

MODULE = """\
from ansible.module_utils.basic import AnsibleModule
AnsibleModule(argument_spec={}, supports_check_mode=False).exit_json(changed=True)
"""


def test_the_reader_sees_changes_items_unknowns_and_no_failures(tmp_path):
    (tmp_path / "present").write_text("x")
    (tmp_path / "present").chmod(0o644)
    (tmp_path / "library").mkdir()
    (tmp_path / "library" / "nocheck.py").write_text(MODULE)
    (tmp_path / "play.yml").write_text(textwrap.dedent(PLAYBOOK))
    results = tmp_path / "results.jsonl"
    env = {**drift_check.recording_env(results), "ANSIBLE_LIBRARY": str(tmp_path / "library")}
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", str(tmp_path / "play.yml"),
                           "--check", "--diff", "-e", f"tmp={tmp_path}",
                           "-e", f"ansible_python_interpreter={VENV_BIN / 'python'}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    changes, unknown, failures, recap = drift_check.read_results(results)
    assert changes == [("A file that is not there yet", None), ("Files, one of them there already", "file absent")]
    assert unknown == [("A module without check mode", None)]
    assert failures == [] and recap


def test_a_run_that_fails_or_stops_is_no_result(tmp_path):
    results = tmp_path / "results.jsonl"
    results.write_text('{"task": "aws_network : Manage the VPC", "action": "x", "host": "localhost", "item": null,'
                       ' "status": "failed", "ignored": false, "msg": "boom"}\n')
    _, _, failures, recap = drift_check.read_results(results)
    assert failures == ["aws_network : Manage the VPC: boom"] and not recap
    assert drift_check.read_results(tmp_path / "missing.jsonl") == ([], [], [], False)
