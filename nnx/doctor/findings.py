"""What the doctor reports: :class:`Finding`, the catalogue of ids, and every threshold.

A finding has a stable ``id`` (see :data:`CATALOGUE`), a ``severity``
(``info`` < ``warning`` < ``error``), the layers and steps where it was seen,
the ``evidence`` (numbers), a plain-language ``cause``, a concrete ``fix`` and
that fix as settings (``action``), which verification applies to a copy.

Severity rule: ``error`` means training cannot work as set up; ``warning``
means a symptom *and* its cause were both seen; ``info`` means a cause was
seen but training still made progress, or a symptom another finding explains.

The thresholds below are the doctor's whole judgement; each says why it has
its value. Detectors live in :mod:`nnx.doctor.detectors` (during training),
:mod:`nnx.doctor.static` and :mod:`nnx.doctor.model_checks` (before training).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

__all__ = ["Finding", "CATALOGUE", "SEVERITIES", "severity_rank", "sort_findings"]

SEVERITIES = ("info", "warning", "error")

#: id -> one-line description; ids are stable and documented
CATALOGUE = {
    "derivative-mismatch": "a derivative or backward disagrees with its forward",
    "symmetric-units": "units in a layer with identical weights (zero or constant init)",
    "dead-relu": "ReLU units that are never active",
    "saturated-units": "sigmoid/tanh units stuck near their bounds",
    "vanishing-gradients": "gradients collapse towards the input layers",
    "tiny-gradients": "gradients too small to change the weights",
    "exploding-gradients": "gradient norms grow by orders of magnitude",
    "non-finite": "NaN or infinite loss, activations, gradients or weights",
    "zero-gradients": "a layer's weight gradient is exactly zero",
    "stalled-weights": "the weights, or the cost, stopped changing",
    "lr-too-high": "learning rate too high",
    "lr-too-low": "learning rate too low",
    "initial-loss-off": "the loss at initialisation is far from what it should be",
    "loss-plateau": "the loss stopped improving while still high",
    "loss-oscillation": "the loss goes up and down instead of down",
    "loss-spikes": "the loss jumps up suddenly",
    "output-loss-mismatch": "the output layer does not fit the loss",
    "bounded-regression-output": "a bounded output (tanh/sigmoid/ReLU) for a regression target",
    "unscaled-inputs": "inputs not scaled (for example raw 0-255 pixels)",
    "feature-scale-spread": "features on wildly different scales",
    "overfitting": "the gap between training and validation grows",
    "train-test-leakage": "identical examples in the training and test/validation sets",
    "labels-out-of-range": "labels outside the classes the model predicts",
    "class-imbalance": "one class much rarer than another",
    "vanishing-activations": "the signal shrinks layer by layer in the forward pass",
    "under-training": "the loss was still falling when training ended, far from done",
    "over-regularised": "an L2 or weight-decay penalty pins the weights near zero",
    "lr-schedule-collapse": "the learning-rate schedule drove the rate to about zero",
    "below-baseline": "no better than a model that ignores its inputs",
}

# --- thresholds: units and dead/saturated --------------------------------

#: fraction of a layer's ReLU units that are *never* active (pre-activation > 0)
#: over the monitoring window. "Never active over a window" is how dead-ReLU
#: monitors commonly define a dead unit (a unit that is off for every input gets
#: no gradient and cannot recover). A quarter of a layer dead is already a
#: quarter of its capacity lost; healthy He-initialised nets stay well below 10%.
DEAD_FRACTION = 0.25
#: ... an error from this fraction on (the layer barely passes any signal)
DEAD_FRACTION_ERROR = 0.75
#: examples a window must hold before a unit that was never active counts as
#: dead; a unit active on 1% of inputs is missed by chance with p < 0.01 at 500
DEAD_MIN_ROWS = 500

#: fraction of (unit, example) pairs of a sigmoid/tanh layer that are saturated
#: (see ``monitor.SATURATION_MARGIN``). Glorot & Bengio (2010) show whole sigmoid
#: layers saturating this way; at 40% most of the layer's gradient is gone.
SATURATED_FRACTION = 0.4
SATURATED_FRACTION_ERROR = 0.8

#: below the error fractions, dead or saturated units are a warning only with a symptom
#: (a cause *and* a symptom): the loss less than half way down from an uninformed model
#: (``UNDERTRAINED_PROGRESS``), or half way from the threshold to the error fraction lost
#: while the loss has fallen by less than this fraction; otherwise they are reported as info
UNIT_PROGRESS = 0.9

#: units of a hidden layer sharing incoming and outgoing weights exactly.
#: Random initialisation never produces two equal units, so any is a sign of
#: zero/constant initialisation; from this fraction on it is an error.
SYMMETRIC_FRACTION_ERROR = 0.5

# --- thresholds: gradients ------------------------------------------------

#: relative gradient ||g|| / ||w|| of the first weight layer divided by that of the
#: last one. Below 1/100 the input layers learn a hundred times more slowly than
#: the output layer: vanishing gradients (each sigmoid layer divides by >= 4).
VANISHING_RATIO = 1e-2
#: ... and above 100 the gradients grow a hundredfold towards the input: exploding
EXPLODING_DEPTH_RATIO = 1e2
#: a gradient norm that grows this much above its median over the first samples
EXPLODING_GROWTH = 1e2
#: samples that form the "early" reference of a gradient norm
REFERENCE_SAMPLES = 5
#: relative gradient ||g|| / ||w|| below float32's resolution (2^-23 = 1.2e-7):
#: an SGD step with lr <= 1 cannot change such weights at all
TINY_GRADIENT = 1.2e-7
#: an update / weight ratio below half float32's resolution (2^-24) rounds away entirely
FLOAT32_RESOLUTION = 2.0 ** -24
#: a gradient norm growing from an early relative gradient below this is a dead signal
#: coming back, not an explosion
EXPLODING_MIN_EARLY = 1e-5
#: samples that must all show a zero gradient before ``zero-gradients`` fires
ZERO_GRADIENT_SAMPLES = 3

# --- thresholds: learning rate and updates -------------------------------

#: update-to-weight ratio ||dw|| / ||w|| per step. About 1e-3 is healthy (Karpathy's
#: rule of thumb, CS231n; healthy MLP runs here measure 5e-4 to 5e-3): the doctor flags
#: ratios ten times above it when the loss or the units misbehave too, and ten
#: times below it when the loss barely moves.
HEALTHY_UPDATE_RATIO = 1e-3
LR_HIGH_UPDATE_RATIO = 1e-2
LR_LOW_UPDATE_RATIO = 1e-4
#: first updates above this fraction of the weights (thirty times the healthy ratio;
#: healthy runs here start at 0.005 to 0.04), followed by dead units or zero gradients:
#: the learning rate killed the network in its first steps
LR_BLOWN_UPDATE_RATIO = 0.03
#: relative loss decrease below which "the loss barely moved" (lr-too-low, plateau)
LOW_PROGRESS = 0.1
#: the smoothed loss ends this many times above its minimum: divergence
DIVERGENCE_FACTOR = 1.5
#: update-to-weight ratio below which weights count as stalled (float32 resolution)
STALLED_UPDATE_RATIO = 1.2e-7
#: steps of a bitwise-flat full-batch cost that count as "the cost is identical"
STALLED_LOSS_STEPS = 50

# --- thresholds: the loss curve --------------------------------------------

#: the loss at step 0 is off above ``INITIAL_LOSS_FACTOR * expected +
#: INITIAL_LOSS_MARGIN``, where ``expected`` is the loss of uniform predictions (ln C
#: for softmax cross-entropy, ln 2 for binary): Karpathy's "verify loss @ init" check.
#: Random logits of standard deviation s add about s^2 / 2 nats, so the margin lets
#: He/Xavier-initialised nets (s of 1-2) through and flags s above about 2.5.
INITIAL_LOSS_FACTOR = 2.0
INITIAL_LOSS_MARGIN = 1.0
#: regression: mean squared error at step 0 above this multiple of mean(y^2)
INITIAL_LOSS_FACTOR_REGRESSION = 10.0
#: ... and it is only a note when the (epoch-smoothed) loss fell below that expected loss
#: within this fraction of training: the start did not hold training back
INITIAL_LOSS_RECOVERY = 0.1
#: plateau: the smoothed loss changed by less than this fraction over the second half
PLATEAU_CHANGE = 0.01
#: ... while still above this fraction of the loss of uniform predictions (of the
#: initial loss when that is unknown, as for regression): stuck, not converged
PLATEAU_LOSS_FRACTION = 0.7
#: ... over at least this many steps
PLATEAU_MIN_STEPS = 50
#: a spike: the loss exceeds the running median of the previous ``SPIKE_WINDOW``
#: steps by ``SPIKE_MAD`` robust standard deviations, by ``SPIKE_FACTOR`` times,
#: and by ``SPIKE_UNDO`` of the progress made so far
SPIKE_WINDOW = 10
SPIKE_MAD = 6.0
SPIKE_FACTOR = 1.5
SPIKE_UNDO = 0.25
#: spike events (consecutive spiking steps count once) needed for a finding, and
#: their minimum rate: with batches of 8-16 examples one confidently wrong example
#: makes a lone "spike" every thousand steps or so, which is noise, not a pattern
SPIKE_MIN_COUNT = 3
SPIKE_MIN_RATE = 0.005
#: a minibatch spike is instability, not a hard batch, only when it lasts: the median loss
#: of the ``SPIKE_WINDOW`` steps after it stays this many robust standard deviations above
#: the median before it (a batch of hard examples is followed by ordinary batches)
SPIKE_LASTING_MAD = 2.0
#: spikes are a warning while the loss is still high (progress below ``UNIT_PROGRESS``)
#: or when they continue into the last quarter of training, and (minibatches) when the
#: epoch loss or the validation loss rose by ``SPIKE_EPOCH_RISE`` in an epoch holding a
#: spike; otherwise a note
SPIKE_EPOCH_RISE = 0.05
#: oscillation: in the second half of training, at least this fraction of the moves
#: of the (epoch-smoothed) loss go up and as many go down, each larger than
#: ``OSCILLATION_STEP`` of the initial loss, with little net change
OSCILLATION_FRACTION = 0.3
OSCILLATION_STEP = 0.01
#: ... judged on at least this many moves (a run of a few steps shows no pattern)
OSCILLATION_MIN_MOVES = 10

# --- thresholds: the forward signal --------------------------------------------

#: standard deviation of a hidden layer's outputs (over the batch and its units) below this
#: fraction of the first hidden layer's: the signal dies on its way forward. Healthy
#: He/Xavier-initialised stacks keep it within a factor of 3 at every depth here; weights
#: of std 0.01 in 32-unit tanh layers divide it by about 18 per layer.
SIGNAL_SHRINK = 1e-2

# --- thresholds: the training budget, schedules and penalties --------------------

#: the run ends still falling: over its last quarter the smoothed loss fell by more than
#: this fraction, with most of its moves down ...
UNDERTRAINED_FALL = 0.02
UNDERTRAINED_DOWN_MOVES = 0.7
#: ... while far from done: progress below this fraction of the way from the loss of an
#: uninformed model, and (classification) accuracy less than this fraction of the way from
#: the majority-class share to 100%
UNDERTRAINED_PROGRESS = 0.5
#: the scheduled learning rate fell below this fraction of its peak ...
SCHEDULE_COLLAPSE = 1e-3
#: ... before this fraction of the run (a cosine to zero gets there only at the very end)
SCHEDULE_COLLAPSE_BEFORE = 0.5
#: a penalty pins the weights: L2 or weight decay set, every weight matrix's norm fell below
#: this fraction of its initial norm, and the loss made less than ``UNDERTRAINED_PROGRESS``
OVERREG_SHRINK = 0.5
#: the suggested penalty is the current one times this
OVERREG_FACTOR = 0.01

# --- thresholds: baselines -----------------------------------------------------------

#: a classifier within this accuracy of the majority-class share (and at least
#: ``BASELINE_SIGMAS`` binomial standard errors of it) learned nothing from the inputs
BASELINE_ACCURACY_MARGIN = 0.02
BASELINE_SIGMAS = 3.0
#: a regression whose mean squared error is above this fraction of the targets' variance
#: (the error of predicting their mean) learned nothing from the inputs
BASELINE_REGRESSION = 0.9
#: regression targets whose standard deviation or mean magnitude exceeds this are unscaled
UNSCALED_TARGETS = 10.0

# --- thresholds: generalisation and data ------------------------------------

#: validation loss that rose by this fraction above its minimum, for at least
#: ``OVERFIT_PATIENCE`` epochs, while the training loss kept falling
OVERFIT_RISE = 0.1
OVERFIT_PATIENCE = 3
#: ... is a warning once the final validation loss is this fraction above the training
#: loss, (val - train) / val; below it the two curves still agree and it is a note
OVERFIT_GAP = 0.25
#: train accuracy minus validation accuracy at the end ("100% train / 74% test")
OVERFIT_ACCURACY_GAP = 0.1
#: fraction of test/validation rows that also appear in the training set
LEAKAGE_FRACTION = 0.01
#: inputs are not scaled when the 99.9th percentile of |x| exceeds this (standardised
#: data almost never reaches 20 standard deviations; raw pixels reach 255) ...
UNSCALED_MAX = 20.0
#: ... or when the overall mean or standard deviation exceeds this
UNSCALED_MOMENT = 10.0
#: features on different scales: the 95th-percentile feature range (max - min) over
#: the 5th-percentile one, among non-constant features. Raw 8x8 digit pixels give
#: about 16; age in years next to income in dollars gives thousands.
FEATURE_SPREAD = 100.0
#: most frequent class / least frequent class
IMBALANCE_RATIO = 10.0
#: whole-model gradient check when custom parts exist, up to this many parameters
GRADCHECK_MAX_PARAMS = 5000
#: cause-without-symptom: a run that reached this training accuracy (or made
#: ``UNIT_PROGRESS`` of the way from the uninformed loss) shows no symptom, so its
#: causes (initial loss, input scaling) are notes
TRAINED_ACCURACY = 0.99


@dataclass
class Finding:
    """One diagnosis.

    Attributes
    ----------
    id : stable identifier from :data:`CATALOGUE` (``"dead-relu"``).
    severity : ``"info"``, ``"warning"`` or ``"error"``.
    title : one line: what was seen, with the key number.
    cause : why it happens, in plain language.
    fix : what to change: a command-line flag or a line of Python.
    layers : layers involved (``["dense_0"]``), in forward order.
    steps : steps where it was seen (first first).
    evidence : the numbers behind it.
    action : the fix as settings to change, e.g. ``{"lr": 0.01}`` or
        ``{"init": "auto"}`` (empty when the fix is not a setting); what fix
        verification applies to a copy of the run.
    """

    id: str
    severity: str
    title: str
    cause: str
    fix: str
    layers: list = field(default_factory=list)
    steps: list = field(default_factory=list)
    evidence: dict = field(default_factory=dict)
    action: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.id not in CATALOGUE:
            raise ValueError(f"unknown finding id {self.id!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}")
        self.layers = list(dict.fromkeys(self.layers))
        self.steps = [int(s) for s in self.steps]
        self.evidence = {k: _plain(v) for k, v in self.evidence.items()}
        self.action = {k: _plain(v) for k, v in self.action.items()}

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        where = f" [{', '.join(self.layers)}]" if self.layers else ""
        return f"{self.severity.upper()} {self.id}{where}: {self.title}"


def _plain(v):
    """Evidence values as JSON-friendly Python scalars (rounded floats)."""
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
        v = v.item()
    if isinstance(v, bool) or v is None or isinstance(v, (int, str)):
        return v
    v = float(v)
    if not math.isfinite(v):
        return str(v)
    return float(f"{v:.4g}")


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity)


def sort_findings(findings) -> list:
    """Most severe first; stable within a severity."""
    return sorted(findings, key=lambda f: -severity_rank(f.severity))
