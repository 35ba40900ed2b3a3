"""Downloads against a local HTTP server serving archives the tests build; never the internet."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import socket
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from memseg_lite.cli import main as cli
from memseg_lite.core.io import write_image
from memseg_lite.datasets.download import (
    CorruptArchiveError,
    DownloadError,
    UnsafeArchiveError,
    download_dtd,
    download_file,
    download_mvtec,
    safe_extract,
    sha256_of,
)


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files from the test's folder, honouring single 'bytes=N-' Range requests."""

    fail_after: dict = {}
    requests_seen: list = []
    ignore_range = False

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        path = Path(self.directory) / self.path.lstrip("/")
        self.requests_seen.append((self.path, self.headers.get("Range")))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        range_header = None if self.ignore_range else self.headers.get("Range")
        if range_header:
            start = int(range_header.removeprefix("bytes=").rstrip("-"))
            if start >= len(data):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = self.fail_after.get(self.path)
        if cut is not None and not range_header:
            self.wfile.write(body[:cut])  # then drop the connection mid-transfer
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    RangeHandler.fail_after = {}
    RangeHandler.requests_seen = []
    RangeHandler.ignore_range = False
    handler = functools.partial(RangeHandler, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/archive.tar.gz"  # nothing listens there any more


def make_tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def png_bytes(tmp_path: Path, value: int) -> bytes:
    path = write_image(tmp_path / f"img{value}.png", np.full((8, 8, 3), value, np.uint8))
    return path.read_bytes()


def test_download_verifies_checksum_and_resumes(server, tmp_path):
    served, base = server
    payload = np.random.default_rng(0).bytes(300_000)
    (served / "blob.bin").write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()

    RangeHandler.fail_after = {"/blob.bin": 100_000}
    dest = tmp_path / "out" / "blob.bin"
    with pytest.raises(DownloadError, match="run the same command again to resume"):
        download_file(f"{base}/blob.bin", dest, sha256=digest, progress=False)
    partial = dest.with_name("blob.bin.part")
    assert partial.is_file() and 0 < partial.stat().st_size < len(payload)
    assert not dest.exists()

    download_file(f"{base}/blob.bin", dest, sha256=digest, progress=False)
    assert dest.read_bytes() == payload
    assert not partial.exists()
    ranges = [r for p, r in RangeHandler.requests_seen if p == "/blob.bin"]
    assert ranges[-1] is not None and ranges[-1].startswith("bytes="), "the second request must resume with Range"


def test_checksum_mismatch_deletes_partial_and_names_both_hashes(server, tmp_path):
    served, base = server
    (served / "blob.bin").write_bytes(b"not what you expected")
    dest = tmp_path / "blob.bin"
    with pytest.raises(DownloadError, match="checksum mismatch") as error:
        download_file(f"{base}/blob.bin", dest, sha256="0" * 64, progress=False)
    assert "0" * 64 in str(error.value)
    assert not dest.exists() and not dest.with_name("blob.bin.part").exists()


def test_unreachable_source_gives_manual_steps(tmp_path):
    with pytest.raises(DownloadError) as error:
        download_dtd(tmp_path / "dtd", url=closed_port_url())
    message = str(error.value)
    assert "cannot reach" in message and "dtd-r1.0.1.tar.gz" in message
    assert str(tmp_path / "dtd") in message and "--archive" in message


def test_safe_extract_refuses_path_traversal(tmp_path):
    archive = make_tar(tmp_path / "evil.tar.gz", {"fine/a.txt": b"ok", "../escaped.txt": b"bad"})
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchiveError, match=r"\.\./escaped\.txt"):
        safe_extract(archive, dest)
    assert not (tmp_path / "escaped.txt").exists()
    assert not (dest / "fine" / "a.txt").exists(), "nothing is written when any member is unsafe"


def test_safe_extract_refuses_absolute_paths_and_escaping_links(tmp_path):
    absolute = make_tar(tmp_path / "abs.tar.gz", {"/tmp/abs.txt": b"bad"})
    with pytest.raises(UnsafeArchiveError):
        safe_extract(absolute, tmp_path / "d1")
    link_archive = tmp_path / "link.tar.gz"
    with tarfile.open(link_archive, "w:gz") as tar:
        info = tarfile.TarInfo("inside/link")
        info.type = tarfile.SYMTYPE
        info.linkname = "../../outside"
        tar.addfile(info)
    with pytest.raises(UnsafeArchiveError, match="links to"):
        safe_extract(link_archive, tmp_path / "d2")


def test_download_dtd_from_local_archive_and_server(server, tmp_path):
    served, base = server
    files = {f"dtd/images/banded/banded_{i:04d}.jpg": png_bytes(tmp_path, i) for i in range(3)}
    files["dtd/labels/train1.txt"] = b"banded/banded_0000.jpg\n"
    archive = make_tar(served / "dtd-r1.0.1.tar.gz", files)

    with pytest.raises(DownloadError, match="checksum mismatch"):  # not the official archive
        download_dtd(tmp_path / "data" / "dtd", url=f"{base}/dtd-r1.0.1.tar.gz", progress=False)
    dest = download_dtd(
        tmp_path / "data" / "dtd", url=f"{base}/dtd-r1.0.1.tar.gz", sha256=sha256_of(archive), progress=False
    )
    assert sorted(p.name for p in (dest / "images" / "banded").iterdir()) == [
        "banded_0000.jpg", "banded_0001.jpg", "banded_0002.jpg"
    ]
    assert not (tmp_path / "data" / "downloads" / "dtd-r1.0.1.tar.gz").exists(), "archive removed after unpacking"

    again = download_dtd(tmp_path / "other" / "dtd", archive=archive)
    assert (again / "images" / "banded" / "banded_0001.jpg").read_bytes() == files["dtd/images/banded/banded_0001.jpg"]


def test_download_mvtec_category_via_cli(server, tmp_path, capsys):
    served, base = server
    files = {
        "bottle/train/good/000.png": png_bytes(tmp_path, 1),
        "bottle/test/good/000.png": png_bytes(tmp_path, 2),
        "bottle/test/broken/000.png": png_bytes(tmp_path, 3),
        "bottle/ground_truth/broken/000_mask.png": png_bytes(tmp_path, 255),
    }
    make_tar(served / "bottle.tar.xz", files)  # gzip content; tarfile detects the compression
    dest = tmp_path / "mvtec"
    code = cli(["download", "mvtec", "--category", "bottle", "--dest", str(dest), "--url", f"{base}/bottle.tar.xz"])
    assert code == 0
    assert (dest / "bottle" / "train" / "good" / "000.png").is_file()
    assert (dest / "bottle" / "ground_truth" / "broken" / "000_mask.png").is_file()
    assert "ready" in capsys.readouterr().out


def test_download_mvtec_rejects_archive_without_layout(tmp_path):
    archive = make_tar(tmp_path / "wrong.tar.gz", {"something/else.txt": b"x"})
    with pytest.raises(DownloadError, match="MVTec AD layout"):
        download_mvtec(tmp_path / "mvtec", archive=archive)


def test_cli_download_offline_message(tmp_path, capsys):
    code = cli(["download", "dtd", "--dest", str(tmp_path / "dtd"), "--url", closed_port_url()])
    assert code == 1
    assert "Get DTD by hand" in capsys.readouterr().err


def test_sha256_of_matches_hashlib(tmp_path):
    data = np.random.default_rng(1).bytes(3 << 20)
    path = tmp_path / "x.bin"
    path.write_bytes(data)
    assert sha256_of(path) == hashlib.sha256(data).hexdigest()


def test_a_server_that_ignores_range_makes_the_download_start_over(server, tmp_path):
    served, base = server
    payload = np.random.default_rng(2).bytes(50_000)
    (served / "blob.bin").write_bytes(payload)
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(b"stale bytes from another file")
    RangeHandler.ignore_range = True  # answers 200 with the whole file
    download_file(f"{base}/blob.bin", dest, sha256=hashlib.sha256(payload).hexdigest(), progress=False)
    assert dest.read_bytes() == payload


def test_a_complete_partial_file_is_accepted_on_416(server, tmp_path):
    served, base = server
    payload = b"already complete"
    (served / "blob.bin").write_bytes(payload)
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(payload)
    download_file(f"{base}/blob.bin", dest, sha256=hashlib.sha256(payload).hexdigest(), progress=False)
    assert dest.read_bytes() == payload
    assert ("/blob.bin", f"bytes={len(payload)}-") in RangeHandler.requests_seen


def test_safe_extract_refuses_hard_links_out_of_the_destination(tmp_path):
    archive = tmp_path / "hard.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("inside/hard")
        info.type = tarfile.LNKTYPE
        info.linkname = "../../etc/passwd"
        tar.addfile(info)
    with pytest.raises(UnsafeArchiveError, match="outside the destination"):
        safe_extract(archive, tmp_path / "d")


def test_a_wrong_archive_never_replaces_existing_data(tmp_path):
    dest = tmp_path / "mvtec"
    good = dest / "bottle" / "train" / "good"
    good.mkdir(parents=True)
    (good / "000.png").write_bytes(b"existing image")
    archive = make_tar(tmp_path / "bottle.tar.gz", {"bottle/readme.txt": b"not a category"})
    with pytest.raises(DownloadError, match="nothing in .* was changed"):  # even with force
        download_mvtec(dest, category="bottle", archive=archive, force=True)
    assert (good / "000.png").read_bytes() == b"existing image"
    assert not (dest / "bottle" / "readme.txt").exists()
    assert [p.name for p in dest.iterdir()] == ["bottle"], "no scratch folder left behind"
    dtd_archive = make_tar(tmp_path / "dtd.tar.gz", {"dtd/labels/x.txt": b"no images folder"})
    (tmp_path / "dtd" / "images" / "banded").mkdir(parents=True)
    with pytest.raises(DownloadError, match="not in the DTD layout"):
        download_dtd(tmp_path / "dtd", archive=dtd_archive, force=True)
    assert (tmp_path / "dtd" / "images" / "banded").is_dir()


def category_tar(path: Path, tmp_path: Path, names: list[str], extra: dict[str, bytes] | None = None) -> Path:
    files = {}
    for offset, name in enumerate(names):
        files[f"mvtec_anomaly_detection/{name}/train/good/000.png"] = png_bytes(tmp_path, offset + 1)
    files.update(extra or {})
    return make_tar(path, files)


def test_full_import_adds_categories_and_top_level_files_without_touching_the_rest(tmp_path):
    archive = category_tar(
        tmp_path / "all.tar.gz", tmp_path, ["bottle", "cable"],
        {"mvtec_anomaly_detection/license.txt": b"CC BY-NC-SA", "mvtec_anomaly_detection/readme.txt": b"new readme"},
    )
    dest = tmp_path / "mvtec"
    (dest / "mine" / "train" / "good").mkdir(parents=True)
    (dest / "readme.txt").write_text("my readme")
    download_mvtec(dest, archive=archive)
    assert sorted(p.name for p in dest.iterdir()) == ["bottle", "cable", "license.txt", "mine", "readme.txt"]
    assert (dest / "readme.txt").read_text() == "my readme", "a file already there is never replaced"
    assert (dest / "license.txt").read_bytes() == b"CC BY-NC-SA"
    with pytest.raises(FileExistsError, match=r"bottle, .*cable already exist; pass --force"):
        download_mvtec(dest, archive=archive)


def test_cli_download_refuses_an_existing_category_until_force(tmp_path, capsys):
    archive = category_tar(tmp_path / "bottle.tar.gz", tmp_path, ["bottle"])
    dest = tmp_path / "mvtec"
    (dest / "bottle" / "train" / "good").mkdir(parents=True)
    (dest / "bottle" / "train" / "good" / "old.png").write_bytes(b"old")
    args = ["download", "mvtec", "--category", "bottle", "--dest", str(dest), "--archive", str(archive)]
    assert cli(args) == 1
    assert "--force" in capsys.readouterr().err
    assert (dest / "bottle" / "train" / "good" / "old.png").exists()
    assert cli([*args, "--force"]) == 0
    assert [p.name for p in (dest / "bottle" / "train" / "good").iterdir()] == ["000.png"]


def test_a_failing_swap_puts_every_replaced_category_back(tmp_path, monkeypatch):
    import memseg_lite.datasets.download as download

    archive = category_tar(tmp_path / "all.tar.gz", tmp_path, ["bottle", "cable"])
    dest = tmp_path / "mvtec"
    for name in ("bottle", "cable"):
        (dest / name / "train" / "good").mkdir(parents=True)
        (dest / name / "train" / "good" / "old.png").write_bytes(name.encode())
    before = {str(p.relative_to(dest)): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    replace = os.replace

    def failing_replace(source, target):
        if Path(target) == dest / "cable" and "unpack" in str(source) and "replaced" not in str(source):
            raise OSError(28, "No space left on device")
        return replace(source, target)

    monkeypatch.setattr(download.os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space left"):
        download_mvtec(dest, archive=archive, force=True)
    monkeypatch.setattr(download.os, "replace", replace)
    after = {str(p.relative_to(dest)): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    assert after == before, "bottle was swapped in, then put back when cable failed"
    assert sorted(p.name for p in dest.iterdir()) == ["bottle", "cable"], "no staging folder left"


def test_a_truncated_download_is_deleted_so_a_rerun_fetches_it_again(server, tmp_path):
    served, base = server
    full = category_tar(tmp_path / "bottle.tar.xz", tmp_path, ["bottle"]).read_bytes()
    (served / "bottle.tar.xz").write_bytes(full[: len(full) // 2])  # the mirror holds a cut file
    dest = tmp_path / "mvtec"
    with pytest.raises(CorruptArchiveError, match="download it again.*was deleted"):
        download_mvtec(dest, category="bottle", url=f"{base}/bottle.tar.xz", progress=False)
    assert not (dest / "downloads" / "bottle.tar.xz").exists()
    (served / "bottle.tar.xz").write_bytes(full)
    download_mvtec(dest, category="bottle", url=f"{base}/bottle.tar.xz", progress=False)
    assert (dest / "bottle" / "train" / "good" / "000.png").is_file()
    assert sorted(p.name for p in dest.iterdir()) == ["bottle"], "the emptied downloads folder is removed"


class RedirectHandler(http.server.BaseHTTPRequestHandler):
    """Answers every request with a redirect to ``target`` (a loopback mirror that points elsewhere)."""

    target = ""

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_response(302)
        self.send_header("Location", self.target)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def redirecting_server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RedirectHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_offline_a_loopback_redirect_elsewhere_is_refused_before_any_name_lookup(
        redirecting_server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEMSEG_OFFLINE", "1")
    target = "http://mirror.example.invalid/dtd-r1.0.1.tar.gz"
    monkeypatch.setattr(RedirectHandler, "target", target)
    lookups = []
    real_getaddrinfo = socket.getaddrinfo

    def recording_getaddrinfo(host, *args, **kwargs):
        lookups.append(host)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", recording_getaddrinfo)
    with pytest.raises(DownloadError, match="redirects") as raised:
        download_file(f"{redirecting_server}/dtd.tar.gz", tmp_path / "dtd.tar.gz", progress=False)
    assert target in str(raised.value) and "MEMSEG_OFFLINE" in str(raised.value)
    assert [host for host in lookups if host not in ("127.0.0.1", "::1")] == []
    assert not (tmp_path / "dtd.tar.gz").exists()
    # Through the command line: one line naming the target.
    code = cli(["download", "dtd", "--dest", str(tmp_path / "dtd"), "--url", f"{redirecting_server}/x.tar.gz"])
    assert code == 1 and target in capsys.readouterr().err
    assert [host for host in lookups if host not in ("127.0.0.1", "::1")] == []


def test_offline_a_redirect_to_another_loopback_address_is_followed(server, redirecting_server, tmp_path, monkeypatch):
    served, url = server
    (served / "file.bin").write_bytes(b"payload")
    monkeypatch.setenv("MEMSEG_OFFLINE", "1")
    monkeypatch.setattr(RedirectHandler, "target", f"{url}/file.bin")
    path = download_file(f"{redirecting_server}/anything", tmp_path / "file.bin", progress=False)
    assert path.read_bytes() == b"payload"
