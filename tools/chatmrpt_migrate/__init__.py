"""ChatMRPT SQLite -> PostgreSQL migration tool (stdlib + psycopg 3).

Run ``python -m chatmrpt_migrate --help`` (with ``PYTHONPATH=tools``) or ``tools/chatmrpt-migrate``.
"""

__version__ = "1.1.0"

# Exit codes (documented in README.md)
EXIT_OK = 0
EXIT_MISMATCH = 1      # verification failed (nothing swapped in) / verify mode found differences
EXIT_USAGE = 2         # bad arguments, missing sources, no target
EXIT_ORPHANS = 3       # orphan rows found with --orphans refuse (target untouched)
EXIT_ERROR = 4         # SQLite/PostgreSQL/AWS error during the run (target untouched)
EXIT_INTERRUPTED = 130  # Ctrl-C (target untouched)
