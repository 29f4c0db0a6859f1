"""Summarise the bn_skip_fmnist_cnn LR pilot (pilot_bn_skip.sh): final training loss per arm and LR,
and each arm's choice (lowest final training loss; diverged runs excluded).

    python docs/figures/cnn_fmnist/pilot_bn_skip.py [RECORDS_ROOT] > docs/figures/cnn_fmnist/pilot_bn_skip.csv
"""

import sys

from confusion_cli import records

frame = records.load(sys.argv[1] if len(sys.argv) > 1 else "outputs/cnn_pilot")
keys = ["model.batch_norm", "model.skip", "model.depth", "optim.lr"]
last = frame.sort_values("epoch").groupby(keys + ["run_dir"]).tail(1)
table = last[keys + ["epoch", "status", "train_loss", "test_acc"]].sort_values(keys).reset_index(drop=True)
ok = table[table["status"] == "complete"]
best = ok.loc[ok.groupby(keys[:3])["train_loss"].idxmin()]
table["chosen"] = table.index.isin(best.index)
table.to_csv(sys.stdout, index=False, float_format="%.4g")
