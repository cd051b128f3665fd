"""The command line's allocator setting: freed blocks stay in the process for the next step.

Each check runs in a fresh interpreter (the setting is process-wide, and the test process's
allocator should stay as it was). The measure is the kernel's count of minor page faults while
a 64 MB block is allocated, written and freed three times: mapped afresh each time by default,
reused from the heap once the setting is made.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from rnncore import memory

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only"
)

BLOCK_PAGES = 64 * 2**20 // 4096
FAULTS_OF_REUSES = """
import ctypes, resource
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def use_block():
    block = libc.malloc(64 * 2**20)
    ctypes.memset(block, 1, 64 * 2**20)
    libc.free(block)
use_block()  # the first use faults its pages in either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
use_block(); use_block()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
"""


def _run(code: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in (*memory.USER_SETTINGS, memory.OFF_SWITCH)}
    out = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _reuse_faults(setup: str = "kept = None", **env: str) -> dict:
    report = "import json; print(json.dumps({'kept': kept, 'faults': faults}))"
    return _run(f"{setup}\n{FAULTS_OF_REUSES}\n{report}", **env)


def test_by_default_each_reuse_of_a_big_block_faults_its_pages_in_again():
    assert _reuse_faults()["faults"] >= BLOCK_PAGES  # what the setting is there to remove


def test_kept_freed_memory_is_reused_without_page_faults():
    found = _reuse_faults("from rnncore.memory import keep_freed_memory; kept = keep_freed_memory()")
    assert found["kept"] is True and found["faults"] < BLOCK_PAGES // 10


@pytest.mark.parametrize("env", [{"RNNCORE_KEEP_FREED_MEMORY": "0"}, {"MALLOC_TRIM_THRESHOLD_": "131072"}])
def test_the_off_switch_and_the_users_own_settings_are_respected(env):
    found = _reuse_faults("from rnncore.memory import keep_freed_memory; kept = keep_freed_memory()", **env)
    assert found["kept"] is False and found["faults"] >= BLOCK_PAGES


def test_the_command_line_entry_point_keeps_freed_memory():
    setup = (
        "import contextlib, io, sys; from rnncore import cli; sys.argv = ['rnncore', 'schema']\n"
        "with contextlib.redirect_stdout(io.StringIO()): code = cli.entry()\n"
        "kept = code == 0"
    )
    found = _reuse_faults(setup)
    assert found["kept"] is True and found["faults"] < BLOCK_PAGES // 10
