#!/usr/bin/env bash
# systemd.sh: socket activation (LISTEN_FDS), readiness (NOTIFY_SOCKET) and a
# restart on the same socket, with this test playing systemd's part (the
# cases are in systemd.py).
. "$(dirname "$0")/lib.sh"
require_sheaf
SHEAF=$SHEAF timeout 300 python3 "$(dirname "$0")/systemd.py"
