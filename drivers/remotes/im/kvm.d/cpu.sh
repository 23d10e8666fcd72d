#!/bin/sh
# im/kvm.d/cpu.sh <hid> <host>: the host's processors.
#   MODELNAME  first "model name" of /proc/cpuinfo, quoted, without commas or quotes
#   CPUSPEED   MHz: first "cpu MHz" of /proc/cpuinfo, else cpufreq's maximum, else 0
#   TOTALCPU   cores x 100, cores being what `nproc` counts
#   USEDCPU, FREECPU  TOTALCPU split by the share of idle time between two /proc/stat
#              samples SAMPLE seconds apart: what top's "id" column is (3.4 ran `top -bin2`,
#              which waits top's 3 s delay; the load average is no CPU share at all).
# NUBO_PROC_DIR replaces /proc (tests feed it canned files).
PROC=${NUBO_PROC_DIR:-/proc}
SAMPLE=0.2
set -f

fail() {
    echo "ERROR: cpu.sh: $*" >&2
    exit 1
}

# nproc honours OMP_NUM_THREADS / OMP_THREAD_LIMIT: the host's cores, not a job's share.
unset OMP_NUM_THREADS OMP_THREAD_LIMIT
cores=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null)
case $cores in
    '' | *[!0-9]* | 0) fail "cannot count the processors (nproc)" ;;
esac
total=$((cores * 100))

[ -r "$PROC/cpuinfo" ] || fail "cannot read $PROC/cpuinfo"
model='' mhz=''
while IFS=: read -r key value; do  # no command substitution in here: no fork per line
    key=${key%"${key##*[![:space:]]}"}
    value=${value#"${value%%[![:space:]]*}"}
    case $key in
        'model name' | 'Processor' | 'cpu model')
            [ -n "$model" ] || model=$value ;;
        'cpu MHz')
            [ -n "$mhz" ] || mhz=$value ;;
        '')
            [ -n "$model" ] && [ -n "$mhz" ] && break ;;  # the first processor is enough
    esac
done < "$PROC/cpuinfo"
if [ -z "$model" ] && command -v lscpu >/dev/null 2>&1; then
    model=$(LC_ALL=C lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)
fi
model=$(printf '%s' "${model:-unknown}" | tr -d ',"\\' | tr -s '[:space:]' ' ')
model=${model% }
mhz=${mhz%%.*}
case $mhz in
    '' | *[!0-9]*)
        mhz=0
        khz=$(cat /sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq 2>/dev/null)
        case $khz in '' | *[!0-9]*) ;; *) mhz=$((khz / 1000)) ;; esac ;;
esac

sample() {  # "<idle ticks> <total ticks>" of the aggregate cpu line (guest time is in user)
    read -r label user nice system idle iowait irq softirq steal rest < "$PROC/stat" || return 1
    [ "$label" = cpu ] || return 1
    echo "$idle $((user + nice + system + idle + ${iowait:-0} + ${irq:-0} + ${softirq:-0} + ${steal:-0}))"
}
first=$(sample 2>/dev/null) || fail "cannot read the cpu line of $PROC/stat"
sleep "$SAMPLE" 2>/dev/null || sleep 1  # a sleep without fractions
second=$(sample 2>/dev/null) || fail "cannot read the cpu line of $PROC/stat"
set -- $first $second
idle=$(($3 - $1)) ticks=$(($4 - $2))
if [ "$ticks" -le 0 ]; then  # no tick in between (or a canned file): the average since boot
    idle=$3 ticks=$4
fi
[ "$ticks" -gt 0 ] || fail "$PROC/stat counts no CPU time"
free=$(((total * idle + ticks / 2) / ticks))
[ "$free" -le "$total" ] || free=$total

echo "MODELNAME=\"$model\""
echo "CPUSPEED=$mhz"
echo "TOTALCPU=$total"
echo "USEDCPU=$((total - free))"
echo "FREECPU=$free"
