"""Where each model waits between uses: on the accelerator, or on the CPU until its stage.

The official memory settings (ACESTEP_OFFLOAD_TO_CPU, ACESTEP_OFFLOAD_DIT_TO_CPU,
ACESTEP_LM_OFFLOAD_TO_CPU) let a small GPU serve models that do not fit on it together: a
model marked to wait on the CPU is moved to the device when a stage needs it, and goes back to
the CPU when another stage needs the room. Moves happen only between stages, never inside one,
so every tensor a stage makes sits on the device of the model it uses.

A unit is every module that must sit together: a DiT's four modules move as one (the sampler
reads the condition encoder's null embedding while the transformer runs).
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

log = logging.getLogger(__name__)

# The kinds of units, as the settings name them.
TEXT_ENCODER, VAE, DIT, LM = "text_encoder", "vae", "dit", "lm"


AUTO_OFFLOAD_BELOW_GIB = 16  # the official threshold: smaller GPUs offload unless told otherwise


def small_gpu(device: torch.device) -> bool:
    """Whether ``device`` is a CUDA GPU with less memory than AUTO_OFFLOAD_BELOW_GIB."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    total = torch.cuda.get_device_properties(device.index or 0).total_memory
    return total < AUTO_OFFLOAD_BELOW_GIB * 1024**3


@dataclass(frozen=True)
class OffloadPolicy:
    """Which kinds of model wait on the CPU between their stages."""

    text_encoder: bool = False
    vae: bool = False
    dit: bool = False
    lm: bool = False

    @classmethod
    def from_flags(cls, offload_to_cpu: bool, offload_dit_to_cpu: bool, lm_offload_to_cpu: bool | None) -> "OffloadPolicy":
        """The official meaning: the text encoder and the VAE wait on the CPU with offload_to_cpu,
        the DiT only when offload_dit_to_cpu is on too; the LM follows offload_to_cpu unless
        lm_offload_to_cpu says otherwise."""
        lm = offload_to_cpu if lm_offload_to_cpu is None else lm_offload_to_cpu
        return cls(text_encoder=offload_to_cpu, vae=offload_to_cpu, dit=offload_to_cpu and offload_dit_to_cpu, lm=lm)

    def offloads(self, kind: str) -> bool:
        return bool(getattr(self, kind))

    @property
    def any(self) -> bool:
        return self.text_encoder or self.vae or self.dit or self.lm


class Placement:
    """The units the engine registered, and where each one sits now."""

    def __init__(self, device: torch.device, policy: OffloadPolicy = OffloadPolicy(),
                 offload_device: torch.device = torch.device("cpu")):
        self.device = torch.device(device)
        self.policy = policy
        self.offload_device = torch.device(offload_device)
        self._units: dict[str, tuple[str, tuple[nn.Module, ...]]] = {}
        self._resident: set[str] = set()  # offloadable units on the device now
        self._lock = threading.RLock()

    def __copy__(self) -> "Placement":
        """The same units and where they sit, in tables of its own (a copied engine's)."""
        twin = object.__new__(Placement)
        twin.__dict__.update(self.__dict__)
        twin._units, twin._resident, twin._lock = dict(self._units), set(self._resident), threading.RLock()
        return twin

    @property
    def active(self) -> bool:
        """Whether any unit moves at all (the device is not the CPU, and something is offloaded)."""
        return self.policy.any and self.device != self.offload_device

    def register(self, unit: str, kind: str, modules: list[nn.Module] | tuple[nn.Module, ...]) -> None:
        """Add a unit (its modules on the device, just loaded); an offloaded kind goes to the CPU now."""
        with self._lock:
            self._units[unit] = (kind, tuple(modules))
            self._resident.discard(unit)
            if self.policy.offloads(kind):
                self._move(unit, self.offload_device)

    def forget(self, unit: str) -> None:
        with self._lock:
            self._units.pop(unit, None)
            self._resident.discard(unit)

    def on_device(self, unit: str) -> bool:
        """Whether the unit sits on the execution device now (a kind never offloaded always does)."""
        kind, _ = self._units[unit]
        return not self.policy.offloads(kind) or unit in self._resident

    def where(self, unit: str) -> torch.device:
        """The device the unit's modules sit on now."""
        return self.device if self.on_device(unit) else self.offload_device

    @contextmanager
    def use(self, *units: str) -> Iterator[None]:
        """A stage that runs ``units``: they are on the device inside; offloaded units not named
        go back to the CPU first, so only what the stage needs takes room."""
        with self._lock:
            wanted = {unit for unit in units if unit in self._units and self.policy.offloads(self._units[unit][0])}
            for unit in sorted(self._resident - wanted):
                self._move(unit, self.offload_device)
                self._resident.discard(unit)
            for unit in sorted(wanted - self._resident):
                self._move(unit, self.device)
                self._resident.add(unit)
        yield

    def _move(self, unit: str, device: torch.device) -> None:
        _, modules = self._units[unit]
        for module in modules:
            module.to(device)
        if device == self.offload_device and self.device.type == "cuda":
            torch.cuda.empty_cache()
        log.debug("%s -> %s", unit, device)
