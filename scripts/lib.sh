# Shared by scripts/demo, scripts/test and .ci/run: find or install what the portal needs.
# Sourced, not run. Every function explains itself when it cannot do its job.

VENV="${VENV:-.venv}"
PYTHON_BIN="${PYTHON_BIN:-python3}"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf '\033[31mError: %s\033[0m\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@";
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@";
    else return 1; fi
}

# apt_install PACKAGE... : install the Debian packages that are missing, or say how to.
apt_install() {
    local missing=()
    for package in "$@"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "Installing Debian packages: ${missing[*]}"
    command -v apt-get >/dev/null || die "apt-get is not available; install ${missing[*]} with your package manager."
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
        && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || die "Could not install ${missing[*]}. Run as root, or: sudo apt-get install ${missing[*]}"
}

# ensure_venv REQUIREMENTS_FILE : a virtualenv with exactly those pinned requirements.
ensure_venv() {
    local requirements="$1"
    if ! "$PYTHON_BIN" -c 'import venv, ensurepip' 2>/dev/null; then
        apt_install python3-venv
    fi
    [ -x "$VENV/bin/python" ] || { say "Creating the virtualenv in $VENV"; "$PYTHON_BIN" -m venv "$VENV"; }
    local stamp="$VENV/.installed-$(cat requirements*.txt constraints.txt | sha1sum | cut -c1-12)-$(basename "$requirements")"
    if [ ! -f "$stamp" ]; then
        say "Installing Python packages from $requirements"
        "$VENV/bin/python" -m pip install -q --upgrade pip
        "$VENV/bin/python" -m pip install -q -r "$requirements" -c constraints.txt \
            || die "pip could not install $requirements (see above)."
        rm -f "$VENV"/.installed-*-"$(basename "$requirements")"
        touch "$stamp"
    fi
}

redis_host_port() {
    # REDIS_URL=redis://host:port/db -> "host port"
    local rest="${REDIS_URL#*://}"; rest="${rest##*@}"; rest="${rest%%/*}"
    local host="${rest%%:*}" port="${rest##*:}"
    [ "$port" = "$rest" ] && port=6379
    echo "${host:-127.0.0.1} ${port:-6379}"
}

# ensure_redis : Redis answers on REDIS_URL, starting a local redis-server if needed.
ensure_redis() {
    read -r host port <<<"$(redis_host_port)"
    if "$VENV/bin/python" -c "import redis,sys; redis.Redis('$host', $port, socket_timeout=2).ping()" 2>/dev/null; then
        return 0
    fi
    case "$host" in 127.0.0.1|localhost) ;; *) die "Redis at $host:$port does not answer; start it or set REDIS_URL.";; esac
    command -v redis-server >/dev/null || apt_install redis-server
    say "Starting redis-server on $host:$port"
    mkdir -p var
    redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
        --dir "$PWD/var" --logfile "$PWD/var/redis.log" >/dev/null \
        || die "redis-server would not start; see var/redis.log, or start Redis yourself and set REDIS_URL."
    for _ in $(seq 1 50); do
        "$VENV/bin/python" -c "import redis; redis.Redis('$host', $port, socket_timeout=1).ping()" 2>/dev/null && return 0
        sleep 0.2
    done
    die "redis-server started but does not answer on $host:$port; see var/redis.log."
}

# ensure_postgres : PostgreSQL answers on 127.0.0.1:5432 and has the database of DATABASE_URL and both
# roles: nexo, which owns the tables and runs the migrations, and the one the portal runs as,
# DATABASE_RUNTIME_ROLE (nexo_app, password nexo_app), which may only read and append to the audit log.
# A DATABASE_URL that answers already is used as it is, once it has that role or is on another host.
ensure_postgres() {
    local runtime_role="${DATABASE_RUNTIME_ROLE:-nexo_app}"
    if [ -n "${DATABASE_URL:-}" ] && command -v psql >/dev/null && psql "$DATABASE_URL" -tAc "SELECT 1" >/dev/null 2>&1; then
        psql "$DATABASE_URL" -tAc "SELECT 1 FROM pg_roles WHERE rolname='$runtime_role'" | grep -q 1 && return 0
        case "$DATABASE_URL" in *@127.0.0.1[:/]* | *@localhost[:/]*) ;; *) return 0 ;; esac
    fi
    command -v pg_ctlcluster >/dev/null || apt_install postgresql postgresql-client
    if ! pg_isready -q -h 127.0.0.1 -p 5432; then
        say "Starting PostgreSQL"
        local version; version="$(ls /etc/postgresql | sort -V | tail -n1)"
        as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || die "PostgreSQL would not start."
        for _ in $(seq 1 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
        pg_isready -q -h 127.0.0.1 -p 5432 || die "PostgreSQL started but does not answer on 127.0.0.1:5432."
    fi
    local psql_admin
    if as_root true 2>/dev/null && id postgres >/dev/null 2>&1; then
        psql_admin=(as_root runuser -u postgres -- psql -q -v ON_ERROR_STOP=1)
    else
        psql_admin=(psql -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres)
    fi
    if ! "${psql_admin[@]}" -tAc "SELECT 1 FROM pg_roles WHERE rolname='nexo'" | grep -q 1; then
        say "Creating the PostgreSQL role nexo"
        "${psql_admin[@]}" -c "CREATE ROLE nexo LOGIN CREATEDB PASSWORD 'nexo'" || die "Could not create the role nexo."
    fi
    if ! "${psql_admin[@]}" -tAc "SELECT 1 FROM pg_roles WHERE rolname='$runtime_role'" | grep -q 1; then
        say "Creating the PostgreSQL role $runtime_role, which the portal runs as"
        "${psql_admin[@]}" -c "CREATE ROLE \"$runtime_role\" LOGIN PASSWORD '$runtime_role'" \
            || die "Could not create the role $runtime_role."
    fi
    if ! "${psql_admin[@]}" -tAc "SELECT 1 FROM pg_database WHERE datname='nexo'" | grep -q 1; then
        "${psql_admin[@]}" -c "CREATE DATABASE nexo OWNER nexo" || die "Could not create the database nexo."
    fi
}
