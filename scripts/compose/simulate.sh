#!/bin/sh
# The compose stack's traffic simulator: writes SIM_HISTORY_HOURS of simulated API calls (with
# labelled incidents) ending now, then ten more minutes every ten minutes, as JSON log files in
# /var/log/apiwatch, which Logstash tails. Runs in the apiwatch image.
set -eu
dir=/var/log/apiwatch
hours="${SIM_HISTORY_HOURS:-6}"
topology="${SIM_TOPOLOGY:-bank}"
mkdir -p "$dir"
now=$(date -u +%s)
start=$(( now - hours * 3600 ))
start=$(( start - start % 60 ))
if [ ! -f "$dir/.history-done" ]; then
  echo "simulating ${hours} h of ${topology} traffic from $(date -u -d "@$start" +%FT%TZ)"
  apiwatch simulate --topology "$topology" --seed 7 --hours "$hours" --start "$(date -u -d "@$start" +%FT%TZ)" \
    --labels "$dir/labels.json" -o "$dir/history.part"
  mv "$dir/history.part" "$dir/history.log"
  echo "$(( start + hours * 3600 ))" >"$dir/.history-done"
fi
next=$(cat "$dir/.history-done")
seed=100
while true; do
  now=$(date -u +%s)
  if [ $(( now - next )) -ge 600 ]; then
    seed=$(( seed + 1 ))
    apiwatch simulate --topology "$topology" --seed "$seed" --hours 0.1666667 --no-incidents \
      --start "$(date -u -d "@$next" +%FT%TZ)" -o "$dir/live-$next.part"
    mv "$dir/live-$next.part" "$dir/live-$next.log"
    next=$(( next + 600 ))
    echo "$next" >"$dir/.history-done"
  fi
  sleep 30
done
