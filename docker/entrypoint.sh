#!/bin/sh
# Entrypoint of the plus-ultra container (docker/Dockerfile.gpu); tini runs it as PID 1's
# child. `docker run IMAGE COMMAND [OPTIONS...]` runs `plus-ultra COMMAND [OPTIONS...]`;
# docs/containerization.md describes every command, volume and variable.
set -eu

# The container's commands, in the order `--help` lists them. Each one is a command of
# the `plus-ultra` CLI (tests/docker/test_container.py checks this list against it).
PLUS_ULTRA_COMMANDS="train pretrain predict rl-finetune serve retrain"

# Where `serve` records the port it listens on, for the HEALTHCHECK (docker/healthcheck.py).
HEALTH_FILE="${PLUS_ULTRA_HEALTH_FILE:-/tmp/plus-ultra-serve.port}"
# The outputs volume; automation_runs/ (the retrain default) lives in it.
RUNS_DIR="${PLUS_ULTRA_RUNS_DIR:-/runs}"

usage() {
    cat <<EOF
Usage: docker run [docker options] IMAGE COMMAND [OPTIONS...]

Runs \`plus-ultra COMMAND [OPTIONS...]\` in /app, where data/ is the /data volume,
outputs/ and automation_runs/ are in the /runs volume and configs/ holds the presets.

Commands:
  train        train the configured model                (plus-ultra train --help)
  pretrain     self-supervised pretraining of a backbone (plus-ultra pretrain --help)
  predict      predict with a trained run and score it   (plus-ultra predict --help)
  rl-finetune  fine-tune a run's policy with PPO         (plus-ultra rl-finetune --help)
  serve        the HTTP API, on 0.0.0.0:\$PORT unless --host / --port are given
  retrain      the staged retraining pipeline            (plus-ultra retrain --help)
  plus-ultra   any other plus-ultra command, e.g. \`plus-ultra data validate /data/market.db\`
  shell        a shell in the container (sh), e.g. \`shell -c 'nvidia-smi'\`

Environment: PORT (serve, default 8000), PLUS_ULTRA_API_KEY (the service's key),
PLUS_ULTRA_LOG_LEVEL and PLUS_ULTRA_LOG_FORMAT (text | json), OMP_NUM_THREADS.
Example: docker run --gpus all -v "\$PWD/data:/data" -v "\$PWD/runs:/runs" IMAGE \\
    train --config configs/default.yaml
EOF
}

die() {
    printf 'plus-ultra-entrypoint: %s\n' "$1" >&2
    exit 2
}

# Run `plus-ultra [global options] "$@"` in place of this shell, so that signals (tini
# forwards docker stop's SIGTERM) reach it directly. The global options come from the
# environment, a container's usual way of setting them.
run_cli() {
    level="${PLUS_ULTRA_LOG_LEVEL:-}"
    format="${PLUS_ULTRA_LOG_FORMAT:-}"
    if [ -n "$format" ]; then
        set -- "--log-format=$format" "$@"
    fi
    if [ -n "$level" ]; then
        set -- "--log-level=$level" "$@"
    fi
    exec plus-ultra "$@"
}

# The runs volume must be writable by this user (uid 10001 unless --user says otherwise);
# say so up front instead of failing deep inside a command.
check_runs_dir() {
    if [ ! -d "$RUNS_DIR" ]; then
        return 0
    fi
    if [ -w "$RUNS_DIR" ]; then
        mkdir -p "$RUNS_DIR/automation_runs"
    else
        owner="$(id -u):$(id -g)"
        printf 'plus-ultra-entrypoint: warning: %s is not writable by %s (uid:gid) — chown the host folder to %s, or run the container with --user set to the folder owner\n' \
            "$RUNS_DIR" "$owner" "$owner" >&2
    fi
}

# `serve` binds 0.0.0.0 unless --host is given: inside a container the published port
# (-p 8000:8000) reaches the server only on a non-loopback address, and the container's
# network namespace is the boundary. This is the one place the project binds beyond
# 127.0.0.1 by default; everywhere else the service defaults to loopback.
serve() {
    port="${PORT:-8000}"
    has_host=0
    has_port=0
    previous=""
    for arg in "$@"; do
        if [ "$previous" = "--port" ]; then
            port="$arg"
            has_port=1
        fi
        case "$arg" in
            --host | --host=*) has_host=1 ;;
            --port=*)
                port="${arg#--port=}"
                has_port=1
                ;;
        esac
        previous="$arg"
    done
    case "$port" in
        '' | *[!0-9]*) die "port '$port' is not a number — set PORT (or --port) to 1-65535" ;;
    esac
    if [ "$has_port" = 0 ]; then
        set -- --port "$port" "$@"
    fi
    if [ "$has_host" = 0 ]; then
        set -- --host 0.0.0.0 "$@"
    fi
    # Best effort: without the file the healthcheck falls back to $PORT.
    printf '%s\n' "$port" >"$HEALTH_FILE" 2>/dev/null || true
    run_cli serve "$@"
}

if [ "$#" -eq 0 ]; then
    usage >&2
    exit 2
fi

command="$1"
shift
case "$command" in
    -h | --help | help)
        usage
        exit 0
        ;;
    train | pretrain | predict | rl-finetune | retrain)
        check_runs_dir
        run_cli "$command" "$@"
        ;;
    serve)
        check_runs_dir
        serve "$@"
        ;;
    plus-ultra)
        check_runs_dir
        run_cli "$@"
        ;;
    shell)
        exec /bin/sh "$@"
        ;;
    *)
        printf "plus-ultra-entrypoint: unknown command '%s' — use one of: %s, plus-ultra, shell (--help lists them)\n" \
            "$command" "$PLUS_ULTRA_COMMANDS" >&2
        exit 2
        ;;
esac
