#!/usr/bin/env bash
# Install (Debian's package), start and prepare a local PostgreSQL for seqsearch's many-worker
# storage. Idempotent. Prints the storage URL as its last line, e.g.
#   export SEQSEARCH_TEST_POSTGRES=$(scripts/dev/postgres-dev.sh | tail -n 1)
#   seqsearch tune study.yaml --storage "$SEQSEARCH_TEST_POSTGRES" --workers 4
set -euo pipefail
user=${SEQSEARCH_PG_USER:-seqsearch}
pass=${SEQSEARCH_PG_PASSWORD:-seqsearch}
db=${SEQSEARCH_PG_DB:-seqsearch}
port=${SEQSEARCH_PG_PORT:-5432}

if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  echo "installing PostgreSQL (Debian package)..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
fi
version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -qx "$version main"; then
  pg_createcluster "$version" main --port "$port" >&2
fi
pg_ctlcluster "$version" main start >&2 2>/dev/null || true
for _ in $(seq 1 50); do
  pg_isready -q -h 127.0.0.1 -p "$port" && break
  sleep 0.2
done
pg_isready -q -h 127.0.0.1 -p "$port" || { echo "PostgreSQL did not start" >&2; exit 1; }
as_pg() { (cd / && su postgres -c "$1"); }
if [ "$(as_pg "psql -p $port -tAc \"SELECT 1 FROM pg_roles WHERE rolname='$user'\"")" != "1" ]; then
  as_pg "psql -p $port -qc \"CREATE ROLE $user LOGIN PASSWORD '$pass'\"" >&2
fi
if [ "$(as_pg "psql -p $port -tAc \"SELECT 1 FROM pg_database WHERE datname='$db'\"")" != "1" ]; then
  as_pg "createdb -p $port -O $user $db" >&2
fi
echo "postgresql://$user:$pass@127.0.0.1:$port/$db"
