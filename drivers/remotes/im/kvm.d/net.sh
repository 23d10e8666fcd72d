#!/bin/sh
# im/kvm.d/net.sh <hid> <host>: NETRX and NETTX, bytes received and sent since boot summed
# over every interface of /proc/net/dev but the loopback (3.4 read eth1 only, 4.4 eth* and
# bond*). Bridged VM traffic is counted on each interface it crosses (tap, bridge, NIC).
# Shell arithmetic: awk implementations that print big numbers in %g would lose digits.
# NUBO_PROC_DIR replaces /proc (tests feed it canned files).
PROC=${NUBO_PROC_DIR:-/proc}
set -f

fail() {
    echo "ERROR: net.sh: $*" >&2
    exit 1
}

[ -r "$PROC/net/dev" ] || fail "cannot read $PROC/net/dev"
rx=0 tx=0
while IFS= read -r line; do
    case $line in *:*) ;; *) continue ;; esac  # the two header lines have no colon
    name=${line%%:*}
    name=${name##*[[:space:]]}
    [ "$name" = lo ] && continue
    set -- ${line#*:}
    case $1$9 in '' | *[!0-9]*) fail "unexpected counters for $name in $PROC/net/dev" ;; esac
    rx=$((rx + $1)) tx=$((tx + $9))
done < "$PROC/net/dev"

echo "NETRX=$rx"
echo "NETTX=$tx"
