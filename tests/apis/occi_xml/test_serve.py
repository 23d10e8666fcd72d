"""The second port: taken from the configuration, refused clearly when busy, off at 0."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.live import LiveNubo

pytestmark = pytest.mark.slow


def test_a_busy_port_stops_start_up(tmp_path: Path) -> None:
    live = LiveNubo(tmp_path / "busy")
    with socket.create_server(("127.0.0.1", 0)) as taken:
        live.occi_xml_port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match="cannot listen on 127.0.0.1:\\d+ for OCCI-XML"):
            live.start()
    assert not (tmp_path / "busy" / "nubo.db").exists()  # refused before anything started


def test_a_busy_main_port_still_exits(tmp_path: Path) -> None:
    """uvicorn exits (SystemExit) when the main port is taken; the OCCI-XML server, already
    serving, must not keep the process alive."""
    live = LiveNubo(tmp_path / "main-busy")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        live.port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match="nubo serve exited with 3"):
            live.start()


def test_port_zero_turns_it_off(tmp_path: Path) -> None:
    live = LiveNubo(tmp_path / "off")
    live.occi_xml_port = 0
    live.start()
    try:
        banner = live.log_path.read_text()
        assert "OCCI-XML" not in banner and "XML-RPC at /RPC2" in banner
    finally:
        live.stop()


def test_the_banner_names_the_port(nubo: LiveNubo) -> None:
    expected = f"OCCI-XML (libcloud's OpenNebula driver) on http://127.0.0.1:{nubo.occi_xml_port}/"
    assert expected in nubo.log_path.read_text()


def test_the_setting(tmp_path: Path) -> None:
    from core import config

    cfg = config.Config(var=tmp_path)
    assert cfg.occi_xml_port == 4568
    config.apply_text(cfg, "OCCI_XML_PORT = 9000\n")
    assert cfg.occi_xml_port == 9000
