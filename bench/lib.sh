# shellcheck shell=bash
# Sourced by the bench/ scripts (bash): what several of them need once.

# listening PID PORT (the port a started server took is its own)
# shellcheck source=../scripts/lib/listening.sh
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib/listening.sh"

# The simulator's documented demo identity (not secret): `eidkit sim`
# accepts it, docs/SIMULATOR.md.
demo_id=AKIDeidkitSimDemo00000000000000000000
demo_key=eidkitSimDemoSecretKey000000000
demo_merchant=0NSJ000000000000000000EIDKIT
export demo_id demo_key demo_merchant

# free_port: a loopback port nothing listens on now, for servers that cannot
# take port 0 (redis-server, nginx); whether the server then got it is
# listening's question.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_redis DIR PORT [ARG...]: redis-server on 127.0.0.1:PORT in the
# background, durable as a deployment runs it (AOF, fsync every second, no
# RDB), its files and log in DIR; sets redis_pid. Returns 0 once that
# process holds the port (a PING could be answered by a stranger on it, had
# ours failed to bind); else 1, with the end of redis's log on stderr.
start_redis() {
  local dir=$1 port=$2 i
  shift 2
  redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly yes --appendfsync everysec \
    --dir "$dir" --logfile "$dir/redis.log" --maxclients 20000 "$@" >/dev/null 2>&1 &
  redis_pid=$!
  for ((i = 0; i < 100; i++)); do
    listening "$redis_pid" "$port" && return 0
    kill -0 "$redis_pid" 2>/dev/null || break
    sleep 0.05
  done
  kill "$redis_pid" 2>/dev/null
  echo "redis-server did not start on port $port: $(tail -n 5 "$dir/redis.log" 2>/dev/null)" >&2
  return 1
}

# wait_url FILE: the URL of the "listening on URL" first line of FILE (a
# server's stdout), within 15 s; else says why on stderr (FILE, and FILE
# with .err for .out) and returns 1.
wait_url() {
  local i
  for ((i = 0; i < 300; i++)); do
    if [[ -s $1 ]] && head -n1 "$1" | grep -q '^listening on http'; then
      head -n1 "$1" | sed 's/^listening on //'
      return 0
    fi
    sleep 0.05
  done
  echo "$(basename "$1" .out) did not start: $(cat "$1" "${1%.out}.err" 2>/dev/null)" >&2
  return 1
}

# sign_request EIDKIT HOST ACTION BODY FILE: sign a call to the simulator on
# HOST (host:port) with `eidkit sign` (valid for 300 s) and write it as a
# request file for bench/sim_wrk.lua: "Name: value" lines, an empty line,
# the body.
sign_request() {
  TENCENTCLOUD_SECRET_KEY=$demo_key "$1" sign --json --secret-id "$demo_id" \
    --host "$2" --service faceid --action "$3" --body "$4" |
    BODY=$4 python3 -c '
import json, os, sys
h = json.load(sys.stdin)["headers"]
sys.stdout.write("".join("%s: %s\n" % kv for kv in sorted(h.items())) + "\n" + os.environ["BODY"])' >"$5"
}

# send FILE URL: send a request file once with curl; prints the body.
send() {
  local args=() line
  while IFS= read -r line && [[ -n $line ]]; do args+=(-H "$line"); done <"$1"
  curl -sS --max-time 10 "${args[@]}" --data-binary "$(sed '1,/^$/d' "$1")" "$2/"
}
