#!/usr/bin/env bash
# Installs sam-edge from this checkout as a systemd service on an arm64 or x86-64 box (Raspberry
# Pi OS 64-bit, Debian, Ubuntu, JetPack). Run it again to upgrade: it changes only what differs,
# and never touches an existing /etc/sam-edge/config.json.
set -euo pipefail
umask 022

usage() {
  cat <<'USAGE'
usage: deploy/install.sh [--prefix DIR] [--dry-run]
       deploy/install.sh --uninstall [--purge] [--prefix DIR] [--dry-run]

  Installs the agent with its production dependencies (npm ci --omit=dev) and the bundled
  models into /opt/sam-edge, creates the system user sam-edge (in the video group, for V4L2
  cameras), the state dir /var/lib/sam-edge and /etc/sam-edge/config.json from the example if
  there is none, installs and enables sam-edge.service. It does not start the service: edit
  the config, then `systemctl start sam-edge`. An upgrade restarts a running service if
  anything changed.

  --prefix DIR  treat DIR as the root: everything goes under DIR/opt, DIR/etc, DIR/var/lib;
                no user is created and no service manager is asked (the unit is enabled
                offline with systemctl --root). For staging an image, or a test.
  --dry-run     say what would change, change nothing
  --uninstall   stop, disable and remove the service and /opt/sam-edge; keep the config, the
                state (results not yet sent, the annotation dataset) and the user
  --purge       with --uninstall: also remove /etc/sam-edge, /var/lib/sam-edge and the user

  npm reads its usual settings from the environment (npm_config_registry, npm_config_cache,
  npm_config_offline=true to install from the npm cache without a network).
USAGE
}

fail() {
  printf 'install.sh: %s\n' "$1" >&2
  exit "${2:-1}"
}

note() { printf 'sam-edge: %s\n' "$*"; }

PREFIX=
DRY=0
UNINSTALL=0
PURGE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix)
      if [ $# -lt 2 ] || [ -z "$2" ]; then fail "--prefix needs a directory" 2; fi
      PREFIX=$2
      shift 2
      ;;
    --prefix=*)
      PREFIX=${1#--prefix=}
      [ -n "$PREFIX" ] || fail "--prefix needs a directory" 2
      shift
      ;;
    --dry-run) DRY=1; shift ;;
    --uninstall) UNINSTALL=1; shift ;;
    --purge) PURGE=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; fail "unknown option \"$1\"" 2 ;;
  esac
done
[ "$PURGE" = 0 ] || [ "$UNINSTALL" = 1 ] || fail "--purge goes with --uninstall" 2
if [ -n "$PREFIX" ]; then
  PREFIX=$(realpath -m -- "$PREFIX")
  [ "$PREFIX" != / ] || PREFIX=
fi

SRC=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
NAME=sam-edge
USER_NAME=sam-edge
APP=/opt/sam-edge
ETC=/etc/sam-edge
CONFIG=$ETC/config.json
STATE=/var/lib/sam-edge
UNIT=/etc/systemd/system/sam-edge.service
# What the unit runs and where it keeps state: install.sh and the unit must agree.
if ! grep -qxF "ExecStart=/usr/bin/node $APP/agent/bin/sam-edge.js run --config $CONFIG" "$SRC/deploy/systemd/sam-edge.service" \
  || ! grep -qxF "ReadWritePaths=$STATE" "$SRC/deploy/systemd/sam-edge.service"; then
  fail "deploy/systemd/sam-edge.service does not run $APP with $CONFIG and $STATE; fix the unit or this script"
fi

# A path on the machine being installed: under --prefix, inside DIR.
at() { printf '%s%s' "$PREFIX" "$1"; }

CHANGES=0
# Makes one change, or under --dry-run says it would.
change() {
  local what=$1
  shift
  CHANGES=$((CHANGES + 1))
  if [ "$DRY" = 1 ]; then
    note "would $what"
  else
    note "$what"
    "$@"
  fi
}

# A service manager to ask: the running one, or none under --prefix.
live() { [ -z "$PREFIX" ]; }

check_machine() {
  command -v node >/dev/null || fail "Node.js 20.15 or later is needed and there is no node on PATH: install it (Raspberry Pi OS, Debian, Ubuntu, JetPack: NodeSource's nodejs 20 package, or the official tarball in /usr/local)"
  local info version arch
  info=$(node -p 'process.versions.node + " " + process.arch + " " + process.versions.modules') || fail "$(command -v node) does not run"
  read -r version arch NODE_ABI <<<"$info" || true
  case "${version%%.*}" in
    '' | *[!0-9]*) fail "$(command -v node) says its version is \"$version\"; sam-edge needs Node.js 20.15 or later" ;;
  esac
  # 20.15 is the first 20.x with zlib.crc32, which the mask PNG writer uses.
  local major=${version%%.*} minor=${version#*.}
  minor=${minor%%.*}
  { [ "$major" -gt 20 ] || { [ "$major" -eq 20 ] && [ "${minor:-0}" -ge 15 ]; }; } || fail "Node.js $version is too old: sam-edge needs Node.js 20.15 or later"
  case "$arch" in
    arm64 | x64) ;;
    *) fail "Node.js here is built for $arch (the kernel says $(uname -m)); sam-edge runs on arm64 and x86-64 (onnxruntime-node has no other Linux build): on a Raspberry Pi install the 64-bit Raspberry Pi OS and an arm64 Node.js" ;;
  esac
  NODE_BIN=$(command -v node)
  NODE_VERSION=$version
  NODE_ARCH=$arch
  case "$NODE_BIN" in
    /home/* | /root/*) fail "node is $NODE_BIN, inside a home directory, which the service cannot see (ProtectHome=yes): install Node.js system-wide (NodeSource's package, or the official tarball in /usr/local)" ;;
  esac
  if live && [ "$DRY" = 0 ] && [ "$(id -u)" != 0 ]; then
    fail "run as root (sudo $0), or give --prefix DIR to install into a directory"
  fi
  if live; then
    command -v systemctl >/dev/null || fail "systemctl not found: sam-edge installs as a systemd service"
  fi
}

# Copies SRC to DEST (mode MODE) unless DEST already holds the same bytes and mode.
put_file() {
  local src=$1 dest=$2 mode=$3
  if [ -f "$dest" ] && cmp -s -- "$src" "$dest"; then
    [ "$(stat -c %a -- "$dest")" = "$mode" ] || change "chmod $mode $dest" chmod "$mode" -- "$dest"
    return 0
  fi
  change "write $dest" write_file "$src" "$dest" "$mode"
}

write_file() {
  mkdir -p -- "$(dirname -- "$2")"
  cp -- "$1" "$2.new"
  chmod "$3" -- "$2.new"
  mv -f -- "$2.new" "$2"
}

make_dir() {
  local dir=$1 mode=$2
  if [ -d "$dir" ]; then
    [ "$(stat -c %a -- "$dir")" = "$mode" ] || change "chmod $mode $dir" chmod "$mode" -- "$dir"
  else
    change "create $dir" install -d -m "$mode" -- "$dir"
  fi
}

# Fills the arrays named SUMS and MODES with the sha256 and mode of each file under DIR, by
# path: one sha256sum for a whole tree, not one cmp per file.
# shellcheck disable=SC2034 # sums and modes are namerefs: the caller's arrays are filled
index_tree() {
  local -n sums=$2 modes=$3
  local entry sum path
  while IFS= read -r -d '' entry; do
    modes[${entry#* }]=${entry%% *}
  done < <(find "$1" -type f -printf '%m %P\0')
  while read -r sum path; do
    sums[${path#./}]=$sum
  done < <(cd -- "$1" && find . -type f -print0 | xargs -0 -r sha256sum --)
}

sorted_keys() {
  local -n array=$1
  [ ${#array[@]} = 0 ] || printf '%s\0' "${!array[@]}" | sort -z
}

# DEST becomes a copy of SRC: files that differ are written, files SRC lacks are removed.
# Executables keep their x bit (755), the rest are 644.
sync_tree() {
  local src=$1 dest=$2 rel mode
  local -A want_sum=() want_mode=() have_sum=() have_mode=()
  index_tree "$src" want_sum want_mode
  if [ -d "$dest" ]; then
    index_tree "$dest" have_sum have_mode
    while IFS= read -r -d '' rel; do
      [ -n "${want_mode[$rel]:-}" ] || change "remove $dest/$rel (not in this version)" rm -f -- "$dest/$rel"
    done < <(sorted_keys have_mode)
    while IFS= read -r -d '' rel; do
      [ -d "$src/$rel" ] || change "remove $dest/$rel/ (not in this version)" rmdir -- "$dest/$rel"
    done < <(find "$dest" -mindepth 1 -type d -printf '%P\0' | sort -rz)
  fi
  while IFS= read -r -d '' rel; do
    mode=644
    [ $((8#${want_mode[$rel]} & 8#111)) = 0 ] || mode=755
    # sha256sum escapes odd names; a file without a sum is written, never assumed the same.
    if [ -z "${want_sum[$rel]:-}" ] || [ "${have_sum[$rel]:-}" != "${want_sum[$rel]}" ]; then
      change "write $dest/$rel" write_file "$src/$rel" "$dest/$rel" "$mode"
    elif [ "${have_mode[$rel]}" != "$mode" ]; then
      change "chmod $mode $dest/$rel" chmod "$mode" -- "$dest/$rel"
    fi
  done < <(sorted_keys want_mode)
}

install_app() {
  local app
  app=$(at "$APP")
  make_dir "$app" 755
  for file in package.json package-lock.json README.md; do
    put_file "$SRC/$file" "$app/$file" 644
  done
  put_file "$SRC/deploy/config.example.json" "$app/deploy/config.example.json" 644
  sync_tree "$SRC/agent" "$app/agent"
  # The fp32 model is the agent's default; the int8 one is a third of its size (model.dir).
  sync_tree "$SRC/models/tiny-sam" "$app/models/tiny-sam"
  sync_tree "$SRC/models/quantized/tiny-sam-int8" "$app/models/quantized/tiny-sam-int8"
}

# Production dependencies, installed again only when the lock file, Node's ABI or the CPU changed.
install_deps() {
  local app stamp
  app=$(at "$APP")
  stamp="lock=$(sha256sum <"$SRC/package-lock.json" | cut -d' ' -f1) abi=$NODE_ABI arch=$NODE_ARCH"
  if [ -f "$app/node_modules/.sam-edge-deps" ] && [ "$(cat -- "$app/node_modules/.sam-edge-deps")" = "$stamp" ]; then
    return 0
  fi
  change "install production dependencies into $app/node_modules (npm ci --omit=dev)" npm_install "$app" "$stamp"
}

npm_install() {
  local app=$1 stamp=$2 staging=$1/.deps-staging
  command -v npm >/dev/null || fail "npm not found: it comes with Node.js (Debian and Ubuntu package it separately: apt install npm)"
  rm -rf -- "$staging"
  mkdir -p -- "$staging"
  cp -- "$SRC/package.json" "$SRC/package-lock.json" "$staging/"
  # No install scripts (package.json's allowScripts): the packages ship their binaries, and
  # onnxruntime-node's script would fetch CUDA libraries the agent does not use.
  (cd "$staging" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error) \
    || fail "npm ci --omit=dev failed in $staging (see above): check the network or npm_config_registry, then run install.sh again"
  sh "$SRC/deploy/prune-deps.sh" "$staging/node_modules"
  printf '%s\n' "$stamp" >"$staging/node_modules/.sam-edge-deps"
  rm -rf -- "$app/node_modules"
  mv -- "$staging/node_modules" "$app/node_modules"
  rm -rf -- "$staging"
}

ensure_user() {
  if ! live; then
    note "skipped under --prefix: create the system user $USER_NAME (group $USER_NAME, also in group video)"
    return 0
  fi
  if ! getent passwd "$USER_NAME" >/dev/null; then
    change "create the system user $USER_NAME" useradd --system --user-group --home-dir "$STATE" --no-create-home --shell /usr/sbin/nologin "$USER_NAME"
  fi
  if ! getent group video >/dev/null; then
    note "warning: this system has no video group; V4L2 cameras (/dev/video*) will not be readable by $USER_NAME"
  elif ! id -nG "$USER_NAME" 2>/dev/null | tr ' ' '\n' | grep -qx video; then
    change "add $USER_NAME to the video group (V4L2 cameras)" usermod -a -G video "$USER_NAME"
  fi
}

# Owner of a path that belongs to the service; only a real install has the user to own it.
own() {
  local path=$1 owner=$2
  live || return 0
  # Under --dry-run the user may not exist yet: stat then reads UNKNOWN, which says "would change".
  [ "$(stat -c %U:%G -- "$path" 2>/dev/null || true)" = "$owner" ] || change "chown $owner $path" chown "$owner" -- "$path"
}

install_config() {
  local etc config
  etc=$(at "$ETC")
  config=$(at "$CONFIG")
  make_dir "$etc" 750
  own "$etc" "root:$USER_NAME"
  if [ -e "$config" ]; then
    # Never overwritten: it is the box's own settings (and its passwords).
    if cmp -s -- "$SRC/deploy/config.example.json" "$config"; then
      note "$config is still the example: set the broker, cameras and passwords in it"
    fi
  else
    change "create $config from deploy/config.example.json (edit it: broker, cameras, passwords)" write_file "$SRC/deploy/config.example.json" "$config" 640
    own "$config" "root:$USER_NAME"
  fi
  make_dir "$(at "$STATE")" 750
  own "$(at "$STATE")" "$USER_NAME:$USER_NAME"
}

UNIT_CHANGED=0
install_unit() {
  local unit rendered
  unit=$(at "$UNIT")
  rendered=$(mktemp)
  # The unit names /usr/bin/node; the node found here may live elsewhere (/usr/local/bin).
  sed "s|^ExecStart=/usr/bin/node |ExecStart=$NODE_BIN |" "$SRC/deploy/systemd/sam-edge.service" >"$rendered"
  local before=$CHANGES
  put_file "$rendered" "$unit" 644
  rm -f -- "$rendered"
  [ "$CHANGES" = "$before" ] || UNIT_CHANGED=1
  if live; then
    [ "$UNIT_CHANGED" = 0 ] || change "reload systemd's units" systemctl daemon-reload
    systemctl is-enabled --quiet "$NAME.service" 2>/dev/null || change "enable $NAME.service (starts at boot)" systemctl enable --quiet "$NAME.service"
  elif [ "$DRY" = 1 ] && [ ! -f "$unit" ]; then
    change "enable $NAME.service under $PREFIX" true
  else
    systemctl --root="$PREFIX" is-enabled --quiet "$NAME.service" 2>/dev/null || change "enable $NAME.service under $PREFIX (systemctl --root)" systemctl --root="$PREFIX" enable --quiet "$NAME.service"
  fi
}

do_install() {
  check_machine
  note "installing from $SRC into ${PREFIX:-/} (Node.js $NODE_VERSION at $NODE_BIN)"
  ensure_user
  install_app
  install_deps
  install_config
  install_unit
  if [ "$CHANGES" = 0 ]; then
    note "nothing to change: the installed sam-edge is this version"
    return 0
  fi
  if live && [ "$DRY" = 0 ]; then
    if systemctl is-active --quiet "$NAME.service"; then
      change "restart $NAME.service (running the new version)" systemctl restart "$NAME.service"
    else
      note "installed; start it once $CONFIG is yours: systemctl start $NAME; logs: journalctl -u $NAME -f"
    fi
  fi
  [ "$DRY" = 0 ] || note "dry run: $CHANGES changes, none made"
}

do_uninstall() {
  local unit
  unit=$(at "$UNIT")
  if live; then
    [ "$DRY" = 1 ] || [ "$(id -u)" = 0 ] || fail "run as root (sudo $0 --uninstall), or give --prefix DIR"
    if systemctl is-enabled --quiet "$NAME.service" 2>/dev/null || systemctl is-active --quiet "$NAME.service" 2>/dev/null; then
      change "stop and disable $NAME.service" systemctl disable --now --quiet "$NAME.service"
    fi
  elif [ -f "$unit" ] && systemctl --root="$PREFIX" is-enabled --quiet "$NAME.service" 2>/dev/null; then
    change "disable $NAME.service under $PREFIX" systemctl --root="$PREFIX" disable --quiet "$NAME.service"
  fi
  if [ -e "$unit" ]; then
    change "remove $unit" rm -f -- "$unit"
    if live; then change "reload systemd's units" systemctl daemon-reload; fi
  fi
  [ ! -e "$(at "$APP")" ] || change "remove $(at "$APP")" rm -rf -- "$(at "$APP")"
  if [ "$PURGE" = 1 ]; then
    [ ! -e "$(at "$ETC")" ] || change "remove $(at "$ETC") (the config)" rm -rf -- "$(at "$ETC")"
    [ ! -e "$(at "$STATE")" ] || change "remove $(at "$STATE") (outbox, cloud budget, dataset)" rm -rf -- "$(at "$STATE")"
    if live && getent passwd "$USER_NAME" >/dev/null; then change "remove the user $USER_NAME" userdel "$USER_NAME"; fi
  else
    for kept in "$ETC" "$STATE"; do
      [ ! -e "$(at "$kept")" ] || note "kept $(at "$kept"); --uninstall --purge removes it"
    done
  fi
  [ "$CHANGES" != 0 ] || note "nothing to remove"
  [ "$DRY" = 0 ] || note "dry run: $CHANGES changes, none made"
}

if [ "$UNINSTALL" = 1 ]; then do_uninstall; else do_install; fi
