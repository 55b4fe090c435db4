"""Starting ``headstart app`` / ``headstart serve`` where it cannot work: a taken port and an
unreachable database fail with the fix before anything is loaded, and leave no folder behind."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from conftest import cli


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket is closed


@pytest.fixture
def taken_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def test_app_on_a_taken_port_says_so_and_creates_nothing(taken_port, tmp_path: Path, capsys) -> None:
    data = tmp_path / "app-data"
    assert cli("app", "--port", str(taken_port), "--data-dir", str(data)) != 0
    err = capsys.readouterr().err
    assert f"Port {taken_port} on 127.0.0.1 is already in use" in err and "--port" in err
    assert not data.exists()


def test_serve_on_a_taken_port_says_so_before_loading_the_model(taken_port, tmp_path: Path, capsys) -> None:
    # the run folder does not even exist: the port is checked first, so no model load is wasted
    assert cli("serve", str(tmp_path / "no-run"), "--port", str(taken_port)) != 0
    err = capsys.readouterr().err
    assert f"Port {taken_port} on 127.0.0.1 is already in use" in err and "Fix:" in err


def test_app_with_an_unreachable_database_leaves_no_empty_data_folder(tmp_path: Path, capsys) -> None:
    closed = _free_port()
    data = tmp_path / "app-data"
    assert cli("app", "--port", str(_free_port()), "--data-dir", str(data),
               "--db", f"postgresql+psycopg://bob@127.0.0.1:{closed}/headstart") != 0
    assert "Could not use the database" in capsys.readouterr().err
    assert not data.exists()


def test_app_with_an_unreachable_database_keeps_an_existing_data_folder(tmp_path: Path) -> None:
    closed = _free_port()
    data = tmp_path / "app-data"
    data.mkdir()
    (data / "keep.txt").write_text("the team's notes")
    assert cli("app", "--port", str(_free_port()), "--data-dir", str(data),
               "--db", f"postgresql+psycopg://bob@127.0.0.1:{closed}/headstart") != 0
    assert (data / "keep.txt").read_text() == "the team's notes"


def test_app_whose_port_is_taken_after_the_check_says_so_and_removes_its_new_folder(taken_port, tmp_path: Path,
                                                                                       monkeypatch, capsys) -> None:
    """The race: the port was free when checked, then taken before uvicorn bound it."""
    import headstart.serve.server as server

    monkeypatch.setattr(server, "check_port", lambda *a, **k: None)
    data = tmp_path / "app-data"
    assert cli("app", "--port", str(taken_port), "--data-dir", str(data)) != 0
    err = capsys.readouterr().err
    assert f"Could not listen on 127.0.0.1:{taken_port}: the port was taken as the server started" in err
    assert not data.exists()
