#!/usr/bin/env bash
# api_doc.sh: the ```c blocks of docs/API.md, in order, are one program
# (upper.c); it must compile against include/sheaf.h without a warning, and
# link against build/libsheaf.a where that is built. Needs no sheaf binary;
# skips (77) without a C compiler.
. "$(dirname "$0")/lib.sh"

DOC=$REPO_ROOT/docs/API.md
CC=${CC:-cc}
SRC=$E2E_TMP/upper.c

[ -r "$DOC" ] || fail "no $DOC"
command -v "$CC" >/dev/null 2>&1 || skip "no C compiler ($CC)"

awk '/^```c[[:space:]]*$/ { on = 1; next } /^```/ { on = 0; next } on' "$DOC" >"$SRC"
blocks=$(grep -c '^```c[[:space:]]*$' "$DOC")
if [ "$blocks" -eq 0 ] || ! grep -q 'int main(' "$SRC"; then
	echo "FAIL extract: $blocks \`\`\`c blocks in docs/API.md and no main()"
	exit 1
fi
echo "ok extract: $blocks blocks, $(wc -l <"$SRC") lines"

# The flags of the library's own build, less its private include paths.
flags="-std=gnu11 -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter -pthread"
out=$($CC $flags -I"$REPO_ROOT/include" -c -o "$E2E_TMP/upper.o" "$SRC" 2>&1)
rc=$?
if [ "$rc" -ne 0 ] || [ -n "$out" ]; then
	echo "FAIL compile: exit $rc: $(printf '%s' "$out" | head -20)"
	echo "(the program is $SRC; E2E_KEEP=1 keeps it)"
	exit 1
fi
echo "ok compile against include/sheaf.h"

lib=$REPO_ROOT/build/libsheaf.a
if [ -f "$lib" ]; then
	out=$($CC -pthread -o "$E2E_TMP/upper" "$E2E_TMP/upper.o" "$lib" -luring 2>&1)
	rc=$?
	if [ "$rc" -ne 0 ]; then
		echo "FAIL link against build/libsheaf.a: exit $rc: $(printf '%s' "$out" | head -20)"
		exit 1
	fi
	echo "ok link against build/libsheaf.a"
else
	echo "(no build/libsheaf.a: not linked)"
fi
