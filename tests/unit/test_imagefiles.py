"""Reading an image's files from its layer directories, and the package scan over them."""

from __future__ import annotations

import os
import stat
import textwrap
from pathlib import Path

import pytest

from builder.build.imagefiles import ImageFiles, NeedsContainer, scan_packages

DPKG_STATUS = textwrap.dedent("""\
    Package: libc6
    Status: install ok installed
    Architecture: amd64
    Version: 2.36-9+deb12u9

    Package: removed-one
    Status: deinstall ok config-files
    Version: 1.0-1

    Package: openssl
    Status: install ok installed
    Version: 3.0.15-1~deb12u1
    Description: multi-line
     description continues here
    """)


def write(root: Path, relative: str, content: str = "") -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path


def whiteout(root: Path, relative: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(0, 0))


def opaque(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    os.setxattr(directory, "trusted.overlay.opaque", b"y")


@pytest.fixture
def layers(tmp_path):
    """Three layer directories, top first."""
    made = [tmp_path / f"layer{index}" for index in range(3)]
    for layer in made:
        layer.mkdir()
    return made


def test_a_higher_layer_hides_the_same_file_below(layers):
    top, middle, bottom = layers
    write(bottom, "etc/motd", "bottom")
    write(middle, "etc/motd", "middle")
    write(bottom, "etc/hostname", "host")
    files = ImageFiles(layers)
    assert files.read("/etc/motd", 100) == b"middle"
    assert files.read("/etc/hostname", 100) == b"host"
    assert files.listdir("/etc") == ["hostname", "motd"]


def test_whiteouts_delete_files_and_directories_of_lower_layers(layers):
    top, middle, bottom = layers
    write(bottom, "usr/bin/less", "binary")
    write(bottom, "usr/bin/more", "binary")
    write(bottom, "var/cache/apt/pkgcache.bin", "cache")
    whiteout(top, "usr/bin/less")
    whiteout(middle, "var/cache/apt")
    files = ImageFiles(layers)
    assert files.read("/usr/bin/less", 100) is None
    assert files.listdir("/usr/bin") == ["more"]
    assert files.listdir("/var/cache") == []
    assert files.read("/var/cache/apt/pkgcache.bin", 100) is None


def test_an_opaque_directory_hides_everything_below_it(layers):
    top, middle, bottom = layers
    write(bottom, "opt/app/old.py", "old")
    write(bottom, "opt/app/lib/deep.py", "deep")
    opaque(middle / "opt" / "app")
    write(middle, "opt/app/new.py", "new")
    files = ImageFiles(layers)
    assert files.listdir("/opt/app") == ["new.py"]
    assert files.read("/opt/app/old.py", 100) is None
    assert files.read("/opt/app/lib/deep.py", 100) is None
    assert files.read("/opt/app/new.py", 100) == b"new"


def test_links_resolve_inside_the_image_never_on_the_host(layers, tmp_path):
    top, middle, bottom = layers
    write(bottom, "usr/lib/apk/db/installed", "P:musl\nV:1.2.4-r2\n")
    os.symlink("usr/lib", bottom / "lib")                 # merged /usr, relative
    write(bottom, "usr/share/real", "inside")
    os.symlink("/usr/share/real", bottom / "usr" / "abs")   # absolute: the image's root
    write(tmp_path, "usr/share/real", "HOST FILE")
    os.symlink("../../../../../../../etc/passwd", bottom / "escape")
    files = ImageFiles(layers)
    assert files.read("/lib/apk/db/installed", 100).startswith(b"P:musl")
    assert files.read("/usr/abs", 100) == b"inside"
    assert files.read("/escape", 100) is None             # /etc/passwd of the image: none


def test_a_link_loop_is_missing_not_a_hang(layers):
    top, _, _ = layers
    os.symlink("b", top / "a")
    os.symlink("a", top / "b")
    assert ImageFiles(layers).read("/a", 100) is None


def test_reads_are_bounded_and_only_of_regular_files(layers):
    top, _, _ = layers
    write(top, "big", "x" * 1000)
    os.mkfifo(top / "fifo")
    files = ImageFiles(layers)
    assert files.read("/big", 10) == b"x" * 10
    assert files.read("/fifo", 10) is None
    assert files.read("/", 10) is None


def test_scan_reads_dpkg_apk_and_python_distributions(layers):
    top, middle, bottom = layers
    write(bottom, "var/lib/dpkg/status", DPKG_STATUS)
    write(bottom, "lib/apk/db/installed", "P:musl\nV:1.2.4-r2\nA:x86_64\n\nP:busybox\nV:1.36\n")
    write(bottom, "usr/bin/python3")
    write(bottom, "usr/lib/python3/dist-packages/PyYAML-6.0.egg-info",
          "Metadata-Version: 1.1\nName: PyYAML\nVersion: 6.0\n")
    write(middle, "opt/venv/bin/python3")
    write(middle, "opt/venv/lib/python3.11/site-packages/Jinja2-3.1.4.dist-info/METADATA",
          "Metadata-Version: 2.1\nName: Jinja2\nVersion: 3.1.4\n\nlong description\n")
    write(middle, "opt/venv/lib/python3.11/site-packages/pip-23.0.dist-info/METADATA",
          "Name: pip\nVersion: 23.0\n")
    # a venv that is not on PATH is not what python3 finds
    write(middle, "srv/other/bin/python3")
    write(middle, "srv/other/lib/python3.11/site-packages/secret-1.0.dist-info/METADATA",
          "Name: secret\nVersion: 1.0\n")
    whiteout(top, "opt/venv/lib/python3.11/site-packages/pip-23.0.dist-info")
    packages = scan_packages(ImageFiles(layers), "/opt/venv/bin:/usr/local/bin:/usr/bin:/bin")
    assert packages == {
        "apk": {"busybox": "1.36", "musl": "1.2.4-r2"},
        "deb": {"libc6": "2.36-9+deb12u9", "openssl": "3.0.15-1~deb12u1"},
        "pypi": {"jinja2": "3.1.4", "pyyaml": "6.0"},
    }


def test_an_image_without_package_databases_has_no_packages(layers):
    write(layers[0], "bin/busybox", "static")
    assert scan_packages(ImageFiles(layers), "/bin") == {}


def test_an_rpm_database_needs_the_container_scan(layers):
    write(layers[1], "var/lib/rpm/rpmdb.sqlite", "SQLite format 3")
    with pytest.raises(NeedsContainer):
        scan_packages(ImageFiles(layers), "/usr/bin")
