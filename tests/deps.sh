#!/bin/sh
# Installs the Debian packages given as arguments when any is missing.
missing=""
for p in "$@"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
	echo "make deps: missing packages:$missing" >&2
	echo "make deps: run as root: apt-get update && apt-get install -y$missing" >&2
	exit 1
fi
echo "make deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq && apt-get install -y -qq $missing >/dev/null || {
	echo "make deps: apt-get install$missing failed" >&2
	exit 1
}
