"""Checkpoints: safetensors weights + training state, verified on every load.

A checkpoint directory holds snapshots and a pointer to the current one, replaced so that
at every instant a complete checkpoint is where the loader looks (``gptref.run.snapshots``).
The files of one snapshot::

    model.safetensors   the model's state dict (parameters and persistent buffers, e.g. the
                        attention ``mask``); aliased entries are stored once (see below)
    state.pt            step, epoch, batch_in_epoch, history, optimizer state, RNG states,
                        extra: tensors and plain containers only, so it loads with
                        ``torch.load(weights_only=True)``
    config.json         the model config as a JSON object (``GPTConfig.to_dict()``); a
                        run's other settings live in its run directory (``gptref.run.rundir``)
    manifest.json       written last: format, version and each file's size and SHA-256

Each file is fsynced, the manifest written last and the directory fsynced before the
snapshot is renamed into place and the pointer moved to it. Loading verifies every file
against the manifest (sizes, SHA-256, no symlinks) and reads the newest snapshot that
verifies: a damaged one is skipped with a ``SnapshotSkipped`` warning of one line naming
the file at fault; when none verifies, a one-line ValueError names each. Never a silently
wrong model, never a silent start from scratch.

The book's ``.pth`` files are ``gptref.weights.pth``'s.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from gptref._check import check_int, few, one_line
from gptref._io import fsync_file, read_json_object, writing
from gptref._owned import Kind, claim_dir, lstat, no_links, read_marker
from gptref.rng import capture_rng
from gptref.run import snapshots

FORMAT = "gptref.run.checkpoint"
VERSION = 1
WEIGHTS, STATE, CONFIG, MANIFEST = "model.safetensors", "state.pt", "config.json", "manifest.json"
_FILES = (WEIGHTS, STATE, CONFIG)
_ALIASES_KEY = "gptref.aliases"  # safetensors metadata: {"alias name": "stored name"} as JSON
_PLAIN = (type(None), bool, int, float, str, bytes)  # exact types torch.load(weights_only) takes


class SnapshotSkipped(UserWarning):
    """A damaged snapshot was skipped for an older one that verifies (one line: which, why)."""


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    step: int,
    epoch: int,
    config: Any,
    history: Any,
    batch_in_epoch: int = 0,
    extra: Mapping[str, Any] | None = None,
    keep: int = 2,
) -> Path:
    """Save a new snapshot into the checkpoint directory ``path`` and make it the current one
    (the last ``keep`` are kept) -> ``path``.

    ``step``: optimizer updates done so far (the next update's ``global_step``);
    ``epoch``: the epoch in progress (0-based); ``batch_in_epoch``: batches of that
    epoch already trained on, so a resumed run skips them (0 at an epoch boundary).
    ``config``: a GPTConfig (anything with ``to_dict()``), a dataclass or a dict; stored
    as JSON. ``history``: a dict of lists, or a dataclass / object with ``to_dict()``.
    ``extra``: anything else to keep (e.g. the RNG state at the start of the epoch); like
    ``history`` it may hold only tensors, numbers, strings, bytes, None and
    lists/tuples/dicts of them. The torch CPU RNG, every CUDA device's RNG (when CUDA is
    available) and Python's ``random`` state are captured as of this call.
    """
    path = Path(path)
    for name, value in (("step", step), ("epoch", epoch), ("batch_in_epoch", batch_in_epoch)):
        check_int("save_checkpoint", name, value, low=0)
    config_json = _config_json(config)
    history = _as_dict("save_checkpoint", "history", history)
    extra = {} if extra is None else _as_dict("save_checkpoint", "extra", extra)
    _check_plain("history", history)
    _check_plain("extra", extra)
    tensors, aliases = _stored_weights(model)
    state = {
        "format": FORMAT,
        "version": VERSION,
        "step": step,
        "epoch": epoch,
        "batch_in_epoch": batch_in_epoch,
        "history": history,
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "rng": capture_rng(),
        "extra": extra,
    }
    check_int("save_checkpoint", "keep", keep, low=1)
    legacy = _check_replaceable(path)

    def write(tmp: Path) -> None:
        metadata = {_ALIASES_KEY: json.dumps(aliases, sort_keys=True)}
        with writing(path, f"the checkpoint of step {step}"):
            _write_file(tmp / WEIGHTS, lambda file: save_file(tensors, str(file), metadata=metadata))  # fmt: skip
            _write_file(tmp / STATE, lambda file: torch.save(state, file))
            _write_file(tmp / CONFIG, lambda file: file.write_text(config_json, encoding="utf-8"))
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "torch": torch.__version__,
            "step": step,
            "files": {name: _digest(tmp / name) for name in _FILES},
        }
        # the manifest is the commit record: a directory without it is never loadable
        manifest_json = json.dumps(manifest, indent=2)
        with writing(path, f"the checkpoint of step {step}"):
            _write_file(tmp / MANIFEST, lambda file: file.write_text(manifest_json, encoding="utf-8"))  # fmt: skip

    snapshots.commit(path, step, write, keep, legacy)
    return path


def saved_step(path: str | os.PathLike) -> int:
    """Updates done by the current checkpoint in ``path`` (the newest snapshot that
    verifies), read from its manifest."""
    snap = snapshot(path)
    step = _manifest(snap).get("step")
    if type(step) is int and step >= 0:
        return step
    state = torch.load(snap / STATE, map_location="cpu", weights_only=True)  # a 0.1 manifest
    _check_state(snap / STATE, state)
    return state["step"]


def snapshot(path: str | os.PathLike) -> Path:
    """The directory holding the newest snapshot that verifies in the checkpoint directory
    ``path`` (``path`` itself for a checkpoint of gptref 0.1); every newer one skipped is a
    ``SnapshotSkipped`` warning naming its file at fault. ValueError when none verifies."""
    path = Path(path)
    found, beside = snapshots.candidates(path)
    skipped: list[str] = []
    for candidate in [*found, *beside]:
        problem = _problem(candidate)
        if problem is None:
            for why in skipped:  # (read the snapshot returned, not ``path``, to hear this once)
                warnings.warn(f"{why}; skipped that snapshot for {candidate}", SnapshotSkipped,
                              stacklevel=2)  # fmt: skip
            return candidate
        if candidate in found:  # 0.1's copies beside a killed save may be partial: no news
            skipped.append(problem)
    if skipped:
        raise ValueError(
            f"load_checkpoint: no complete checkpoint in {path} (no snapshot verifies): "
            + "; ".join(skipped)
        )
    left = snapshots.leftovers(path)
    hint = f"; an interrupted save left {left}" if left else ""
    where = "no checkpoint directory at" if not path.is_dir() else "no complete checkpoint in"
    raise ValueError(f"load_checkpoint: {where} {path}{hint}")


def is_checkpoint(path: Path) -> bool:
    """Whether the folder ``path`` is a gptref checkpoint directory (or one snapshot): a
    snapshot in it, or in it itself, holds a manifest of this format (read, not followed)."""
    found, _ = snapshots.candidates(path)
    return any(_ours(p) for p in found)


def _ours(snapshot_dir: Path) -> bool:
    manifest = read_marker(snapshot_dir / MANIFEST)
    return manifest is not None and manifest.get("format") == FORMAT


# what a checkpoint directory is, to the ownership rule (gptref._owned)
KIND = Kind("a gptref checkpoint", is_checkpoint, snapshots.is_leftover)


def load_checkpoint(
    path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> dict[str, Any]:
    """Verify the checkpoint at ``path``, load its weights into ``model`` (and its optimizer
    state into ``optimizer``) -> state: {step, epoch, batch_in_epoch, history, config, rng,
    extra, optimizer}.

    Every file is checked against the manifest before ``model`` or ``optimizer`` change;
    a missing, partial or corrupted checkpoint, or weights that do not fit the model, is a
    ValueError naming the path. RNG states are *not* restored here: call
    ``restore_rng(state)`` right before training resumes.
    """
    path = snapshot(path)
    tensors = _read_weights(path / WEIGHTS)
    try:
        state = torch.load(path / STATE, map_location="cpu", weights_only=True)
        config = _model_config(json.loads((path / CONFIG).read_text(encoding="utf-8")))
    except Exception as e:  # the digests matched, so the writer itself was broken
        raise ValueError(f"load_checkpoint: {path} is unreadable: {one_line(e, kind=True)}") from e
    _check_state(path / STATE, state)
    check_fits(f"load_checkpoint: {path / WEIGHTS}", model, tensors)
    if optimizer is not None:
        if state["optimizer"] is None:
            raise ValueError(
                f"load_checkpoint: {path} was saved without optimizer state; "
                "call load_checkpoint(path, model) and start a fresh optimizer"
            )
        try:
            optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError, RuntimeError) as e:
            raise ValueError(
                f"load_checkpoint: the optimizer state in {path} does not fit the optimizer: "
                f"{one_line(e, kind=True)}"
            ) from e
    model.load_state_dict(tensors)
    return {
        "step": state["step"],
        "epoch": state["epoch"],
        "batch_in_epoch": state["batch_in_epoch"],
        "history": state["history"],
        "config": config,
        "rng": state["rng"],
        "extra": state["extra"],
        "optimizer": state["optimizer"],
    }


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """-> the config dict of the checkpoint at ``path`` (verified), to build the model with
    before ``load_checkpoint``: ``GPTModel(GPTConfig.from_dict(load_config(path)))``."""
    path = snapshot(path)
    try:
        return _model_config(json.loads((path / CONFIG).read_text(encoding="utf-8")))
    except ValueError as e:
        raise ValueError(f"load_config: {path / CONFIG} is not JSON: {one_line(e)}") from None


def _model_config(saved: Any) -> Any:
    """config.json holds the model config; checkpoints that ``gptref train`` wrote before
    0.2 held the run's whole record there (``{"run", "model", "data", ...}``): its model."""
    if isinstance(saved, dict) and isinstance(saved.get("model"), dict):
        return saved["model"]
    return saved


# ---------------------------------------------------------------- weights


def _stored_weights(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """-> (tensors to store, {alias: stored name}): safetensors refuses tensors sharing memory.

    An entry that is exactly another entry (tied weights) is stored once and recorded as an
    alias; any other overlap of storage gets its own copy. Values go to CPU, contiguous."""
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    views: dict[tuple, str] = {}
    storages: set[tuple] = set()
    for name, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"save_checkpoint: state dict entry {name!r} is a {type(value).__name__}, not a "
                "tensor; safetensors stores tensors only"
            )
        t = value.detach()
        storage = (t.device, t.untyped_storage().data_ptr())
        view = (*storage, t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        if t.numel() and view in views:
            aliases[name] = views[view]
            continue
        shared = t.numel() > 0 and storage in storages
        if t.numel():
            views[view] = name
            storages.add(storage)
        t = t.to("cpu")
        tensors[name] = t.clone() if shared else t.contiguous()
    return tensors, aliases


def _read_weights(file: Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
        aliases = json.loads(metadata.get(_ALIASES_KEY, "{}"))
    except Exception as e:
        raise ValueError(f"load_checkpoint: {file} is unreadable: {one_line(e, kind=True)}") from e
    if not isinstance(aliases, dict) or not all(
        isinstance(stored, str) and stored in tensors for stored in aliases.values()
    ):
        raise ValueError(f"load_checkpoint: {file} is damaged: its aliases name missing tensors")
    for alias, stored in aliases.items():
        tensors[alias] = tensors[stored]
    return tensors


def check_fits(where: str, model: nn.Module, tensors: Mapping[str, Any]) -> None:
    """Same keys and shapes as model.state_dict(), checked before anything is copied."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{where} does not fit the model: missing {few(missing)}, unexpected "
            f"{few(unexpected)}; build the model from the checkpoint's config"
        )
    for name, value in expected.items():
        got = tensors[name]
        if isinstance(value, torch.Tensor) and tuple(got.shape) != tuple(value.shape):
            raise ValueError(
                f"{where} does not fit the model: {name} has shape {tuple(got.shape)}, the "
                f"model's is {tuple(value.shape)}; build the model from the checkpoint's config"
            )


# ---------------------------------------------------------------- files


def _write_file(file: Path, write: Callable[[Path], Any]) -> None:
    """Create ``file`` with ``write(file)`` and fsync it: on disk before anything refers to it.
    (A full disk, as torch's or safetensors' own error too, becomes one line naming the
    checkpoint: ``gptref._io.writing`` around the calls.)"""
    write(file)
    fsync_file(file)


def _digest(file: Path) -> dict[str, Any]:
    h, size = hashlib.sha256(), 0
    with open(file, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return {"bytes": size, "sha256": h.hexdigest()}


def _manifest(path: Path) -> dict[str, Any]:
    """``path``'s manifest, its structure checked -> it; ValueError naming what is wrong."""
    where, file = "load_checkpoint", path / MANIFEST
    manifest = read_json_object(file, where, "is corrupted")
    if not isinstance(manifest.get("files"), dict):
        raise ValueError(f"{where}: {file} is corrupted: not a manifest (no 'files' table)")
    fmt, version = manifest.get("format"), manifest.get("version")
    if fmt != FORMAT or version != VERSION:
        raise ValueError(
            f"{where}: {path} is format {fmt!r} version {version!r}; this gptref reads "
            f"{FORMAT!r} version {VERSION}"
        )
    for name in _FILES:
        entry = manifest["files"].get(name)
        if entry is None:
            raise ValueError(f"{where}: {MANIFEST} in {path} does not list {name}")
        if not (isinstance(entry, dict) and type(entry.get("bytes")) is int
                and isinstance(entry.get("sha256"), str)):  # fmt: skip
            raise ValueError(f"{where}: {file} is corrupted: the entry of {name} is {entry!r}")
    return manifest


# snapshots checked in this process -> (the identity of their files, the problem or None):
# loading a checkpoint reads it more than once (its config, then its weights); each file is
# hashed once
_CHECKED: dict[Path, tuple[tuple, str | None]] = {}


def _signature(path: Path) -> tuple | None:
    marks = []
    for name in (*_FILES, MANIFEST):
        st = lstat(path / name)
        if st is None:
            return None
        marks.append((name, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode))  # fmt: skip
    return tuple(marks)


def _problem(path: Path) -> str | None:
    """None when ``path`` is a complete, intact snapshot (every file a regular file of the
    manifest's size and SHA-256), else one line naming the file at fault and what is wrong."""
    st = lstat(path)
    if st is None:
        return f"{path} is missing"
    if stat.S_ISLNK(st.st_mode):
        return f"{path} is a symbolic link; a checkpoint's snapshots are its own folders"
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a folder"
    signature = _signature(path)
    if signature is not None and path in _CHECKED and _CHECKED[path][0] == signature:
        return _CHECKED[path][1]
    problem = _check(path)
    if signature is not None:
        _CHECKED[path] = (signature, problem)
    return problem


def _check(path: Path) -> str | None:
    if lstat(path / MANIFEST) is None:
        return (f"{path} is not a complete checkpoint: {MANIFEST} is missing (an interrupted "
                "save, or not a gptref checkpoint)")  # fmt: skip
    for name in (MANIFEST, *_FILES):
        entry = lstat(path / name)
        if entry is not None and stat.S_ISLNK(entry.st_mode):
            return f"{path / name} is a symbolic link; a checkpoint holds its own files"
        if entry is not None and not stat.S_ISREG(entry.st_mode):
            return f"{path / name} is not a regular file"
    try:
        files = _manifest(path)["files"]
    except ValueError as e:
        return str(e).removeprefix("load_checkpoint: ")
    for name in _FILES:
        file, expected = path / name, files[name]
        st = lstat(file)
        if st is None:
            return f"{path} is not a complete checkpoint: {name} is missing"
        got = {"bytes": st.st_size}  # a truncated file needs no hashing to be told
        if got["bytes"] == expected["bytes"]:
            got = _digest(file)
        for key, show in (("bytes", lambda n: f"{n} bytes"), ("sha256", lambda h: f"SHA-256 {h[:12]}...")):  # fmt: skip
            if got[key] != expected[key]:
                return (f"{file} is corrupted: {show(got[key])}, the manifest says "
                        f"{show(expected[key])}")  # fmt: skip
    return None


_STATE_KEYS = {"step": int, "epoch": int, "batch_in_epoch": int, "history": dict,
               "rng": dict, "extra": dict}  # fmt: skip


def _check_state(file: Path, state: Any) -> None:
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"load_checkpoint: {file} is not gptref training state")
    for key, kind in _STATE_KEYS.items():
        if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool):
            raise ValueError(
                f"load_checkpoint: {file} is damaged: {key!r} is {type(state.get(key)).__name__}, "
                f"expected {kind.__name__}"
            )
    if "optimizer" not in state or not (
        state["optimizer"] is None or isinstance(state["optimizer"], dict)
    ):
        raise ValueError(f"load_checkpoint: {file} is damaged: 'optimizer' is not a dict")


def _check_replaceable(path: Path) -> bool:
    """Only a checkpoint directory (or an empty one) is saved into: never user data, never
    through a link -> whether it holds gptref 0.1's layout (superseded by the new save)."""
    if path.exists():
        no_links(path, [snapshots.LATEST, snapshots.LOCK])
    try:
        claim_dir(path, KIND, overwrite=True)
    except ValueError:
        raise ValueError(
            f"save_checkpoint: {path} exists and is not a gptref checkpoint; refusing to "
            "replace it (choose another path or remove it)"
        ) from None
    return snapshots.is_legacy(path, _ours)


# ---------------------------------------------------------------- values


def _config_json(config: Any) -> str:
    config = _as_dict("save_checkpoint", "config", config)
    try:
        return json.dumps(config, indent=2, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise TypeError(f"save_checkpoint: config is not JSON-serializable: {e}") from e


def _as_dict(where: str, name: str, value: Any) -> dict[str, Any]:
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if not isinstance(value, Mapping):
        raise TypeError(
            f"{where}: {name} must be a dict, a dataclass or have to_dict(), got {type(value).__name__}"
        )
    return dict(value)


def _check_plain(at: str, value: Any) -> None:
    """Fail at save time on anything ``torch.load(weights_only=True)`` would refuse at load time."""
    kind = type(value)
    if kind in _PLAIN or isinstance(value, torch.Tensor):
        return
    if kind in (list, tuple):
        for i, item in enumerate(value):
            _check_plain(f"{at}[{i}]", item)
        return
    if kind in (dict, OrderedDict):
        for key, item in value.items():
            if type(key) not in (str, int):
                raise TypeError(f"save_checkpoint: {at} has a key {key!r}; keys must be str or int")
            _check_plain(f"{at}[{key!r}]", item)
        return
    raise TypeError(
        f"save_checkpoint: {at} is a {kind.__name__}; a checkpoint holds only tensors, numbers, "
        "strings, bytes, None and lists/tuples/dicts of them (convert it, e.g. float(x), str(p))"
    )
