# Shared set-up for scripts/demo, scripts/test and scripts/bench (sourced, not run).
# Creates or reuses .venv, installs the project with its extras, and makes sure a Chromium is installed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "harvest needs Python 3.11 or newer (found: $("$PYTHON" --version 2>&1))" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv" >&2
  "$PYTHON" -m venv .venv
fi

# Reinstall only when pyproject.toml changed: a warm `scripts/test` should not spend a minute in pip.
stamp=.venv/.harvest-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "==> installing harvest and its extras into .venv" >&2
  pip_log=$(mktemp -t harvest-pip.XXXXXX)
  # compat mode puts the repo on sys.path with a .pth file: no import hook, so `harvest cache get` starts faster.
  if ! { .venv/bin/python -m pip install -q --upgrade pip &&
         .venv/bin/python -m pip install -q -e ".[test,bench]" --config-settings editable_mode=compat; } >"$pip_log" 2>&1; then
    cat "$pip_log" >&2
    rm -f "$pip_log"
    echo "pip could not install the project (log above)" >&2
    exit 1
  fi
  rm -f "$pip_log"
  echo "$want" > "$stamp"
fi
# An editable install leaves our own modules uncompiled, and where PYTHONDONTWRITEBYTECODE is set (CI images
# often set it) every `harvest` command would compile them again: a third of `harvest cache get`'s start-up.
# compileall rewrites only what changed.
.venv/bin/python -m compileall -q cache harvester providers >/dev/null

find_browser() {
  if [ -n "${HARVEST_BROWSER:-}" ] && [ -x "${HARVEST_BROWSER}" ]; then echo "$HARVEST_BROWSER"; return 0; fi
  for name in chromium chromium-browser google-chrome; do
    if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return 0; fi
  done
  [ -x /usr/bin/chromium ] && { echo /usr/bin/chromium; return 0; }
  return 1
}

can_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }
apt_updated=
apt_install() {
  [ -n "$apt_updated" ] || { apt-get update -qq; apt_updated=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! find_browser >/dev/null; then
  if can_apt; then
    echo "==> installing Chromium from the OS packages (apt-get install chromium)" >&2
    apt_install chromium
  else
    echo "No Chrome or Chromium found. Install the OS package, e.g. 'sudo apt-get install chromium'" >&2
    echo "(Debian) or 'sudo apt-get install chromium-browser' (Ubuntu), or set HARVEST_BROWSER." >&2
    exit 1
  fi
fi

# The --headful tests show the browser on a virtual X server; only they need it, so its absence is no error here.
if ! command -v Xvfb >/dev/null 2>&1; then
  if can_apt; then
    echo "==> installing Xvfb from the OS packages (apt-get install xvfb), for the --headful tests" >&2
    apt_install xvfb
  else
    echo "No Xvfb found: the --headful tests will fail. Install it, e.g. 'sudo apt-get install xvfb'." >&2
  fi
fi
# Chromium's headless shell, the faster browser a user may name in [browser] path: its tests and bench rows need it.
if ! command -v chromium-headless-shell >/dev/null 2>&1 && ! command -v chrome-headless-shell >/dev/null 2>&1; then
  if can_apt; then
    echo "==> installing Chromium's headless shell (apt-get install chromium-headless-shell), for its tests" >&2
    apt_install chromium-headless-shell
  else
    echo "No chromium-headless-shell found: its tests will fail. Install it, e.g. 'sudo apt-get install chromium-headless-shell'." >&2
  fi
fi
# The Redis backend's tests and `scripts/bench redis` start their own redis-server (never a system one).
if ! command -v redis-server >/dev/null 2>&1; then
  if can_apt; then
    echo "==> installing redis-server from the OS packages (apt-get install redis-server), for the Redis tests" >&2
    apt_install redis-server
  else
    echo "No redis-server found: the Redis backend tests will fail. Install it, e.g. 'sudo apt-get install redis-server'." >&2
  fi
fi
# The export tests load the exports with the real consumers: curl (-K, -b) and wget (--load-cookies).
for tool in curl wget; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    if can_apt; then
      echo "==> installing $tool from the OS packages (apt-get install $tool), for the export tests" >&2
      apt_install "$tool"
    else
      echo "No $tool found: the export tests will fail. Install it, e.g. 'sudo apt-get install $tool'." >&2
    fi
  fi
done
export PATH="$PWD/.venv/bin:$PATH"
