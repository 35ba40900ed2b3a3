"""Downloads against a local HTTP server serving archives the tests build; never the internet."""

from __future__ import annotations

import hashlib
import http.server
import io
import socket
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from memseg_lite.cli import main as cli
from memseg_lite.core.io import write_image
from memseg_lite.datasets.download import (
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
    handler = lambda *a, **k: RangeHandler(*a, directory=str(served), **k)  # noqa: E731
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
    with pytest.raises(DownloadError, match="nothing in .* was changed"):
        download_mvtec(dest, category="bottle", archive=archive)
    assert (good / "000.png").read_bytes() == b"existing image"
    assert not (dest / "bottle" / "readme.txt").exists()
    assert [p.name for p in dest.iterdir()] == ["bottle"], "no scratch folder left behind"
    dtd_archive = make_tar(tmp_path / "dtd.tar.gz", {"dtd/labels/x.txt": b"no images folder"})
    (tmp_path / "dtd" / "images" / "banded").mkdir(parents=True)
    with pytest.raises(DownloadError, match="not in the DTD layout"):
        download_dtd(tmp_path / "dtd", archive=dtd_archive)
    assert (tmp_path / "dtd" / "images" / "banded").is_dir()
