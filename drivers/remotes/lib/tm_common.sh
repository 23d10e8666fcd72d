# Shared helpers of the transfer-manager drivers (tm/ssh, tm/shared, tm/qcow2). POSIX sh;
# sourced by every action with
#     . "$(dirname "$0")/../../lib/tm_common.sh"
#
# TM actions run ON THE FRONT-END (as OpenNebula's do) and reach hosts with ssh. Arguments
# are OpenNebula's: `host:path` split at the first `:`; a path with no host (or an http(s)
# URL) is on the front-end. The VM document on stdin is not used.
#
# Hosts. Every command on a host goes through `run_on HOST CMD ARGS...`, which quotes each
# word for the remote shell: paths are never pasted into command text (they may hold
# spaces or quotes). Remote logic is a fixed `sh -c 'script' sh ARGS...` text with the
# values in $1, $2... The host names `localhost`, `127.0.0.1`, the front-end's own name
# (`uname -n`, what Nubo writes in transfer lines for the front-end) and $NUBO_FRONTEND
# are the front-end itself: their commands run locally, without ssh.
#
# Environment:
#   NUBO_SSH_CONFIG   ssh/scp get `-F $NUBO_SSH_CONFIG` (e.g. the lab's ssh_config)
#   NUBO_FRONTEND     one more name of the front-end
#   TMPDIR            where downloads and decompressed images wait (default /tmp)
#
# Output: log lines on stderr with INFO:/ERROR: prefixes; on failure the message between
# the `ERROR MESSAGE --8<------` / `ERROR MESSAGE ------>8--` markers and a non-zero exit.

PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
export PATH
TM_NAME="tm/$(basename "$(dirname "$0")")/$(basename "$0")"
exec </dev/null  # the VM document: unused, and ssh must not swallow it

# --- logging and failures -------------------------------------------------------------

log_info() { printf 'INFO: %s: %s\n' "$TM_NAME" "$*" >&2; }
log_error() { printf 'ERROR: %s: %s\n' "$TM_NAME" "$*" >&2; }
log_debug() { printf 'DEBUG: %s: %s\n' "$TM_NAME" "$*" >&2; }

# error_message MSG: MSG between the markers, as the runner reads a failure
error_message() {
    printf '%s\n%s\n%s\n' "ERROR MESSAGE --8<------" "$*" "ERROR MESSAGE ------>8--" >&2
}

# fail MSG: stop the action with MSG as its error
fail() {
    error_message "$*"
    exit 1
}

TM_TMP=$(mktemp -d "${TMPDIR:-/tmp}/nubo-tm.XXXXXX") || fail "cannot create a temporary dir"
TM_ERR=$TM_TMP/err  # stderr of the last run_on
trap 'rm -rf "$TM_TMP"' EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# last_lines FILE: the last lines of FILE on one line ("" when empty), without the noise of
# ssh's fd-passing proxies (ProxyUseFdpass)
last_lines() {
    grep -v -e '^mm_receive_fd: ' "$1" 2>/dev/null | tail -n 3 | tr '\r\n' '  ' |
        sed 's/  */ /g; s/ *$//'
}

# --- quoting and hosts ------------------------------------------------------------------

# quote WORD: WORD in single quotes for a POSIX shell ('it'"'"'s')
quote() {
    _q=$(printf '%s.' "$1" | sed "s/'/'\"'\"'/g")
    printf "'%s'" "${_q%.}"
}

# quote_all WORDS...: each word quoted, separated by spaces
quote_all() {
    _qa=""
    for _w in "$@"; do
        _qa="$_qa $(quote "$_w")"
    done
    printf '%s' "${_qa# }"
}

# is_local HOST: HOST is the front-end
is_local() {
    case $1 in
        localhost | 127.0.0.1 | "$(uname -n)") return 0 ;;
    esac
    [ -n "${NUBO_FRONTEND:-}" ] && [ "$1" = "$NUBO_FRONTEND" ]
}

# ssh_to HOST COMMAND_TEXT: ssh with the configured options
ssh_to() {
    if [ -n "${NUBO_SSH_CONFIG:-}" ]; then
        ssh -F "$NUBO_SSH_CONFIG" -o BatchMode=yes -- "$1" "$2"
    else
        ssh -o BatchMode=yes -- "$1" "$2"
    fi
}

# run_on HOST CMD ARGS...: run on HOST (locally for the front-end); stdin and stdout are
# the caller's, stderr goes to $TM_ERR. Returns CMD's status (255: unreachable).
run_on() {
    _host=$1
    shift
    if is_local "$_host"; then
        "$@" 2>"$TM_ERR"
    else
        ssh_to "$_host" "$(quote_all "$@")" 2>"$TM_ERR"
    fi
}

# why_failed HOST RC WHAT: the message for a failed run_on
why_failed() {
    _why=$(last_lines "$TM_ERR")
    if [ "$2" = 255 ] && ! is_local "$1"; then
        printf '%s: cannot reach host %s: %s' "$3" "$1" "${_why:-ssh exit code 255}"
    else
        printf '%s: %s' "$3" "${_why:-exit code $2}"
    fi
}

# exec_on HOST WHAT CMD ARGS...: run_on, and stop with "WHAT: <why>" if it fails
exec_on() {
    _eo_host=$1
    _eo_what=$2
    shift 2
    if run_on "$_eo_host" "$@"; then
        return 0
    else
        _eo_rc=$?
    fi
    fail "$(why_failed "$_eo_host" "$_eo_rc" "$_eo_what")"
}

# exec_and_log WHAT CMD ARGS...: a front-end command; stop with "WHAT: <why>" on failure
exec_and_log() {
    _el_what=$1
    shift
    exec_on localhost "$_el_what" "$@"
}

# sh_on HOST WHAT SCRIPT ARGS...: run a fixed sh script on HOST with ARGS as $1...
sh_on() {
    _so_host=$1
    _so_what=$2
    _so_script=$3
    shift 3
    exec_on "$_so_host" "$_so_what" sh -c "PATH=\"\$PATH:/usr/sbin:/sbin\"; set -eu; $_so_script" sh "$@"
}

# --- arguments --------------------------------------------------------------------------

# split_location ARG: sets LOC_HOST and LOC_PATH ("host:path"; a bare path is the front-end's)
split_location() {
    case ${1%%/*} in
        *:*) LOC_HOST=${1%%:*} LOC_PATH=${1#*:} ;;
        *) LOC_HOST=$(uname -n) LOC_PATH=$1 ;;
    esac
    case $LOC_HOST in
        "" | -*) fail "invalid host in '$1'" ;;
    esac
    [ -n "$LOC_PATH" ] || fail "no path in '$1'"
}

# url_of ARG: prints the http(s) URL ARG is (possibly behind a front-end prefix:
# `fe:http://...`); fails for anything else
url_of() {
    case $1 in
        http://* | https://*) printf '%s' "$1"; return 0 ;;
    esac
    case ${1#*:} in
        http://* | https://*) printf '%s' "${1#*:}"; return 0 ;;
    esac
    return 1
}

# check_size VALUE NAME: VALUE is a whole number of MB
check_size() {
    case $1 in
        "" | *[!0-9]*) fail "$2 must be a size in MB, not '$1'" ;;
    esac
}

# check_path PATH: refuse paths whose removal would be a disaster
check_path() {
    case $1 in
        /*) ;;
        *) fail "refusing the path '$1': not absolute" ;;
    esac
    case $1 in
        */.. | */../*) fail "refusing the path '$1'" ;;
    esac
    case $(printf '%s' "$1" | tr -d '/.') in
        "") fail "refusing the path '$1'" ;;
    esac
}

# --- images -----------------------------------------------------------------------------

# magic FILE: the first 4 bytes in hex (1f8b.... gzip, 514649fb qcow2)
magic() {
    od -An -tx1 -N4 -- "$1" 2>/dev/null | tr -d ' \n'
}

# fetch_source SRC: sets IMAGE to a front-end file holding the image, uncompressed.
# URLs are downloaded by the front-end (curl, else wget); gzip is found by its magic.
fetch_source() {
    if url=$(url_of "$1"); then
        log_info "downloading $url"
        if command -v curl >/dev/null 2>&1; then
            exec_and_log "cannot download $url" curl -fsSL --retry 2 -o "$TM_TMP/download" "$url"
        else
            exec_and_log "cannot download $url" wget -q -O "$TM_TMP/download" "$url"
        fi
        IMAGE=$TM_TMP/download
    else
        split_location "$1"
        is_local "$LOC_HOST" || fail "the source $1 is not on the front-end"
        [ -f "$LOC_PATH" ] || fail "the source $LOC_PATH does not exist on the front-end"
        IMAGE=$LOC_PATH
    fi
    case $(magic "$IMAGE") in
        1f8b*)
            log_info "$1 is gzip-compressed: decompressing"
            gzip -dc <"$IMAGE" >"$TM_TMP/image" 2>"$TM_ERR" ||
                fail "cannot decompress $1: $(last_lines "$TM_ERR")"
            IMAGE=$TM_TMP/image
            ;;
    esac
}

# Host-side script: grow the image $1 to $2 MB (qcow2: qemu-img resize, else truncate);
# never shrinks.
GROW_SCRIPT='f=$1; want=$(($2 * 1048576))
if [ "$(od -An -tx1 -N4 -- "$f" | tr -d " \n")" = 514649fb ]; then
    have=$(qemu-img info -f qcow2 --output=json "$f" | sed -n "s/.*\"virtual-size\": *\([0-9]*\).*/\1/p" | head -n 1)
    [ "$have" -ge "$want" ] || qemu-img resize -q -f qcow2 "$f" "$want"
else
    truncate -s ">$want" "$f"
fi'

# grow HOST PATH SIZE: grow the image when SIZE (MB) is given
grow() {
    [ -n "${3:-}" ] || return 0
    check_size "$3" SIZE
    sh_on "$1" "cannot resize $1:$2 to $3 MB" "$GROW_SCRIPT" "$2" "$3"
}

# send FILE HOST PATH: copy a front-end file to HOST:PATH (see copy_between)
send() {
    copy_between "$(uname -n)" "$1" "$2" "$3"
}

# --- the actions every driver shares ----------------------------------------------------

# tm_mkimage SIZE FORMAT host:DST: a sparse file of SIZE MB, then formatted
#   raw: left empty; qcow2: qemu-img create; swap: mkswap; else mkfs -t FORMAT
tm_mkimage() {
    [ $# -ge 3 ] || fail "usage: $TM_NAME SIZE FORMAT host:DST"
    check_size "$1" SIZE
    case $2 in
        "" | *[!A-Za-z0-9_.]*) fail "invalid format '$2'" ;;
    esac
    split_location "$3"
    check_path "$LOC_PATH"
    log_info "creating a $1 MB $2 image at $LOC_HOST:$LOC_PATH"
    # shellcheck disable=SC2016
    sh_on "$LOC_HOST" "cannot create a $2 image at $LOC_HOST:$LOC_PATH" '
f=$1; mb=$2; fmt=$3
mkdir -p "$(dirname "$f")"
rm -f -- "$f"
case $fmt in
    qcow2) qemu-img create -q -f qcow2 "$f" "${mb}M" ;;
    raw) truncate -s "${mb}M" "$f" ;;
    swap) truncate -s "${mb}M" "$f"; chmod 600 "$f"; mkswap "$f" >/dev/null ;;
    *)
        command -v "mkfs.$fmt" >/dev/null 2>&1 || { echo "mkfs.$fmt not found" >&2; exit 1; }
        truncate -s "${mb}M" "$f"
        case $fmt in
            ext2 | ext3 | ext4) mkfs -t "$fmt" -q -F "$f" ;;
            *) mkfs -t "$fmt" "$f" >/dev/null ;;
        esac ;;
esac' "$LOC_PATH" "$1" "$2"
}

# tm_context CONTEXT_SH [FILES...] host:DST: an ISO 9660 CD (Joliet + Rock Ridge, volume
# CONTEXT) built on the front-end with context.sh and FILES, copied to the host
tm_context() {
    [ $# -ge 2 ] || fail "usage: $TM_NAME CONTEXT_SH [FILES...] host:DST"
    mkdir "$TM_TMP/iso"
    n=$#
    i=0
    for arg in "$@"; do
        i=$((i + 1))
        if [ "$i" = "$n" ]; then
            split_location "$arg"
            check_path "$LOC_PATH"
            break
        fi
        split_location "$arg"
        is_local "$LOC_HOST" || fail "context file $arg is not on the front-end"
        [ -f "$LOC_PATH" ] || fail "context file $LOC_PATH does not exist on the front-end"
        if [ "$i" = 1 ]; then
            name=context.sh
        else
            name=$(basename "$LOC_PATH")
        fi
        cp -- "$LOC_PATH" "$TM_TMP/iso/$name"
    done
    command -v genisoimage >/dev/null 2>&1 || fail "genisoimage not found on the front-end"
    exec_and_log "cannot build the context CD" \
        genisoimage -quiet -o "$TM_TMP/context.iso" -V CONTEXT -J -R "$TM_TMP/iso"
    log_info "context CD with $(ls "$TM_TMP/iso" | tr '\n' ' ')to $LOC_HOST:$LOC_PATH"
    send "$TM_TMP/context.iso" "$LOC_HOST" "$LOC_PATH"
}

# tm_delete host:PATH: rm -rf PATH on the host (nothing there is fine)
tm_delete() {
    [ $# -ge 1 ] || fail "usage: $TM_NAME host:PATH"
    split_location "$1"
    check_path "$LOC_PATH"
    log_info "deleting $LOC_HOST:$LOC_PATH"
    exec_on "$LOC_HOST" "cannot delete $LOC_HOST:$LOC_PATH" rm -rf -- "$LOC_PATH"
}

# Host-side script: what is at $1 ("dir", "file" or "none")
KIND_SCRIPT='if [ -d "$1" ] && [ ! -L "$1" ]; then echo dir
elif [ -e "$1" ] || [ -L "$1" ]; then echo file
else echo none; fi'

# kind_on HOST PATH: prints dir, file or none (use as `k=$(kind_on ...) || exit`)
kind_on() {
    sh_on "$1" "cannot look at $1:$2" "$KIND_SCRIPT" "$2"
}

# same_storage SRC_HOST DST_HOST PATH: a marker written at PATH (a dir, or a file's dir) on
# SRC_HOST shows up on DST_HOST: both see one shared store, there is nothing to move
same_storage() {
    _kind=$(kind_on "$1" "$3") || exit 1
    if [ "$_kind" = dir ]; then _dir=$3; else _dir=$(dirname "$3"); fi
    _mark=".nubo-mv-$$-$(od -An -tx1 -N6 /dev/urandom | tr -d ' \n')"
    sh_on "$1" "cannot write to $1:$_dir" ': > "$1/$2"' "$_dir" "$_mark"
    _seen=$(sh_on "$2" "cannot look at $2:$_dir" '[ -e "$1/$2" ] && echo yes || echo no' \
        "$_dir" "$_mark") || exit 1
    sh_on "$1" "cannot clean $1:$_dir" 'rm -f -- "$1/$2"' "$_dir" "$_mark"
    [ "$_seen" = yes ]
}

# Host-side script: unpack the tar stream on stdin at $1 ($2: dir, merged into $1; file:
# unpacked next to $1 as $3, then renamed)
UNPACK_SCRIPT='d=$1
if [ "$2" = dir ]; then mkdir -p "$d"; exec tar -C "$d" -xf -; fi
mkdir -p "$(dirname "$d")"
t=$(mktemp -d "$(dirname "$d")/.nubo-tm.XXXXXX")
if tar -C "$t" -xf - && mv -f -- "$t/$3" "$d"; then rmdir "$t"; else rm -rf "$t"; exit 1; fi'

# copy_between SRC_HOST SRC DST_HOST DST [KIND]: copy a file or a directory tree with tar
# (sparse files stay sparse), streamed through the front-end; a directory is merged into
# DST. KIND (dir or file) saves asking the source host what SRC is.
copy_between() {
    if [ -n "${5:-}" ]; then
        _kind=$5
    else
        _kind=$(kind_on "$1" "$2") || exit 1
    fi
    case $_kind in
        dir) _from=$2 _name=. ;;
        file) _from=$(dirname "$2") _name=$(basename "$2") ;;
        *) fail "$1:$2 does not exist" ;;
    esac
    {
        TM_ERR=$TM_TMP/err.src
        if run_on "$1" tar -C "$_from" -cSf - -- "$_name"; then
            echo 0 >"$TM_TMP/rc.src"
        else
            echo $? >"$TM_TMP/rc.src"
        fi
    } | {
        TM_ERR=$TM_TMP/err.dst
        if run_on "$3" sh -c "$UNPACK_SCRIPT" sh "$4" "$_kind" "$_name"; then
            echo 0 >"$TM_TMP/rc.dst"
        else
            echo $? >"$TM_TMP/rc.dst"
        fi
    }
    # the reader's failure first when the writer only lost its pipe (SIGPIPE: 141)
    _rc=$(cat "$TM_TMP/rc.src")
    if [ "$_rc" != 0 ] && [ "$_rc" != 141 ]; then
        TM_ERR=$TM_TMP/err.src
        fail "$(why_failed "$1" "$_rc" "cannot read $1:$2")"
    fi
    _rc_dst=$(cat "$TM_TMP/rc.dst")
    if [ "$_rc_dst" != 0 ]; then
        TM_ERR=$TM_TMP/err.dst
        fail "$(why_failed "$3" "$_rc_dst" "cannot write $3:$4")"
    fi
    [ "$_rc" = 0 ] || fail "cannot read $1:$2: broken pipe"
}

# move_between SRC_HOST SRC DST_HOST DST: mv for ssh-like drivers. Nothing to do when SRC
# and DST are the same place, or one shared store seen at the same path; done already when
# only DST exists; else copy_between, then SRC is removed.
move_between() {
    if [ "$2" = "$4" ]; then
        if [ "$1" = "$3" ] || { is_local "$1" && is_local "$3"; }; then
            log_info "$1:$2 is already in place"
            return 0
        fi
    fi
    check_path "$2"
    check_path "$4"
    _src_kind=$(kind_on "$1" "$2") || exit 1
    if [ "$_src_kind" = none ]; then
        _dst_kind=$(kind_on "$3" "$4") || exit 1
        [ "$_dst_kind" != none ] || fail "$1:$2 does not exist"
        log_info "$3:$4 is there and $1:$2 is gone: moved already"
        return 0
    fi
    if [ "$2" = "$4" ] && same_storage "$1" "$3" "$2"; then
        log_info "$1:$2 and $3:$4 are one shared store: nothing to move"
        return 0
    fi
    log_info "moving $1:$2 to $3:$4"
    copy_between "$1" "$2" "$3" "$4" "$_src_kind"
    exec_on "$1" "moved, but cannot remove $1:$2" rm -rf -- "$2"
}
