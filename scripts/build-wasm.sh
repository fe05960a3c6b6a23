#!/usr/bin/env bash
# Rebuild the C example workloads (examples/*/*.c) and the test modules
# (crates/sandbox/tests/modules/*.c, crates/cli/tests/modules/*.c) into .wasm files next to their
# sources, using clang's wasm32-wasi target and the Debian wasi-libc sysroot.
#
# usage: scripts/build-wasm.sh [--check] [--native DIR]
#
#   (no option)    rebuild every .wasm in place
#   --check        build into a temporary directory instead and report which
#                  committed .wasm files are missing or differ from a fresh
#                  build (exit 1 if any); also checks that two builds give
#                  identical bytes. Nothing in the tree is modified.
#   --native DIR   additionally build each example natively
#                  (clang -O2 ... -lm) into DIR/<name>, for sanity checks
#                  such as comparing native and wasm output.
#
# Builds are reproducible: same clang + wasi-libc => same bytes. Sources are
# compiled from their own directory with relative paths, without debug info,
# and the output is stripped (-Wl,--strip-all), so no path or timestamp ends
# up in the binary.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLANG="${CLANG:-clang}"
WASM_FLAGS=(--target=wasm32-wasi -O2 -Wall -Wextra -Werror -Wl,--strip-all)
NATIVE_FLAGS=(-O2 -Wall -Wextra -Werror)
LIBS=(-lm)

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

check=0
native_dir=""
while [ $# -gt 0 ]; do
    case "$1" in
        --check) check=1 ;;
        --native)
            [ $# -ge 2 ] || { echo "build-wasm.sh: --native needs a directory" >&2; exit 2; }
            native_dir="$2"
            shift
            ;;
        --native=*) native_dir="${1#--native=}" ;;
        -h|--help) usage; exit 0 ;;
        *) echo "build-wasm.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

tmp="$(mktemp -d "${TMPDIR:-/tmp}/idlegrid-wasm.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

missing_toolchain() {
    echo "build-wasm.sh: $1" >&2
    echo "clang cannot build wasm32-wasi programs here. On Debian/Ubuntu install:" >&2
    echo "    apt-get install -y clang lld wasi-libc libclang-rt-14-dev-wasm32" >&2
    echo "(the libclang-rt-*-dev-wasm32 version must match 'clang --version')." >&2
    exit 1
}

command -v "$CLANG" >/dev/null 2>&1 || missing_toolchain "'$CLANG' not found"
printf '#include <stdio.h>\n#include <math.h>\nint main(int c, char **v) { (void)v; printf("%%f\\n", sqrt((double)c)); return 0; }\n' \
    >"$tmp/toolchain-check.c"
if ! "$CLANG" "${WASM_FLAGS[@]}" "$tmp/toolchain-check.c" -o "$tmp/toolchain-check.wasm" "${LIBS[@]}" \
    >"$tmp/toolchain-check.log" 2>&1; then
    sed 's/^/    /' "$tmp/toolchain-check.log" >&2
    missing_toolchain "test compile for wasm32-wasi failed"
fi

cd "$ROOT"
shopt -s nullglob
sources=(examples/*/*.c crates/sandbox/tests/modules/*.c crates/cli/tests/modules/*.c)
shopt -u nullglob
if [ ${#sources[@]} -eq 0 ]; then
    echo "build-wasm.sh: no C sources found under $ROOT" >&2
    exit 1
fi

# build_wasm SRC OUT: compile from the source's directory with a relative
# source path so the build does not depend on where the tree lives.
build_wasm() {
    local src="$1" out="$2"
    (cd "$(dirname "$src")" && "$CLANG" "${WASM_FLAGS[@]}" "$(basename "$src")" -o "$out" "${LIBS[@]}")
}

status=0
if [ "$check" -eq 1 ]; then
    for src in "${sources[@]}"; do
        key="${src//\//__}"
        build_wasm "$src" "$tmp/$key.a.wasm"
        build_wasm "$src" "$tmp/$key.b.wasm"
        committed="${src%.c}.wasm"
        if ! cmp -s "$tmp/$key.a.wasm" "$tmp/$key.b.wasm"; then
            echo "NOT REPRODUCIBLE: $committed (two builds differ)"
            status=1
        fi
        if [ ! -f "$committed" ]; then
            echo "MISSING: $committed"
            status=1
        elif ! cmp -s "$tmp/$key.a.wasm" "$committed"; then
            echo "DIFFERS: $committed"
            status=1
        else
            echo "ok: $committed"
        fi
    done
else
    for src in "${sources[@]}"; do
        out="${src%.c}.wasm"
        build_wasm "$src" "$tmp/out.wasm"
        mv -f "$tmp/out.wasm" "$out"
        chmod 0644 "$out"
        printf 'built %s (%s bytes)\n' "$out" "$(wc -c <"$out" | tr -d ' ')"
    done
fi

if [ -n "$native_dir" ]; then
    mkdir -p "$native_dir"
    native_dir="$(cd "$native_dir" && pwd)"
    for src in examples/*/*.c; do
        name="$(basename "$src" .c)"
        (cd "$(dirname "$src")" && "$CLANG" "${NATIVE_FLAGS[@]}" "$(basename "$src")" -o "$native_dir/$name" "${LIBS[@]}")
        echo "built native $native_dir/$name"
    done
fi

if [ "$status" -ne 0 ]; then
    echo "build-wasm.sh: committed .wasm files are out of date; run scripts/build-wasm.sh" >&2
fi
exit "$status"
