# Shared helpers of the datastore drivers (datastore/fs). POSIX sh, on top of tm_common.sh
# (logging, fail and the error markers, quoting, magic, tm_mkimage); sourced by every
# action with
#     . "$(dirname "$0")/../../lib/ds_common.sh"
#
# Datastore actions run ON THE FRONT-END, as OpenNebula's do. Arguments (OpenNebula 3.4):
#     <action> <b64 DS_DRIVER_ACTION_DATA> <image id>
# where the base64 text decodes to
#     <DS_DRIVER_ACTION_DATA><IMAGE>...</IMAGE><DATASTORE>...</DATASTORE></DS_DRIVER_ACTION_DATA>
# (core.documents image_xml and datastore_xml). Fields are read by ds_load with python3's
# xml.etree, the data passed in argv, never pasted into code.
#
# Environment:
#   NUBO_VAR              Nubo's data dir: always a restricted dir (with /etc and $HOME)
#   NUBO_DS_PROGRESS_MB   copies of at least this many MB (or of unknown size) log INFO
#                         progress lines (default 100; 0 = always)
#
# Output: the result on stdout; log lines on stderr (INFO:/ERROR:); on failure the message
# between the `ERROR MESSAGE --8<------` / `ERROR MESSAGE ------>8--` markers, exit 1.

. "$(dirname "$0")/../../lib/tm_common.sh"
TM_NAME="datastore/$(basename "$(dirname "$0")")/$(basename "$0")"
DS_PART=""  # the image being written; removed if the action fails
DS_GZ=""  # a downloaded gzip image being decompressed; removed at the end
trap 'rm -rf "$TM_TMP"; rm -f -- ${DS_PART:+"$DS_PART"} ${DS_GZ:+"$DS_GZ"}' EXIT

# --- the driver action data -------------------------------------------------------------

# argv: B64 OUTDIR NAME=XPATH... ; writes each field's text (stripped, "" when absent) to
# OUTDIR/NAME. XPATHs are relative to <DS_DRIVER_ACTION_DATA>.
DS_XPATH_PY='
import base64, binascii, os, sys
import xml.etree.ElementTree as ET
data, out, specs = sys.argv[1], sys.argv[2], sys.argv[3:]
try:
    raw = base64.b64decode("".join(data.split()).encode("ascii"), validate=True)
except (binascii.Error, ValueError):
    sys.exit("the driver action data is not valid base64")
try:
    root = ET.fromstring(raw)
except ET.ParseError as exc:
    sys.exit(f"the driver action data is not valid XML: {exc}")
if root.tag != "DS_DRIVER_ACTION_DATA":
    sys.exit(f"the driver action data is <{root.tag}>, not <DS_DRIVER_ACTION_DATA>")
for spec in specs:
    name, _, path = spec.partition("=")
    el = root.find(path)
    value = (el.text or "").strip() if el is not None else ""
    if "\n" in value or "\0" in value:
        sys.exit(f"{path} holds a line break")
    with open(os.path.join(out, name), "w", encoding="utf-8") as f:
        f.write(value)
'

# ds_args "$@": the action's arguments are <b64 DS_DRIVER_ACTION_DATA> <image id>
ds_args() {
    [ $# -ge 2 ] && [ -n "$1" ] || fail "usage: $TM_NAME <b64 DS_DRIVER_ACTION_DATA> <image id>"
    case $2 in
        "" | *[!0-9]*) fail "invalid image id '$2'" ;;
    esac
}

# ds_load B64 NAME=XPATH...: reads the fields of the action data (see ds_field)
ds_load() {
    _b64=$1
    shift
    mkdir "$TM_TMP/fields"
    python3 -c "$DS_XPATH_PY" "$_b64" "$TM_TMP/fields" "$@" 2>"$TM_ERR" ||
        fail "$(last_lines "$TM_ERR")"
}

# ds_field NAME: the field's text ("" when absent)
ds_field() {
    cat -- "$TM_TMP/fields/$1"
}

# ds_base_path: prints DATASTORE/BASE_PATH (else DATASTORE/TEMPLATE/BASE_PATH) without
# trailing slashes, after checking it; creates it if missing (as 3.4's set_up_datastore)
ds_base_path() {
    _bp=$(ds_field BASE_PATH)
    [ -n "$_bp" ] || _bp=$(ds_field TEMPLATE_BASE_PATH)
    [ -n "$_bp" ] || fail "the datastore has no BASE_PATH"
    while [ "${_bp%/}" != "$_bp" ] && [ "$_bp" != / ]; do _bp=${_bp%/}; done
    check_path "$_bp"
    mkdir -p -- "$_bp" 2>"$TM_ERR" ||
        fail "cannot create the datastore dir $_bp: $(last_lines "$TM_ERR")"
    printf '%s' "$_bp"
}

# The fields every action that writes an image needs (ds_load NAME=XPATH arguments)
DS_BASE_FIELDS="BASE_PATH=DATASTORE/BASE_PATH TEMPLATE_BASE_PATH=DATASTORE/TEMPLATE/BASE_PATH"

# ds_new_source BASE_PATH ID: sets DS_SOURCE to OpenNebula's name for a new image,
# BASE_PATH/<md5 of "<epoch>:<id>">, and DS_PART to the file it is written to first
# (renamed by ds_commit, removed if the action fails)
ds_new_source() {
    _md5=$(printf '%s:%s' "$(date +%s)" "$2" | md5sum | cut -c1-32)
    DS_SOURCE=$1/$_md5
    DS_PART=$1/.$_md5.part
    rm -f -- "$DS_PART"
}

# ds_commit: DS_PART becomes the image DS_SOURCE (mode 0660, as 3.4's chmod)
ds_commit() {
    chmod 0660 -- "$DS_PART"
    mv -f -- "$DS_PART" "$DS_SOURCE" 2>"$TM_ERR" ||
        fail "cannot store $DS_SOURCE: $(last_lines "$TM_ERR")"
    DS_PART=""
}

# ds_is_gzip FILE: FILE starts with gzip's magic (1f 8b)
ds_is_gzip() {
    case $(magic "$1") in
        1f8b*) return 0 ;;
    esac
    return 1
}

# --- where images come from -----------------------------------------------------------

# ds_is_url TEXT: an http(s) URL
ds_is_url() {
    case $1 in
        http://* | https://*) return 0 ;;
    esac
    return 1
}

# argv: PATH RESTRICTED SAFE ALWAYS... (RESTRICTED and SAFE: space-separated lists; each
# ALWAYS: one more restricted dir, "" ignored); prints PATH resolved when allowed, else the
# restricted dir it is under (exit 3)
DS_ALLOWED_PY='
import os, sys
path = os.path.realpath(sys.argv[1])
def under(dirs):
    for d in dirs:
        r = os.path.realpath(d).rstrip("/") + "/"
        if path + "/" == r or path.startswith(r):
            return d
    return None
bad = under(sys.argv[2].split() + [d for d in sys.argv[4:] if d])
if bad is not None and under(sys.argv[3].split()) is None:
    print(bad)
    sys.exit(3)
print(path)
'

# ds_local_source PATH: checks a front-end image file: it exists, it is a file, and it is
# not under the restricted dirs (field RESTRICTED_DIRS, $NUBO_VAR, /etc, $HOME) unless
# under the safe dirs (field SAFE_DIRS). Sets DS_REAL to PATH with symlinks resolved (what
# is then read, so a link cannot be swapped after the check).
ds_local_source() {
    case $1 in
        /*) ;;
        *) fail "the image path '$1' is neither an absolute path nor an http(s) URL" ;;
    esac
    [ -e "$1" ] || fail "the image file $1 does not exist"
    [ -f "$1" ] || fail "the image file $1 is not a regular file"
    [ -r "$1" ] || fail "the image file $1 is not readable"
    if DS_REAL=$(python3 -c "$DS_ALLOWED_PY" "$1" "$(ds_field RESTRICTED_DIRS)" \
        "$(ds_field SAFE_DIRS)" "${NUBO_VAR:-}" /etc "${HOME:-}"); then
        return 0
    elif [ $? = 3 ]; then
        log_error "not allowed to read images under $DS_REAL (RESTRICTED_DIRS)"
        fail "not allowed to use the image file $1: it is under the restricted dir" \
            "$DS_REAL and not under any SAFE_DIRS"
    else
        fail "cannot check the image file $1"
    fi
}

# The fields ds_local_source needs
DS_DIR_FIELDS="RESTRICTED_DIRS=DATASTORE/TEMPLATE/RESTRICTED_DIRS SAFE_DIRS=DATASTORE/TEMPLATE/SAFE_DIRS"

# ds_url_bytes URL: the Content-Length of a HEAD request (after redirects), "" if the
# server sends none; exits 1 (message in $TM_ERR) when the URL cannot be reached
ds_url_bytes() {
    if command -v curl >/dev/null 2>&1; then
        curl -sSIL -f --proto =http,https --proto-redir =http,https --connect-timeout 10 \
            --max-time 60 -- "$1" >"$TM_TMP/head" 2>"$TM_ERR" || return 1
    elif command -v wget >/dev/null 2>&1; then
        wget --spider -S -T 60 -t 1 -O /dev/null -- "$1" >/dev/null 2>"$TM_TMP/head" || {
            # wget's own words (failed: / ERROR ...), without the headers and chatter
            grep -E 'failed:|ERROR|unable|invalid' "$TM_TMP/head" | tail -n 1 >"$TM_ERR"
            [ -s "$TM_ERR" ] || cp -- "$TM_TMP/head" "$TM_ERR"
            return 1
        }
    else
        echo "neither curl nor wget is installed on the front-end" >"$TM_ERR"
        return 1
    fi
    tr -d '\r' <"$TM_TMP/head" | awk '
        $1 ~ /^HTTP\// { n = "" }
        tolower($1) == "content-length:" && $2 ~ /^[0-9]+$/ { n = $2 }
        END { print n }'
}

# ds_download URL FILE: GET URL into FILE (curl, else wget); errors on stderr
ds_download() {
    if command -v curl >/dev/null 2>&1; then
        curl -sSL -f --proto =http,https --proto-redir =http,https --connect-timeout 10 \
            -o "$2" -- "$1"
    elif command -v wget >/dev/null 2>&1; then
        wget -nv -T 60 -t 2 -O "$2" -- "$1"
    else
        echo "neither curl nor wget is installed on the front-end" >&2
        return 1
    fi
}

# --- copies and sizes -------------------------------------------------------------------

# ds_bytes FILE: its size in bytes (0 if it is not there yet)
ds_bytes() {
    if [ -f "$1" ]; then wc -c <"$1" | tr -d ' '; else echo 0; fi
}

# ds_mb BYTES: in MB, rounded up
ds_mb() {
    echo $((($1 + 1048575) / 1048576))
}

# ds_copy WHAT TOTAL DEST CMD ARGS...: run CMD, which writes DEST, and stop with
# "WHAT: <why>" if it fails. TOTAL is the bytes DEST will hold, "" if unknown, or ~N when
# unknown but read from N bytes (gzip). Copies of at least NUBO_DS_PROGRESS_MB (TOTAL, N or
# unknown) run in the background while DEST is measured every second: an INFO line each
# time another 10% is written (size unknown: every 10 s), and one at the end.
ds_copy() {
    _what=$1 _total=$2 _dest=$3
    shift 3
    _min=$((${NUBO_DS_PROGRESS_MB:-100} * 1048576))
    _hint=${_total#\~}
    [ "$_hint" = "$_total" ] || _total=""
    if [ -n "$_hint" ] && [ "$_hint" -lt "$_min" ]; then
        "$@" 2>"$TM_ERR" || fail "$_what: $(last_lines "$TM_ERR")"
        return 0
    fi
    "$@" 2>"$TM_ERR" &
    _pid=$!
    _shown=0 _tick=0
    while kill -0 "$_pid" 2>/dev/null; do
        sleep 1
        _tick=$((_tick + 1))
        _now=$(ds_bytes "$_dest")
        if [ -n "$_total" ] && [ "$_total" -gt 0 ]; then
            _pct=$((_now * 100 / _total))
            if [ $((_pct / 10)) -gt $((_shown / 10)) ] && [ "$_pct" -lt 100 ]; then
                log_info "$((_now / 1048576)) of $(ds_mb "$_total") MB written ($_pct%)"
                _shown=$_pct
            fi
        elif [ $((_tick % 10)) = 0 ]; then
            log_info "$((_now / 1048576)) MB written so far"
        fi
    done
    if wait "$_pid"; then
        log_info "$(ds_mb "$(ds_bytes "$_dest")") MB written (100%)"
    else
        fail "$_what: $(last_lines "$TM_ERR")"
    fi
}

# ds_qcow2_mb FILE [BACKING]: the virtual size of a qcow2 image in MB (qemu-img info);
# with BACKING=refuse, fails when the image has a backing file (it would point outside
# the datastore: the image must be self-contained)
ds_qcow2_mb() {
    command -v qemu-img >/dev/null 2>&1 ||
        fail "qemu-img is not installed on the front-end: cannot read the qcow2 image $1"
    qemu-img info -U -f qcow2 --output=json -- "$1" >"$TM_TMP/info" 2>"$TM_ERR" ||
        fail "cannot read the qcow2 image $1: $(last_lines "$TM_ERR")"
    _info=$(python3 -c '
import json, sys
with open(sys.argv[1], encoding="utf-8") as f:
    d = json.load(f)
print(d["virtual-size"], "yes" if d.get("backing-filename") else "no")
' "$TM_TMP/info") || fail "cannot read the qcow2 image $1: unexpected qemu-img output"
    if [ "${2:-}" = refuse ] && [ "${_info#* }" = yes ]; then
        fail "the qcow2 image $1 has a backing file: only self-contained images can be stored"
    fi
    ds_mb "${_info%% *}"
}

# ds_image_mb FILE [BACKING]: the size of an image in MB: qcow2 virtual size, else bytes
ds_image_mb() {
    if [ "$(magic "$1")" = 514649fb ]; then
        ds_qcow2_mb "$@"
    else
        ds_mb "$(ds_bytes "$1")"
    fi
}

# ds_gzip_mb FILE: the size of the image held by the gzip FILE, in MB (a qcow2 inside:
# its virtual size, read from the header; else the decompressed length)
ds_gzip_mb() {
    _head=$(gzip -dc -- "$1" 2>/dev/null | od -An -tx1 -N32 | tr -d ' \n')
    case $_head in
        514649fb*)
            [ ${#_head} = 64 ] || fail "$1 holds a truncated qcow2 image"
            _hex=$(printf '%s' "$_head" | cut -c49-64)
            ds_mb $((0x$_hex))
            ;;
        *)
            _bytes=$({ gzip -dc -- "$1" | wc -c | tr -d ' '; } 2>"$TM_ERR") &&
                [ -z "$(last_lines "$TM_ERR")" ] ||
                fail "cannot decompress $1: $(last_lines "$TM_ERR")"
            ds_mb "$_bytes"
            ;;
    esac
}
