#!/usr/bin/env bash
# Build a Go program of conformance/ against one Asynq version: the conformance driver
# (conformance/driver/*.go) or the load generator (conformance/load/*.go, Asynq's public API only).
#
#   conformance/build.sh [vX.Y.Z] [driver|load]   (default v0.26.0 driver; prints the binary's path)
#
# Needs only Go and the Go module proxy. The driver imports Asynq's internal packages, which Go
# allows only from inside Asynq's module, so the script downloads github.com/hibiken/asynq@VERSION
# into the module cache and compiles the driver *as if* it were a file of that module
# (`go build -overlay` maps <module>/cmd/keysimdriver/*.go to our sources). Go refuses overlays
# inside the read-only module cache, so the module is first copied to a temporary directory
# (outside the repository; deleted afterwards). Nothing of Asynq is copied into this repository.
# The load generator needs only Asynq's public API; it is built the same way, so that it uses
# exactly that version's dependencies and no go.mod of ours has to pin them.
#
# Exit codes: 2 usage, 3 no Go, 4 the module cannot be downloaded, 5 the release cannot be driven
# (the reason on stderr). The binary goes to conformance/bin/VERSION/keysim<program> (git-ignored) with a stamp holding
# the hash of the version, the Go version, this script and the program's sources: a matching
# stamp skips the build.
set -euo pipefail

VERSION=${1:-v0.26.0}
PROGRAM=${2:-driver}
if [[ ! $VERSION =~ ^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]]; then  # a release or pseudo-version
    echo "build.sh: version must look like v0.26.0, got '$VERSION'" >&2
    exit 2
fi
if [[ $PROGRAM != driver && $PROGRAM != load ]]; then
    echo "build.sh: program must be driver or load, got '$PROGRAM'" >&2
    exit 2
fi
if ! command -v go >/dev/null; then
    echo "Go not found: install Go >= 1.22 and run conformance/build.sh" >&2
    exit 3
fi

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT_DIR=$HERE/bin/$VERSION
NAME=keysim$PROGRAM
SRC=$HERE/$PROGRAM
BIN=$OUT_DIR/$NAME
STAMP=$BIN.stamp
export GOTOOLCHAIN=local GOFLAGS=-mod=mod

# The driver also adds conformance/components/*.go to Asynq's root package (entry points into
# its server components); the load generator needs none.
SHIM=()
if [[ $PROGRAM == driver ]]; then SHIM=("$HERE"/components/*.go); fi

HASH=$( (echo "$VERSION"; go env GOVERSION; cat "$HERE/build.sh" "$SRC"/*.go "${SHIM[@]}") \
        | sha256sum | cut -d' ' -f1)
if [[ -x $BIN && -f $STAMP && $(cat "$STAMP") == "$HASH" ]]; then
    echo "$BIN"
    exit 0
fi

INFO=$(go mod download -json "github.com/hibiken/asynq@$VERSION") || {
    echo "build.sh: could not download github.com/hibiken/asynq@$VERSION" >&2
    exit 4
}
DIR=$(printf '%s\n' "$INFO" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
if [[ -z $DIR || ! -f $DIR/internal/rdb/rdb.go ]]; then
    echo "build.sh: github.com/hibiken/asynq@$VERSION has no internal/rdb (module dir: '$DIR')" >&2
    exit 4
fi

WORK=$(mktemp -d)
trap 'chmod -R u+w "$WORK"; rm -rf "$WORK"' EXIT
MOD=$WORK/asynq
cp -R "$DIR" "$MOD"
chmod -R u+w "$MOD"

# Before v0.22.0 active tasks were tracked by a `deadlines` zset, not a lease: a key layout the
# model does not describe, so the driver is not built (exit 5, the reason on stderr).
if [[ $PROGRAM == driver ]] && ! grep -q 'func (r \*RDB) ListLeaseExpired(' "$DIR/internal/rdb/rdb.go"; then
    echo "build.sh: github.com/hibiken/asynq@$VERSION has no task lease (RDB.ListLeaseExpired;" \
         "active tasks tracked by the deadlines zset): the model describes the lease layout of v0.22.0+" >&2
    exit 5
fi

# The API generation decides which compatibility files take part (build tags in driver/*.go).
TAGS=()
if grep -q 'github.com/go-redis/redis/v8' "$DIR/go.mod"; then TAGS+=(keysim_redis_v8); fi
if grep -q 'DeleteExpiredCompletedTasks(qname string) error' "$DIR/internal/rdb/rdb.go"; then
    TAGS+=(keysim_janitor_nobatch)
fi
if ! grep -q 'func (r \*RDB) AddToGroup(' "$DIR/internal/rdb/rdb.go"; then
    TAGS+=(keysim_nogroups)  # task groups and aggregation arrived in v0.23.0
fi

{
    printf '{"Replace": {'
    sep=""
    for src in "$SRC"/*.go; do
        printf '%s"%s": "%s"' "$sep" "$MOD/cmd/$NAME/$(basename "$src")" "$src"
        sep=", "
    done
    # The components shim needs the server components of v0.23.0 on (task groups arrived with
    # them); older releases build without it (driver/components.go has the matching tag).
    if [[ ! " ${TAGS[*]:-} " == *" keysim_nogroups "* ]]; then
        for src in "${SHIM[@]}"; do
            printf '%s"%s": "%s"' "$sep" "$MOD/$(basename "$src")" "$src"
        done
    fi
    printf '}}\n'
} >"$WORK/overlay.json"

TAG_LIST=$(IFS=,; echo "${TAGS[*]:-}")
(cd "$MOD" && go build -overlay="$WORK/overlay.json" -tags="$TAG_LIST" \
    -trimpath -o "$WORK/$NAME" "./cmd/$NAME") >&2
mkdir -p "$OUT_DIR"
mv "$WORK/$NAME" "$BIN"
echo "$HASH" >"$STAMP"
echo "$BIN"
