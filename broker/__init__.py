"""The system under test: Asynq's Redis key protocol as Lua scripts, in named variants."""

from broker.core import Broker
from broker.variants import VARIANTS, Quirk, Variant, all_names, variant

__all__ = ["VARIANTS", "Broker", "Quirk", "Variant", "all_names", "variant"]
