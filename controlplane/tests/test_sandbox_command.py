"""What a local sandbox is made of: the bwrap command line and the cgroup limits. The
sandboxes themselves run in tests/test_sandbox.py; this host has no delegated cgroup v2,
so the cgroup's files are written to a folder standing in for one."""

import os
from pathlib import Path

from django.conf import settings

from controlplane import resources
from controlplane.backends import sandbox


def _sandbox(network: str = "none") -> sandbox.Sandbox:
    instance = settings.MODELBAY_RUN_DIR / "instances" / "i-cmd00000001"
    return sandbox.Sandbox(
        instance_id="i-cmd00000001",
        python=settings.MODELBAY_RUNTIME_PYTHON,
        model_dir=settings.MODELBAY_ARTIFACT_ROOT / "abc" / "unpacked",
        credential_file=instance / "credential",
        socket_dir=instance / "sock",
        resources=resources.effective({"memory_mb": 768, "cpu": 1.5}),
        network=network,
    )


def _mounts(command: list[str]) -> dict[str, tuple[str, str]]:
    """{destination: (option, source)} of every bind in a bwrap command line."""
    found = {}
    for index, option in enumerate(command):
        if option in ("--ro-bind", "--bind"):
            found[command[index + 2]] = (option, command[index + 1])
    return found


def test_the_sandbox_sees_its_own_model_credential_and_socket_and_nothing_of_the_data_dir():
    box = _sandbox()
    command = box.command(["--model-dir", sandbox.MODEL_DIR], block_fd=5, info_fd=6, sync_fd=7)
    mounts = _mounts(command)

    assert mounts[sandbox.MODEL_DIR] == ("--ro-bind", str(box.model_dir))
    assert mounts[sandbox.CREDENTIAL] == ("--ro-bind", str(box.credential_file))
    assert mounts[sandbox.SOCKET_DIR] == ("--bind", str(box.socket_dir))  # the one writable folder
    writable = [destination for destination, (option, _) in mounts.items() if option == "--bind"]
    assert writable == [sandbox.SOCKET_DIR]
    data_dir = str(settings.DATA_DIR)
    from_data_dir = {source for _, source in mounts.values() if source.startswith(data_dir)}
    assert from_data_dir == {str(box.model_dir), str(box.credential_file), str(box.socket_dir)}
    for namespace in ("--unshare-pid", "--unshare-ipc", "--unshare-net", "--unshare-uts"):
        assert namespace in command
    assert "--share-net" not in command and "--clearenv" in command
    assert "/etc/resolv.conf" not in mounts  # no name resolution without egress
    if os.geteuid() == 0:
        assert f"--reuid={box.uid}" in command and box.uid >= settings.MODELBAY_SANDBOX_UID_BASE


def test_egress_adds_name_resolution_and_certificates_only():
    none, egress = (_mounts(_sandbox(n).command([], block_fd=5, info_fd=6, sync_fd=7)) for n in ("none", "egress"))
    added = set(egress) - set(none)
    assert added and all(path.startswith("/etc/") for path in added)
    assert "--unshare-net" in _sandbox("egress").command([], block_fd=5, info_fd=6, sync_fd=7)  # slirp4netns joins it


def test_the_environment_holds_nothing_of_the_workers(monkeypatch):
    monkeypatch.setenv("SECRET_KEY", "s3cret")
    monkeypatch.setenv("MODELBAY_RUNTIME_THREADS", "2")
    environment = _sandbox().environment()
    assert "SECRET_KEY" not in environment and "DATABASE_URL" not in environment
    assert environment["MODELBAY_RUNTIME_THREADS"] == "2"  # the runtime's own tuning passes


def test_cgroup_limits_from_the_services_resources(tmp_path):
    folder = tmp_path / "instance-i-cmd00000001"
    box = _sandbox()
    sandbox.apply_cgroup(folder, box.resources, [1234])
    written = {path.name: path.read_text() for path in Path(folder).iterdir()}
    assert written == {
        "memory.max": str(768 * 1024 * 1024),
        "memory.swap.max": "0",
        "cpu.max": "150000 100000",
        "pids.max": str(box.resources.pids),
        "cgroup.procs": "1234",
    }


def test_rlimits_from_the_services_resources():
    limits = sandbox.rlimits(resources.effective({"memory_mb": 768}))
    assert f"--data={768 * 1024 * 1024}" in limits and "--core=0" in limits


def test_the_private_tmp_is_mounted_before_the_binds():
    """A checkout (and so its venv) under /tmp stays visible: binds go on top of the tmpfs."""
    command = _sandbox().command([], block_fd=5, info_fd=6, sync_fd=7)
    first_bind = min(command.index(option) for option in ("--ro-bind", "--bind") if option in command)
    assert command.index("--tmpfs") < first_bind
