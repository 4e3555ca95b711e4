#!/usr/bin/env bash
# Run the whole test suite on a fresh machine, from the repo root:
#
#   scripts/test.sh [pytest args...]
#   scripts/test.sh --exec COMMAND...   (e.g. python bench/rating.py, beside the same server)
#
# Installs what is missing (the venv from constraints.txt, Debian's postgresql and
# chromium), starts a throwaway PostgreSQL on a unix socket, exports
# AGENTMETER_TEST_POSTGRES_URL for tests/conftest.py, runs pytest and exits with its code.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { echo "test.sh: $*" >&2; }

as_root() {
    if [[ $EUID -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

# --- System packages --------------------------------------------------------------------
missing=()
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || ! id postgres >/dev/null 2>&1; then
    missing+=(postgresql)
fi
# Browser tests use Playwright with executable_path=/usr/bin/chromium, not its own download.
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
# The compatibility suite runs the Vercel AI SDK in Node (tests/compat/node).
command -v node >/dev/null && command -v npm >/dev/null || missing+=(nodejs npm)
# Debian's python3 cannot create a venv without python3-venv.
if [[ ! -x .venv/bin/python ]] && ! "${PYTHON:-python3}" -c "import ensurepip" 2>/dev/null; then
    missing+=(python3-venv)
fi
if ((${#missing[@]})); then
    log "installing ${missing[*]} from Debian"
    as_root apt-get update -qq
    # Wait for the dpkg lock rather than failing when another install runs at the same time.
    as_root env DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes \
        apt-get install -y -qq -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null
fi

# --- Python environment -----------------------------------------------------------------
if [[ ! -x .venv/bin/python ]]; then
    log "creating .venv"
    "${PYTHON:-python3}" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
# Reinstall whenever pyproject.toml or constraints.txt changed since the last good install.
install_stamp=.venv/.agentmeter-dev-install
install_hash=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [[ ! -f $install_stamp || $(<"$install_stamp") != "$install_hash" ]]; then
    log "installing the project and its dev dependencies into .venv"
    python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
    echo "$install_hash" >"$install_stamp"
fi

# --- Node packages of the compatibility suite (pinned by package-lock.json) -------------
node_project=tests/compat/node
node_stamp=$node_project/node_modules/.agentmeter-npm-ci
node_hash=$(sha256sum <"$node_project/package-lock.json" | cut -d' ' -f1)
if [[ ! -f $node_stamp || $(<"$node_stamp") != "$node_hash" ]]; then
    log "installing $node_project with npm ci"
    (cd "$node_project" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$node_hash" >"$node_stamp"
fi

# --- Throwaway PostgreSQL ---------------------------------------------------------------
pg_bin=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)

# libpq and the server read these; a stray PGPORT or PGHOST would point tests elsewhere.
unset PGHOST PGHOSTADDR PGPORT PGDATABASE PGUSER PGPASSWORD PGSERVICE PGOPTIONS

if [[ $EUID -eq 0 ]]; then
    # initdb and postgres refuse to run as root.
    as_pg() { runuser -u postgres -- "$@"; }
else
    as_pg() { "$@"; }
fi

# shellcheck disable=SC2317  # called by the EXIT trap
stop_postgres() {
    if [[ -f $pg_data/postmaster.pid ]]; then
        as_pg "$pg_bin/pg_ctl" -D "$pg_data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$pg_root"
}

# One temp dir holds the data dir, the socket and the log. It lives under /tmp, not
# $TMPDIR, so the postgres user can reach it and the socket path stays short.
pg_root=$(mktemp -d /tmp/agentmeter-pg.XXXXXX)
pg_data=$pg_root/data
pg_sock=$pg_root
pg_log=$pg_root/postgres.log
trap stop_postgres EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
[[ $EUID -ne 0 ]] || chown postgres: "$pg_root"

started_us=${EPOCHREALTIME//[!0-9]/}
as_pg "$pg_bin/initdb" -D "$pg_data" -U postgres --auth=trust --encoding=UTF8 --no-locale \
    --no-sync >"$pg_root/initdb.log" 2>&1 || {
    cat "$pg_root/initdb.log" >&2
    exit 1
}
# Durability is worthless for a database deleted at exit; skipping it makes tests faster.
if ! as_pg "$pg_bin/pg_ctl" -D "$pg_data" -l "$pg_log" -w -t 60 -o \
    "-c listen_addresses='' -k $pg_sock -c fsync=off -c synchronous_commit=off \
    -c full_page_writes=off -c max_connections=200" start >/dev/null; then
    cat "$pg_log" >&2
    exit 1
fi
for _ in $(seq 1 300); do
    "$pg_bin/pg_isready" -q -h "$pg_sock" -U postgres && break
    sleep 0.1
done
"$pg_bin/pg_isready" -q -h "$pg_sock" -U postgres || {
    cat "$pg_log" >&2
    exit 1
}
"$pg_bin/createdb" -h "$pg_sock" -U postgres agentmeter_test
elapsed_ms=$(((${EPOCHREALTIME//[!0-9]/} - started_us) / 1000))
log "PostgreSQL ready in ${elapsed_ms} ms on $pg_sock"

export AGENTMETER_TEST_POSTGRES_URL="postgresql+psycopg://postgres@/agentmeter_test?host=$pg_sock"

# --- Tests (or, with --exec, any command beside the same PostgreSQL: benchmarks) ---------
status=0
if [[ ${1:-} == --exec ]]; then
    shift
    "$@" || status=$?
else
    # In parallel (pytest-xdist), one worker per CPU; AGENTMETER_TEST_WORKERS overrides it,
    # 0 runs serially, and so do `-n 0` or `-p no:xdist` on the command line. Each worker has
    # its own databases (uniquely named), temp dirs, ports (0) and browser. --dist loadfile
    # keeps a test module on one worker: its module-scoped fixtures (a browser, a server)
    # start once, and tests that must not overlap belong in one module. (Not loadgroup:
    # pytest-xdist 3.8 renames items through `_nodeid`, which pytest 9 no longer reads, so
    # xdist_group marks are silently ignored.)
    parallel=(-n "${AGENTMETER_TEST_WORKERS:-auto}" --dist loadfile)
    [[ " $* " != *" no:xdist "* && " $* " != *"-pno:xdist"* ]] || parallel=()
    python -m pytest "${parallel[@]}" "$@" || status=$?
fi
exit "$status"
