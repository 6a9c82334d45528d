# Managed by Ansible (role `backup`): local changes are overwritten.
"""`python3 -m chatmrpt_backup`: the backup, or the restore when run under a name with
`restore` in it (the installed launchers, /usr/local/sbin/chatmrpt-backup and -restore)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
