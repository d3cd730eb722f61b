"""The plan: what ``optimize`` chose, as a typed, versioned, validated artifact.

A plan file is JSON (``kind: cpcdrl-plan``, ``schema_version``); the pruned,
refitted weights the search scored sit beside it (``weights``: file name and
SHA-256), so export, deploy and evaluate load them instead of replaying the
refit. ``PlanRecord`` is what every method's search yields (feasible or not);
``Plan`` is a feasible one, what export and deploy take. A hand-edited file
loads into typed fields or gives one error line naming the first bad field.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, Field, StringConstraints, ValidationInfo, field_validator, model_validator

from cpcdrl_deploy.compress.pruning import PruneConfig
from cpcdrl_deploy.compress.transfer import TRANSFERS
from cpcdrl_deploy.core.artifact import Artifact, StrictPart
from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.measure.runtimes import RUNTIMES
from cpcdrl_deploy.models.zoo import get_entry, preprocess_for

PLAN_SCHEMA_VERSION = 1
Positive = Annotated[int, Field(ge=1)]


def _hex_digest(v: str) -> str:
    if re.fullmatch(r"[0-9a-f]{64}", v) is None:
        raise ValueError("must be 64 lowercase hex digits")
    return v


Sha256 = Annotated[str, AfterValidator(_hex_digest)]


class PlanWeights(StrictPart):
    file: Annotated[str, StringConstraints(pattern=r"^[^/]+$")]  # a name beside the plan file
    sha256: str


class PlanData(StrictPart):
    """Where the search's images came from: what a rebuild needs to draw the same calibration images."""

    source: str
    val_size: Positive | None = None
    calib_size: Positive | None = None
    val_source: str | None = None


class PlanPrune(StrictPart):
    importance: str = PruneConfig.importance
    round_to: Positive = PruneConfig.round_to
    refit: bool = PruneConfig.refit
    calibration_images: Positive | None = None

    def config(self) -> PruneConfig:
        return PruneConfig(importance=self.importance, round_to=self.round_to, refit=self.refit)


class PlanPreprocess(StrictPart):
    """How an image becomes the model's input (models/data.Preprocess): what the device must do the same way."""

    size: Positive
    resize: Positive | None = None
    mean: list[float]
    std: list[float]

    @classmethod
    def of(cls, model: str) -> PlanPreprocess:
        """What ``model`` (a model key) takes: ``zoo.preprocess_for``, as the plan records it."""
        return cls.model_validate(preprocess_for(model).to_dict())


class PlanProfiles(StrictPart):
    """The profiles (names or paths) and link overrides optimize was given."""

    edge: str | None = None
    cloud: str | None = None
    link: str | None = None
    bandwidth_bytes_per_s: float | None = None
    rtt_ms: float | None = None


class PlanAccuracy(StrictPart):
    """Top-1 in percent; empty for plans made without a search (``uniform_plan``)."""

    a0_test: float | None = None
    a0_validation: float | None = None
    max_accuracy_loss: float | None = None
    unpruned_validation: float | None = None
    unpruned_test: float | None = None
    validation: float | None = None
    validation_images: int | None = None
    test: float | None = None
    meets_a0_on_test: bool | None = None


class PlanMacs(StrictPart):
    edge: int
    cloud: int
    total: int
    unpruned: int


class PlanRecord(Artifact):
    """One method's outcome: a plan where it found one meeting the accuracy constraint (``feasible``)."""

    model_config = StrictPart.model_config  # a file people edit by hand
    KIND = "cpcdrl-plan"
    VERSION = PLAN_SCHEMA_VERSION
    REMAKE = "cpcdrl optimize MODEL --out plan.json"

    cpcdrl_version: str | None = None
    model: str
    checkpoint: str
    checkpoint_sha256: Sha256 | None = None
    method: str = ""
    feasible: bool
    profiles: PlanProfiles = PlanProfiles()
    latency_model: str | None = None
    accuracy: PlanAccuracy = PlanAccuracy()
    seed: int = 0
    data: PlanData
    preprocess: PlanPreprocess | None = None  # plans from before it was recorded: the CIFAR models' own
    episodes: int | None = None
    evaluations: int | None = None
    search_s: float | None = None
    host: str | None = None
    wall_s: float | None = None
    # a feasible plan's cut, keep ratios and what they cost
    cut: int | None = None
    cut_name: str | None = None
    n_layers: int | None = None
    ratios: list[float] | None = None  # keep ratios of layers 1..cut
    channels: list[int] | None = None  # every layer's output channels after pruning
    latency_ms: dict[str, float] = {}  # the optimiser's estimate, by part
    macs: PlanMacs | None = None
    cut_bytes: int | None = None
    transfer: str = "fp32"  # the cut tensor's encoding the plan was priced and scored with (compress/transfer.py)
    runtime: str = "onnxruntime"  # the head's runtime on the device it was priced with (measure/runtimes.py)
    prune: PlanPrune = PlanPrune()
    weights: PlanWeights | None = None

    @classmethod
    def upgrade(cls, d: dict[str, Any], version: int) -> dict[str, Any]:
        # plans written before calib_size sat in data kept it only as prune.calibration_images
        data, prune = d.get("data"), d.get("prune")
        if isinstance(data, dict) and "calib_size" not in data and isinstance(prune, dict):
            d["data"] = {**data, "calib_size": prune.get("calibration_images")}
        return d

    @model_validator(mode="after")
    def _consistent(self) -> PlanRecord:
        """What one field cannot say alone: the cut within the layers, one ratio per edge layer, a zoo model."""
        if self.cut is None:  # no plan (feasible: false)
            return self
        try:
            get_entry(self.model)
        except CpcdrlError:
            raise ValueError(f"field 'model' names no zoo model ({self.model!r})") from None
        for name in ("n_layers", "ratios", "channels"):  # a plan with a cut has them all
            if getattr(self, name) is None:
                raise ValueError(f"field {name!r} is missing")
        n = self.n_layers if self.n_layers is not None else -1
        if not 0 <= self.cut <= n:
            raise ValueError(f"field 'cut' must be in 0..{n}, not {self.cut}")
        if self.ratios is None or len(self.ratios) != self.cut or not all(0.0 < r <= 1.0 for r in self.ratios):
            raise ValueError(f"field 'ratios' must be {self.cut} keep ratios in (0, 1]")
        if self.channels is None or len(self.channels) != n or not all(c >= 1 for c in self.channels):
            raise ValueError(f"field 'channels' must be {n} positive integers")
        if any(v < 0 for v in self.latency_ms.values()):
            raise ValueError("field 'latency_ms' must map parts to non-negative milliseconds")
        return self

    @field_validator("transfer", "runtime")
    @classmethod
    def _known(cls, v: str, info: ValidationInfo) -> str:
        known = TRANSFERS if info.field_name == "transfer" else RUNTIMES
        if v not in known:
            raise ValueError(f"must be one of {', '.join(known)}")
        return v


class Plan(PlanRecord):
    """A feasible plan: cut after layer ``cut`` (0: all on the server, ``n_layers``: all on the edge), keep ratios of
    layers 1..cut."""

    cut: int
    n_layers: int
    ratios: list[float]
    channels: list[int]

    @model_validator(mode="after")
    def _feasible(self) -> Plan:
        if not self.feasible:
            raise ValueError("field 'feasible' is false: the method found no plan meeting the accuracy constraint")
        return self

    @property
    def pruned(self) -> bool:
        return any(r < 1.0 for r in self.ratios)

    @property
    def data_source(self) -> str:
        return self.data.source

    @property
    def val_size(self) -> int | None:
        return self.data.val_size

    @property
    def calib_size(self) -> int | None:
        return self.data.calib_size


def load_plan(path: str | Path) -> Plan:
    """A plan file, validated: every field export and deploy use has the right type and range, or one error line."""
    record: PlanRecord = PlanRecord.load(path, "plan")
    if not record.feasible:
        raise CpcdrlError(f"{path}: method {record.method} found no plan meeting the accuracy constraint")
    # the fields as the file has them: one a feasible plan needs and the file lacks is named as missing
    return Plan.from_data(record.model_dump(mode="json", exclude_unset=True), str(path))
