"""``cloud-broker serve`` refuses what it cannot serve with exit 2 and one line naming the
key: a data directory in use by another broker, TLS files that do not load, a listen
address with a scheme, an unresolvable host or a port out of range, mirror URLs likewise.

On main: the second broker on one data_dir ran (and started its mirrors), a missing
certificate and ``listen = "http://..."`` gave uvicorn tracebacks, ``--listen foo`` a
ValueError traceback.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import broker_server, free_port, write_broker_config

SQL_MIRROR = '[mirrors.archive]\ntopic = "telemetry"\ntarget = "sql"\npath = "archive.db"\n'


def serve(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cloud_broker.cli", "serve", "--config",
                           str(config), *extra], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


def assert_one_line_error(res: subprocess.CompletedProcess[str], key: str) -> str:
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"cloud-broker: configuration error: {key}: "), lines[0]
    return lines[0]


def config_with(tmp: Path, extra: str = "", listen: str | None = None) -> Path:
    path = write_broker_config(tmp, free_port(), extra=extra)
    if listen is not None:
        text = path.read_text().splitlines()
        text = [f"listen = {listen!r}".replace("'", '"') if ln.startswith("listen =") else ln
                for ln in text]
        path.write_text("\n".join(text) + "\n")
    return path


def test_second_broker_on_one_data_dir_exits_2_without_starting_mirrors(tmp_path: Path
                                                                        ) -> None:
    first = broker_server(tmp_path / "b", extra=SQL_MIRROR).start()
    try:
        # Same data_dir, another port: the data directory is what must be exclusive.
        cfg = (tmp_path / "b" / "cloud.toml").read_text().replace(
            f"127.0.0.1:{first.port}", f"127.0.0.1:{free_port()}")
        second_cfg = tmp_path / "b" / "second.toml"
        second_cfg.write_text(cfg)
        res = serve(second_cfg)
        line = assert_one_line_error(res, "data_dir")
        assert "in use by another cloud-broker" in line
        assert first.proc is not None and f"pid {first.proc.pid}" in line
        assert "mirror" not in res.stdout + res.stderr.replace("mirrors", "")
        # SIGKILL frees the lock (the kernel drops it): a new broker starts.
        first.kill()
        restarted = broker_server(tmp_path / "b", port=first.port, extra=SQL_MIRROR).start()
        restarted.stop()
    finally:
        first.kill()


@pytest.mark.parametrize(("which", "key"), [("cert", "tls.cert"), ("key", "tls.key")])
def test_missing_tls_file_is_one_line_naming_the_key(tmp_path: Path, which: str,
                                                     key: str) -> None:
    from tests.cloud_broker.test_tls import make_certs
    _, cert, private = make_certs(tmp_path / "certs")
    paths = {"cert": str(cert), "key": str(private)}
    paths[which] = str(tmp_path / "nowhere" / f"{which}.pem")
    cfg = config_with(tmp_path, f'[tls]\ncert = "{paths["cert"]}"\nkey = "{paths["key"]}"\n')
    line = assert_one_line_error(serve(cfg), key)
    assert paths[which] in line and "No such file" in line


def test_tls_files_that_do_not_load_name_the_key(tmp_path: Path) -> None:
    from tests.cloud_broker.test_tls import make_certs
    _, cert, private = make_certs(tmp_path / "certs")
    _, other_cert, _ = make_certs(tmp_path / "other")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    cfg = config_with(tmp_path / "a", f'[tls]\ncert = "{junk}"\nkey = "{private}"\n')
    assert_one_line_error(serve(cfg), "tls.cert")
    cfg = config_with(tmp_path / "b", f'[tls]\ncert = "{other_cert}"\nkey = "{private}"\n')
    assert_one_line_error(serve(cfg), "tls.key")
    cfg = config_with(tmp_path / "c", f'[tls]\ncert = "{cert}"\nkey = "{junk}"\n')
    assert_one_line_error(serve(cfg), "tls.key")


@pytest.mark.parametrize(("listen", "expect"), [
    ("http://0.0.0.0:8080", "no scheme or path"),
    ("0.0.0.0:8080/ingest", "no scheme or path"),
    (":8080", "host:port"),
    ("127.0.0.1:99999", "0..65535"),
    ("no-such-host.invalid:8080", "cannot resolve host"),
])
def test_bad_listen_is_one_line_naming_the_key(tmp_path: Path, listen: str,
                                               expect: str) -> None:
    line = assert_one_line_error(serve(config_with(tmp_path, listen=listen)), "listen")
    assert expect in line


def test_busy_port_is_one_line_naming_the_key(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        res = serve(config_with(tmp_path, listen=f"127.0.0.1:{port}"))
    line = assert_one_line_error(res, "listen")
    assert "cannot listen on" in line


@pytest.mark.parametrize(("value", "expect"), [
    ("8080", "host:port"),
    ("http://127.0.0.1:8080", "no scheme or path"),
    ("127.0.0.1:99999", "0..65535"),
    ("127.0.0.1:http", "host:port"),
])
def test_bad_listen_override_names_the_option(tmp_path: Path, value: str, expect: str) -> None:
    line = assert_one_line_error(serve(config_with(tmp_path), "--listen", value), "--listen")
    assert expect in line


@pytest.mark.parametrize(("mirror", "key"), [
    ('target = "broker"\nurl = "http://admin:hunter2@127.0.0.1:99999"', "mirrors.dr.url"),
    ('target = "broker"\nurl = "ftp://admin:hunter2@dr:21"', "mirrors.dr.url"),
    ('target = "nats"\nservers = ["nats://u:hunter2@127.0.0.1:4222", "http://nats:4222"]',
     "mirrors.dr.servers[1]"),
    ('target = "nats"\nservers = ["nats://u:hunter2@127.0.0.1:422222"]',
     "mirrors.dr.servers[0]"),
])
def test_bad_mirror_urls_name_the_key_and_hide_the_password(tmp_path: Path, mirror: str,
                                                            key: str) -> None:
    cfg = config_with(tmp_path, f'[mirrors.dr]\ntopic = "telemetry"\n{mirror}\n')
    res = serve(cfg)
    assert_one_line_error(res, key)
    assert "hunter2" not in res.stderr + res.stdout
