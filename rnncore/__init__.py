"""rnncore: one recurrent-network spec, native PyTorch and Keras models, one numpy oracle.

Importing rnncore loads numpy only; a backend's framework is imported when first used.
"""

__version__ = "0.1.0"

from .api import build, device_of, get_weights, predict, set_weights, spec_of, value_and_grad
from .batch import InputError, prepare_batch
from .bundle import BundleError, load, save
from .device import DeviceError
from .explain import explain
from .export import ExportError, export
from .native import UnsupportedNativeModel, from_native
from .port import PortError, port
from .reference import reference_forward
from .registry import BackendError, available, get_backend
from .spec import FORMAT, EncoderSpec, HeadSpec, InputSpec, ModelSpec, SpecError, json_schema
from .weights import WeightsError, canonical_shapes, check_weights, init_weights

__all__ = [
    "FORMAT",
    "BackendError",
    "BundleError",
    "DeviceError",
    "EncoderSpec",
    "ExportError",
    "HeadSpec",
    "InputError",
    "InputSpec",
    "ModelSpec",
    "PortError",
    "SpecError",
    "UnsupportedNativeModel",
    "WeightsError",
    "__version__",
    "available",
    "build",
    "canonical_shapes",
    "check_weights",
    "device_of",
    "explain",
    "export",
    "from_native",
    "get_backend",
    "get_weights",
    "init_weights",
    "json_schema",
    "load",
    "port",
    "predict",
    "prepare_batch",
    "reference_forward",
    "save",
    "set_weights",
    "spec_of",
    "value_and_grad",
]
