"""A kolla-build.conf using what kolla-build writes into build contexts besides the
Dockerfiles: plugins, additions, a patches dir, an apt sources list and apt
preferences; and a --docker-dir layer with ``archive-probe``, an image ``FROM
scratch`` that only ADDs the two archives and its source, a directory (so both
tools build it in a second), and ``archive-probe-tar``, whose source is a tarball.
"""

from __future__ import annotations

import os
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

PROBE = "archive-probe"
TAR_PROBE = "archive-probe-tar"  # its own source is a tarball
ORPHAN = "nosuch-plugin-x"  # a plugin section of an image that does not exist
PROBE_TEMPLATE = ("FROM scratch\nADD plugins-archive /\nADD additions-archive /\n"
                  "ADD {name}-archive /{name}-source\n")


@dataclass(frozen=True)
class DropIn:
    config: Path
    probe_layer: Path          # --docker-dir holding archive-probe
    plugin_dir: Path           # a local plugin of archive-probe (edit it to change the image)


def write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)
    return path


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
                   cwd=cwd, check=True, capture_output=True)


def make_drop_in(root: Path) -> DropIn:
    root = root.resolve()
    # plugins of archive-probe: a directory (a symlink, an executable, a subdirectory)
    # and a tarball whose top directory is its own
    sfc = root / "plugins" / "networking-sfc"
    write(sfc / "setup.py", "print('sfc')\n")
    write(sfc / "bin" / "run.sh", "#!/bin/sh\necho run\n", 0o755)
    (sfc / "link").symlink_to("setup.py")
    other = root / "tarsrc" / "other-1.0"
    write(other / "other.py", "print('other')\n")
    tarball = root / "other-1.0.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(other, arcname="other-1.0")
    # additions: a directory and a git repository
    theme = root / "additions" / "theme-x"
    write(theme / "static" / "style.css", "body {}\n")
    repo = root / "git" / "extra"
    write(repo / "README", "extra\n")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "one")
    # patches: keystone (a comment, a missing patch, a blank line) and base
    patches = root / "patches"
    write(patches / "keystone" / "series", "# keystone patches\nfix-one.patch\n\n"
                                           "missing.patch\nfix-two.patch\n")
    write(patches / "keystone" / "fix-one.patch", "--- a\n+++ b\n")
    write(patches / "keystone" / "fix-two.patch", "--- c\n+++ d\n")
    write(patches / "keystone" / "not-listed.patch", "--- e\n")
    write(patches / "base" / "series", "base.patch\n")
    write(patches / "base" / "base.patch", "--- base\n")
    sources_list = write(root / "apt" / "my-sources.list",
                         "deb http://mirror.example.org/debian trixie main\n")
    preferences = write(root / "apt" / "my-preferences",
                        "Package: *\nPin: release o=Example\nPin-Priority: 100\n")
    probe_layer = root / "probe-layer"
    for name in (PROBE, TAR_PROBE):
        write(probe_layer / name / "Dockerfile.j2", PROBE_TEMPLATE.format(name=name))
    own = root / "src" / "probe-src"
    write(own / "main.py", "print('main')\n")
    write(own / "tool" / "x.sh", "#!/bin/sh\n", 0o755)
    config = write(root / "kolla-build.conf", f"""\
[DEFAULT]
patches_path = {patches}
apt_sources_list = {sources_list}
apt_preferences = {preferences}

[{PROBE}]
type = local
location = {own}

[{TAR_PROBE}]
type = local
location = {tarball}

[{PROBE}-plugin-sfc]
type = local
location = {sfc}

[{PROBE}-plugin-other]
type = local
location = {tarball}

[{PROBE}-additions-theme-x]
type = local
location = {theme}

[{PROBE}-additions-extra]
type = git
location = {repo}
reference = main

[neutron-server-plugin-networking-sfc]
type = local
location = {sfc}

[horizon-additions-theme-x]
type = local
location = {theme}

[{ORPHAN}]
type = local
location = {sfc}
""")
    return DropIn(config=config, probe_layer=probe_layer, plugin_dir=sfc)
