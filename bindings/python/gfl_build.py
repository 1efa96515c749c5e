"""PEP 517 build backend of the globeflower Python package (see
pyproject.toml): compiles src/*.c into globeflower/_core against the
installed libglobeflower that pkg-config finds, and packs a wheel, using
only the standard library (pip needs nothing from an index)."""

import base64
import glob
import hashlib
import os
import re
import shlex
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
NAME = "globeflower"
SUMMARY = "An asyncio event loop on the globeflower C core"


def _version():
    with open(os.path.join(HERE, NAME, "__init__.py"), encoding="utf-8") as f:
        m = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M)
    if not m:
        raise RuntimeError("gfl_build: no __version__ in globeflower/__init__.py")
    return m.group(1)


def _metadata(version):
    return (f"Metadata-Version: 2.1\nName: {NAME}\nVersion: {version}\nSummary: {SUMMARY}\n"
            "Requires-Python: >=3.9\n")


def _tag():
    impl = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    plat = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    return f"{impl}-{impl}{getattr(sys, 'abiflags', '')}-{plat}"


def _run(cmd):
    print(" ".join(shlex.quote(c) for c in cmd), flush=True)
    subprocess.run(cmd, check=True)


def _pkg_config(option):
    cmd = shlex.split(os.environ.get("PKG_CONFIG") or "pkg-config") + [option, NAME]
    try:
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    except FileNotFoundError:
        raise RuntimeError("gfl_build: pkg-config not found (Debian: apt-get install pkg-config)") from None
    except subprocess.CalledProcessError as exc:
        raise RuntimeError("gfl_build: pkg-config does not find libglobeflower: install it first (make install), "
                           "or point PKG_CONFIG_PATH at its lib/pkgconfig\n" + exc.stderr) from None
    return shlex.split(out)


def _build_extension(tmp):
    """Compiles the extension; returns its path."""
    cc = shlex.split(os.environ.get("CC") or "cc")
    cflags = ["-std=c11", "-O2", "-g", "-fPIC", "-pthread", "-D_GNU_SOURCE", "-fno-strict-aliasing",
              "-I" + sysconfig.get_paths()["include"]] + _pkg_config("--cflags")
    libdir = _pkg_config("--variable=libdir")
    objs = []
    for src in sorted(glob.glob(os.path.join(HERE, "src", "*.c"))):
        obj = os.path.join(tmp, os.path.basename(src)[:-2] + ".o")
        _run(cc + cflags + shlex.split(os.environ.get("CFLAGS", "")) + ["-c", src, "-o", obj])
        objs.append(obj)
    if not objs:
        raise RuntimeError("gfl_build: no C sources in " + os.path.join(HERE, "src"))
    out = os.path.join(tmp, "_core" + (sysconfig.get_config_var("EXT_SUFFIX") or ".so"))
    # The library's directory as the run path: a prefix outside the
    # linker's default path still loads.
    rpath = ["-Wl,-rpath," + libdir[0]] if libdir else []
    _run(cc + ["-shared", "-pthread", "-o", out] + objs + _pkg_config("--libs") + rpath
         + shlex.split(os.environ.get("LDFLAGS", "")))
    return out


def _record_line(arcname, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode("ascii")
    return f"{arcname},sha256={digest},{len(data)}"


def _write_dist_info(directory, version):
    info = f"{NAME}-{version}.dist-info"
    os.makedirs(os.path.join(directory, info), exist_ok=True)
    files = {
        "METADATA": _metadata(version),
        "WHEEL": f"Wheel-Version: 1.0\nGenerator: gfl_build\nRoot-Is-Purelib: false\nTag: {_tag()}\n",
    }
    for name, text in files.items():
        with open(os.path.join(directory, info, name), "w", encoding="utf-8") as f:
            f.write(text)
    return info


# ---- PEP 517 hooks ----

def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    return _write_dist_info(metadata_directory, _version())


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    version = _version()
    name = f"{NAME}-{version}-{_tag()}.whl"
    with tempfile.TemporaryDirectory() as tmp:
        ext = _build_extension(tmp)
        info = _write_dist_info(tmp, version)
        entries = [(f"{NAME}/{os.path.basename(p)}", p) for p in sorted(glob.glob(os.path.join(HERE, NAME, "*.py")))]
        entries.append((f"{NAME}/{os.path.basename(ext)}", ext))
        entries += [(f"{info}/{n}", os.path.join(tmp, info, n)) for n in ("METADATA", "WHEEL")]
        record = []
        path = os.path.join(wheel_directory, name)
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as whl:
            for arcname, src in entries:
                with open(src, "rb") as f:
                    data = f.read()
                whl.writestr(arcname, data)
                record.append(_record_line(arcname, data))
            record.append(f"{info}/RECORD,,")
            whl.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return name


def build_sdist(sdist_directory, config_settings=None):
    version = _version()
    base = f"{NAME}-{version}"
    name = base + ".tar.gz"
    members = ["pyproject.toml", "gfl_build.py"] + sorted(
        os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, NAME, "*.py"))
        + glob.glob(os.path.join(HERE, "src", "*.[ch]")))
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "PKG-INFO"), "w", encoding="utf-8") as f:
            f.write(_metadata(version))
        with tarfile.open(os.path.join(sdist_directory, name), "w:gz", format=tarfile.PAX_FORMAT) as tar:
            tar.add(os.path.join(tmp, "PKG-INFO"), f"{base}/PKG-INFO")
            for m in members:
                tar.add(os.path.join(HERE, m), f"{base}/{m}")
    return name
