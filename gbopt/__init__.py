"""gbopt: gradient transformations for JAX, composed from small primitives.

Every optimizer is a pure ``(init, update)`` pair (:class:`GradientTransformation`) built
as a :func:`chain` of primitives. The package is laid out by role:

* ``_base``: the contract and the kit (:func:`gbopt._base.statistic`,
  :func:`gbopt._base.elementwise`) every primitive is built with;
* ``_statistics`` (and ``_statistics_adaptive``), ``_maps``, ``_regularize``: the primitives;
* ``_combine``: the combinators; ``_textbook`` (and the catalog modules): the optimizers;
* ``_partition``, ``_hyperparams``, ``_safety``, ``_stacking``, ``_sharding``: wrappers;
* ``_state``, ``_checkpoint``, ``_update``: reading, restoring and applying.

Every public name is importable from ``gbopt`` (and only from there, besides the
``schedules`` and ``pytorch`` submodules); ``gbopt.__all__`` lists them.
"""

from importlib import metadata as _metadata

from gbopt import pytorch as pytorch
from gbopt import schedules as schedules
from gbopt._adaptive import adabelief as adabelief
from gbopt._adaptive import adamax as adamax
from gbopt._adaptive import adamaxw as adamaxw
from gbopt._adaptive import adamw as adamw
from gbopt._adaptive import adan as adan
from gbopt._adaptive import amsgrad as amsgrad
from gbopt._adaptive import lamb as lamb
from gbopt._adaptive import lars as lars
from gbopt._adaptive import nadam as nadam
from gbopt._adaptive import nadamw as nadamw
from gbopt._adaptive import novograd as novograd
from gbopt._adaptive import radam as radam
from gbopt._adaptive import yogi as yogi
from gbopt._base import SHARED_STEP as SHARED_STEP
from gbopt._base import GradientTransformation as GradientTransformation
from gbopt._base import StepCountState as StepCountState
from gbopt._base import TransformInfo as TransformInfo
from gbopt._checkpoint import restore_state as restore_state
from gbopt._combine import DivideState as DivideState
from gbopt._combine import chain as chain
from gbopt._combine import divide as divide
from gbopt._combine import with_step_count as with_step_count
from gbopt._compensated import KahanSummationState as KahanSummationState
from gbopt._compensated import StochasticRoundingState as StochasticRoundingState
from gbopt._compensated import kahan_summation as kahan_summation
from gbopt._compensated import round_stochastically as round_stochastically
from gbopt._compensated import stochastic_rounding as stochastic_rounding
from gbopt._describe import Description as Description
from gbopt._describe import describe as describe
from gbopt._factored import CoverSecondMomentState as CoverSecondMomentState
from gbopt._factored import FactoredSecondMomentState as FactoredSecondMomentState
from gbopt._factored import adafactor as adafactor
from gbopt._factored import clip_by_block_rms as clip_by_block_rms
from gbopt._factored import cover_second_moment as cover_second_moment
from gbopt._factored import factored_second_moment as factored_second_moment
from gbopt._factored import scale_by_param_block_rms as scale_by_param_block_rms
from gbopt._factored import sm3 as sm3
from gbopt._fromage import fromage as fromage
from gbopt._fromage import scale_new_params as scale_new_params
from gbopt._hyperparams import InjectHyperparamsState as InjectHyperparamsState
from gbopt._hyperparams import inject_hyperparams as inject_hyperparams
from gbopt._hyperparams import set_hyperparams as set_hyperparams
from gbopt._maps import add as add
from gbopt._maps import bias_correction as bias_correction
from gbopt._maps import identity as identity
from gbopt._maps import scale as scale
from gbopt._maps import scale_by_learning_rate as scale_by_learning_rate
from gbopt._maps import scale_by_schedule as scale_by_schedule
from gbopt._maps import sqrt as sqrt
from gbopt._matrix import GraftState as GraftState
from gbopt._matrix import graft as graft
from gbopt._matrix import matrix_rule as matrix_rule
from gbopt._matrix import partition_matrices as partition_matrices
from gbopt._matrix_optimizers import DecayAfterStepState as DecayAfterStepState
from gbopt._matrix_optimizers import NesterovEmaState as NesterovEmaState
from gbopt._matrix_optimizers import ShampooState as ShampooState
from gbopt._matrix_optimizers import SoapState as SoapState
from gbopt._matrix_optimizers import decay_after_step as decay_after_step
from gbopt._matrix_optimizers import muon as muon
from gbopt._matrix_optimizers import nesterov_ema as nesterov_ema
from gbopt._matrix_optimizers import orthogonalize as orthogonalize
from gbopt._matrix_optimizers import scale_by_shampoo as scale_by_shampoo
from gbopt._matrix_optimizers import scale_by_shape as scale_by_shape
from gbopt._matrix_optimizers import scale_by_soap as scale_by_soap
from gbopt._matrix_optimizers import shampoo as shampoo
from gbopt._matrix_optimizers import soap as soap
from gbopt._noise import AddNoiseState as AddNoiseState
from gbopt._noise import add_noise as add_noise
from gbopt._noise import noisy_sgd as noisy_sgd
from gbopt._optimistic import OptimisticGradientState as OptimisticGradientState
from gbopt._optimistic import optimistic_adam as optimistic_adam
from gbopt._optimistic import optimistic_adam_v2 as optimistic_adam_v2
from gbopt._optimistic import optimistic_gradient as optimistic_gradient
from gbopt._optimistic import optimistic_gradient_descent as optimistic_gradient_descent
from gbopt._partition import MaskedNode as MaskedNode
from gbopt._partition import MaskedState as MaskedState
from gbopt._partition import MultiTransformState as MultiTransformState
from gbopt._partition import freeze as freeze
from gbopt._partition import label_by_path as label_by_path
from gbopt._partition import masked as masked
from gbopt._partition import multi_transform as multi_transform
from gbopt._partition import set_to_zero as set_to_zero
from gbopt._polyak import polyak_sgd as polyak_sgd
from gbopt._polyak import scale_by_polyak as scale_by_polyak
from gbopt._quantize import QuantizedArray as QuantizedArray
from gbopt._quantize import QuantizeStateState as QuantizeStateState
from gbopt._quantize import quantize_state as quantize_state
from gbopt._quasi_newton import LbfgsMemoryState as LbfgsMemoryState
from gbopt._quasi_newton import lbfgs as lbfgs
from gbopt._quasi_newton import lbfgs_memory as lbfgs_memory
from gbopt._regularize import add_decayed_weights as add_decayed_weights
from gbopt._regularize import clip_by_global_norm as clip_by_global_norm
from gbopt._regularize import global_norm as global_norm
from gbopt._safety import SkipNonfiniteState as SkipNonfiniteState
from gbopt._safety import skip_nonfinite as skip_nonfinite
from gbopt._sharding import state_shardings as state_shardings
from gbopt._sign import LionMomentumState as LionMomentumState
from gbopt._sign import lion as lion
from gbopt._sign import lion_momentum as lion_momentum
from gbopt._sign import sign as sign
from gbopt._sign import sign_sgd as sign_sgd
from gbopt._sign import signum as signum
from gbopt._stacking import LeafStacks as LeafStacks
from gbopt._stacking import StackLeavesState as StackLeavesState
from gbopt._stacking import stack_leaves as stack_leaves
from gbopt._state import state_get as state_get
from gbopt._state import state_set as state_set
from gbopt._statistics import AccumulateCenteredSquareState as AccumulateCenteredSquareState
from gbopt._statistics import AccumulateInfNormState as AccumulateInfNormState
from gbopt._statistics import AccumulateSquareState as AccumulateSquareState
from gbopt._statistics import EmaState as EmaState
from gbopt._statistics import NadamMomentumState as NadamMomentumState
from gbopt._statistics import RunningMaxState as RunningMaxState
from gbopt._statistics import TraceState as TraceState
from gbopt._statistics import accumulate_centered_square as accumulate_centered_square
from gbopt._statistics import accumulate_inf_norm as accumulate_inf_norm
from gbopt._statistics import accumulate_square as accumulate_square
from gbopt._statistics import ema as ema
from gbopt._statistics import nadam_momentum as nadam_momentum
from gbopt._statistics import running_max as running_max
from gbopt._statistics import trace as trace
from gbopt._statistics_adaptive import AccumulateBeliefState as AccumulateBeliefState
from gbopt._statistics_adaptive import AccumulateLayerSquareState as AccumulateLayerSquareState
from gbopt._statistics_adaptive import AccumulateYogiSquareState as AccumulateYogiSquareState
from gbopt._statistics_adaptive import AdanExtrapolationState as AdanExtrapolationState
from gbopt._statistics_adaptive import AdanMomentumState as AdanMomentumState
from gbopt._statistics_adaptive import ScaleByAdanState as ScaleByAdanState
from gbopt._statistics_adaptive import ScaleByBeliefState as ScaleByBeliefState
from gbopt._statistics_adaptive import accumulate_belief as accumulate_belief
from gbopt._statistics_adaptive import accumulate_layer_square as accumulate_layer_square
from gbopt._statistics_adaptive import accumulate_yogi_square as accumulate_yogi_square
from gbopt._statistics_adaptive import adan_extrapolation as adan_extrapolation
from gbopt._statistics_adaptive import adan_momentum as adan_momentum
from gbopt._statistics_adaptive import rectification as rectification
from gbopt._statistics_adaptive import scale_by_adan as scale_by_adan
from gbopt._statistics_adaptive import scale_by_belief as scale_by_belief
from gbopt._statistics_adaptive import scale_by_trust_ratio as scale_by_trust_ratio
from gbopt._step_sizes import RpropStepSizesState as RpropStepSizesState
from gbopt._step_sizes import ScaleByUpdateRmsState as ScaleByUpdateRmsState
from gbopt._step_sizes import adadelta as adadelta
from gbopt._step_sizes import rprop as rprop
from gbopt._step_sizes import rprop_step_sizes as rprop_step_sizes
from gbopt._step_sizes import scale_by_update_rms as scale_by_update_rms
from gbopt._textbook import adagrad as adagrad
from gbopt._textbook import adam as adam
from gbopt._textbook import gd as gd
from gbopt._textbook import momentum as momentum
from gbopt._textbook import nesterov as nesterov
from gbopt._textbook import rmsprop as rmsprop
from gbopt._textbook import rmsprop_nesterov as rmsprop_nesterov
from gbopt._textbook import sgd as sgd
from gbopt._update import apply_updates as apply_updates

try:
    __version__ = _metadata.version("gbopt")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = sorted(
    name
    for name, value in list(globals().items())
    if not name.startswith("_") and name not in {"annotations"}
)


def __dir__() -> list[str]:
    """The public names only."""
    return list(__all__)


def __getattr__(name: str):
    """Names optax users expect that gbopt leaves to optax: an error that says where they are."""
    from gbopt._elsewhere import missing

    raise missing(name)
