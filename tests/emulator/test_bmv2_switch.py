"""simple_switch process handling that needs only BMv2 (no compiled program of ours)."""

import shutil

import pytest

from emulator.bmv2.switch import SimpleSwitch
from emulator.bmv2.tools import ToolMissing, missing_tools

needs_switch = pytest.mark.skipif(shutil.which("simple_switch") is None,
                                  reason="simple_switch not on PATH (docs/p4.md)")


@needs_switch
def test_missing_program_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="fpisa p4 build"):
        SimpleSwitch(tmp_path / "nope.json", {0: "p0"}, tmp_path, pcap_wait_seconds=1).start()


@needs_switch
def test_a_broken_program_fails_start_with_its_message(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    (tmp_path / "p0_in.pcap").write_bytes(b"")
    sw = SimpleSwitch(bad, {0: "p0"}, tmp_path, pcap_wait_seconds=1)
    with pytest.raises(RuntimeError, match="simple_switch"):
        sw.start(ready_timeout=10)
    sw.stop()
    assert not sw.running()


def test_tool_missing_names_the_tool(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert missing_tools("simple_switch") == ["simple_switch"]
    from emulator.bmv2.tools import require_tools

    with pytest.raises(ToolMissing, match="simple_switch"):
        require_tools("simple_switch")
