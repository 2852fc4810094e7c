"""The pixel-MNIST recipe variants of this folder's tables, one per process, each within a wall-clock budget.

    python explore.py OUT SECONDS VARIANT      # from the repository's root, MNIST in .gpu/data/MNIST/raw/

Run on an NVIDIA H200 (PyTorch 2.11, CUDA 13), the variants of one run side by side as 8 (then 6) processes on
the one GPU: `for v in A_repeat B_position ...; do python explore.py /tmp/o 440 $v & done; wait` (the second run:
245 s, variants I to N). Each times 15 training batches, sizes its cosine schedule to the epochs that fit its
budget, trains with lstm_ae's own `fit` on the study's split (50,000 / 10,000 / test 10,000, seed 0), keeps the
weights of its best validation accuracy, and writes OUT/VARIANT.json (every epoch, the test metrics of the kept
weights, the mean image's test MSE) and OUT/VARIANT.pt (a checkpoint `sweeps evaluate` reads).
"""

import json
import math
import os
import sys
import time
from dataclasses import asdict

import torch

from lstm_ae.data import Split, mnist
from lstm_ae.model import LSTMAutoencoder
from lstm_ae.train import baseline_mse, evaluate, fit, losses

BASE = {
    "hidden_size": 128,
    "encoder_cell": "lstm",
    "decoder_cell": "lstm",
    "decoder_input": "position",
    "gate_bias": "chrono",
    "recurrent_init": "orthogonal",
}
TRAIN = {"batch_size": 128, "lr": 2e-3, "grad_clip": 1.0, "recon_weight": 0.5, "schedule": "cosine"}
VARIANTS = {  # name: (model options, training options) over BASE and TRAIN
    "A_repeat": ({"decoder_input": "repeat"}, {}),
    "B_position": ({}, {}),
    "C_position_rw08": ({}, {"recon_weight": 0.8}),
    "D_lnenc_position": ({"encoder_cell": "layernorm"}, {}),
    "E_lndec_position": ({"decoder_cell": "layernorm"}, {}),
    "F_position_lr1e3": ({}, {"lr": 1e-3}),
    "G_position_h64": ({"hidden_size": 64}, {}),
    "H_position_b64": ({}, {"batch_size": 64, "lr": 1e-3}),
    "I_rw08_lr4e3": ({}, {"recon_weight": 0.8, "lr": 4e-3}),
    "J_rw08_lr6e3": ({}, {"recon_weight": 0.8, "lr": 6e-3}),
    "K_rw05_lr4e3": ({}, {"lr": 4e-3}),
    "L_rw08_b256_lr4e3": ({}, {"recon_weight": 0.8, "lr": 4e-3, "batch_size": 256}),
    "M_C_continued_lr1e3": ({}, {"recon_weight": 0.8, "lr": 1e-3}),  # from C's last weights (C_position_rw08.pt)
    "N_h64_rw08_lr4e3": ({"hidden_size": 64}, {"recon_weight": 0.8, "lr": 4e-3}),
}
RECORD = {"experiment": "mnist-pixels-classify", "preset": "paper", "seed": 0, "path": "../shared/data", "params": {}}


def seconds_per_batch(splits, options: dict, hp: dict, device: str) -> float:
    run = fit(LSTMAutoencoder(1, num_classes=10, steps=784, **options), splits, epochs=1, device=device, **hp)
    x, y = run.train.x[: hp["batch_size"]], run.train.y[: hp["batch_size"]]
    for i in range(18):  # 3 to warm up, 15 timed
        if i == 3:
            torch.cuda.synchronize() if device == "cuda" else None
            start = time.time()
        loss = losses(run.model(x), x, y, hp["recon_weight"])["loss"]
        run.optimizer.zero_grad()
        loss.backward()
        run.optimizer.step()
    torch.cuda.synchronize() if device == "cuda" else None
    return (time.time() - start) / 15


def main(out: str, budget: float, name: str) -> None:
    began = time.time()
    torch.set_num_threads(2)
    splits = mnist.load(".gpu/data", view="pixels", val_size=10_000, seed=0, download=False)
    options, hp = {**BASE, **VARIANTS[name][0]}, {**TRAIN, **VARIANTS[name][1]}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    per_batch = seconds_per_batch(splits, options, hp, device)
    batches = math.ceil(len(splits.train) / hp["batch_size"])
    epochs = max(1, int((budget - (time.time() - began)) / (per_batch * batches * 1.15 + 3)))
    torch.manual_seed(0)
    model = LSTMAutoencoder(1, num_classes=10, steps=784, **options)
    if name == "M_C_continued_lr1e3":
        model.load_state_dict(torch.load(".gpu/C_position_rw08.pt", map_location="cpu", weights_only=True)["model"])
    run = fit(model, splits, epochs=epochs, seed=0, device=device, **hp)
    log, best = [], None
    for metrics in run:
        log.append({**metrics, "t": time.time() - began})
        if best is None or metrics["val_accuracy"] > best["value"]:
            weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            best = {"model": weights, "epoch": metrics["epoch"], "value": metrics["val_accuracy"]}
        if time.time() - began > budget + 60:
            break
    state = {**run.state(), "best": best, "model_config": asdict(model.config), "data": RECORD}
    torch.save(state, os.path.join(out, f"{name}.pt"))
    model.load_state_dict(best["model"])
    test = Split(splits.test.x.to(device), splits.test.y.to(device))
    summary = {
        "variant": name,
        "opts": options,
        "hp": hp,
        "per_batch_s": per_batch,
        "epochs": epochs,
        "epochs_log": log,
        "best_epoch": best["epoch"],
        "test_best": evaluate(model, test, hp["recon_weight"]),
        "baseline_mse_test": baseline_mse(splits.train, splits.test),
    }
    with open(os.path.join(out, f"{name}.json"), "w") as file:
        json.dump(summary, file)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), sys.argv[3])
