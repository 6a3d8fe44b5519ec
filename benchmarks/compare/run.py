"""Equal-budget comparison on a converged network: 2PFPCE against plain pruning.

Every run starts from the same converged checkpoint (``benchmarks/converged/``), sees the
same data (the experiment preset's data module: CIFAR-10 JPEG, 45 000 train / 5 000
validation / 10 000 test, same augmentation) and gets the same number of training epochs
(``--budget``: pruning steps, fine-tuning and final fine-tune counted together).

    # pl_pruning as shipped (pruning=two_phase), and any ablation as Hydra overrides
    python benchmarks/compare/run.py pl_pruning --seed 0
    # the controller as it was before issue 12 (commit 5c8aca5), from a second checkout
    python benchmarks/compare/run.py pl_pruning --seed 0 --name shipped --tree ../shipped
    python benchmarks/compare/run.py pl_pruning --seed 0 --name criterion_l1 pruning.controller.criterion=l1
    # Torch-Pruning's own pipeline (global GroupMagnitudeImportance p=2, i.e. group norm,
    # iterative steps) and one-shot uniform L1 (Li et al. 2017), both at the MACs the
    # matching pl_pruning run reached, then fine-tuned for the whole budget (cosine)
    python benchmarks/compare/run.py torch_pruning --seed 0 --match two_phase_seed0
    python benchmarks/compare/run.py l1_uniform --seed 0 --match two_phase_seed0
    # the goal's 3x with every step judged before the first epoch (BatchNorm re-estimated,
    # no fine-tuning between steps), so the final fine-tune gets the whole budget
    python benchmarks/compare/run.py pl_pruning --seed 0 --name at_once_3x pruning.controller.finetune_epochs=0 \
        pruning.controller.target_macs=0.3333 pruning.controller.reference=accepted pruning.controller.max_drop=0.05 \
        pruning.controller.global_step=0.1 pruning.controller.grow=1 pruning.controller.min_step=0.025
    # or at a given reduction (the goal's 3x), named torch_pruning_3x / l1_uniform_3x
    # (a --budget other than 15 adds _e<budget>: torch_pruning_3x_e40; give pl_pruning runs
    # the same suffix with --name at_once_3x_e40)
    python benchmarks/compare/run.py torch_pruning --seed 0 --reduction 3 --steps 5
    # the external fine-tune from another starting rate (named torch_pruning_3x_lr0.05); a
    # pl_pruning run takes it as an override, pruning.fit.lr=0.05
    python benchmarks/compare/run.py torch_pruning --seed 0 --reduction 3 --steps 5 --lr 0.05
    # Torch-Pruning at its strongest: group-sparsity learning (GroupNormPruner's regulariser)
    # for half the budget, 400 small pruning steps to the target, then a fine-tune, each phase
    # with their step schedule scaled to it (README: "Torch-Pruning at its strongest")
    python benchmarks/compare/run.py torch_pruning_sl --seed 0 --reduction 3 --budget 40 --fast
    # table, plot and findings from every committed runs/*.json
    python benchmarks/compare/run.py render
    # before a session ends: copy unfinished runs' last checkpoints to partial/ (commit it);
    # the same command on a fresh checkout then continues from there
    python benchmarks/compare/run.py park

Each run writes ``runs/<name>_seed<seed>.json`` as soon as it ends, so the work can be
split across sessions; ``render`` rebuilds ``results.csv``, ``results.md`` and
``accuracy_vs_macs.png`` from whatever is there.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(HERE.parent), str(HERE)]  # benchmarks/parking.py; records.py beside this file
import parking  # noqa: E402  (benchmarks/parking.py, shared with benchmarks/converged/)
from records import EXPERIMENT, RUNS, experiment_of  # noqa: E402,F401  (experiment_of: latency.py's)

# Unfinished runs' resume points, committed (``park``) so that a fresh checkout continues them.
PARTIAL = HERE / "partial"
# Where a run keeps the checkpoint it resumes from: the pl-prune app's, the external fine-tune's,
# and the sparsity learning's of torch_pruning_sl (which fine-tunes with the external one's).
PL_PRUNING_RESUME, EXTERNAL_RESUME = "pruning_checkpoints/last.ckpt", "checkpoints/last.ckpt"
SPARSITY_RESUME = "sparsity/last.ckpt"
RESUME_POINTS = (PL_PRUNING_RESUME, EXTERNAL_RESUME, SPARSITY_RESUME)
# Each experiment preset's converged network (benchmarks/converged/README.md). The VGG's is
# the 60-epoch baseline; vgg16_w025_seed0.pt (30 epochs) is not converged by the criterion
# there and is only for trying the harness out.
CONVERGED = ROOT / "benchmarks" / "converged"
CHECKPOINTS = {EXPERIMENT: CONVERGED / "vgg16_w025_e60_seed0.pt",
               "converged_resnet20": CONVERGED / "resnet20_seed0.pt"}
CHECKPOINT = CHECKPOINTS[EXPERIMENT]
# --fast: bf16 autocast and channels-last weights (benchmarks/train_speed/: 2.3x the training
# step on this CPU); such runs are named with this suffix, apart from the fp32 records.
FAST_SUFFIX, FAST_PRECISION = "_bf16cl", "bf16-mixed"
# --fast as pl-prune overrides (this harness's pl_pruning runs and benchmarks/latency_target/)
FAST_OVERRIDES = (f"trainer.precision={FAST_PRECISION}", "callbacks=[default,channels_last]")
FINETUNE_LR = 0.01  # the two_phase preset's finetune_lr, and the external pipelines' default (--lr)
# Torch-Pruning's group_sl recipe on CIFAR: reproduce/main.py's defaults (100 epochs of sparsity
# learning, then 100 of fine-tuning, each SGD with momentum 0.9 from lr 0.01, x0.1 at epochs 60
# and 80; no weight decay while the regulariser trains, 5e-4 in the fine-tune; 400 pruning
# steps), the regularisation coefficient of its CIFAR group_sl scripts (1e-4) and the per-layer
# cap of its VGG one (0.7; its ResNets have none). sl_schedule scales the epochs to a budget.
SPARSITY = "torch_pruning_sl"
TP_SL = {"sparsity_epochs": 100, "finetune_epochs": 100, "lr": 0.01, "milestones": (60, 80), "gamma": 0.1,
         "momentum": 0.9, "sparsity_weight_decay": 0.0, "weight_decay": 5e-4, "reg": 1e-4, "alpha": 16,
         "iterative_steps": 400, "max_pruning_ratio": 1.0, "vgg_max_pruning_ratio": 0.7}


def run_name(args: argparse.Namespace) -> str:
    """The run's name (its row, folder and JSON): ``--name``, or the method with its
    reduction, a fine-tune rate other than the default and a budget other than 15 epochs
    (``torch_pruning_3x_lr0.05_e40``); a network other than the VGG's prefixes it
    (``resnet20_torch_pruning_3x``)."""
    name = args.name
    if not name and args.method == "scratch":
        name = "scratch_" + (f"uniform_{args.reduction:g}x" if args.shape == "uniform"
                             else args.shape.rsplit("_seed", 1)[0].removeprefix(args.experiment.removeprefix("converged_") + "_"))
    if not name:
        name = "two_phase" if args.method == "pl_pruning" else args.method
        name += f"_{args.reduction:g}x" if args.reduction and args.method != "pl_pruning" else ""
        name += f"_lr{args.lr:g}" if args.lr != FINETUNE_LR else ""
        if args.method == SPARSITY:
            name += f"_reg{args.reg:g}" if args.reg != TP_SL["reg"] else ""
            name += f"_steps{args.steps}" if args.steps not in (None, TP_SL["iterative_steps"]) else ""
        name += f"_e{args.budget}" if args.budget != 15 else ""
    if args.fast and not name.endswith(FAST_SUFFIX):
        name += FAST_SUFFIX
    return name if args.experiment == EXPERIMENT else f"{args.experiment.removeprefix('converged_')}_{name}"


def _run_folder(args: argparse.Namespace) -> Path:
    """A run's working folder (ignored by git), where its checkpoints let a run killed
    part-way (a session's end) resume when the same command is given again."""
    return HERE / "outputs" / f"{args.name}_seed{args.seed}"


def _record_path(name: str, seed: int) -> Path:
    return RUNS / f"{name}_seed{seed}.json"


def _save(record: dict) -> Path:
    RUNS.mkdir(exist_ok=True)
    path = _record_path(record["name"], record["seed"])
    path.write_text(json.dumps(record, indent=1))
    print(f"wrote {path}")
    parking.release(PARTIAL, path.stem)
    return path


def park() -> list[Path]:
    """Copy every unfinished run's resume point (its last checkpoint) and CSV logs from
    ``outputs/`` (not committed) to ``partial/`` (committed): a session's machine may not
    outlive it, and a run given the same command on a fresh checkout continues from there."""
    return parking.park(HERE / "outputs", PARTIAL, RESUME_POINTS,
                        finished=lambda name: (RUNS / f"{name}.json").is_file())


def _unpark(folder: Path) -> None:
    parking.unpark(folder, PARTIAL, RESUME_POINTS)


def val_curve(folder: Path, logs: str = "csv") -> list[float | None]:
    """Validation accuracy after each training epoch of the run in ``folder`` (item ``e`` is
    epoch ``e``), from its CSV logs under ``logs`` (every version: a resumed run logs a new
    one); ``None`` for an epoch whose log is missing (a run parked before its logs were).
    Validations at step 0 (the controller's judgments before the first epoch) are not epochs
    and are left out."""
    import csv

    by_epoch: dict[int, float] = {}
    for path in sorted(folder.glob(f"{logs}/**/metrics.csv"), key=lambda p: p.stat().st_mtime):
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if row.get("val_acc") and int(row["step"]) > 0:
                    by_epoch[int(row["epoch"])] = float(row["val_acc"])
    return [by_epoch.get(e) for e in range(max(by_epoch) + 1)] if by_epoch else []


def _trainer(args: argparse.Namespace, folder: Path, epochs: int, last: Path | None = None,
             logs: str = "lightning_logs", callbacks=()):
    """A CPU Trainer of the run in ``folder``: CSV logs in ``csv/<logs>/``; with ``last``, the
    checkpoint written there after every epoch (the run's resume point); ``--fast``'s
    precision and channels-last weights."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from pl_pruning.callbacks import ChannelsLast

    keep = [*callbacks]
    if last is not None:
        keep.append(ModelCheckpoint(dirpath=last.parent, filename=last.stem, enable_version_counter=False))
    if args.fast:
        keep.append(ChannelsLast())
    return L.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, logger=CSVLogger(folder / "csv", name=logs),
                     precision=FAST_PRECISION if args.fast else "32-true", callbacks=keep or None,
                     enable_checkpointing=last is not None, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0)


def _machine() -> str:
    import torch

    return f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


# ----------------------------------------------------------------------------- pl_pruning


def _budget_key(args: argparse.Namespace) -> str:
    """The pruning fit's epochs: ``pruning.fit.max_epochs``; a ``--tree`` checkout from before
    the override keys were renamed (the ``shipped`` controller) names it ``pruning.max_epochs``."""
    return "pruning.max_epochs" if args.tree else "pruning.fit.max_epochs"


def run_pl_pruning(args: argparse.Namespace) -> dict:
    """``pl-prune`` from the converged checkpoint with the two_phase preset (+ overrides)."""
    folder = _run_folder(args)  # the app resumes from it, as any pl-prune run does
    _unpark(folder)
    resumed = (folder / PL_PRUNING_RESUME).is_file()
    overrides = [f"experiment={args.experiment}", f"model.checkpoint={Path(args.checkpoint).resolve()}",
                 "pruning=two_phase", f"{_budget_key(args)}={args.budget}", f"seed={args.seed}",
                 f"hydra.run.dir={folder}", "callbacks.rich_progress_bar=null",
                 # every method spends the whole budget: a run that stops pruning early fine-tunes the rest
                 *([] if args.tree else ["pruning.controller.fill_budget=true"]),
                 *(FAST_OVERRIDES if args.fast else ()),
                 *args.overrides]
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pl_pruning", *overrides], check=True, cwd=args.tree or ROOT)
    seconds = time.perf_counter() - start
    results = json.loads((folder / "results.json").read_text())
    report = json.loads((folder / "pruning_report.json").read_text())
    steps = [e for e in report["history"] if e["phase"] in ("global", "layerwise")]
    return {
        "method": "pl_pruning", "overrides": list(args.overrides),
        "baseline": results["baseline"], "pruned": results["pruned"],
        "macs_reduction": results["macs_reduction"], "acc_drop": results["acc_drop"],
        "max_drop": report.get("max_drop"), "channels": report.get("channels", {}).get("after"),
        "surgeries": len(steps), "accepted": sum(bool(e["accepted"]) for e in steps),
        "epochs": args.budget, "wall_s": round(seconds, 1),
        "resumed": resumed, "val_curve": val_curve(folder), "history": report["history"],
    }


# ----------------------------------------------------------------------------- external baselines


def _setup(args: argparse.Namespace):
    """The experiment's data module and the converged network, exactly as pl-prune builds them."""
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate

    from pl_pruning.checkpoint import load_weights
    from pl_pruning.models import build_model

    with initialize_config_module("pl_pruning.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={args.experiment}", f"seed={args.seed}"])
    dm = instantiate(cfg.data)
    net = build_model(cfg.model.name, num_classes=dm.num_classes, in_channels=dm.in_channels,
                      width=cfg.model.width)
    load_weights(net, args.checkpoint, what=f"{cfg.model.name} x{cfg.model.width}")
    return cfg, dm, net


def _block(acc: float, cost) -> dict:
    """A network's row of a record: its test accuracy and its cost (``measure.Cost``)."""
    return {"test_acc": acc, "macs": cost.macs, "params": cost.params,
            "latency_ms": cost.latency_ms, "latency_batch_size": cost.batch_size}


def _target(args: argparse.Namespace, base_macs: int) -> tuple[float, int]:
    """The MACs to reach and Torch-Pruning's number of iterative steps: those of the matched
    pl_pruning run, or ``--reduction`` and ``--steps``."""
    if args.reduction:
        return base_macs / args.reduction, args.steps
    matched = json.loads((RUNS / f"{args.match}.json").read_text())
    return float(matched["pruned"]["macs"]), int(matched.get("surgeries") or 1)


def _count(net, example) -> int:
    from pl_pruning.measure import count_macs

    return count_macs(net, example)


def _bisect(prune, net, example, target: float, high: float) -> tuple[object, float]:
    """The pruned copy whose MACs are closest to ``target`` from above or at it."""
    low, best = 0.0, None
    for _ in range(14):
        ratio = (low + high) / 2
        candidate = prune(copy.deepcopy(net), ratio)
        if _count(candidate, example) > target:
            low = ratio
        else:
            high, best = ratio, candidate
    return (best if best is not None else prune(copy.deepcopy(net), high)), high


def torch_pruning_pipeline(net, example, target: float, steps: int):
    """Torch-Pruning as its CIFAR examples run it: MetaPruner, global pruning, group L2
    magnitude (GroupMagnitudeImportance(p=2), formerly GroupNormImportance), ``steps``
    iterative steps, the classifier ignored, at most 70% of a layer (their VGG setting)."""
    import torch_pruning as tp
    from torch import nn

    from pl_pruning.modes import kept_modes

    def prune(model, ratio):
        classifier = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        with kept_modes(model):  # its tracing leaves every module in eval mode (BatchNorm frozen in the fine-tune)
            pruner = tp.pruner.MetaPruner(model, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                          global_pruning=True, pruning_ratio=ratio, iterative_steps=steps,
                                          max_pruning_ratio=0.7, ignored_layers=[classifier])
            for _ in range(steps):
                pruner.step()
        return model
    return _bisect(prune, net, example, target, high=0.7)


def l1_uniform(net, example, target: float):
    """Li et al. 2017: the same fraction of every conv layer's lowest-L1 filters, one shot."""
    import torch

    from pl_pruning.pruning.surgery import prune_filters, pruning_groups

    def prune(model, ratio):
        plan = {}
        for group in pruning_groups(model, example):
            conv = model.get_submodule(group.root)
            k = min(int(round(ratio * group.channels)), group.channels - 1)
            if k:
                norms = conv.weight.detach().abs().flatten(1).sum(1)
                plan[group.root] = torch.argsort(norms)[:k].tolist()
        if plan:
            prune_filters(model, plan, example, compensate=False)
        return model
    return _bisect(prune, net, example, target, high=0.95)


def run_external(args: argparse.Namespace) -> dict:
    import lightning as L
    import torch

    from pl_pruning.measure import channel_counts, measure_cost
    from pl_pruning.module import ImageClassifier

    L.seed_everything(args.seed, workers=True)
    cfg, dm, net = _setup(args)
    example = torch.zeros(1, *dm.input_shape)
    base_cost = measure_cost(net, torch.zeros(64, *dm.input_shape), latency=True)
    target, steps = _target(args, base_cost.macs)
    start = time.perf_counter()
    if args.method == "torch_pruning":
        pruned, ratio = torch_pruning_pipeline(net, example, target, steps)
    else:
        pruned, ratio = l1_uniform(net, example, target)
    prune_s = time.perf_counter() - start
    # The pruning above is deterministic, so the fine-tune resumes from its last checkpoint.
    folder = _run_folder(args)
    _unpark(folder)
    last = folder / EXTERNAL_RESUME
    resumed = last.is_file()
    base_model = ImageClassifier(net, num_classes=dm.num_classes, input_shape=dm.input_shape)
    base_acc = float(_trainer(args, folder, 1).test(base_model, datamodule=dm, verbose=False)[0]["test_acc"])
    model = ImageClassifier(pruned, num_classes=dm.num_classes, input_shape=dm.input_shape,
                            optimizer="sgd", lr=args.lr, momentum=0.9, weight_decay=cfg.optim.weight_decay,
                            nesterov=True, scheduler="cosine")
    fit = _trainer(args, folder, args.budget, last=last)
    fit.fit(model, datamodule=dm, ckpt_path=last if resumed else None)
    acc = float(fit.test(model, datamodule=dm, verbose=False)[0]["test_acc"])
    cost = measure_cost(model.net, torch.zeros(64, *dm.input_shape), latency=True)
    return {
        "method": args.method, "matched": args.match, "reduction_asked": args.reduction,
        "target_macs": target, "ratio": ratio, "finetune_lr": args.lr,
        "iterative_steps": steps if args.method == "torch_pruning" else 1,
        "baseline": _block(base_acc, base_cost), "pruned": _block(acc, cost),
        "macs_reduction": base_cost.macs / cost.macs, "acc_drop": base_acc - acc,
        "channels": channel_counts(model.net, convs_only=True), "epochs": args.budget, "prune_s": round(prune_s, 1),
        "wall_s": round(time.perf_counter() - start, 1), "resumed": resumed,
        "val_curve": val_curve(folder),
    }


# ----------------------------------------------------------------------------- Torch-Pruning with sparsity learning


def sl_schedule(budget: int, lr: float = TP_SL["lr"], reg: float = TP_SL["reg"],
                steps: int = TP_SL["iterative_steps"]) -> dict:
    """TP_SL's epochs scaled to ``budget``: sparsity learning and fine-tuning share the budget
    as theirs share 200 epochs (half each, the fine-tune taking an odd one), and each phase's
    rate drops at the same fractions of its own length as theirs (60% and 80%). The learning
    rate, regularisation and pruning steps are per step, not per epoch: they stay theirs unless
    given (``lr``, ``reg``, ``steps``)."""
    sparsity = budget * TP_SL["sparsity_epochs"] // (TP_SL["sparsity_epochs"] + TP_SL["finetune_epochs"])
    finetune = budget - sparsity

    def milestones(epochs, theirs):
        return [round(m * epochs / theirs) for m in TP_SL["milestones"]]
    return {"sparsity_epochs": sparsity, "sparsity_lr": lr,
            "sparsity_milestones": milestones(sparsity, TP_SL["sparsity_epochs"]),
            "sparsity_weight_decay": TP_SL["sparsity_weight_decay"], "reg": reg, "reg_alpha": TP_SL["alpha"],
            "iterative_steps": steps, "finetune_epochs": finetune, "finetune_lr": lr,
            "finetune_milestones": milestones(finetune, TP_SL["finetune_epochs"]),
            "weight_decay": TP_SL["weight_decay"], "gamma": TP_SL["gamma"], "momentum": TP_SL["momentum"],
            "nesterov": False}


def run_torch_pruning_sl(args: argparse.Namespace) -> dict:
    """Torch-Pruning's group_sl as its reproduction script runs it, scaled to the budget
    (``sl_schedule``): the converged network trained with the GroupNormPruner's regulariser,
    pruned to the MACs target in the pruner's small global steps (no training between
    them), then fine-tuned. Each training phase resumes from its own checkpoint; the pruning
    between them is deterministic given the sparse weights, so it is redone on resuming."""
    import group_sparsity as gs
    import lightning as L
    import torch

    from pl_pruning.measure import channel_counts, measure_cost
    from pl_pruning.module import ImageClassifier

    L.seed_everything(args.seed, workers=True)
    cfg, dm, net = _setup(args)
    example = torch.zeros(1, *dm.input_shape)
    base_cost = measure_cost(net, torch.zeros(64, *dm.input_shape), latency=True)
    target, _ = _target(args, base_cost.macs)
    plan = sl_schedule(args.budget, lr=args.lr, reg=args.reg, steps=args.steps)
    plan["max_pruning_ratio"] = TP_SL["vgg_max_pruning_ratio" if cfg.model.name.startswith("vgg") else "max_pruning_ratio"]
    folder = _run_folder(args)
    _unpark(folder)
    resumed = {"sparsity": (folder / SPARSITY_RESUME).is_file(), "finetune": (folder / EXTERNAL_RESUME).is_file()}
    start = time.perf_counter()
    extra = gs.Tally()  # this sitting's passes outside the two fits: the tests and the cut's validation

    def classifier(network, weight_decay):
        return ImageClassifier(network, num_classes=dm.num_classes, input_shape=dm.input_shape, optimizer="sgd",
                               lr=args.lr, momentum=plan["momentum"], weight_decay=weight_decay, nesterov=False,
                               scheduler="none")  # their MultiStepLR: a callback, gs.MultiStepLR

    def fit(model, phase, resume_point, epochs, milestones, *callbacks):
        tally, last = gs.Tally(), folder / resume_point
        trainer = _trainer(args, folder, epochs, last=last, logs=phase,
                           callbacks=[gs.MultiStepLR(args.lr, milestones, plan["gamma"]), tally, *callbacks])
        trainer.fit(model, datamodule=dm, ckpt_path=last if last.is_file() else None)
        return tally

    base_acc = float(_trainer(args, folder, 1, callbacks=[extra]).test(
        ImageClassifier(net, num_classes=dm.num_classes, input_shape=dm.input_shape), datamodule=dm, verbose=False)[0]["test_acc"])
    # 1. sparsity learning (a fit already at its last epoch only restores the weights it ended with)
    pruner = gs.group_sl_pruner(net, example, dm.num_classes, plan["reg"], plan["iterative_steps"], plan["max_pruning_ratio"])
    sparsity = fit(classifier(net, plan["sparsity_weight_decay"]), "sparsity", SPARSITY_RESUME,
                   plan["sparsity_epochs"], plan["sparsity_milestones"], gs.GroupSparsity(pruner, net))
    # 2. progressive pruning to the target
    pruning_start = time.perf_counter()
    steps_taken = gs.prune_progressively(pruner, net, example, target, _count)
    prune_s = time.perf_counter() - pruning_start
    del pruner
    model = classifier(net, plan["weight_decay"])
    val_cut = float(_trainer(args, folder, 1, callbacks=[extra]).validate(model, datamodule=dm, verbose=False)[0]["val_acc"])
    # 3. fine-tuning
    finetune = fit(model, "finetune", EXTERNAL_RESUME, plan["finetune_epochs"], plan["finetune_milestones"])
    acc = float(_trainer(args, folder, 1, callbacks=[extra]).test(model, datamodule=dm, verbose=False)[0]["test_acc"])
    cost = measure_cost(model.net, torch.zeros(64, *dm.input_shape), latency=True)
    images = {"sparsity": sparsity.images, "finetune": finetune.images, "outside_fits": extra.images}
    curve = val_curve(folder, "csv/sparsity")
    return {
        "method": args.method, "matched": args.match, "reduction_asked": args.reduction,
        "target_macs": target, "reached_target": cost.macs <= target, "schedule": plan,
        "finetune_lr": args.lr, "iterative_steps": plan["iterative_steps"], "steps_taken": steps_taken,
        "pruning_ratio": steps_taken / plan["iterative_steps"],
        "baseline": _block(base_acc, base_cost), "pruned": _block(acc, cost),
        "macs_reduction": base_cost.macs / cost.macs, "acc_drop": base_acc - acc,
        "channels": channel_counts(model.net, convs_only=True), "epochs": args.budget,
        "val_acc_cut": val_cut,  # the pruned network before any fine-tuning
        "images_forwarded": sum(sum(v.values()) for v in images.values()), "images": images,
        "fit_s": {"sparsity": round(sparsity.seconds, 1), "finetune": round(finetune.seconds, 1)},
        "prune_s": round(prune_s, 1), "wall_s": round(time.perf_counter() - start, 1), "resumed": resumed,
        # the whole run's epochs: sparsity learning's, then the fine-tune's
        "val_curve": (curve + [None] * plan["sparsity_epochs"])[:plan["sparsity_epochs"]]
        + val_curve(folder, "csv/finetune"),
    }


# ----------------------------------------------------------------------------- scratch controls


def _shaped(arch_cfg, channels: dict[str, int], num_classes: int, in_channels: int, example):
    """A freshly initialised network of the architecture with ``channels`` filters per layer:
    the full network cut to those counts, then every layer re-initialised (PyTorch's default
    initialisation depends on a layer's fan-in, so it runs after the cut)."""
    from pl_pruning.models import build_model
    from pl_pruning.pruning.surgery import prune_filters, pruning_groups

    net = build_model(arch_cfg.name, num_classes=num_classes, in_channels=in_channels, width=arch_cfg.width)
    wanted = {name.removeprefix("net."): n for name, n in channels.items()}
    plan = {g.root: list(range(wanted[g.root], g.channels)) for g in pruning_groups(net, example)
            if g.root in wanted and wanted[g.root] < g.channels}
    if plan:
        prune_filters(net, plan, example, compensate=False)
    for module in net.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return net


def _uniform(arch_cfg, target: float, num_classes: int, in_channels: int, example):
    """The VGG of the architecture scaled uniformly (its width multiplier) to the largest width
    whose MACs are at most ``target``, freshly initialised; and that width."""
    from pl_pruning.models import build_model

    def build(width):
        return build_model(arch_cfg.name, num_classes=num_classes, in_channels=in_channels, width=width)
    low, high = 0.0, float(arch_cfg.width)
    for _ in range(20):
        mid = (low + high) / 2
        low, high = (mid, high) if _count(build(mid), example) <= target else (low, mid)
    return build(low), low


def run_scratch(args: argparse.Namespace) -> dict:
    """The architecture a pruning run ended with (``--shape <run>``), or the uniformly thinner
    one of the same MACs (``--shape uniform`` with ``--reduction``), trained from scratch with
    the converged baseline's own schedule (the experiment preset's optimiser, learning rate,
    cosine schedule and epochs): pruning's result is read against it (Liu et al. 2019)."""
    import lightning as L
    import torch

    from pl_pruning.measure import channel_counts, measure_cost
    from pl_pruning.module import ImageClassifier

    L.seed_everything(args.seed, workers=True)
    cfg, dm, converged = _setup(args)
    example = torch.zeros(1, *dm.input_shape)
    base_cost = measure_cost(converged, torch.zeros(64, *dm.input_shape), latency=True)
    if args.shape == "uniform":
        net, width = _uniform(cfg.model, base_cost.macs / args.reduction, dm.num_classes, dm.in_channels, example)
        source = {"uniform_width": width}
    else:
        shaped_by = json.loads((RUNS / f"{args.shape}.json").read_text())
        net = _shaped(cfg.model, shaped_by["channels"], dm.num_classes, dm.in_channels, example)
        source = {"shape_of": args.shape}
    epochs = int(cfg.trainer.max_epochs)
    folder = _run_folder(args)
    _unpark(folder)
    last = folder / EXTERNAL_RESUME
    resumed = last.is_file()
    start = time.perf_counter()
    fit = _trainer(args, folder, epochs, last=last)
    base_acc = float(fit.test(ImageClassifier(converged, num_classes=dm.num_classes, input_shape=dm.input_shape),
                              datamodule=dm, verbose=False)[0]["test_acc"])
    model = ImageClassifier(net, num_classes=dm.num_classes, input_shape=dm.input_shape, **cfg.optim)
    fit.fit(model, datamodule=dm, ckpt_path=last if resumed else None)
    acc = float(fit.test(model, datamodule=dm, verbose=False)[0]["test_acc"])
    cost = measure_cost(model.net, torch.zeros(64, *dm.input_shape), latency=True)
    return {
        "method": "scratch", **source, "optim": dict(cfg.optim),
        "baseline": _block(base_acc, base_cost), "pruned": _block(acc, cost),
        "macs_reduction": base_cost.macs / cost.macs, "acc_drop": base_acc - acc,
        "channels": channel_counts(model.net, convs_only=True), "epochs": epochs,
        "wall_s": round(time.perf_counter() - start, 1), "resumed": resumed, "val_curve": val_curve(folder),
    }


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("method", choices=["pl_pruning", "torch_pruning", SPARSITY, "l1_uniform", "scratch", "render", "park"])
    p.add_argument("overrides", nargs="*", help="Hydra overrides for pl_pruning runs (ablations)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget", type=int, default=15, help="training epochs of every method")
    p.add_argument("--tree", help="pl_pruning runs: another checkout of the project to run (the controller "
                                  "before a change: git worktree add ../shipped <commit>)")
    p.add_argument("--name", help="run name (default: two_phase / torch_pruning / l1_uniform)")
    p.add_argument("--match", help="run (<name>_seed<seed>) whose pruned MACs the baseline must reach")
    p.add_argument("--reduction", type=float, help="external runs without --match: reach this MACs reduction")
    p.add_argument("--steps", type=int, help="Torch-Pruning's iterative steps: torch_pruning with --reduction (default 5), "
                                            f"{SPARSITY} (default {TP_SL['iterative_steps']}, theirs; another is named _steps<n>)")
    p.add_argument("--reg", type=float, default=TP_SL["reg"],
                   help=f"{SPARSITY}: the regularisation coefficient (default {TP_SL['reg']:g}, theirs; another is named _reg<reg>)")
    p.add_argument("--lr", type=float, default=FINETUNE_LR,
                   help="external runs: the cosine fine-tune's starting learning rate (another adds _lr<lr> to the name)")
    p.add_argument("--experiment", default=EXPERIMENT,
                   help=f"experiment preset (another than {EXPERIMENT} prefixes the run name: resnet20_two_phase)")
    p.add_argument("--shape", help="scratch runs: a run (<name>_seed<seed>) whose final architecture is "
                                   "trained from scratch, or 'uniform' (with --reduction): the uniformly thinner network")
    p.add_argument("--fast", action="store_true",
                   help=f"bf16 autocast + channels-last weights (named with {FAST_SUFFIX})")
    p.add_argument("--checkpoint", help="the converged network's state dict (default: the experiment's, "
                                        + ", ".join(f"{k}: {v.name}" for k, v in CHECKPOINTS.items()) + ")")
    args = p.parse_intermixed_args(argv)  # overrides may follow the options
    os.chdir(ROOT)  # the presets name data relative to the repository root
    if args.method == "render":  # render.py reads only the records: its own process, no import circle
        subprocess.run([sys.executable, str(HERE / "render.py")], check=True)
        return
    if args.method == "park":
        park()
        return
    if args.method == "scratch":
        if not args.shape or (args.shape == "uniform") != bool(args.reduction):
            p.error("scratch needs --shape <run>, or --shape uniform with --reduction")
    elif args.method != "pl_pruning" and not (args.match or args.reduction):
        p.error(f"{args.method} needs --match <run> (the pl_pruning run whose MACs it must reach) or --reduction")
    if args.match and args.reduction:
        p.error("give --match or --reduction, not both")
    if args.reduction is not None and args.reduction <= 1:
        p.error(f"--reduction must be more than 1, got {args.reduction}")
    if args.lr <= 0:
        p.error(f"--lr must be more than 0, got {args.lr}")
    if args.steps is None:
        args.steps = TP_SL["iterative_steps"] if args.method == SPARSITY else 5
    if args.steps < 1:
        p.error(f"--steps must be at least 1, got {args.steps}")
    if args.method == SPARSITY and args.budget < 2:
        p.error(f"{SPARSITY} needs --budget 2 or more (an epoch of sparsity learning and one of fine-tuning), got {args.budget}")
    if args.method == SPARSITY and args.reg <= 0:
        p.error(f"--reg must be more than 0, got {args.reg}")
    if args.method == "pl_pruning" and args.lr != FINETUNE_LR:
        p.error("pl_pruning runs take the fine-tuning rate as an override: pruning.fit.lr=<lr>")
    if args.checkpoint is None:
        if args.experiment not in CHECKPOINTS:
            p.error(f"no converged network is known for experiment {args.experiment!r}: give --checkpoint")
        args.checkpoint = str(CHECKPOINTS[args.experiment])
    args.name = run_name(args)
    recorded = _record_path(args.name, args.seed)
    if recorded.is_file():  # a second run would overwrite its record (wall time and all) with its own
        p.error(f"{args.name} seed {args.seed} is recorded already ({recorded}); "
                "delete that file to run it again")
    run = {"pl_pruning": run_pl_pruning, "scratch": run_scratch, SPARSITY: run_torch_pruning_sl}.get(args.method, run_external)
    record = run(args)
    # a scratch run trains the baseline's schedule, not --budget: its budget is the epochs it trained
    record.update(name=args.name, seed=args.seed, budget=record.get("epochs", args.budget), experiment=args.experiment,
                  checkpoint=str(Path(args.checkpoint).resolve().relative_to(ROOT))
                  if Path(args.checkpoint).resolve().is_relative_to(ROOT) else args.checkpoint,
                  machine=_machine(), precision=FAST_PRECISION + "+channels_last" if args.fast else "32-true",
                  command="python benchmarks/compare/run.py " + " ".join(
                      argv if argv is not None else sys.argv[1:]))
    _save(record)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
