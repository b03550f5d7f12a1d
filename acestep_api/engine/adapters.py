"""Adapters on the DiT: the official trainer's PEFT folders (LoRA, LoKr) loaded into our
diffusers transformer with peft, kept loaded for the next jobs, and switched per job.

Each adapter folder is injected once per transformer under a name of its own; a job turns
exactly one of them on at its scale (``applied``) and every adapter off again afterwards, so a
job without an adapter runs the plain layers, bit for bit. Adapters loaded for requests are
kept in a bounded least-recently-used set per transformer; the server's default adapters (the
/v1/lora/* routes) stay loaded until unloaded. The last adapter leaving a layer gives the layer
back its plain module.

Everything here runs on the worker's one engine thread, so the state needs no lock; the HTTP
layer reads the published ``AdapterStatus`` from the ``AdapterLedger``.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import warnings
import weakref
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from acestep_api.engine.adapter_folders import (
    SUPPORTED_TYPES,
    AdapterError,
    AdapterFiles,
    check_name,
    read_adapter,
)
from acestep_api.engine.adapter_tasks import AdapterAnswer, AdapterLedger, AdapterStatus, AdapterTask
from acestep_api.engine.loading.adapter_keys import AdapterKeyError, module_and_tensor, rename_pattern
from acestep_api.engine.loading.keys import diffusers_to_official_key, format_keys

log = logging.getLogger(__name__)

DEFAULT_CACHE_SIZE = 4
# Config fields that would adapt or train more than the decoder's own layers.
UNSUPPORTED_FIELDS = ("modules_to_save", "target_parameters", "trainable_token_indices", "layer_replication")
INIT_FIELDS = {"LORA": "init_lora_weights", "LOKR": "init_weights"}


@dataclass
class _Held:
    """One adapter folder injected into one transformer."""

    internal: str  # its adapter name inside peft's layers
    peft_type: str
    stamp: tuple[int, int]  # the weights file's (mtime_ns, size) when read: a rewrite reloads it


@dataclass
class _Default:
    """A default adapter (loaded by POST /v1/lora/load) under its client-given label."""

    folder: str
    scale: float
    peft_type: str


def _internal_name(folder: str) -> str:
    # peft keeps adapters in ModuleDicts: the key must not contain '.'.
    return "acestep_" + hashlib.sha256(folder.encode("utf-8")).hexdigest()[:16]


def _stamp(files: AdapterFiles) -> tuple[int, int]:
    stat = files.weights.stat()
    return stat.st_mtime_ns, stat.st_size


def _official_name(ours: str) -> str:
    """Our saved-format adapter key in the official trainer's names (for messages)."""
    return "base_model.model." + diffusers_to_official_key("transformer", ours).removeprefix("decoder.")


def _plain_tensors(method):
    """Run ``method`` outside inference mode (and without autograd): adapter weights made inside
    a job's inference mode would be inference tensors, which peft's later switches (flags on
    their requires_grad) may not touch outside it."""
    @functools.wraps(method)
    def run(*args, **kwargs):
        with torch.inference_mode(False), torch.no_grad():
            return method(*args, **kwargs)
    return run


def _tuner_layers(transformer: nn.Module):
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [(name, module) for name, module in transformer.named_modules() if isinstance(module, BaseTunerLayer)]


class AdapterManager:
    """The adapters of one engine: which are loaded into which transformer, the defaults, and
    the state published for the routes."""

    def __init__(self, lora_dir: Path | None, cache_size: int = DEFAULT_CACHE_SIZE):
        self.lora_dir = Path(lora_dir) if lora_dir is not None else None
        self.cache_size = max(1, int(cache_size))
        self.ledger = AdapterLedger()
        self._held: weakref.WeakKeyDictionary[nn.Module, OrderedDict[str, _Held]] = weakref.WeakKeyDictionary()
        self._defaults: OrderedDict[str, _Default] = OrderedDict()
        self._active: str | None = None
        self._use_lora = False
        self._publish()

    # --- Per job --------------------------------------------------------------------------

    def choose(self, lora_name: str | None, lora_scale: float | None) -> tuple[str | None, float]:
        """The adapter a job runs with and its scale: the one it names, else the server's default
        when on; ``(None, 0.0)`` for none. What the job's resolved request records."""
        if lora_name:
            check_name(self._folder(), lora_name)
            return lora_name, 1.0 if lora_scale is None else lora_scale
        if self._use_lora and self._active is not None:
            default = self._defaults[self._active]
            return default.folder, default.scale if lora_scale is None else lora_scale
        return None, 0.0

    def prepare(self, transformer: nn.Module, name: str | None) -> None:
        """Load adapter ``name`` into ``transformer`` unless it is there already."""
        if name:
            self._ensure(transformer, name)
            self._publish()

    @contextmanager
    def applied(self, transformer: nn.Module, name: str | None, scale: float) -> Iterator[None]:
        """Adapter ``name`` on at ``scale`` (none, or scale 0: every adapter off) for the block."""
        held = None
        if name and scale > 0:  # loaded by prepare() as a rule; loaded here otherwise
            held = self._held.get(transformer, {}).get(name) or self._ensure(transformer, name)
        self._switch(transformer, held.internal if held else None, scale)
        try:
            yield
        finally:
            self._switch(transformer, None, 0.0)

    # --- The default adapters (the /v1/lora/* routes) ----------------------------------------

    def run(self, task: AdapterTask, transformer: nn.Module) -> AdapterAnswer:
        """One route's change, on the primary ``transformer`` (where a load is checked)."""
        try:
            message = getattr(self, f"_{task.op}")(task, transformer)
        except AdapterError as error:
            return AdapterAnswer(problem=str(error), status=self.status())
        self._publish()
        return AdapterAnswer(message=message, status=self.status())

    def _load(self, task: AdapterTask, transformer: nn.Module) -> str:
        folder = task.folder or ""
        label = (task.adapter_name or "").strip() or folder
        if label in self._defaults:
            raise AdapterError(f"Adapter name already in use: {label}. Use a different adapter_name or unload first.")
        held = self._ensure(transformer, folder)
        self._defaults[label] = _Default(folder, 1.0, held.peft_type)
        self._active, self._use_lora = label, True
        return f"LoRA '{label}' loaded from {folder}"

    def _unload(self, task: AdapterTask, transformer: nn.Module) -> str:
        if not self._defaults:
            return "No LoRA adapter loaded."
        folders = {default.folder for default in self._defaults.values()}
        self._defaults.clear()
        self._active, self._use_lora = None, False
        for module, held in list(self._held.items()):
            for folder in folders & set(held):
                self._remove(module, held.pop(folder))
        return "LoRA unloaded, using base model"

    def _toggle(self, task: AdapterTask, transformer: nn.Module) -> str:
        if task.use_lora and not self._defaults:
            raise AdapterError("No LoRA adapter loaded. Please load a LoRA first.")
        self._use_lora = bool(task.use_lora)
        return f"LoRA {'enabled' if self._use_lora else 'disabled'}"

    def _scale(self, task: AdapterTask, transformer: nn.Module) -> str:
        if not self._defaults:
            return "No LoRA loaded"
        label = (task.adapter_name or "").strip() or self._active
        if label not in self._defaults:
            raise AdapterError(f"Unknown adapter: {label}. Loaded: {list(self._defaults)}")
        self._defaults[label].scale = float(task.scale if task.scale is not None else 1.0)
        return f"LoRA scale: {self._defaults[label].scale:.2f}"

    def status(self) -> AdapterStatus:
        active = self._defaults.get(self._active) if self._active else None
        cached = sorted({folder for held in self._held.values() for folder in held})
        return AdapterStatus(
            lora_loaded=bool(self._defaults), use_lora=self._use_lora,
            lora_scale=active.scale if active else 1.0,
            adapter_type=active.peft_type.lower() if active else None,
            scales={label: d.scale for label, d in self._defaults.items()},
            active_adapter=self._active, adapters=list(self._defaults),
            folders={label: d.folder for label, d in self._defaults.items()}, cached=cached,
        )

    def _publish(self) -> None:
        self.ledger.publish(self.status())

    # --- Loading and switching ---------------------------------------------------------------

    def _folder(self) -> Path:
        if self.lora_dir is None:
            raise AdapterError("this server has no adapters folder (ACESTEP_LORA_DIR)")
        return self.lora_dir

    def _ensure(self, transformer: nn.Module, name: str) -> _Held:
        held = self._held.setdefault(transformer, OrderedDict())
        files = read_adapter(self._folder(), name)
        present = held.get(name)
        if present is not None and present.stamp == _stamp(files):
            held.move_to_end(name)
            return present
        if present is not None:  # the folder was rewritten since: read it again
            self._remove(transformer, held.pop(name))
        self._make_room_for(transformer, files.peft_type)
        internal = _internal_name(name)
        self._inject(transformer, files, internal)
        held[name] = _Held(internal, files.peft_type, _stamp(files))
        self._evict(transformer)
        log.info("Adapter %s (%s) loaded into the DiT", name, files.peft_type)
        return held[name]

    def _pinned(self) -> set[str]:
        return {default.folder for default in self._defaults.values()}

    def _make_room_for(self, transformer: nn.Module, peft_type: str) -> None:
        """A layer takes adapters of one type: others, if only cached, go; if defaults, it is an error."""
        held = self._held[transformer]
        others = [name for name, h in held.items() if h.peft_type != peft_type]
        clash = [name for name in others if name in self._pinned()]
        if clash:
            raise AdapterError(f"a {peft_type} adapter cannot be loaded beside the default "
                               f"{held[clash[0]].peft_type} adapter {clash[0]!r}; unload it first")
        for name in others:
            self._remove(transformer, held.pop(name))

    def _evict(self, transformer: nn.Module) -> None:
        held = self._held[transformer]
        pinned = self._pinned()
        unpinned = [name for name in held if name not in pinned]  # oldest first
        for name in unpinned[: max(0, len(unpinned) - self.cache_size)]:
            self._remove(transformer, held.pop(name))
            log.info("Adapter %s unloaded from the DiT (least recently used)", name)

    @_plain_tensors
    def _inject(self, transformer: nn.Module, files: AdapterFiles, internal: str) -> None:
        """Map the stored keys, build the peft config for exactly those modules, inject, check
        the shapes and load the tensors; any failure leaves the transformer as it was."""
        from peft import inject_adapter_in_model
        from peft.utils.save_and_load import get_peft_model_state_dict, set_peft_model_state_dict

        stored = self._mapped_keys(files)
        modules = dict(transformer.named_modules())
        targets = sorted({self._split(files, ours)[0] for ours in stored})
        missing_modules = {m for m in targets if m not in modules}
        if missing_modules:
            names = sorted(official for ours, official in stored.items()
                           if self._split(files, ours)[0] in missing_modules)
            raise AdapterError(f"adapter {files.name!r}: keys that name no module of the DiT: {format_keys(names)}")
        config = self._config(files, targets)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # peft warns about a second adapter on one model
                inject_adapter_in_model(config, transformer, adapter_name=internal)
        except Exception as error:  # noqa: BLE001 - peft refuses a module type or a config value
            self._remove(transformer, _Held(internal, files.peft_type, (0, 0)))
            raise AdapterError(f"adapter {files.name!r} cannot be applied to the DiT: {error}") from None
        try:
            expected = get_peft_model_state_dict(transformer, adapter_name=internal)
            self._check_shapes(files, stored, expected)
            from safetensors import safe_open

            state: dict[str, torch.Tensor] = {}
            with safe_open(str(files.weights), framework="pt", device="cpu") as handle:
                for ours, official in stored.items():
                    target = expected[ours]
                    state[ours] = handle.get_tensor(official).to(device=target.device, dtype=target.dtype)
            result = set_peft_model_state_dict(transformer, state, adapter_name=internal)
            if result.unexpected_keys:
                raise AdapterError(f"adapter {files.name!r}: tensors the DiT has no place for: "
                                   f"{format_keys(sorted(result.unexpected_keys))}")
        except BaseException:
            self._remove(transformer, _Held(internal, files.peft_type, (0, 0)))
            raise

    @staticmethod
    def _split(files: AdapterFiles, ours: str) -> tuple[str, str]:
        prefix = SUPPORTED_TYPES[files.peft_type]
        parts = ours.split(".")
        split = next(i for i, part in enumerate(parts) if part.startswith(prefix))
        return ".".join(parts[:split]), ".".join(parts[split:])

    @staticmethod
    def _mapped_keys(files: AdapterFiles) -> dict[str, str]:
        """Our saved-format key -> the stored (official) key, for every stored tensor."""
        prefix = SUPPORTED_TYPES[files.peft_type]
        mapped: dict[str, str] = {}
        unmapped: list[str] = []
        for key in sorted(files.shapes):
            try:
                module, tensor = module_and_tensor(key, prefix)
            except AdapterKeyError as error:
                unmapped.append(str(error))
                continue
            ours = f"{module}.{tensor}"
            if ours in mapped:
                raise AdapterError(f"adapter {files.name!r}: keys {mapped[ours]!r} and {key!r} name the same tensor")
            mapped[ours] = key
        if unmapped:
            raise AdapterError(f"adapter {files.name!r}: {unmapped[0]}"
                               + (f" (and {len(unmapped) - 1} more keys)" if len(unmapped) > 1 else ""))
        return mapped

    @staticmethod
    def _config(files: AdapterFiles, targets: list[str]):
        """The adapter's own config, aimed at exactly the modules its tensors name."""
        from peft import PeftConfig

        raw = dict(files.config)
        for field in UNSUPPORTED_FIELDS:
            if raw.get(field):
                raise AdapterError(f"adapter {files.name!r}: {field} in adapter_config.json is not supported")
        for field in ("rank_pattern", "alpha_pattern"):
            pattern = raw.get(field) or {}
            if not isinstance(pattern, dict):
                raise AdapterError(f"adapter {files.name!r}: {field} must be an object")
            raw[field] = {rename_pattern(str(key)): value for key, value in pattern.items()}
        raw.update(target_modules=targets, exclude_modules=None, layers_to_transform=None, layers_pattern=None,
                   inference_mode=True, base_model_name_or_path=None, revision=None)
        raw[INIT_FIELDS[files.peft_type]] = False  # the stored tensors replace any initial values
        raw["peft_type"] = files.peft_type
        try:
            return PeftConfig.from_peft_type(**raw)
        except Exception as error:  # noqa: BLE001 - an unknown field, a value of the wrong type
            raise AdapterError(f"adapter {files.name!r}: adapter_config.json is not a valid "
                               f"{files.peft_type} config: {error}") from None

    @staticmethod
    def _check_shapes(files: AdapterFiles, stored: dict[str, str], expected: dict[str, torch.Tensor]) -> None:
        missing = sorted(_official_name(ours) for ours in set(expected) - set(stored))
        unexpected = sorted(stored[ours] for ours in set(stored) - set(expected))
        wrong = sorted(f"{stored[ours]} (adapter {list(files.shapes[stored[ours]])}, "
                       f"DiT needs {list(expected[ours].shape)})"
                       for ours in set(stored) & set(expected)
                       if tuple(files.shapes[stored[ours]]) != tuple(expected[ours].shape))
        problems = []
        if missing:
            problems.append(f"missing keys: {format_keys(missing)}")
        if unexpected:
            problems.append(f"unexpected keys: {format_keys(unexpected)}")
        if wrong:
            problems.append(f"wrong shapes: {format_keys(wrong)}")
        if problems:
            raise AdapterError(f"adapter {files.name!r} does not fit this DiT; " + "; ".join(problems))

    @staticmethod
    @_plain_tensors
    def _switch(transformer: nn.Module, internal: str | None, scale: float) -> None:
        for _, layer in _tuner_layers(transformer):
            if internal is None:
                layer.enable_adapters(False)
            else:
                layer.enable_adapters(True)
                layer.set_adapter(internal, inference_mode=True)
                layer.set_scale(internal, scale)

    @staticmethod
    @_plain_tensors
    def _remove(transformer: nn.Module, held: _Held) -> None:
        """Delete one adapter from every layer; a layer left with none becomes its plain module again."""
        for name, layer in _tuner_layers(transformer):
            if held.internal in layer._all_available_adapter_names():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # peft notes the active adapter it picks next
                    layer.delete_adapter(held.internal)
            if not layer._all_available_adapter_names():
                parent_name, _, child = name.rpartition(".")
                parent = transformer.get_submodule(parent_name) if parent_name else transformer
                setattr(parent, child, layer.get_base_layer())
        configs = getattr(transformer, "peft_config", None)
        if isinstance(configs, dict):
            configs.pop(held.internal, None)
            if not configs:
                del transformer.peft_config
