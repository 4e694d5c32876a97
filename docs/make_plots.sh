#!/usr/bin/env bash
# Regenerates the README's compare plots from the two shipped experiments.
# Usage: bash docs/make_plots.sh   (about two minutes on a 2-core CPU; writes docs/img/*.png)
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
python -m runner -m experiment=init_sweep hydra/launcher=joblib hydra.launcher.n_jobs=2 \
  hydra.sweep.dir="$work/init_sweep" >/dev/null 2>&1 || true   # a diverging scheme is a finding, not a failure
python -m runner -m experiment=shared_vs_unshared hydra/launcher=joblib hydra.launcher.n_jobs=2 \
  hydra.sweep.dir="$work/shared_vs_unshared" >/dev/null 2>&1
python -m runner.compare "$work/init_sweep" --out "$work/init_plots"
python -m runner.compare "$work/shared_vs_unshared" --out "$work/tying_plots"
cp "$work/init_plots/activation_std_by_layer.png" docs/img/init_sweep_activation_std.png
cp "$work/init_plots/loss.png" docs/img/init_sweep_loss.png
cp "$work/tying_plots/grad_norm_by_layer.png" docs/img/shared_vs_unshared_grad_norm.png
echo "plots in docs/img; runs in $work"
