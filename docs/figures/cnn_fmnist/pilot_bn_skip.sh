#!/usr/bin/env bash
# The 1-seed LR pilot that fixed bn_skip_fmnist_cnn's per-arm LRs before its 5-seed runs
# (docs/results.md). Seed 0, the quick design's 2,000 images and 12 epochs, probes only at epochs
# 0 and 12 on 8 examples (the pilot chooses LRs only). The rule, fixed before the pilot: each arm
# takes the LR of lowest final training loss, diverged runs excluded; an arm that diverges at
# every LR takes the grid's smallest. The plain arms take depth_fmnist_cnn's 5-seed choices
# (b10 0.03, b16 0.01, b22 0.01) and are not piloted again. For CPU time the BN arms are piloted
# at depth 22 only (the depth the claims are about) and every BN arm of a variant takes its
# depth-22 choice. (Two BN depth-10 runs at 0.01 and 0.03 were started and cut: their records
# are interrupted and do not count.)
# Summary: docs/figures/cnn_fmnist/pilot_bn_skip.csv (python docs/figures/cnn_fmnist/pilot_bn_skip.py).
set -eu
J="threads=1 hydra/launcher=joblib hydra.launcher.n_jobs=2"
# sweep.arm=plain10 pins the sweep's arm list; the overrides below set each run's variant, depth, LR
P="sweep.arm=plain10 probe=none extra_probes.example_pairs.examples=8 probe.every=12 seed=0 records_root=${1:-outputs/cnn_pilot}"
confusion run +sweep=bn_skip_fmnist_cnn $P $J model.batch_norm=false model.skip=true model.depth=10,16,22 \
    optim.lr=0.003,0.01,0.03,0.1
confusion run +sweep=bn_skip_fmnist_cnn $P $J model.batch_norm=true model.skip=false,true model.depth=22 \
    optim.lr=0.03,0.1,0.3
# BN at depth 22 chose 0.3, the grid's edge: the grid is extended upwards (both BN variants)
confusion run +sweep=bn_skip_fmnist_cnn $P $J model.batch_norm=true model.skip=false,true model.depth=22 optim.lr=1.0
# BN+skip at depth 22 then chose 1.0, the new edge. A run at 3.0 was started and cut for CPU time
# (its record is interrupted): BN+skip runs at 1.0, the edge of its grid.
# skip at depth 10 chose 0.1, the grid's edge: the grid is extended upwards there
confusion run +sweep=bn_skip_fmnist_cnn $P $J model.batch_norm=false model.skip=true model.depth=10 optim.lr=0.3,1.0
