"""The evaluation's settings: their defaults here are the only ones (physiotouch/conf/eval/default.yaml extends
them through Hydra's `eval_settings` node, physiotouch/hydra_setup.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

# Each perturbation of the robustness sweep and its strengths (evaluation/robustness.py applies them). By default the
# three the researchers' plan names (crop, change of scale, light noise); a random crop and brightness are there to be
# asked for (e.g. eval.robustness.strengths.brightness=[0.7,0.85,1.15,1.3]): each strength costs about one encoding of
# every clip, a quarter of the default evaluation's time for the two of them.
DEFAULT_STRENGTHS = {
    "center_crop": [0.9, 0.8, 0.7],  # fraction of the side kept, then resized back
    "random_crop": [],  # e.g. [0.9, 0.8, 0.7]: the same fractions at a place drawn per clip
    "scale": [0.9, 0.8, 0.7],  # zoom out: shrink by the factor, pad with the border
    "noise": [0.02, 0.05, 0.1],  # Gaussian sigma, in [0, 1] pixel units
    "brightness": [],  # multiplicative factor, e.g. [0.7, 0.85, 1.15, 1.3]
}

FIT_PROCESS = ("auto", "on", "off")  # EvalConfig.fit_process's values
ECE_BINS = 10  # calibration error's confidence bins: the default of every function that bins (one home)


@dataclass
class ProbeConfig:
    C: float = 1.0  # the defaults, used where a fit set cannot be tuned (fewer than two groups) or tune is false
    max_iter: int = 2000
    knn_k: int = 10
    ece_bins: int = ECE_BINS
    ridge_alpha: float = 1.0
    # Each probe's C, α or k chosen by inner cross-validation on its fit clips, grouped like the outer folds,
    # separately for the model and every control (evaluation/tuned.py)
    tune: bool = True
    inner_folds: int = 3
    C_grid: list = field(default_factory=lambda: [0.001, 0.01, 0.1, 1.0, 10.0])
    alpha_grid: list = field(default_factory=lambda: [0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0])
    k_grid: list = field(default_factory=lambda: [1, 3, 5, 10, 20, 40])
    backend: str = "torch"  # torch: the fits of a task batched (probe_fits.py); sklearn: one by one (the oracle)
    sequence_folds: int = 3  # object probe: folds of held-out sequences
    object_folds: int = 5  # attribute probes: folds of held-out objects
    attributes: list = field(default_factory=lambda: ["motion", "peak_depth", "surface"])  # labels.csv columns
    # trajectory.csv: each window's own targets, probed as window_<name> (data/trajectory.py WINDOW_TARGETS)
    window_targets: list = field(default_factory=lambda: ["motion", "depth", "travel", "rotation"])
    time_split: float = 0.6  # re-identification diagnostic: windows ending before this fraction fit, the rest test
    gap: int = 4


@dataclass
class EvalConfig:
    batch_size: int = 64
    mask_ratio: float = 0.75  # the config sets ${validation.mask_ratio}: the masks validation used
    examples: int = 4  # worst and typical validation clips shown
    max_clips: int | None = None  # cap per split (quick looks)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    robustness: dict = field(default_factory=lambda: {"enabled": True, "strengths": DEFAULT_STRENGTHS})
    device: str = "auto"  # auto: cuda when a GPU is present, else cpu
    # A second process fitting the controls' probes beside the evaluation's threads (evaluation/fit_worker.py): auto
    # where torch has two or more threads here, on, off
    fit_process: str = "auto"
    # The controls' probe results kept on disk and read back while their features, tasks, settings and fitting code
    # are unchanged (evaluation/probe_cache.py), in probe_cache_dir (null: the data's cache folder, data.cache_dir,
    # under probes/)
    probe_cache: bool = True
    probe_cache_dir: str | None = None

    def validate(self) -> None:
        from physiotouch.utils.settings import require

        require(self.fit_process in FIT_PROCESS, "eval.fit_process", self.fit_process,
                f"one of {', '.join(FIT_PROCESS)}")

    def __post_init__(self):
        if self.device == "auto":
            from physiotouch.utils.devices import device_name  # torch: only when the settings are used

            self.device = device_name("auto")
