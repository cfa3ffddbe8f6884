#!/usr/bin/env bash
# Makes this checkout ready to run: Node 20+, the npm dependencies (npm ci when package-lock.json
# changed since the last install) and the Debian packages the stack and tests use.
#   --quiet      print nothing when there is nothing to do
#   --node-only  skip the Debian packages (for generate, build and check)
#   --browser    also Debian's chromium and chromium-driver (the dashboard's browser tests)
set -euo pipefail
cd "$(dirname "$0")/.."

quiet=false
node_only=false
browser=false
for arg in "$@"; do
  case "$arg" in
    --quiet) quiet=true ;;
    --node-only) node_only=true ;;
    --browser) browser=true ;;
    *) echo "setup: unknown option $arg" >&2; exit 2 ;;
  esac
done
say() { $quiet || echo "setup: $*"; }

major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$major" -lt 20 ]; then
  echo "setup: Vigil needs Node.js 20 or newer (found $(node --version 2>/dev/null || echo none))." >&2
  exit 1
fi

# npm ci when node_modules is missing or was installed from another package-lock.json.
stamp=node_modules/.vigil-lock-sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing npm dependencies (npm ci)…"
  # onnxruntime-node's postinstall would download CUDA libraries; the CPU build ships in the package.
  ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > "$stamp"
else
  say "npm dependencies are up to date"
fi

$node_only && exit 0

# Debian packages: the brokers that tests and `vigil up` start.
missing=()
command -v nats-server >/dev/null || missing+=(nats-server)
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v mosquitto_pub >/dev/null || missing+=(mosquitto-clients)
if $browser; then
  command -v chromium >/dev/null || missing+=(chromium)
  command -v chromedriver >/dev/null || missing+=(chromium-driver)
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    # The Debian package starts a system-wide broker on port 1883; Vigil starts its own.
    if command -v systemctl >/dev/null && systemctl is-active --quiet mosquitto 2>/dev/null; then
      systemctl stop mosquitto || true
    fi
  else
    echo "setup: missing Debian packages: ${missing[*]}" >&2
    echo "setup: install them with: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
else
  say "nats-server, mosquitto and mosquitto-clients are installed$($browser && echo ', and chromium')"
fi
