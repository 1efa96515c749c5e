#!/usr/bin/python3
"""Refuses an ABI baseline update that is not append-only.

    abi-append-only.py OLD.abi NEW.abi

Compares two libabigail (abidw) dumps. For every struct of the old dump that
the new one still has: each data member must keep its name, offset and type
name; only gfl_api and the size-first descriptor structs may grow, and only
by members placed after all the old ones. Every old function must still be
there. (abidiff --no-added-syms, run by check-abi.sh, checks the signatures
of functions; this checks what libabigail's suppressions cannot express:
that new members went at the END.)
"""
import re
import sys
import xml.etree.ElementTree as ET

GROWABLE = re.compile(r"^gfl_(api|host_class|[a-z_]*_options|[a-z_]*protocol)$")


def type_namer(root):
    """Names types by their structure: ids differ between two dumps."""
    by_id = {el.get("id"): el for el in root.iter() if el.get("id")}
    cache = {}

    def name(tid, depth=0):
        if tid in cache:
            return cache[tid]
        el = by_id.get(tid)
        if el is None or depth > 20:
            return "?"
        tag = el.tag
        if tag == "pointer-type-def":
            result = name(el.get("type-id"), depth + 1) + "*"
        elif tag == "qualified-type-def":
            quals = " ".join(q for q in ("const", "volatile") if el.get(q) == "yes")
            result = quals + " " + name(el.get("type-id"), depth + 1)
        elif tag == "array-type-def":
            result = name(el.get("type-id"), depth + 1) + "[%s]" % el.get("size-in-bits", "")
        elif tag == "function-type":
            params = [name(p.get("type-id"), depth + 1) for p in el.findall("parameter") if p.get("type-id")]
            ret = el.find("return")
            result = "%s(%s)" % (name(ret.get("type-id"), depth + 1) if ret is not None else "void", ",".join(params))
        else:
            result = el.get("name") or tag
        cache[tid] = result
        return result

    return name


def load(path):
    root = ET.parse(path).getroot()
    type_name = type_namer(root)
    structs = {}
    for el in root.iter("class-decl"):
        name = el.get("name")
        if not name or not name.startswith("gfl_") or el.get("is-declaration-only") == "yes":
            continue
        members = []
        for dm in el.findall("data-member"):
            var = dm.find("var-decl")
            members.append((var.get("name"), int(dm.get("layout-offset-in-bits", "0")),
                            type_name(var.get("type-id"))))
        structs[name] = (int(el.get("size-in-bits", "0")), members)
    functions = {el.get("name") for el in root.iter("function-decl") if el.get("elf-symbol-id")}
    return structs, functions


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    old_structs, old_functions = load(sys.argv[1])
    new_structs, new_functions = load(sys.argv[2])
    problems = []
    for fn in sorted(old_functions - new_functions):
        problems.append(f"function {fn} was removed")
    for name, (old_size, old_members) in sorted(old_structs.items()):
        if name not in new_structs:
            continue  # became opaque or private: abidiff reports what matters
        new_size, new_members = new_structs[name]
        if new_members[: len(old_members)] != old_members:
            for i, member in enumerate(old_members):
                if i >= len(new_members) or new_members[i] != member:
                    got = new_members[i] if i < len(new_members) else "nothing"
                    problems.append(f"struct {name}: member {i} was {member}, is now {got}")
                    break
        if new_size != old_size and not GROWABLE.match(name):
            problems.append(f"struct {name} changed size ({old_size} -> {new_size} bits) and may not grow")
        if new_size < old_size:
            problems.append(f"struct {name} shrank ({old_size} -> {new_size} bits)")
    if problems:
        print("abi-append-only: the new ABI is not an append-only extension of the baseline:", file=sys.stderr)
        for p in problems:
            print("  - " + p, file=sys.stderr)
        return 1
    print("abi-append-only: OK (only additions at the end)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
