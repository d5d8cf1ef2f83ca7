#!/bin/bash
# The whole fast benchmark (issue 26: all methods, both datasets, 2 folds), one
# `quality.py --datasets D --methods M` command at a time: each piece records its own minutes in the
# results file's "commands" (the whole run's time is their sum), and a run cut off (a session's end,
# a reboot) resumes with the same command line: a finished piece is skipped (WORK/pieces_done), an
# unfinished one reuses the folds it trained in WORK and continues an interrupted fold from its
# checkpoint. Run it in the background, alone on the machine:
#
#   nohup bash benchmarks/full_fast_run.sh WORK RESULTS.json [quality.py options ...] > WORK.log 2>&1 &
#
# RESULTS.json (and its .md table) is written after every row; keep it in the repository
# (benchmarks/results/) so that the figures outlive the machine. DATASETS / METHODS (environment,
# space-separated) choose a part of the run; the default is everything, BraTS-6 first. SCHEDULE
# (default fast) is for trying the script itself with `smoke`.
set -u
if [ $# -lt 2 ]; then
  echo "usage: bash benchmarks/full_fast_run.sh WORK RESULTS.json [quality.py options ...]" >&2
  exit 2
fi
work=$(realpath -m "$1"); results=$(realpath -m "$2"); shift 2
repo=$(cd "$(dirname "$0")/.." && pwd)
# the README's virtual environment where there is one (PYTHON chooses another interpreter)
default_python=python3
[ -x "$repo/.venv/bin/python" ] && default_python="$repo/.venv/bin/python"
python=${PYTHON:-$default_python}
schedule=${SCHEDULE:-fast}
mkdir -p "$work/pieces_done"
methods=${METHODS:-$("$python" -c "import sys; sys.path.insert(0, '$repo')
from autouad.methods.registry import method_names; print(' '.join(method_names()))")}
status=0
for dataset in ${DATASETS:-brats kermany}; do
  for method in $methods; do
    done_marker="$work/pieces_done/${schedule}_${dataset}_${method}"
    if [ -f "$done_marker" ]; then
      echo "$dataset $method: done by an earlier run ($(cat "$done_marker")); skipped"
      continue
    fi
    echo "=== $(date -u +%FT%TZ) $dataset $method: $python benchmarks/quality.py --schedule $schedule --datasets $dataset --methods $method --work $work --results $results $*"
    if (cd "$repo" && "$python" benchmarks/quality.py --schedule "$schedule" --datasets "$dataset" --methods "$method" \
          --work "$work" --results "$results" "$@"); then
      date -u +%FT%TZ > "$done_marker"
    else
      status=1
      echo "=== $dataset $method failed; the next run of this command tries it again" >&2
    fi
  done
done
exit $status
