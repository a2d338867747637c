# Shared helpers of the project scripts (sourced, not run).

# The emulator needs some credentials and a region; these are moto's conventional dummies.
export AWS_REGION=${AWS_REGION:-us-east-1}
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-testing}
export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-testing}

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# port_free PORT: true when nothing listens on 127.0.0.1:PORT.
port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# wait_http URL SECONDS NAME PID: wait until URL answers 2xx, or fail early if PID died.
wait_http() {
  local url=$1 secs=$2 name=$3 pid=$4 i
  for ((i = 0; i < secs * 5; i++)); do
    if curl -fsS -o /dev/null "$url" 2>/dev/null; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "error: $name exited during start-up; see its log" >&2
      return 1
    fi
    sleep 0.2
  done
  echo "error: $name did not answer $url within ${secs}s" >&2
  return 1
}
