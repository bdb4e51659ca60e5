#!/usr/bin/env bash
# man_pages.sh: every function include/sheaf.h declares has a page
# man/man3/NAME.3 (its own, or a ".so man3/OTHER.3" link to a page whose NAME
# and SYNOPSIS sections name it), and every page under man/man3 renders with
# groff without a warning. Needs no sheaf build; skips (77) without groff,
# after the checks that need none of it have passed.
. "$(dirname "$0")/lib.sh"

MAN=$REPO_ROOT/man
HEADER=$REPO_ROOT/include/sheaf.h
failed=0
results=()

[ -r "$HEADER" ] || fail "no $HEADER"

# The public functions: sheaf_xxx( outside comments (sheaf__ names are
# internal, SHEAF_ macros are upper case).
functions=$(awk '
	{
		line = $0
		out = ""
		while (line != "") {
			if (incomment) {
				i = index(line, "*/")
				if (!i) { line = ""; break }
				line = substr(line, i + 2)
				incomment = 0
			} else {
				i = index(line, "/*")
				if (!i) { out = out line; line = ""; break }
				out = out substr(line, 1, i - 1)
				line = substr(line, i + 2)
				incomment = 1
			}
		}
		print out
	}' "$HEADER" | grep -o '\bsheaf_[a-z][a-z0-9_]*[[:space:]]*(' | tr -d ' \t(' | sort -u)
[ -n "$functions" ] || fail "found no sheaf_ function in $HEADER"

# section FILE NAME: the lines of section .SH NAME of FILE.
section() {
	awk -v want="$2" '
		/^\.SH / { sub(/^\.SH +/, ""); gsub(/"/, ""); on = ($0 == want); next }
		on { print }' "$1"
}

# The page a name's file stands for: itself, or the target of its .so line.
page_of() {
	local f=$MAN/man3/$1.3 target
	target=$(sed -n '1s/^\.so[[:space:]]\{1,\}//p' "$f")
	if [ -n "$target" ]; then
		printf '%s\n' "$MAN/$target"
	else
		printf '%s\n' "$f"
	fi
}

for fn in $functions; do
	if [ ! -f "$MAN/man3/$fn.3" ]; then
		results+=("FAIL page $fn: no man/man3/$fn.3")
		failed=$((failed + 1))
		continue
	fi
	page=$(page_of "$fn")
	rel=${page#"$MAN"/}
	if [ ! -f "$page" ]; then
		results+=("FAIL page $fn: man/man3/$fn.3 links to $rel, which does not exist")
		failed=$((failed + 1))
	elif ! section "$page" NAME | grep -q "\\b$fn\\b"; then
		results+=("FAIL page $fn: the NAME section of $rel does not name it")
		failed=$((failed + 1))
	elif ! section "$page" SYNOPSIS | grep -q "\\b$fn("; then
		results+=("FAIL page $fn: the SYNOPSIS of $rel has no $fn( prototype")
		failed=$((failed + 1))
	else
		results+=("ok page $fn ($rel)")
	fi
done

# Pages that name a function the header does not declare (renamed or gone).
for page in "$MAN"/man3/sheaf_*.3; do
	[ -e "$page" ] || continue
	for fn in $(section "$page" SYNOPSIS | grep -o '\bsheaf_[a-z][a-z0-9_]*(' | tr -d '(' | sort -u); do
		if ! printf '%s\n' "$functions" | grep -qx "$fn"; then
			results+=("FAIL page ${page#"$MAN"/}: its SYNOPSIS declares $fn, which sheaf.h does not")
			failed=$((failed + 1))
		fi
	done
done

if ! command -v groff >/dev/null 2>&1; then
	if [ "$failed" -ne 0 ]; then
		printf '%s\n' "${results[@]}"
		exit 1
	fi
	skip "groff is not installed (apt-get install groff-base): pages not rendered"
fi
printf '%s\n' "${results[@]}"

# Render each page as man(1) would (from the man directory, so that .so
# finds its target) on every device at hand; any output on stderr is a
# warning or an error, whatever groff's exit status says.
devices=utf8
groff -Tps -z </dev/null >/dev/null 2>&1 && devices="$devices ps"
n=0
for page in "$MAN"/man3/*.3; do
	[ -e "$page" ] || continue
	n=$((n + 1))
	rel=${page#"$MAN"/}
	bad=""
	for dev in $devices; do
		out=$(cd "$MAN" && LC_ALL=C groff -man -ww -T"$dev" -z "$rel" 2>&1)
		rc=$?
		if [ "$rc" -ne 0 ] || [ -n "$out" ]; then
			bad="$bad [-T$dev, exit $rc] $(printf '%s' "$out" | tr '\n' ' ' | cut -c1-300)"
		fi
	done
	if [ -n "$bad" ]; then
		echo "FAIL render $rel:$bad"
		failed=$((failed + 1))
	else
		echo "ok render $rel ($devices)"
	fi
done
[ "$n" -gt 0 ] || { echo "FAIL render: no pages in man/man3"; failed=$((failed + 1)); }

[ "$failed" -eq 0 ]
