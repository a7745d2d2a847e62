# shellcheck shell=bash
# What the .ci/install-*.sh tool installers share (sourced by them, not run): the tools cache, the log
# lines, the installed check against a stamp, the lock that lets one install run at a time per cache
# dir, the Go build environment and the final stamp.
#
# An installer sets, before calling the functions below:
#   STAMP, STAMP_WANTED  the stamp file and what it must say (the pins) once the install is complete;
#   ANSWER               what it prints on stdout when done (a directory or an executable);
#   ROOT, BIN            (Go builds only) the tool's cache dir and its bin dir;
# and defines have_all: true when everything is installed (executables_in ... && stamp_matches).

CACHE=${FACEPIPE_TOOLS_CACHE:-/var/cache/facepipe-tools}
LOG_NAME=$(basename "$0" .sh)
t_start=$(date +%s.%N)

log() { printf '[%s] %s\n' "$LOG_NAME" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1fs", b - a }'; }

stamp_matches() { [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$STAMP_WANTED" ]; }

executables_in() { # dir, names...: true when each name is an executable in dir
    local dir=$1 name
    shift
    for name in "$@"; do
        [ -x "$dir/$name" ] || return 1
    done
}

exit_if_installed() { # log line: when have_all holds, log it, print ANSWER and end the installer
    if have_all; then
        log "$1"
        echo "$ANSWER"
        exit 0
    fi
}

make_cache_dir() { mkdir -p "$1" 2>/dev/null || die "cannot create $1 (set FACEPIPE_TOOLS_CACHE to a writable dir)"; }

# One install at a time per cache dir: a second caller waits on the lock (fd 9, held until the
# installer exits) and then finds the tool installed by the first.
lock_install() { # dir, lock file, what the other run did (built, installed)
    make_cache_dir "$1"
    exec 9>"$2"
    flock 9
    exit_if_installed "$3 meanwhile by another run: $STAMP_WANTED"
}

# Lock ROOT and set up a Go build in it: the module and build caches live under ROOT, so a rebuild
# after a version bump reuses them; the stamp goes until the build is complete.
go_build_begin() { # GOTOOLCHAIN (empty: the caller's environment decides), a note for the log line
    command -v go >/dev/null 2>&1 || die "go is not on PATH"
    lock_install "$ROOT" "$ROOT/.lock" built
    export GOPATH=$ROOT/gopath
    export GOMODCACHE=$ROOT/gomodcache
    export GOCACHE=$ROOT/gocache
    export CGO_ENABLED=0
    # -modcacherw: the module cache stays deletable with rm -rf.
    export GOFLAGS="${GOFLAGS:-} -modcacherw"
    export GOWORK=off
    if [ -n "$1" ]; then
        export GOTOOLCHAIN=$1
    fi
    mkdir -p "$BIN"
    rm -f "$STAMP"
    log "go: $(go version)$2; cache: $ROOT; GOFLAGS=$GOFLAGS"
}

go_mod_field() { # field (Dir, GoMod), module@version: that field of `go mod download -json`
    go mod download -json "$2" | sed -n "s/^[[:space:]]*\"$1\": \"\(.*\)\",\{0,1\}\$/\1/p"
}

finish_install() { # log line: write the stamp, log the line, print ANSWER
    echo "$STAMP_WANTED" >"$STAMP"
    log "$1"
    echo "$ANSWER"
}
