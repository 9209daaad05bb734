"""gbopt: gradient transformations for JAX, composed from small primitives.

Every optimizer is a pure ``(init, update)`` pair (:class:`GradientTransformation`) built
as a :func:`chain` of primitives; see ``gbopt._combine`` for how they compose.
"""

from importlib.metadata import PackageNotFoundError, version

from gbopt import pytorch as pytorch
from gbopt import schedules as schedules
from gbopt._base import GradientTransformation as GradientTransformation
from gbopt._base import identity as identity
from gbopt._checkpoint import restore_state as restore_state
from gbopt._combine import DivideState as DivideState
from gbopt._combine import StepCountState as StepCountState
from gbopt._combine import chain as chain
from gbopt._combine import divide as divide
from gbopt._combine import with_step_count as with_step_count
from gbopt._hyperparams import InjectHyperparamsState as InjectHyperparamsState
from gbopt._hyperparams import inject_hyperparams as inject_hyperparams
from gbopt._hyperparams import set_hyperparams as set_hyperparams
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
from gbopt._moments import AccumulateSquareState as AccumulateSquareState
from gbopt._moments import BiasCorrectionState as BiasCorrectionState
from gbopt._moments import EmaState as EmaState
from gbopt._moments import TraceState as TraceState
from gbopt._moments import accumulate_square as accumulate_square
from gbopt._moments import bias_correction as bias_correction
from gbopt._moments import ema as ema
from gbopt._moments import trace as trace
from gbopt._optimizers import adagrad as adagrad
from gbopt._optimizers import adam as adam
from gbopt._optimizers import gd as gd
from gbopt._optimizers import momentum as momentum
from gbopt._optimizers import nesterov as nesterov
from gbopt._optimizers import rmsprop as rmsprop
from gbopt._optimizers import rmsprop_nesterov as rmsprop_nesterov
from gbopt._optimizers import sgd as sgd
from gbopt._partition import MaskedNode as MaskedNode
from gbopt._partition import MaskedState as MaskedState
from gbopt._partition import MultiTransformState as MultiTransformState
from gbopt._partition import freeze as freeze
from gbopt._partition import label_by_path as label_by_path
from gbopt._partition import masked as masked
from gbopt._partition import multi_transform as multi_transform
from gbopt._partition import set_to_zero as set_to_zero
from gbopt._regularize import add_decayed_weights as add_decayed_weights
from gbopt._regularize import clip_by_global_norm as clip_by_global_norm
from gbopt._regularize import global_norm as global_norm
from gbopt._safety import SkipNonfiniteState as SkipNonfiniteState
from gbopt._safety import skip_nonfinite as skip_nonfinite
from gbopt._scaling import ScaleByLearningRateState as ScaleByLearningRateState
from gbopt._scaling import add as add
from gbopt._scaling import scale as scale
from gbopt._scaling import scale_by_learning_rate as scale_by_learning_rate
from gbopt._scaling import sqrt as sqrt
from gbopt._sharding import state_shardings as state_shardings
from gbopt._stacking import LeafStacks as LeafStacks
from gbopt._stacking import StackLeavesState as StackLeavesState
from gbopt._stacking import stack_leaves as stack_leaves
from gbopt._torch_primitives import AccumulateCenteredSquareState as AccumulateCenteredSquareState
from gbopt._torch_primitives import AccumulateInfNormState as AccumulateInfNormState
from gbopt._torch_primitives import NadamMomentumState as NadamMomentumState
from gbopt._torch_primitives import RunningMaxState as RunningMaxState
from gbopt._torch_primitives import ScaleByScheduleState as ScaleByScheduleState
from gbopt._torch_primitives import accumulate_centered_square as accumulate_centered_square
from gbopt._torch_primitives import accumulate_inf_norm as accumulate_inf_norm
from gbopt._torch_primitives import nadam_momentum as nadam_momentum
from gbopt._torch_primitives import running_max as running_max
from gbopt._torch_primitives import scale_by_schedule as scale_by_schedule
from gbopt._update import apply_updates as apply_updates

try:
    __version__ = version("gbopt")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
