# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every task result of a run, one JSON object per line, for scripts/drift_check.py.

Enabled by that script only (ANSIBLE_CALLBACKS_ENABLED), it writes to the file named by
CHATMRPT_RESULTS_FILE: for each task and host (and each loop item), the task's full name
("role : task"), its module, the item's label, and its status: ok, changed, skipped,
unknown (skipped because the module has no check mode, so nothing was compared), failed
(with ignored) or unreachable; then one "stats" line with the recap's failures. The text
output stays the default callback's."""

from __future__ import annotations

DOCUMENTATION = r"""
name: chatmrpt_results
type: notification
short_description: Task results as JSON lines, for the drift check
description:
  - Writes one JSON object per task result (and loop item) to the file named by the
    environment variable CHATMRPT_RESULTS_FILE; does nothing when it is unset.
requirements: []
"""

import json
import os

from ansible.plugins.callback import CallbackBase

NO_CHECK_MODE = "does not support check mode"


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "chatmrpt_results"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        path = os.environ.get("CHATMRPT_RESULTS_FILE")
        self._out = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115 (closed in stats)

    def _write(self, record: dict) -> None:
        if self._out:
            self._out.write(json.dumps(record, default=str) + "\n")
            self._out.flush()

    def _record(self, result, status: str, item: bool = False, ignored: bool = False) -> None:
        task, res = result._task, result._result
        if status == "skipped" and NO_CHECK_MODE in str(res.get("msg", "")):
            status = "unknown"
        self._write({
            "task": task.get_name(),
            "action": task.action,
            "host": result._host.get_name(),
            "item": (res.get("_ansible_item_label", res.get("item")) if item else None),
            "status": status,
            "ignored": ignored,
            "msg": str(res.get("msg", ""))[:500] if status in ("failed", "unreachable", "unknown") else "",
        })

    def _status(self, result) -> str:
        return "changed" if result._result.get("changed") else "ok"

    # a looped task reports each item, then the task as a whole: only the items are recorded
    def v2_runner_on_ok(self, result):
        if not result._result.get("results"):
            self._record(result, self._status(result))

    def v2_runner_item_on_ok(self, result):
        self._record(result, self._status(result), item=True)

    def v2_runner_on_skipped(self, result):
        if not result._result.get("results"):
            self._record(result, "skipped")

    def v2_runner_item_on_skipped(self, result):
        self._record(result, "skipped", item=True)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        if not result._result.get("results"):
            self._record(result, "failed", ignored=ignore_errors)

    def v2_runner_item_on_failed(self, result):
        self._record(result, "failed", item=True, ignored=bool(result._task.ignore_errors))

    def v2_runner_on_unreachable(self, result):
        self._record(result, "unreachable")

    def v2_playbook_on_stats(self, stats):
        hosts = sorted(stats.processed)
        self._write({"stats": {h: stats.summarize(h) for h in hosts}})
        if self._out:
            self._out.close()
            self._out = None
