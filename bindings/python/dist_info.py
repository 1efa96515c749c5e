"""Writes (or removes) the .dist-info of the globeflower package installed
by `make install`, so importlib.metadata and pip see it:

    dist_info.py install SITEDIR VERSION
    dist_info.py uninstall SITEDIR VERSION

SITEDIR holds the installed globeflower/ package (with DESTDIR). RECORD
lists every file of the package with its hash, as a wheel install does, so
`pip uninstall globeflower` works too."""

import base64
import hashlib
import os
import shutil
import sys

NAME = "globeflower"
SUMMARY = "An asyncio event loop on the globeflower C core"


def record_line(sitedir, rel):
    with open(os.path.join(sitedir, rel), "rb") as f:
        data = f.read()
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode("ascii")
    return f"{rel},sha256={digest},{len(data)}"


def install(sitedir, version):
    package = os.path.join(sitedir, NAME)
    if not os.path.isfile(os.path.join(package, "__init__.py")):
        raise SystemExit(f"dist_info.py: no {NAME} package in {sitedir}")
    info_rel = f"{NAME}-{version}.dist-info"
    info = os.path.join(sitedir, info_rel)
    os.makedirs(info, exist_ok=True)
    files = {
        "METADATA": (f"Metadata-Version: 2.1\nName: {NAME}\nVersion: {version}\nSummary: {SUMMARY}\n"
                     "Requires-Python: >=3.9\n"),
        "INSTALLER": "make\n",
        "top_level.txt": f"{NAME}\n",
    }
    for name, text in files.items():
        with open(os.path.join(info, name), "w", encoding="utf-8") as f:
            f.write(text)
    lines = []
    for root, dirs, names in os.walk(package):
        dirs.sort()
        for n in sorted(names):
            lines.append(record_line(sitedir, os.path.relpath(os.path.join(root, n), sitedir)))
    for name in sorted(files):
        lines.append(record_line(sitedir, f"{info_rel}/{name}"))
    lines.append(f"{info_rel}/RECORD,,")
    with open(os.path.join(info, "RECORD"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def uninstall(sitedir, version):
    shutil.rmtree(os.path.join(sitedir, f"{NAME}-{version}.dist-info"), ignore_errors=True)


def main(argv):
    if len(argv) != 4 or argv[1] not in ("install", "uninstall"):
        raise SystemExit(__doc__)
    (install if argv[1] == "install" else uninstall)(argv[2], argv[3])


if __name__ == "__main__":
    main(sys.argv)
