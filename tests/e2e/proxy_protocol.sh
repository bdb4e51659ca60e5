#!/usr/bin/env bash
# proxy_protocol.sh: --send-proxy (v1), --send-proxy-v2 and --accept-proxy,
# byte for byte as the specification lays them out, IPv4 and IPv6; malformed,
# oversized and late headers refused and counted, nothing of them forwarded
# (the cases are in proxy_protocol.py).
. "$(dirname "$0")/lib.sh"
require_sheaf
SHEAF=$SHEAF timeout 300 python3 "$(dirname "$0")/proxy_protocol.py"
