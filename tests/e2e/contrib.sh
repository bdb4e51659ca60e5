#!/usr/bin/env bash
# contrib.sh: the files under contrib/ stay right: proxy.conf passes
# --check, and systemd-analyze verify finds nothing wrong in the units
# (with ExecStart pointed at this build; skipped without systemd-analyze).
. "$(dirname "$0")/lib.sh"
require_sheaf
C=$REPO_ROOT/contrib

out=$("$SHEAF" proxy --check --config "$C/proxy.conf" 2>&1)
rc=$?
[ "$rc" -eq 0 ]
report $? "contrib/proxy.conf: --check exits $rc: $out"

grep -q '^ExecStart=/usr/local/bin/sheaf proxy --config /etc/sheaf/proxy.conf$' \
	"$C/sheaf-proxy.service" && grep -q '^Type=notify$' "$C/sheaf-proxy.service" &&
	grep -q '^Service=sheaf-proxy.service$' "$C/sheaf-proxy.socket"
report $? "the service is Type=notify with --config, the socket unit names it"

if command -v systemd-analyze >/dev/null 2>&1; then
	d=$E2E_TMP/units
	mkdir -p "$d"
	sed "s|/usr/local/bin/sheaf|$SHEAF|g" "$C/sheaf-proxy.service" >"$d/sheaf-proxy.service"
	cp "$C/sheaf-proxy.socket" "$d/"
	out=$(cd "$d" && SYSTEMD_LOG_LEVEL=notice systemd-analyze verify --man=no \
		./sheaf-proxy.service ./sheaf-proxy.socket 2>&1)
	rc=$?
	[ "$rc" -eq 0 ] && [ -z "$out" ]
	report $? "systemd-analyze verify: exit $rc, $(printf '%s' "${out:-no warning}" | tr '\n' ' ' | cut -c1-300)"
else
	echo "skip contrib: systemd-analyze not installed"
fi
exit $E2E_FAILED
