#!/bin/sh
# im/kvm.d/memory.sh <hid> <host>: TOTALMEMORY, USEDMEMORY, FREEMEMORY in KB, from
# /proc/meminfo. Free is MemAvailable (what can be given to new VMs without swapping: free
# pages plus reclaimable cache); kernels older than 3.14 lack it, then MemFree + Buffers +
# Cached stands in, as 3.4 read `free`'s "-/+ buffers/cache" line. Used = total - free.
# NUBO_PROC_DIR replaces /proc (tests feed it canned files).
PROC=${NUBO_PROC_DIR:-/proc}

fail() {
    echo "ERROR: memory.sh: $*" >&2
    exit 1
}

[ -r "$PROC/meminfo" ] || fail "cannot read $PROC/meminfo"
total='' available='' free=0 buffers=0 cached=0
while read -r key value unit; do
    case $value in '' | *[!0-9]*) continue ;; esac
    case $key in
        MemTotal:) total=$value ;;
        MemAvailable:) available=$value ;;
        MemFree:) free=$value ;;
        Buffers:) buffers=$value ;;
        Cached:) cached=$value ;;
    esac
done < "$PROC/meminfo"
[ -n "$total" ] || fail "no MemTotal in $PROC/meminfo"
[ -n "$available" ] || available=$((free + buffers + cached))
[ "$available" -le "$total" ] || available=$total

echo "TOTALMEMORY=$total"
echo "USEDMEMORY=$((total - available))"
echo "FREEMEMORY=$available"
