"""Prints where this interpreter looks for packages installed under the
prefix, as a path starting with ${exec_prefix}, for configure (the
Python package's install directory; docs/python.md, "Building").

It is the install scheme sysconfig picks for prefix installs. Debian's
(posix_local) writes the /usr/local prefix as {platbase}/local/... with
platbase /usr: for a prefix P that is P/lib/pythonX.Y/dist-packages, which
site.py puts on sys.path for P = /usr/local (and /usr)."""

import sysconfig

MARK = "/gfl-prefix-mark"


def main():
    get_default = getattr(sysconfig, "get_default_scheme", None) or sysconfig._get_default_scheme
    scheme = get_default()
    path = sysconfig.get_path("platlib", scheme, vars={"base": MARK, "platbase": MARK})
    if not path.startswith(MARK + "/"):
        raise SystemExit(f"sitedir.py: scheme {scheme!r} does not install under the prefix: {path}")
    rel = path[len(MARK) + 1:]
    if scheme == "posix_local" and rel.startswith("local/"):
        rel = rel[len("local/"):]
    print("${exec_prefix}/" + rel)


if __name__ == "__main__":
    main()
