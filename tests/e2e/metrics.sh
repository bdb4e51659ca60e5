#!/usr/bin/env bash
# metrics.sh: sheaf proxy --metrics, checked value by value against the
# traffic sent, with bad requests during a verified transfer and promtool
# where installed (the cases are in metrics.py).
. "$(dirname "$0")/lib.sh"
require_sheaf
SHEAF=$SHEAF timeout 300 python3 "$(dirname "$0")/metrics.py"
