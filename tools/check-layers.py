#!/usr/bin/env python3
"""check-layers.py - fails when an #include crosses a layer the wrong way.

Dependencies point one way (DESIGN.md): server -> engine -> {storage, video, backend} -> base.

  python3 tools/check-layers.py [ROOT]      (make test runs it; exit 1 on a violation)
  python3 tools/check-layers.py --self-test (make test runs it too: planted violations must fail)

Each source file belongs to a layer by its path; a quoted include is resolved against the file's
folder and must land in a layer that the file's layer may use. Library headers in angle brackets
are checked too: SQLite only in the SQLite store, libmicrohttpd only in server/, FFmpeg only in
video/, CUDA only in cuda/, CBLAS only in the CPU backend and the CPU Mamba reference.
"""
import os
import re
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

# layer of a file (first matching rule wins); paths relative to ROOT
LAYERS = [
    ("base", r"^base/"),
    ("video", r"^video/"),
    ("backend", r"^cuda/|^engine/backend[^/]*$"),
    ("storage", r"^engine/store[^/]*$"),
    ("engine", r"^engine/"),
    ("server", r"^server/"),
    ("cli", r"^cli/"),
]
# which layers a layer may include (besides itself); for server only one engine header
ALLOWED = {
    "base": set(),
    "video": {"base"},
    "backend": {"base"},
    "storage": {"base"},
    "engine": {"base", "video", "backend", "storage"},
    "server": {"engine:engine/momentd.h"},
    "cli": {"base", "engine", "video", "backend"},
}
# The video layer's public header is video/video.h: others must not reach into video/internal.h.
PUBLIC = {"video": {"video/video.h", "video/isolate.h"}, "backend": {"engine/backend.h"}, "storage": {"engine/store.h"}}
# library headers (angle brackets): prefix -> files allowed to include it
SYSTEM = [
    (r"^sqlite3\.h$", r"^engine/store_sqlite\.c$"),
    (r"^microhttpd\.h$", r"^server/"),
    (r"^libav|^libsw", r"^video/"),
    (r"^cuda|^cublas|^cuda_runtime", r"^cuda/"),
    (r"^cblas\.h$", r"^engine/(backend_cpu|mamba)\.c$"),  # the CPU backend and the CPU Mamba reference
]
# Files found through an include path rather than relative to the includer.
INCLUDE_PATH = {"cuda_emu.h": "tests/gpu/emu/cuda_emu.h"}


def layer_of(rel):
    for name, pat in LAYERS:
        if re.search(pat, rel):
            return name
    return None


def check(root):
    """Returns (includes checked, list of problems) for the tree at ROOT."""
    global ROOT
    ROOT = root
    problems, checked = [], 0
    for d in ("base", "video", "cuda", "engine", "server", "cli"):
        top = os.path.join(ROOT, d)
        if not os.path.isdir(top):
            continue
        for dirpath, _, files in os.walk(top):
            for f in sorted(files):
                if not f.endswith((".c", ".h", ".cu")):
                    continue
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, ROOT)
                mine = layer_of(rel)
                with open(path, encoding="utf-8", errors="replace") as fh:
                    for lineno, line in enumerate(fh, 1):
                        m = re.match(r'\s*#\s*include\s*([<"])([^>"]+)[>"]', line)
                        if not m:
                            continue
                        checked += 1
                        kind, inc = m.groups()
                        close = ">" if kind == "<" else '"'
                        where = f"{rel}:{lineno}: #include {kind}{inc}{close}"
                        if kind == "<":
                            for pat, ok in SYSTEM:
                                if re.search(pat, inc) and not re.search(ok, rel):
                                    problems.append(f"{where}: only files matching {ok} may use {inc}")
                            continue
                        target = os.path.normpath(os.path.join(os.path.dirname(rel), inc))
                        if not os.path.exists(os.path.join(ROOT, target)):
                            if inc in INCLUDE_PATH:
                                target = INCLUDE_PATH[inc]
                                if mine == "backend" and target.startswith("tests/gpu/emu/"):
                                    continue  # the emulator shim, on the emulator build's include path
                            else:
                                continue  # a library header found through pkg-config (cJSON.h)
                        theirs = layer_of(target)
                        if theirs is None:
                            problems.append(f"{where}: includes {target}, outside the library's layers")
                            continue
                        if theirs == mine:
                            continue
                        allowed = ALLOWED[mine]
                        if f"{theirs}:{target}" in allowed:
                            continue
                        if theirs not in allowed:
                            problems.append(f"{where}: layer '{mine}' may not include '{theirs}' ({target})")
                        elif theirs in PUBLIC and target not in PUBLIC[theirs]:
                            problems.append(f"{where}: {target} is internal to '{theirs}'; use {sorted(PUBLIC[theirs])[0]}")
    return checked, problems


def self_test():
    """A small tree that follows the rules passes; each planted violation is caught."""
    clean = {
        "base/status.h": "",
        "engine/momentd.h": '#include "../base/status.h"\n',
        "engine/store.h": '#include "../base/status.h"\n',
        "engine/store_sqlite.c": '#include <sqlite3.h>\n#include "store.h"\n',
        "engine/library.c": '#include "momentd.h"\n#include "store.h"\n#include "../video/video.h"\n',
        "video/video.h": '#include "../base/status.h"\n',
        "video/internal.h": '#include "video.h"\n',
        "server/http.c": '#include <microhttpd.h>\n#include "../engine/momentd.h"\n',
    }
    planted = [
        ("server/http.c", '#include "../engine/store.h"\n', "server includes storage"),
        ("base/status.h", '#include "../engine/momentd.h"\n', "base includes engine"),
        ("video/video.h", '#include "../engine/store.h"\n', "video includes storage"),
        ("engine/library.c", "#include <sqlite3.h>\n", "SQLite outside the SQLite store"),
        ("engine/library.c", '#include "../video/internal.h"\n', "engine reaches into video's internals"),
        ("engine/store.h", '#include "momentd.h"\n', "storage includes engine"),
    ]
    failures = 0
    for case in [None] + planted:
        with tempfile.TemporaryDirectory() as d:
            for rel, text in clean.items():
                os.makedirs(os.path.join(d, os.path.dirname(rel)), exist_ok=True)
                with open(os.path.join(d, rel), "w") as fh:
                    fh.write(text)
            if case:
                with open(os.path.join(d, case[0]), "a") as fh:
                    fh.write(case[1])
            _, problems = check(d)
            want = 0 if case is None else 1
            name = "the clean tree" if case is None else case[2]
            if (len(problems) > 0) != (want > 0):
                failures += 1
                print(f"check-layers self-test: {name}: expected {'a violation' if want else 'none'}, got {problems}")
    print(f"check-layers self-test: {len(planted) + 1 - failures} passed, {failures} failed")
    return 1 if failures else 0


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--self-test":
        return self_test()
    root = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    checked, problems = check(root)
    if checked == 0:
        print("check-layers: no #include lines found: wrong ROOT?", file=sys.stderr)
        return 1
    for p in problems:
        print("check-layers: " + p)
    print(f"check-layers: {checked} includes checked, {len(problems)} crossing a layer the wrong way")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
