#!/usr/bin/env bash
# One command runs the test suite on a fresh machine: makes .venv, installs igneous-like with
# its test extras (pytest, tensorstore, trimesh, moto, validators), installs slurm-wlm and munge
# with apt when running as root without them, runs pytest. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".[test]"
# ome-zarr-py (its reader opens our exports in a test) without its fsspec[s3] extra: s3fs's
# aiobotocore pins botocore below what boto3/moto need; the reader's own imports are in [test]
.venv/bin/python -m pip install -q --no-deps "ome-zarr==0.18.0"
# the SLURM test needs a real single-node cluster: install it where we may (root + apt)
if ! command -v sbatch >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing slurm-wlm and munge for the SLURM test..." >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge) >/dev/null 2>&1 \
    || echo "could not install slurm-wlm/munge: the SLURM test will be skipped" >&2
fi
# the view test drives Neuroglancer in a real headless browser
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium for the browser test..." >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
    || echo "could not install chromium: the browser test will be skipped" >&2
fi
# the spatial-index test loads a real PostgreSQL server it starts itself
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1 \
    && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing postgresql for the spatial-index database test..." >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >/dev/null 2>&1 \
    || echo "could not install postgresql: the PostgreSQL test will be skipped" >&2
fi
# ... and a real MySQL-compatible server (MariaDB), also started by the test itself
if ! command -v mariadbd >/dev/null 2>&1 && ! command -v mysqld >/dev/null 2>&1 \
    && ! [ -x /usr/sbin/mariadbd ] && ! [ -x /usr/sbin/mysqld ] \
    && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing mariadb-server for the spatial-index database test..." >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server) >/dev/null 2>&1 \
    || echo "could not install mariadb-server: the MySQL test will be skipped" >&2
fi
exec .venv/bin/python -m pytest "$@"
