"""Role `base`: what an operator would check on a converged host."""

import pytest


@pytest.mark.parametrize("package", [
    "git", "rsync", "sqlite3", "python3", "python3-venv", "python3-pip", "python3-boto3",
    "cron", "logrotate", "curl", "ca-certificates", "tar", "gzip", "openssh-server",
    "systemd-timesyncd", "unattended-upgrades", "jq",
])
def test_package_installed(host, package):
    assert host.package(package).is_installed


@pytest.mark.parametrize("package", ["gcc", "g++", "make", "python3-dev", "exim4-daemon-light", "manpages"])
def test_recommended_packages_are_not_installed(host, package):
    # apt's recommendations (python3-pip's compiler, cron's mail server), which Amazon Linux
    # 2023's dnf would not install either (install_weak_deps=False).
    assert not host.package(package).is_installed


def test_python_is_311_with_boto3(host):
    out = host.check_output("python3 -c 'import sys, boto3; print(sys.version_info[:2])'")
    assert out == "(3, 11)"


def test_time_zone_is_utc(host):
    assert host.check_output("date +%Z") == "UTC"
    assert host.file("/etc/localtime").linked_to.endswith("/UTC")


def test_time_sync_configured_and_enabled(host):
    conf = host.file("/etc/systemd/timesyncd.conf.d/50-chatmrpt.conf")
    assert conf.exists and conf.user == "root" and conf.mode == 0o644
    assert "NTP=169.254.169.123" in conf.content_string
    # Enabled; inside a container the unit skips itself (ConditionVirtualization=!container).
    assert host.service("systemd-timesyncd").is_enabled


def test_journald_limited_and_running(host):
    dropin = host.file("/etc/systemd/journald.conf.d/50-chatmrpt.conf")
    assert dropin.exists and dropin.mode == 0o644
    assert "SystemMaxUse=300M" in dropin.content_string
    assert host.service("systemd-journald").is_running
    # journald reads it: systemd merges the drop-in into the effective configuration.
    merged = host.check_output("systemd-analyze cat-config systemd/journald.conf")
    assert "SystemMaxUse=300M" in merged
    # Restarted after the change (the handler ran): persistent storage exists now.
    assert host.file("/var/log/journal").is_directory


def test_unattended_upgrades_security_only(host):
    dump = host.check_output("apt-config dump")
    origins = [line for line in dump.splitlines() if line.startswith("Unattended-Upgrade::Origins-Pattern:: ")]
    assert origins, dump
    assert all("Debian-Security" in line for line in origins), origins
    assert 'APT::Periodic::Unattended-Upgrade "1";' in dump
    assert 'APT::Periodic::Update-Package-Lists "1";' in dump
    assert host.service("apt-daily-upgrade.timer").is_enabled
    # unattended-upgrades itself accepts the configuration (dry run, no download).
    run = host.run("unattended-upgrade --dry-run --debug 2>&1 | grep -i 'Allowed origins'")
    assert run.rc == 0 and "Debian-Security" in run.stdout
    assert "label=Debian," not in run.stdout


def test_sshd_config_valid_and_hardened(host):
    assert host.run("/usr/sbin/sshd -t").rc == 0
    effective = host.check_output("/usr/sbin/sshd -T -C user=ec2-user,host=localhost,addr=127.0.0.1")
    assert "permitrootlogin no" in effective
    assert "passwordauthentication no" in effective
    assert "kbdinteractiveauthentication no" in effective
    assert "pubkeyauthentication yes" in effective
    assert "maxauthtries 3" in effective
    assert "allowusers ec2-user" in effective
    dropin = host.file("/etc/ssh/sshd_config.d/00-chatmrpt-hardening.conf")
    assert dropin.user == "root" and dropin.mode == 0o600


def test_sshd_running_and_enabled(host):
    sshd = host.service("ssh")
    assert sshd.is_enabled and sshd.is_running
    assert host.socket("tcp://0.0.0.0:22").is_listening


def test_app_user_is_a_system_account_without_login_or_sudo(host):
    user = host.user("chatmrpt")
    assert user.exists and user.home == "/srv/chatmrpt" and user.shell == "/usr/sbin/nologin"
    assert int(user.uid) < 1000 and user.groups == ["chatmrpt"], (user.uid, user.groups)
    assert host.file("/srv/chatmrpt").is_directory
    assert host.file("/srv/chatmrpt").user == "chatmrpt"
    listed = host.run("sudo -l -U chatmrpt")
    assert listed.rc == 0 and "is not allowed to run sudo" in listed.stdout, listed.stdout


def test_cron_running(host):
    cron = host.service("cron")
    assert cron.is_enabled and cron.is_running
