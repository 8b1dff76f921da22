"""INIKNet configuration: the release's `model_config.json` plus the supplement's ablations."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from .errors import ConfigError

# The atom INR's input code: its dimension D for each `coords` option.
COORD_DIMS = {"polar": 3, "grid": 2}
_ATOMS = ("inr", "free")


@dataclasses.dataclass(frozen=True)
class INIKNetConfig:
    """Hyper-parameters of INIKNet. The defaults are the released model's."""

    model_name: str = "INIKNet"
    in_ch: int = 3
    base_ch: int = 32
    num_res_unet: int = 2
    num_res_lstm: int = 2
    basis_num: int = 10  # M, atoms per size group
    max_kernel_size: int = 15  # K; G = K // 2 size groups of sizes 3, 5, ..., K
    w_max: float = 12.0
    w_min: float = 2.0
    learnable_freq: bool = True
    coords: str = "polar"  # "polar" (release) or "grid" (Cartesian), supplement Table 1
    atoms: str = "inr"  # "inr" (release) or "free" (learnable masked K x K atoms)
    inr_hidden: int = 64

    def __post_init__(self):
        def need(ok: bool, field: str, expected: str):
            if not ok:
                raise ConfigError(f"INIKNetConfig.{field}={getattr(self, field)!r}: expected {expected}")

        def is_int(v):
            return isinstance(v, int) and not isinstance(v, bool)

        def is_number(v):
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        need(self.model_name == "INIKNet", "model_name", "'INIKNet'")
        need(is_int(self.in_ch) and self.in_ch >= 1, "in_ch", "an integer >= 1")
        need(is_int(self.base_ch) and self.base_ch >= 1, "base_ch", "an integer >= 1")
        need(is_int(self.num_res_unet) and self.num_res_unet >= 0, "num_res_unet", "an integer >= 0")
        need(is_int(self.num_res_lstm) and self.num_res_lstm >= 0, "num_res_lstm", "an integer >= 0")
        need(is_int(self.basis_num) and 1 <= self.basis_num <= 16, "basis_num", "an integer in 1..16")
        need(
            is_int(self.max_kernel_size) and self.max_kernel_size % 2 == 1 and 3 <= self.max_kernel_size <= 19,
            "max_kernel_size",
            "an odd integer in 3..19",
        )
        need(is_number(self.w_min), "w_min", "a number")
        need(is_number(self.w_max), "w_max", "a number")
        need(isinstance(self.learnable_freq, bool), "learnable_freq", "true or false")
        need(self.coords in COORD_DIMS, "coords", f"one of {tuple(COORD_DIMS)}")
        need(self.atoms in _ATOMS, "atoms", f"one of {_ATOMS}")
        need(is_int(self.inr_hidden) and 1 <= self.inr_hidden <= 128, "inr_hidden", "an integer in 1..128")

    @property
    def num_groups(self) -> int:
        return self.max_kernel_size // 2

    @property
    def coord_dim(self) -> int:
        return COORD_DIMS[self.coords]

    def omegas(self) -> list[float]:
        """The atoms' sine frequencies, evenly spaced from w_min to w_max."""
        m = self.basis_num
        if m == 1:
            return [float(self.w_min)]
        return [self.w_min + (self.w_max - self.w_min) / (m - 1) * i for i in range(m)]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "INIKNetConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"config: expected a JSON object, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"config: unknown keys {unknown}; expected a subset of {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_json(cls, path) -> "INIKNetConfig":
        try:
            d = json.loads(Path(path).read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"config file {path}: not valid JSON ({e})") from None
        return cls.from_dict(d)

    def to_json(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")
