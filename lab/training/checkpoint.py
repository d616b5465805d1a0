"""Save and resume a training run: trained weights, optimizer state and progress in one file.

Training at scale takes hours on two CPU cores and a session is three, so a run stops where its time runs out
(``--minutes``) and the next session continues it (``--resume``) on the same lists, in the same order, with
the optimizer's moments intact: the result is the run that never stopped, not a new one from its weights.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

CHECKPOINT = "checkpoint.pt"  # beside the run's other files in its --out folder; kept out of git


def device_named(name: str) -> torch.device:
    """``auto``: the CUDA GPU when one is present, else the CPU; a GPU asked for and absent is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: no CUDA GPU is visible to PyTorch {torch.__version__}")
    return torch.device(name)


def run_options(args, names) -> dict:
    """The options (``names`` of ``args``) that decide what a run trains on and how, as the checkpoint keeps them:
    a resumed run must have the same."""
    return {name: str(getattr(args, name)) for name in names}


def save_checkpoint(folder: Path, model: torch.nn.Module, optimizer, progress: dict, settings: dict) -> Path:
    """Write the trainable weights, the optimizer and ``progress`` (step, elapsed seconds…) atomically: a run
    killed while saving keeps its previous checkpoint.  ``settings``: the options the run must resume with."""
    path = Path(folder) / CHECKPOINT
    path.parent.mkdir(parents=True, exist_ok=True)
    trained = {name: p.detach().cpu() for name, p in model.named_parameters() if p.requires_grad}
    state = {"weights": trained, "optimizer": optimizer.state_dict(), "progress": progress, "settings": settings,
             "rng": torch.get_rng_state()}
    partial = path.with_suffix(".partial")
    torch.save(state, partial)
    os.replace(partial, path)
    return path


def load_checkpoint(folder: Path, model: torch.nn.Module, optimizer, settings: dict) -> dict:
    """Restore a run saved by ``save_checkpoint`` into ``model`` and ``optimizer`` (built as the run built
    them) and return its progress.  Options that shape the run must match: resuming with other lists or
    another schedule would silently train something else."""
    path = Path(folder) / CHECKPOINT
    if not path.exists():
        raise SystemExit(f"--resume: no {CHECKPOINT} in {folder} (a run writes one when it stops early)")
    state = torch.load(path, map_location="cpu", weights_only=False)
    changed = {k: (state["settings"].get(k), v) for k, v in settings.items() if state["settings"].get(k) != v}
    if changed:
        raise SystemExit(f"--resume: these options differ from the run saved in {path} (saved, now): {changed}")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in state["weights"].items():
            params[name].copy_(tensor)
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"])
    return state["progress"]
