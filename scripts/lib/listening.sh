# shellcheck shell=bash
# Sourced by scripts that start a server on a port they picked themselves
# (redis-server and nginx cannot listen on port 0).

# listening PID PORT: whether process PID holds a TCP socket listening on
# PORT (any address). A probe that only connects cannot tell our server
# from another process that took the port between our probe and our bind:
# ours then fails to bind, but has not always exited yet, and the other
# answers in its place. /proc/net/tcp{,6} name the listening socket's inode,
# /proc/PID/fd the sockets PID holds.
listening() {
  local hex inode fd
  hex=$(printf '%04X' "$2")
  while read -r inode; do
    for fd in "/proc/$1/fd/"*; do
      [ "$(readlink "$fd" 2>/dev/null)" = "socket:[$inode]" ] && return 0
    done
  done < <(awk -v p="$hex" '$4 == "0A" { n = split($2, a, ":"); if (a[n] == p) print $10 }' \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null)
  return 1
}

# Run rather than sourced (the specs' support.proc): bash listening.sh PID PORT.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then listening "$@"; fi
