#!/usr/bin/env bash
# Run an upstream-ready reproducer (conformance/upstream/DEFECT/) against Asynq's own code.
#
#   conformance/upstream.sh [--quick] [--version vX.Y.Z] DEFECT... | all
#
# DEFECT is a directory under conformance/upstream/ (bz-2, bz-12, ...). Each holds
#   repro_test.go  a test of Asynq's package internal/rdb (package rdb, Asynq's test helpers);
#   fix.go         optional: a file of package rdb whose init() replaces faulty scripts;
#   fix.patch      optional: a minimal unified diff against the module (paths a/internal/...).
# For each defect the script, on a temporary copy of github.com/hibiken/asynq@VERSION (as
# build.sh does; nothing of Asynq enters this repository):
#   1. runs the reproducer on Asynq as released: it must FAIL (a build error does not count);
#   2. applies the fix (fix.patch, then fix.go via `go test -overlay`): the reproducer must PASS;
#   3. unless --quick, runs Asynq's own `go test ./internal/rdb/...` with the fix and compares
#      its counts with the same suite without any fix (run once per call): no test may fail
#      with the fix that passed without it, and the number of passing tests must not drop.
# Tests talk to a private server ($REDIS_SERVER, default redis-server from PATH) on a free
# loopback port, through Asynq's own test flags -redis_addr/-redis_db.
# Exit status: 0 if every expectation held, 1 otherwise, 2 on bad usage, 3 if Go, the server or
# python3 is missing, 4 if the module cannot be downloaded.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
UPSTREAM=$HERE/upstream
VERSION=v0.26.0
SUITE=1
DEFECTS=()
while (($#)); do
    case $1 in
        --quick) SUITE=0 ;;
        --version) VERSION=${2:?--version needs a value}; shift ;;
        -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "upstream.sh: unknown option '$1'" >&2; exit 2 ;;
        *) DEFECTS+=("$1") ;;
    esac
    shift
done
if ((${#DEFECTS[@]} == 0)); then
    echo "usage: conformance/upstream.sh [--quick] [--version vX.Y.Z] DEFECT... | all" >&2
    exit 2
fi
if [[ ${DEFECTS[*]} == all ]]; then
    DEFECTS=()
    for dir in "$UPSTREAM"/*/; do DEFECTS+=("$(basename "$dir")"); done
fi
for defect in "${DEFECTS[@]}"; do
    if [[ ! -f $UPSTREAM/$defect/repro_test.go ]]; then
        known=$(cd "$UPSTREAM" && ls -d -- */ | tr -d / | paste -sd' ' -)
        echo "upstream.sh: no reproducer conformance/upstream/$defect/repro_test.go (known: $known)" >&2
        exit 2
    fi
done
REDIS_SERVER=${REDIS_SERVER:-redis-server}
for tool in go "$REDIS_SERVER" python3; do
    if ! command -v "$tool" >/dev/null; then
        echo "upstream.sh: $tool not found on PATH" >&2
        exit 3
    fi
done
export GOTOOLCHAIN=local GOFLAGS=-mod=mod

INFO=$(go mod download -json "github.com/hibiken/asynq@$VERSION") || {
    echo "upstream.sh: could not download github.com/hibiken/asynq@$VERSION" >&2
    exit 4
}
MODULE_DIR=$(printf '%s\n' "$INFO" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
if [[ -z $MODULE_DIR || ! -d $MODULE_DIR/internal/rdb ]]; then
    echo "upstream.sh: github.com/hibiken/asynq@$VERSION has no internal/rdb" >&2
    exit 4
fi

WORK=$(mktemp -d)
REDIS_PID=
cleanup() {
    if [[ -n $REDIS_PID ]]; then kill "$REDIS_PID" 2>/dev/null || true; wait "$REDIS_PID" 2>/dev/null || true; fi
    chmod -R u+w "$WORK" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$REDIS_SERVER" --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$WORK" --logfile "$WORK/redis.log" &
REDIS_PID=$!
server_up() { python3 -c "import socket; socket.create_connection(('127.0.0.1', $PORT), 0.1)" 2>/dev/null; }
for _ in $(seq 50); do
    if server_up; then break; fi
    sleep 0.1
done
if ! server_up; then
    echo "upstream.sh: $REDIS_SERVER did not start on 127.0.0.1:$PORT:" >&2
    tail -5 "$WORK/redis.log" >&2 || true
    exit 3
fi
REDIS_ARGS=(-args "-redis_addr=127.0.0.1:$PORT" -redis_db=15)

# fresh_copy NAME: a writable copy of the module at $WORK/NAME; prints its path.
fresh_copy() {
    local dir=$WORK/$1
    cp -R "$MODULE_DIR" "$dir"
    chmod -R u+w "$dir"
    echo "$dir"
}

# write_overlay FILE MOD SRC...: an overlay mapping each SRC into MOD/internal/rdb as upstream_<name>.
write_overlay() {
    local file=$1 mod=$2 sep="" src
    shift 2
    {
        printf '{"Replace": {'
        for src in "$@"; do
            printf '%s"%s": "%s"' "$sep" "$mod/internal/rdb/upstream_$(basename "$src")" "$src"
            sep=", "
        done
        printf '}}\n'
    } >"$file"
}

# go_test MOD OVERLAY JSON_OUT [go test args...]: go test -json of internal/rdb (exit status ignored).
go_test() {
    local mod=$1 overlay=$2 out=$3
    shift 3
    (cd "$mod" && go test -count=1 -p 1 -json -overlay="$overlay" "$@" ./internal/rdb/... \
        "${REDIS_ARGS[@]}") >"$out" 2>"$out.stderr" || true
}

# summarize JSON_OUT [TEST...]: prints "passed failed skipped ran failed_names" for the top-level
# tests (all, or only the named ones); ran is 0 when the package did not build or ran no test.
summarize() {
    python3 - "$@" <<'EOF'
import json, sys
path, names = sys.argv[1], set(sys.argv[2:])
result, build_ok = {}, True
with open(path) as stream:
    for line in stream:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        test = event.get("Test")
        if "[build failed]" in event.get("Output", "") or event.get("Action") == "build-fail":
            build_ok = False
        if test and "/" not in test and event.get("Action") in ("pass", "fail", "skip"):
            if not names or test in names:
                result[test] = event["Action"]
counts = [sum(1 for v in result.values() if v == k) for k in ("pass", "fail", "skip")]
failed = ",".join(sorted(t for t, v in result.items() if v == "fail")) or "-"
print(*counts, int(build_ok and bool(result)), failed)
EOF
}

show_output() {
    python3 - "$1" <<'EOF'
import json, sys
with open(sys.argv[1]) as stream:
    for line in stream:
        try:
            event = json.loads(line)
        except ValueError:
            print(line, end="")
            continue
        if event.get("Action") in ("output", "build-output"):
            print("      " + event["Output"], end="")
EOF
    sed 's/^/      /' "$1.stderr"
}

# failure_messages JSON_OUT: the failing tests' own messages (t.Errorf lines), indented.
failure_messages() {
    python3 - "$1" <<'EOF'
import json, sys
with open(sys.argv[1]) as stream:
    for line in stream:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        text = event.get("Output", "")
        if event.get("Action") == "output" and event.get("Test") and text.startswith("    "):
            print("      " + text.strip())
EOF
}

elapsed() { echo "$((SECONDS - $1)) s"; }

STATUS=0
fail() { echo "  FAILED: $*"; STATUS=1; }

BASELINE=
if ((SUITE)); then
    start=$SECONDS
    clean=$(fresh_copy clean)
    echo '{"Replace": {}}' >"$WORK/empty.json"
    go_test "$clean" "$WORK/empty.json" "$WORK/baseline.json"
    read -r b_pass b_fail b_skip b_ok b_failed <<<"$(summarize "$WORK/baseline.json")"
    if ((b_ok == 0)); then
        echo "Asynq $VERSION internal/rdb suite did not build or run:"; show_output "$WORK/baseline.json"
        exit 1
    fi
    BASELINE="$b_pass passed, $b_fail failed, $b_skip skipped"
    echo "Asynq $VERSION internal/rdb suite without fix: $BASELINE ($(elapsed $start))"
    [[ $b_failed != - ]] && echo "  failing without any fix: $b_failed"
fi

for defect in "${DEFECTS[@]}"; do
    dir=$UPSTREAM/$defect
    repro=$dir/repro_test.go
    mapfile -t tests < <(sed -n 's/^func \(Test[A-Za-z0-9_]*\)(t \*testing\.T).*/\1/p' "$repro")
    if ((${#tests[@]} == 0)); then
        echo "== $defect"; fail "repro_test.go declares no Test function"; continue
    fi
    run_re="^($(IFS='|'; echo "${tests[*]}"))\$"
    fixes=()
    [[ -f $dir/fix.go ]] && fixes+=("$dir/fix.go")
    echo "== $defect (Asynq $VERSION): ${tests[*]}"
    mod=$(fresh_copy "$defect")

    start=$SECONDS
    write_overlay "$WORK/$defect.repro.json" "$mod" "$repro"
    go_test "$mod" "$WORK/$defect.repro.json" "$WORK/$defect.without.json" -run "$run_re"
    read -r pass nfail skip ok failed <<<"$(summarize "$WORK/$defect.without.json" "${tests[@]}")"
    if ((ok == 0)); then
        fail "reproducer did not build or run without the fix"; show_output "$WORK/$defect.without.json"
    elif ((nfail == 0)); then
        fail "reproducer passes on Asynq $VERSION without the fix ($pass passed, $skip skipped)"
    else
        echo "  without fix: reproducer FAILS as expected ($nfail of ${#tests[@]} failing: $failed; $(elapsed $start))"
        failure_messages "$WORK/$defect.without.json"
    fi

    if [[ -f $dir/fix.patch ]]; then
        if ! (cd "$mod" && patch -p1 --forward --quiet <"$dir/fix.patch"); then
            fail "fix.patch does not apply to Asynq $VERSION"; continue
        fi
        changed_tests=$(sed -n 's|^+++ b/\(.*_test\.go\).*|\1|p' "$dir/fix.patch" | paste -sd, -)
        [[ -n $changed_tests ]] && echo "  note: fix.patch also changes Asynq's own tests: $changed_tests"
    fi
    if ((${#fixes[@]} == 0)) && [[ ! -f $dir/fix.patch ]]; then
        fail "no fix.go or fix.patch"; continue
    fi
    start=$SECONDS
    write_overlay "$WORK/$defect.fixed.json" "$mod" "$repro" "${fixes[@]}"
    go_test "$mod" "$WORK/$defect.fixed.json" "$WORK/$defect.with.json" -run "$run_re"
    read -r pass nfail skip ok failed <<<"$(summarize "$WORK/$defect.with.json" "${tests[@]}")"
    if ((ok == 0 || nfail > 0 || pass != ${#tests[@]})); then
        fail "reproducer with the fix: $pass passed, $nfail failed ($failed), $skip skipped"
        show_output "$WORK/$defect.with.json"
    else
        echo "  with fix:    reproducer PASSES ($pass of ${#tests[@]}; $(elapsed $start))"
    fi

    if ((SUITE)); then
        start=$SECONDS
        write_overlay "$WORK/$defect.suite.json" "$mod" "${fixes[@]}"
        go_test "$mod" "$WORK/$defect.suite.json" "$WORK/$defect.suite.out.json"
        read -r pass nfail skip ok failed <<<"$(summarize "$WORK/$defect.suite.out.json")"
        new_failures=$(comm -23 <(tr ',' '\n' <<<"$failed" | grep -v '^-$' | sort) \
                                <(tr ',' '\n' <<<"$b_failed" | grep -v '^-$' | sort) | paste -sd, -)
        echo "  Asynq internal/rdb suite with fix: $pass passed, $nfail failed, $skip skipped" \
             "(without fix: $BASELINE; $(elapsed $start))"
        if ((ok == 0)); then
            fail "the suite did not build or run with the fix"; show_output "$WORK/$defect.suite.out.json"
        elif [[ -n $new_failures ]]; then
            fail "tests failing only with the fix: $new_failures"
        elif ((pass < b_pass)); then
            fail "fewer tests pass with the fix ($pass) than without ($b_pass)"
        fi
    fi
done
exit $STATUS
