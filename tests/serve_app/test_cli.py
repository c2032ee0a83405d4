"""``san-serve`` (``serve_app.cli.main``): the refusal to expose the server without a token, usage errors in
one line, model and port errors before serving."""

from __future__ import annotations

import socket

import pytest

from serve_app.cli import _parser, main
from serve_app.config import ServeSettings, is_loopback


def test_no_arguments_mean_loopback_port_8000_default_model():
    args = _parser().parse_args([])
    assert (args.host, args.port, args.model, args.weights, args.device, args.precision) == (
        "127.0.0.1", 8000, None, None, "auto", "auto")  # fmt: skip
    assert args.token is None and args.insecure is False and args.workers_queue == 16


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "example.org"])
def test_non_loopback_without_token_is_refused(host, capsys, monkeypatch):
    monkeypatch.delenv("SAN_SERVE_TOKEN", raising=False)
    assert main(["--host", host]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"refusing to bind {host}" in err
    assert "--token" in err and "--insecure" in err


def test_short_token_and_bad_numbers_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--host", "0.0.0.0", "--token", "short"])
    assert e.value.code == 2 and "at least 8 characters" in capsys.readouterr().err
    for flags in (["--workers-queue", "0"], ["--max-upload-mb", "nan"], ["--port", "70000"]):
        with pytest.raises(SystemExit) as e:
            main(flags)
        assert e.value.code == 2


def test_model_that_cannot_be_loaded_exits_2(tmp_path, capsys):
    assert main(["--weights", str(tmp_path / "missing.safetensors")]) == 2
    assert "san-serve: cannot load the SR model: model file not found" in capsys.readouterr().err
    assert main(["--weights", str(tmp_path / "m.safetensors"), "--translate-weights", str(tmp_path / "x.pt")]) == 2


def test_translate_checkpoint_that_cannot_be_loaded_exits_2(tiny_model, tmp_path, capsys):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    assert main(["--weights", str(tiny_model), "--translate-weights", str(tmp_path / "bad.pt"), "--device", "cpu"]) == 2
    assert "san-serve: cannot load the translate model" in capsys.readouterr().err


def test_port_in_use_exits_1(tiny_model, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        assert main(["--weights", str(tiny_model), "--port", str(port), "--device", "cpu"]) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_loopback_names_and_settings_checks():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.8.9.1", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "example.org", ""))
    with pytest.raises(ValueError, match="queue_size must be a positive integer"):
        ServeSettings(queue_size=0)
    with pytest.raises(ValueError, match="result_ttl"):
        ServeSettings(result_ttl=float("inf"))
    with pytest.raises(ValueError, match="at least 8"):
        ServeSettings(token="abc")
