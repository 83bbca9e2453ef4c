#!/usr/bin/env bash
# `make thread-safety`: clang's thread-safety analysis over every translation unit (libraries, app,
# examples, tests), as errors. g++ ignores ABSL_GUARDED_BY and ABSL_EXCLUSIVE_LOCKS_REQUIRED; clang
# checks them at compile time: a guarded member touched without its absl::Mutex held, or a helper
# that needs the lock called without it, fails this step with the file, line and member.
#
# The analysis runs while clang reads the code, so each file is only checked (-fsyntax-only, no
# object files, nothing linked or run): CMake configures $BUILD_DIR (default build-tsa) with clang
# to write compile_commands.json, and each compile command from it runs with -fsyntax-only
# -Werror=thread-safety, JOBS (default: the number of cores) at a time. Exit 1 when any file fails.
# The libraries are unity builds (CMakeLists.txt, TOOLGATE_UNITY_BUILD), so most entries are
# batches of up to eight files; clang's errors still name the file and line of the misuse.
#
# Every file of the libraries, the binary, the benchmarks' and examples' is checked; of the tests,
# those that take an absl::Mutex themselves or through a test header (sync_point_store.h): the
# others only call code checked already, and skipping them halves the time of this step.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build-tsa}
jobs=${JOBS:-$(nproc)}

# The top-level CMakeLists.txt adds -Wthread-safety and the coroutine defines clang 14 needs
# (BOOST_ASIO_HAS_CO_AWAIT, BOOST_ASIO_HAS_STD_COROUTINE) whenever the compiler is clang.
CC=clang CXX=clang++ cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=None \
  -DTOOLGATE_BUILD_BENCHMARKS=ON -DCMAKE_EXPORT_COMPILE_COMMANDS=ON >/dev/null

python3 - "$build_dir/compile_commands.json" "$jobs" <<'EOF'
import concurrent.futures, json, os, re, shlex, subprocess, sys

entries = json.load(open(sys.argv[1]))
jobs = int(sys.argv[2])

# A test file is checked when it, or a header of tests/ it includes (transitively), locks.
locks = re.compile(r"absl::Mutex|ABSL_GUARDED_BY|ABSL_EXCLUSIVE_LOCKS_REQUIRED")
quoted = re.compile(r'#include "([^"]+)"')
tests_dir = os.path.join(os.getcwd(), "tests")

def test_locks(path, seen):
    if path in seen or not os.path.exists(path):
        return False
    seen.add(path)
    text = open(path).read()
    return bool(locks.search(text)) or any(test_locks(os.path.join(tests_dir, h), seen) for h in quoted.findall(text))

total = len(entries)
entries = [e for e in entries
           if not os.path.abspath(e["file"]).startswith(tests_dir + os.sep) or test_locks(os.path.abspath(e["file"]), set())]

def check(entry):
    args = shlex.split(entry["command"])
    out = []
    skip = False
    for a in args:  # drop "-o <object>" and "-c": check only
        if skip:
            skip = False
        elif a == "-o":
            skip = True
        elif a != "-c":
            out.append(a)
    out += ["-fsyntax-only", "-Werror=thread-safety"]
    p = subprocess.run(out, cwd=entry["directory"], capture_output=True, text=True)
    return entry["file"], p.returncode, p.stderr

root = os.getcwd() + "/"
failed = []
with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
    for file, rc, err in pool.map(check, entries):
        # A failing file shows all clang said; other warnings of a passing file are g++'s business.
        if rc != 0:
            failed.append(file)
            sys.stdout.write(err)
if failed:
    print("thread-safety: %d of %d translation units fail:" % (len(failed), len(entries)))
    for f in failed:
        print("  " + f.replace(root, ""))
    sys.exit(1)
print("thread-safety: %d translation units checked, no lock misuse (%d test files that take no lock skipped)"
      % (len(entries), total - len(entries)))
EOF
