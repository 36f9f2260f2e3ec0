#!/usr/bin/env bash
# Prepare a Debian/Ubuntu machine for kiln's tests and builds: install the
# system packages that are missing and make sure a Docker daemon answers.
# Safe to run again; run as root or as a user with sudo.
set -euo pipefail

PACKAGES=(docker.io docker-registry skopeo busybox-static graphviz git apache2-utils rpm
          debootstrap python3-venv podman buildah iproute2)
DOCKER=/usr/bin/docker
DOCKERD=/usr/sbin/dockerd
DOCKERD_LOG=/var/log/kiln-dockerd.log
WAIT_SECONDS=60

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    die "run as root or install sudo"
fi

install_missing() {
    local missing=() package
    for package in "${PACKAGES[@]}"; do
        # dpkg -s also succeeds for removed packages whose config files remain.
        if ! dpkg -s "$package" 2>/dev/null | grep -q '^Status: install ok installed'; then
            missing+=("$package")
        fi
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        say "packages: all present"
        return
    fi
    say "packages: installing ${missing[*]}"
    "${SUDO[@]}" apt-get update -q
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -q "${missing[@]}"
}

docker_up() {
    "${SUDO[@]}" "$DOCKER" info >/dev/null 2>&1
}

dockerd_running() {
    local pid
    pid=$(cat /var/run/docker.pid 2>/dev/null) || return 1
    [ -n "$pid" ] && [ -d "/proc/$pid" ]
}

systemd_is_init() {
    [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1
}

start_docker() {
    if docker_up; then
        say "docker: daemon already running"
        return
    fi
    if systemd_is_init; then
        say "docker: systemctl start docker"
        "${SUDO[@]}" systemctl start docker || say "docker: systemctl failed, starting dockerd directly"
    fi
    if ! docker_up && ! dockerd_running; then
        say "docker: starting $DOCKERD in the background (log: $DOCKERD_LOG)"
        "${SUDO[@]}" sh -c "nohup '$DOCKERD' >'$DOCKERD_LOG' 2>&1 &"
    fi
    say "docker: waiting up to ${WAIT_SECONDS}s for the daemon"
    local waited=0
    until docker_up; do
        if [ "$waited" -ge "$WAIT_SECONDS" ]; then
            [ -r "$DOCKERD_LOG" ] && tail -n 20 "$DOCKERD_LOG" >&2
            die "the Docker daemon did not come up within ${WAIT_SECONDS}s (see $DOCKERD_LOG)"
        fi
        sleep 1
        waited=$((waited + 1))
    done
    say "docker: daemon is up"
}

configure_podman() {
    local conf=/etc/containers/containers.conf
    if ! command -v podman >/dev/null 2>&1; then
        return
    fi
    # Where root cannot raise resource limits (in a container, say), podman's
    # default ulimits make every `podman run` fail; an empty list makes
    # containers inherit podman's own limits. A nofile-only list still fails
    # on nproc, so such a file (an older advice) is replaced too.
    if [ -e "$conf" ] && ! grep -qx 'default_ulimits = \["nofile=20000:20000"\]' "$conf"; then
        say "podman: $conf exists, left alone"
        return
    fi
    say "podman: writing $conf"
    "${SUDO[@]}" mkdir -p /etc/containers
    printf '[containers]\ndefault_ulimits = []\n' | "${SUDO[@]}" tee "$conf" >/dev/null
}

install_missing
start_docker
configure_podman
say "done"
