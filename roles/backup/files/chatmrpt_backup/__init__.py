# Managed by Ansible (role `backup`): local changes are overwritten.
"""ChatMRPT backup and restore (one program, installed as chatmrpt-backup and chatmrpt-restore).

chatmrpt-backup: every SQLite database under instance/ (found by its header), copied
online with the SQLite backup API and checked with PRAGMA integrity_check; the archived
instance directories (uploads/) as tar.gz without the databases; the app's .env with every
value outside the public keys redacted; a manifest.json (path, size, sha256 of each file).
Uploaded to s3://<bucket>/<prefix><writer>/<timestamp>/ with SHA-256 checksums, verified
(head_object size and checksum), marked `.uploaded`; local copies older than the retention
are deleted only when marked. Publishes the CloudWatch metric BackupSuccess (1/0). <writer>
is the caller's user id as AWS reports it (sts:GetCallerIdentity): on EC2
`<role id>:<instance id>`, the `${aws:userid}` under which the instance role's policy lets
each instance write, so no instance can write into another's backups.

chatmrpt-restore: fetches a backup (latest complete one of this host by default, or
--backup TIMESTAMP, --host SOURCE_HOST: the backups a writer `<anything>:<host>` or `<host>`
wrote, and whose manifest names that host), verifies every file against the manifest before
touching live data, stops the app, swaps the databases and archived directories in (the
replaced data is kept in a .chatmrpt-pre-restore-<timestamp> directory next to instance/),
fixes ownership and starts the app again.

Exit codes: 0 success; 1 failure; 2 bad usage or configuration; 3 (backup only) the backup
succeeded but the metric could not be published.

Python 3.9+ standard library and boto3 (the OS package python3-boto3). The endpoint URL is
passed to boto3 explicitly: the boto3 of Debian 12 predates AWS_ENDPOINT_URL support.
"""

# The package's modules: config (the INI file, the errors, shared names), storage (AWS:
# S3, STS, CloudWatch), backup (chatmrpt-backup), restore (chatmrpt-restore) and cli (the
# command line, choosing between the two by the name it is run as).
