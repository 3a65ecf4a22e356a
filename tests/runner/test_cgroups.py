"""cgroup detection (v1, v2, hybrid, containers) and the v2 code path on a fake hierarchy."""

from __future__ import annotations

from pathlib import Path

import pytest

from sequence.runner.cgroups import (
    CgroupLayout,
    RunCgroup,
    cleanup_stale,
    detect_layout,
    parse_mountinfo,
    parse_proc_cgroup,
    swap_enabled,
)

V1_HYBRID_MOUNTINFO = """\
25 30 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
27 25 0:24 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
28 25 0:25 / /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids
29 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
30 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
"""
V1_HYBRID_CGROUP = """\
9:name=systemd:/
8:pids:/
4:memory:/process_api/abc
2:cpu,cpuacct:/
0::/
"""
V2_MOUNTINFO = "31 25 0:27 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
V2_CGROUP = "0::/system.slice/sequence-runner.service\n"


def test_parse_proc_cgroup_v1_and_v2_lines() -> None:
    assert parse_proc_cgroup(V1_HYBRID_CGROUP) == {
        "systemd": "/",
        "pids": "/",
        "memory": "/process_api/abc",
        "cpu": "/",
        "cpuacct": "/",
        "": "/",
    }
    assert parse_proc_cgroup(V2_CGROUP) == {"": "/system.slice/sequence-runner.service"}


def test_parse_mountinfo_keeps_cgroup_mounts_and_unescapes() -> None:
    text = (
        V1_HYBRID_MOUNTINFO
        + "40 25 0:30 / /sys/fs/cgroup/with\\040space rw - cgroup cgroup rw,freezer\n"
    )
    mounts = parse_mountinfo(text)
    assert [m.fstype for m in mounts] == ["cgroup2", "cgroup", "cgroup", "cgroup", "cgroup"]
    assert mounts[-1].mount_point == Path("/sys/fs/cgroup/with space")
    assert "memory" in mounts[1].options


def test_hybrid_host_without_v2_controllers_uses_v1_under_the_runners_own_groups() -> None:
    layout = detect_layout(V1_HYBRID_CGROUP, V1_HYBRID_MOUNTINFO, read_text=lambda p: "hugetlb\n")
    assert layout is not None and layout.version == 1
    assert layout.memory_parent == Path("/sys/fs/cgroup/memory/process_api/abc/sequence")
    assert layout.pids_parent == Path("/sys/fs/cgroup/pids/sequence")
    assert layout.cpu_parent == Path("/sys/fs/cgroup/cpu,cpuacct/sequence")
    assert any("hugetlb" in n for n in layout.notes)


def test_unified_host_uses_v2_when_memory_and_pids_are_offered() -> None:
    seen: list[Path] = []

    def read(p: Path) -> str:
        seen.append(p)
        return "cpuset cpu io memory pids\n"

    layout = detect_layout(V2_CGROUP, V2_MOUNTINFO, group="seq", read_text=read)
    assert layout is not None and layout.version == 2
    base = Path("/sys/fs/cgroup/system.slice/sequence-runner.service")
    assert seen == [base / "cgroup.controllers"]
    assert layout.memory_parent == layout.pids_parent == base / "seq"


def test_container_mount_root_is_stripped_from_the_cgroup_path() -> None:
    mountinfo = "50 40 0:44 /docker/c0ffee /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
    layout = detect_layout("5:memory:/docker/c0ffee\n", mountinfo)
    assert layout is not None
    assert layout.memory_parent == Path("/sys/fs/cgroup/memory/sequence")
    assert layout.pids_parent is None
    assert any("pids" in n for n in layout.notes)


def test_no_controllers_means_no_layout() -> None:
    assert detect_layout("0::/\n", "30 1 8:1 / / rw - ext4 /dev/sda1 rw\n") is None


def test_swap_detection() -> None:
    header = "Filename Type Size Used Priority\n"
    assert not swap_enabled(header)
    assert swap_enabled(header + "/swapfile file 1048572 0 -2\n")


def test_v2_limits_oom_peak_and_cpu_on_a_fake_hierarchy(tmp_path: Path) -> None:
    parent = tmp_path / "sequence"
    parent.mkdir()
    layout = CgroupLayout(2, parent, parent, parent, {"": tmp_path})
    cg = RunCgroup(layout, "r1")
    cg.create(memory_bytes=64 << 20, pids_max=32)
    d = parent / "run-r1"
    assert (d / "memory.max").read_text() == str(64 << 20)
    assert (d / "pids.max").read_text() == "32"
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\n")
    (d / "memory.peak").write_text("67108864\n")
    (d / "cpu.stat").write_text("usage_usec 1500000\nuser_usec 1000000\n")
    (d / "cgroup.procs").write_text("")
    assert cg.oom_kills() == 1
    assert cg.limit_hits() == 12
    assert cg.peak_memory() == 64 << 20
    assert cg.cpu_seconds() == 1.5
    assert cg.pids() == set()


def test_v1_oom_counter_and_peak_on_a_fake_hierarchy(tmp_path: Path) -> None:
    mem, pids = tmp_path / "memory" / "seq", tmp_path / "pids" / "seq"
    mem.mkdir(parents=True)
    pids.mkdir(parents=True)
    cg = RunCgroup(CgroupLayout(1, mem, pids), "r2")
    cg.create(memory_bytes=1 << 30, pids_max=100)
    assert (mem / "run-r2" / "memory.limit_in_bytes").read_text() == str(1 << 30)
    assert not cg.swap_limited, "no memsw file: swap is not limited"
    (mem / "run-r2" / "memory.oom_control").write_text(
        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"
    )
    (mem / "run-r2" / "memory.max_usage_in_bytes").write_text("1234\n")
    assert cg.oom_kills() == 2
    assert cg.peak_memory() == 1234
    (mem / "run-r2" / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\n")
    assert cg.oom_kills() is None, "old kernels do not count: unknown, not zero"


def test_stale_cleanup_only_touches_the_owners_groups(tmp_path: Path) -> None:
    mem, pids = tmp_path / "memory" / "seq", tmp_path / "pids" / "seq"
    for parent in (mem, pids):
        for name in ("run-aaa-r1", "run-aaa-r2", "run-bbb-r3", "run-r4"):
            (parent / name).mkdir(parents=True)
    layout = CgroupLayout(1, mem, pids)
    assert cleanup_stale(layout, "aaa", keep={"r2"}) == ["r1"]
    assert sorted(p.name for p in mem.iterdir()) == ["run-aaa-r2", "run-bbb-r3", "run-r4"]
    with pytest.raises(ValueError, match="owner"):
        cleanup_stale(layout, "")
