#!/usr/bin/env bash
# The non-editable install works: build the wheel, install it (not editable) into a scratch venv
# and run every asr-kd-* console script from there: --help of each (exit 0, its usage header, and
# for the Hydra commands the installed conf dir named in the footer), a tiny asr-kd-synth and
# asr-kd-prepare, and a user config dir added with --config-dir. `make test` never sees this:
# it installs editable, where conf/ lies beside the package anyway (issue 11).
#
# The scratch venv reuses the dependencies already installed in .venv (a .pth file naming its
# site-packages; .pth files inside it, such as the editable asr_kd's finder, are not run), so
# nothing is downloaded. Usage: .ci/check_wheel.sh   (VENV=path/to/venv to use another one)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-$repo/.venv}
py=$venv/bin/python
unset PYTHONPATH PYTHONHOME
start=$SECONDS
tmp=$(mktemp -d "${TMPDIR:-/tmp}/asr_kd_wheel.XXXXXX")
# On exit: stop the commands this script started (after a failure), keep the exit status.
cleanup() {
    local running
    running=$(jobs -p)
    [[ -z $running ]] || kill $running 2>/dev/null || true
    wait || true
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "check_wheel: FAIL: $*" >&2; exit 1; }
# background LOG CMD...: start CMD with its output in LOG; wait_all: wait for every one started,
# and when one failed, show its LOG and stop.
pids=()
logs=()
background() {
    local log=$1
    shift
    "$@" > "$log" 2>&1 &
    pids+=($!)
    logs+=("$log")
}
wait_all() {
    local i rc
    for i in "${!pids[@]}"; do
        rc=0
        wait "${pids[$i]}" || rc=$?
        ((rc == 0)) || { cat "${logs[$i]}" >&2; fail "exit status $rc: ${logs[$i]} (above)"; }
    done
    pids=()
    logs=()
}
# expect LOG REGEX WHAT: LOG has a line matching REGEX, else it is shown and the check stops.
expect() { grep -qE -- "$2" "$1" || { cat "$1" >&2; fail "$3"; }; }

# 1. The wheel, built from a copy of the working tree (tracked and untracked, not ignored files):
# no stale build/ or egg-info of the checkout gets in, and the checkout gets none.
mkdir -p "$tmp/src"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard \
    | tar --null --ignore-failed-read -T - -cf -) | tar -xf - -C "$tmp/src"
build=(--no-build-isolation)  # setuptools of .venv when it has one new enough, else from PyPI
"$py" -c 'import setuptools, sys; sys.exit(int(setuptools.__version__.split(".")[0]) < 77)' \
    2>/dev/null || build=()
"$py" -m pip wheel --quiet --no-deps "${build[@]}" "$tmp/src" -w "$tmp/dist"
wheel=$(echo "$tmp"/dist/asr_kd-*.whl)
[[ -f $wheel ]] || fail "no wheel built"

# 2. A scratch venv with that wheel, and .venv's site-packages after its own for the deps.
"$py" -m venv --without-pip "$tmp/venv"
"$py" -m pip --python "$tmp/venv/bin/python" install --quiet --no-deps --no-index "$wheel"
site=$("$tmp/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$py" -c 'import sysconfig; print(*{sysconfig.get_path(k): 0 for k in ("purelib", "platlib")},
    sep="\n")' > "$site/_asr_kd_check_deps.pth"
mkdir -p "$tmp/run" && cd "$tmp/run"  # not the checkout: its asr_kd/ must not be importable
"$tmp/venv/bin/python" - "$site" <<'EOF' || fail "asr_kd is not imported from the wheel"
import sys
from pathlib import Path

import asr_kd

site = Path(sys.argv[1]).resolve()
assert Path(asr_kd.__file__).resolve().is_relative_to(site), asr_kd.__file__
assert not [f for f in sys.meta_path if "__editable__" in repr(f)], sys.meta_path
print(f"asr_kd from {asr_kd.__file__}", flush=True)
EOF

# 3. Side by side (each command spends seconds importing torch/lightning): --help of every console
# script of the scratch venv, and a tiny corpus prepared as in the README. The configs are found
# as a user would find them (a wheel without them fails here), and the Hydra --help footer must
# name site-packages/asr_kd/conf. train's --help is given a user's config dir beside the shipped
# one (docs/commands.md's --config-dir example) and must show the user's model composed.
bin=$tmp/venv/bin
tiny_corpus() {
    "$bin/asr-kd-synth" out_dir="$tmp/corpus" hours.train=0.003 hours.dev=0.003 hours.test=0.003 \
        speakers.train=1 speakers.dev=1 speakers.test=1 seed=0 &&
        "$bin/asr-kd-prepare" corpus_dir="$tmp/corpus/LibriSpeech" subsets=[train,dev,test] \
            out_dir="$tmp/data" tokenizer=char
}
mkdir -p my_conf/model
printf 'defaults:\n  - student_tiny\nd_model: 96\nnum_layers: 2\n' > my_conf/model/my_model.yaml
commands=(synth prepare train dump-targets distill evaluate export transcribe)
for cmd in "${commands[@]}"; do
    [[ -x $bin/asr-kd-$cmd ]] || fail "asr-kd-$cmd is not installed"
    extra=()  # train: the --config-dir example too (a lightning import less than a run of its own)
    [[ $cmd == train ]] && extra=(--config-dir my_conf model=my_model)
    background "help-$cmd.txt" "$bin/asr-kd-$cmd" "${extra[@]}" --help
done
background corpus.txt tiny_corpus
wait_all

for cmd in "${commands[@]}"; do
    if [[ $cmd == transcribe ]]; then
        expect "help-$cmd.txt" "^usage: asr-kd-transcribe " "asr-kd-$cmd --help: no usage"
    else
        expect "help-$cmd.txt" "^asr-kd-$cmd: " "asr-kd-$cmd --help: no usage header"
        grep -qF "under $site/asr_kd/conf/<group>/" "help-$cmd.txt" \
            || { cat "help-$cmd.txt" >&2; fail "asr-kd-$cmd --help names no installed conf dir"; }
    fi
done
echo "--help of asr-kd-{$(IFS=,; echo "${commands[*]}")}: ok"
for f in cuts_train.jsonl.gz cuts_dev.jsonl.gz cuts_test.jsonl.gz cmvn.json; do
    [[ -f $tmp/data/$f ]] || { cat corpus.txt >&2; fail "asr-kd-prepare wrote no $f"; }
done
echo "asr-kd-synth + asr-kd-prepare of a tiny corpus: ok"
expect help-train.txt "^model (\[my_model\]: |.*: (.*, )?my_model(,|$))" "--config-dir my_conf: no model/my_model"
expect help-train.txt "^  d_model: 96$" "--config-dir: my_conf/model/my_model.yaml not composed"
expect help-train.txt "^  streaming: true$" "--config-dir: my_model's defaults list unused"
echo "asr-kd-train --config-dir my_conf model=my_model: ok"

echo "check_wheel: ok ($((SECONDS - start)) s)"
