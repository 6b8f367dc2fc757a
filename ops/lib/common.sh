# shellcheck shell=bash
# Helpers shared by the ops/ scripts (sourced, never run). Conventions:
#   - every change goes through `run` (or an explicit DRY_RUN branch), so
#     --dry-run prints the exact plan and touches nothing;
#   - secrets never reach argv, the terminal or a log: they move through files
#     and stdin only, and `run` is never handed one;
#   - every step says "ok" (already as wanted) or "change" (did / would do),
#     and CHANGES counts the changes, so "re-running changes nothing" is visible.

DRY_RUN=${DRY_RUN:-0}
CHANGES=0
# Filesystem root for file installs; "/" on a real machine, a temp dir in tests.
ROOT=${ROOT:-/}

_prog() { basename -- "$0"; }

die() {
    printf '%s: error: %s\n' "$(_prog)" "$*" >&2
    exit 1
}

warn() { printf '%s: warning: %s\n' "$(_prog)" "$*" >&2; }

info() { printf '%s\n' "$*"; }

step() { printf '\n== %s\n' "$*"; }

ok() { printf '  ok      %s\n' "$*"; }

# Report a change; in dry-run mode phrase it as a plan.
change() {
    CHANGES=$((CHANGES + 1))
    if [[ $DRY_RUN == 1 ]]; then
        printf '  would   %s\n' "$*"
    else
        printf '  change  %s\n' "$*"
    fi
}

skip() { printf '  skip    %s\n' "$*"; }

# Print a command shell-quoted.
show_cmd() {
    local out='' a
    for a in "$@"; do
        out+=$(printf '%q ' "$a")
    done
    printf '%s' "${out% }"
}

# Run a command, or print it in dry-run mode. Never pass secrets as arguments.
run() {
    if [[ $DRY_RUN == 1 ]]; then
        printf '          + %s\n' "$(show_cmd "$@")"
        return 0
    fi
    printf '          + %s\n' "$(show_cmd "$@")"
    "$@"
}

# Path under ROOT: rootpath /etc/x -> $ROOT/etc/x (or /etc/x when ROOT=/).
rootpath() {
    local p=$1
    if [[ $ROOT == / ]]; then
        printf '%s' "$p"
    else
        printf '%s%s' "${ROOT%/}" "$p"
    fi
}

require_cmd() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || die "'$c' is required but not installed (apt-get install the package that provides it)"
    done
}

is_root() { [[ $(id -u) -eq 0 ]]; }

# True when systemd runs this machine (PID 1), i.e. systemctl can act.
have_systemd() { [[ -d /run/systemd/system ]]; }

pid1_name() { cat /proc/1/comm 2>/dev/null || echo unknown; }

# A strong random secret: 32 random bytes, base64 without '/', '+' and '='
# (about 256 bits; safe in URLs, TOML and shell without quoting).
gen_secret() {
    local s
    s=$(openssl rand -base64 48 | tr -d '\n/+=')
    printf '%s' "${s:0:43}"
}

# ensure_secret FILE OWNER GROUP MODE: create FILE with a generated secret when
# it is missing or empty; fix owner and mode when they drift. Never prints it.
ensure_secret() {
    local file=$1 owner=$2 group=$3 mode=$4 dir
    dir=$(dirname -- "$file")
    if [[ -s $file ]]; then
        ok "secret $file present (not shown)"
    else
        change "generate secret $file (mode $mode, $owner:$group)"
        if [[ $DRY_RUN == 0 ]]; then
            [[ -d $dir ]] || install -d -m 0700 -- "$dir"
            (
                umask 077
                local tmp
                tmp=$(mktemp "$dir/.secret.XXXXXX")
                gen_secret >"$tmp"
                mv -f -- "$tmp" "$file"
            )
        fi
    fi
    ensure_owner_mode "$file" "$owner" "$group" "$mode"
}

# ensure_owner_mode PATH OWNER GROUP MODE (mode in octal, e.g. 0640).
ensure_owner_mode() {
    local path=$1 owner=$2 group=$3 mode=$4 cur_mode cur_owner
    if [[ ! -e $path ]]; then
        [[ $DRY_RUN == 1 ]] && return 0
        die "internal: $path does not exist"
    fi
    getent group "$group" >/dev/null 2>&1 || {
        warn "group '$group' does not exist (yet); leaving $path group as is"
        group=$(stat -c %G -- "$path")
    }
    cur_mode=$(stat -c %a -- "$path")
    cur_owner=$(stat -c %U:%G -- "$path")
    if [[ $cur_owner != "$owner:$group" ]]; then
        change "chown $owner:$group $path (was $cur_owner)"
        run chown "$owner:$group" -- "$path"
    fi
    if [[ $((8#$cur_mode)) -ne $((8#$mode)) ]]; then
        change "chmod $mode $path (was 0$cur_mode)"
        run chmod "$mode" -- "$path"
    fi
}

# ensure_dir DIR OWNER GROUP MODE
ensure_dir() {
    local dir=$1 owner=$2 group=$3 mode=$4
    if [[ -d $dir ]]; then
        ensure_owner_mode "$dir" "$owner" "$group" "$mode"
    else
        change "create directory $dir ($owner:$group $mode)"
        run install -d -m "$mode" -o "$owner" -g "$(getent group "$group" >/dev/null 2>&1 && echo "$group" || echo root)" -- "$dir"
    fi
}

# ensure_file SRC DEST OWNER GROUP MODE: install SRC as DEST when the content
# differs; returns 0 when it changed (or would), 1 when it was already right.
ensure_file() {
    local src=$1 dest=$2 owner=$3 group=$4 mode=$5 changed=1
    if [[ -f $dest ]] && cmp -s -- "$src" "$dest"; then
        ok "$dest up to date"
    else
        if [[ -f $dest ]]; then
            change "update $dest"
            if [[ $DRY_RUN == 1 ]]; then
                diff -u -- "$dest" "$src" | sed 's/^/          | /' | head -n 40 || true
            fi
        else
            change "install $dest"
        fi
        # Owner and group at once: no moment where the reader (e.g. the
        # mosquitto group) is locked out of a file it needs.
        if getent group "$group" >/dev/null 2>&1; then
            run install -D -m "$mode" -o "$owner" -g "$group" -- "$src" "$dest"
        else
            run install -D -m "$mode" -- "$src" "$dest"
        fi
        changed=0
    fi
    ensure_owner_mode "$dest" "$owner" "$group" "$mode"
    return $changed
}

# render TEMPLATE OUT KEY=VALUE...: replace @KEY@ placeholders; fails on any
# placeholder left over, so a template and its renderer cannot drift apart.
render() {
    local tpl=$1 out=$2 kv key val content
    shift 2
    content=$(<"$tpl")
    for kv in "$@"; do
        key=${kv%%=*}
        val=${kv#*=}
        content=${content//@"$key"@/$val}
    done
    if grep -qE '@[A-Z][A-Z0-9_]*@' <<<"$content"; then
        die "template $tpl: unreplaced placeholder(s): $(grep -oE '@[A-Z][A-Z0-9_]*@' <<<"$content" | sort -u | tr '\n' ' ')"
    fi
    printf '%s\n' "$content" >"$out"
}

# Split "a,b c" into one item per line.
split_list() {
    local item
    for item in ${1//,/ }; do
        printf '%s\n' "$item"
    done
}

valid_port() { [[ $1 =~ ^[0-9]{1,5}$ ]] && ((10#$1 >= 1 && 10#$1 <= 65535)); }

# MQTT user / device id: the topic level the bridge takes as the device id.
valid_device_name() { [[ $1 =~ ^[A-Za-z0-9_-]{1,64}$ ]]; }

# ---------------------------------------------------------------- broker ACL
# Mosquitto reads one acl_file. Ours is assembled from the parts in ACL.d/:
# 00-routes.acl, printed by `co2-bridge acl` for the configured routes
# (written by install-server.sh), then device-NAME.acl, the shared topics one
# device was granted (written by add-device.sh). A script stages the parts in
# a temp dir, changes its own part there, assembles the ACL from the stage
# (so a dry run shows the real difference) and then writes its own part.

# mqtt_acl_stage ACL STAGE: copy ACL.d/*.acl into the directory STAGE.
mqtt_acl_stage() {
    local acl=$1 stage=$2 part
    mkdir -p -- "$stage"
    for part in "$acl.d"/*.acl; do
        [[ -f $part ]] && cp -- "$part" "$stage/"
    done
    return 0
}

# assemble_mqtt_acl ACL GROUP STAGE: write ACL (0640 root:GROUP) from
# STAGE/*.acl in name order; returns 0 when it changed (or would).
assemble_mqtt_acl() {
    local acl=$1 group=$2 stage=$3 out part rc=1
    out=$(mktemp)
    {
        printf '# The ACL of the broker, assembled by ops/install-server.sh and ops/add-device.sh\n'
        printf '# from the parts in the directory %s.d; edits here are overwritten.\n' "$(basename -- "$acl")"
        while IFS= read -r part; do
            printf '\n'
            cat -- "$part"
        done < <(find "$stage" -maxdepth 1 -name '*.acl' -type f | LC_ALL=C sort)
    } >"$out"
    ensure_file "$out" "$acl" root "$group" 0640 && rc=0
    rm -f -- "$out"
    return $rc
}

# sync_file SRC DEST OWNER GROUP MODE: ensure_file, or remove DEST when SRC is
# absent. Returns 0 when it changed (or would).
sync_file() {
    local src=$1 dest=$2
    if [[ -f $src ]]; then
        ensure_file "$@"
        return
    fi
    if [[ -e $dest ]]; then
        change "remove $dest"
        run rm -f -- "$dest"
        return 0
    fi
    return 1
}

# The bridge's own client ids (co2-bridge, co2-bridge-<n> with several
# connections): a device named like one could take it over, since a device's
# client id is its user name on the broker.
is_bridge_client_id() { # NAME BRIDGE_USER
    [[ $1 =~ ^(co2-bridge|$2)(-[0-9]+)?$ ]]
}

# A systemd credential name (a file name under /run/credentials/<unit>/).
valid_credential_name() { [[ $1 =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$ ]]; }
