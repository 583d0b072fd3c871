"""memfit planner: analytic training-memory model. Pure Python: imports neither torch nor streamlit."""
from .breakdown import COMPONENT_COLUMNS, COMPONENTS, Components, MemoryBreakdown, Row
from .estimate import estimate
from .gpus import GPU_CATALOG, Gpu, get_gpu
from .methods import METHOD_IDS, METHODS, Method, get_method
from .models import MODEL_CATALOG, ModelConfig, Param, get_model, load_config_file, model_names
from .spec import TrainingSpec

__all__ = ["COMPONENT_COLUMNS", "COMPONENTS", "Components", "MemoryBreakdown", "Row", "estimate", "compare",
           "GPU_CATALOG", "Gpu", "get_gpu", "METHOD_IDS", "METHODS", "Method", "get_method",
           "MODEL_CATALOG", "ModelConfig", "Param", "get_model", "load_config_file", "model_names",
           "TrainingSpec"]


def compare(*args, **kwargs):
    """Every method (and precision) for one model as a pandas DataFrame; see planner.comparison."""
    from .comparison import compare as _compare   # pandas is imported only when asked for
    return _compare(*args, **kwargs)
