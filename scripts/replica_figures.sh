#!/usr/bin/env bash
# The README's replica figures: 1 vs 2 CPU replicas with the same total threads (2), and a single engine
# without Ray, alternating for REPS rounds. Every sample runs exactly --max-tokens tokens (--ignore-eos,
# --no-early-stop), so every configuration does the same work; every submission must be the same file.
# Usage: scripts/replica_figures.sh [OUTDIR] [REPS]   (about 35 s a run on 2 cores; needs the ray extra)
set -euo pipefail
out=${1:-replica-figures}
reps=${2:-3}
mkdir -p "$out"
cd "$out"
python - <<'PY'
import csv
from aimo_gguf.pipeline.problems import read_problems
with open("p16.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["id", "problem"])
    for p in read_problems("graded")[:16]:
        w.writerow([p.id, p.problem])
PY
common="p16.csv -n 4 --max-tokens 96 --ignore-eos --no-early-stop --no-cache-prompts -q"
for rep in $(seq "$reps"); do
  for cfg in single ray1 ray2b4 ray2b8; do
    case $cfg in
      single) args="-t 2 -b 8";;
      ray1)   args="-t 2 -b 8 --ray --replicas 1";;
      ray2b4) args="-t 1 -b 4 --ray --replicas 2";;
      ray2b8) args="-t 1 -b 8 --ray --replicas 2";;
    esac
    echo "# load $(cut -d' ' -f1 /proc/loadavg)"
    start=$(date +%s.%N)
    # shellcheck disable=SC2086
    python -m aimo_gguf run $common $args -o "$cfg.$rep.csv" --summary "$cfg.$rep.json" 2>/dev/null
    end=$(date +%s.%N)
    python - "$cfg" "$rep" "$start" "$end" <<'PY'
import json, sys
cfg, rep, start, end = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
d = json.load(open(f"{cfg}.{rep}.json"))
per = [r["tokens_per_second"] for r in d["replicas"] or []]
print(f"{cfg} rep{rep} generated={d['generated_tokens']} run_s={d['run_seconds']:.2f} "
      f"tok/s={d['tokens_per_second']:.1f} wall={end - start:.1f} per_replica={per}", flush=True)
PY
  done
done
md5sum ./*.[0-9].csv | awk '{print $1}' | sort | uniq -c
